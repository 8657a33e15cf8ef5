//! One WebSocket connection: a single task that selects on its outbox, the client's frames,
//! the heartbeat, the JWT's expiry and shutdown.
//!
//! The task owns the socket's subscriptions through a guard whose `Drop` detaches them from
//! the hub, so a connection that ends any way at all (close, error, panic) leaves nothing
//! behind. Writes are bounded by the slow-consumer timeout: a socket that cannot take its
//! pending frames within it is closed with 4009 (its outbox never grows past one value per
//! subscription meanwhile).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use serde_json::Value;
use tokio::time::{Instant, MissedTickBehavior};

use super::subscription::{verify_subscription, VerifiedSubscription};
use super::subscriptions::Subscriptions;
use super::transport::{drain_until_closed, is_client_violation, Counted, ReadGate, CLOSE_TIMEOUT};
use crate::auth::{now_secs, AuthError, Claims};
use crate::error::ApiError;
use crate::hub::{Outbox, Signature, SignatureRefused};
use crate::state::AppState;
use crate::telemetry::ScopeLabel;
use crate::wire::{self as protocol, close_frame, ClientFrame, CloseReason};

/// A JWT may say it expires in centuries; timers need not look further than a year.
const MAX_TIMER_SECS: u64 = 365 * 24 * 3600;

/// The next moment the connection ends by itself, and why.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    Idle(Instant),
    AuthExpiry(Instant),
}

impl Deadline {
    fn at(self) -> Instant {
        match self {
            Deadline::Idle(at) | Deadline::AuthExpiry(at) => at,
        }
    }
}

/// Why the loop stopped.
enum Exit {
    Close(CloseReason),
    /// The client closed, or the transport failed: nothing more to say.
    Gone,
}

struct Connection {
    state: AppState,
    /// The claims of the socket's current JWT (the upgrade's, then each accepted `auth`
    /// frame's): `auth` rules are checked against them.
    claims: Claims,
    jwt_expires: u64,
    outbox: Arc<Outbox>,
    subscriptions: Subscriptions,
    window_start: Instant,
    window_messages: u32,
    /// Since when the socket holds no subscription (for the idle timeout).
    idle_since: Option<Instant>,
}

pub async fn run(
    socket: WebSocket,
    state: AppState,
    claims: Claims,
    initial: Option<VerifiedSubscription>,
) {
    let socket_id = state.next_socket.fetch_add(1, Ordering::Relaxed);
    let _counted = Counted::new(&state.metrics);
    let mut connection = Connection {
        outbox: Arc::new(Outbox::new()),
        subscriptions: Subscriptions::new(state.hub.clone(), &claims.user, socket_id),
        jwt_expires: claims.exp,
        claims,
        window_start: Instant::now(),
        window_messages: 0,
        idle_since: Some(Instant::now()),
        state,
    };
    if let Some(subscription) = initial {
        if let Some(signature) = connection.attach(&None, subscription) {
            connection.notify_too_large(&signature);
        }
    }
    connection.serve(socket).await;
}

impl Connection {
    async fn serve(&mut self, mut socket: WebSocket) -> Exit {
        let exit = self.event_loop(&mut socket).await;
        if let Exit::Close(reason) = exit {
            if reason != CloseReason::SlowConsumer {
                let _ = self.flush(&mut socket, Vec::new()).await;
            }
            let close = Message::Close(Some(close_frame(reason)));
            // Counted when decided, not when the close frame got through: a client that never
            // reads never takes it, and one that reads again within the grace does.
            let timeout = if reason == CloseReason::SlowConsumer {
                self.state.metrics.slow_consumer_closes.inc();
                self.state.config.limits.slow_consumer
            } else {
                CLOSE_TIMEOUT
            };
            if let Ok(Ok(())) = tokio::time::timeout(timeout, socket.send(close)).await {
                drain_until_closed(&mut socket).await;
            }
        }
        exit
    }

    async fn event_loop(&mut self, socket: &mut WebSocket) -> Exit {
        let interval = self.state.config.http.heartbeat;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + interval, interval);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_seen = Instant::now();
        let shutdown = self.state.shutdown.clone().cancelled_owned();
        tokio::pin!(shutdown);
        let mut frames = Vec::new();
        let mut deadline = self.next_deadline();
        let timer = tokio::time::sleep_until(deadline.at());
        tokio::pin!(timer);
        let reads = ReadGate::new();
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => return Exit::Close(CloseReason::ShuttingDown),
                _ = self.outbox.ready() => {
                    if self.forget_revoked() {
                        deadline = self.next_deadline();
                        timer.as_mut().reset(deadline.at());
                    }
                    if self.outbox.drain_into(&mut frames).is_err() {
                        return Exit::Close(CloseReason::TooManyReplies);
                    }
                    if let Err(exit) = self.flush(socket, std::mem::take(&mut frames)).await {
                        return exit;
                    }
                }
                message = reads.next(socket) => {
                    last_seen = Instant::now();
                    match message {
                        Some(Ok(message)) => {
                            if let Some(reason) = self.on_message(message) {
                                return reason;
                            }
                            deadline = self.next_deadline();
                            timer.as_mut().reset(deadline.at());
                        }
                        Some(Err(err)) => return self.on_transport_error(&err),
                        None => return Exit::Gone,
                    }
                }
                _ = heartbeat.tick() => {
                    if last_seen.elapsed() >= interval * 2 {
                        return Exit::Close(CloseReason::HeartbeatTimeout);
                    }
                    let ping = socket.send(Message::Ping(Default::default()));
                    match tokio::time::timeout(self.state.config.limits.slow_consumer, ping).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Exit::Gone,
                        Err(_) => return Exit::Close(CloseReason::SlowConsumer),
                    }
                }
                _ = &mut timer => {
                    if let Some(exit) = self.on_deadline(deadline) {
                        return exit;
                    }
                    deadline = self.next_deadline();
                    timer.as_mut().reset(deadline.at());
                }
            }
        }
    }

    /// When the connection ends by itself unless the client acts: the idle timeout while it
    /// holds no subscription, else its JWT's expiry. Only client frames change it, so the loop
    /// re-arms one timer after them instead of registering a fresh timer per frame it sends.
    fn next_deadline(&self) -> Deadline {
        let jwt_left = self
            .jwt_expires
            .saturating_sub(now_secs())
            .min(MAX_TIMER_SECS);
        let jwt = Deadline::AuthExpiry(Instant::now() + Duration::from_secs(jwt_left));
        let idle_timeout = self.state.config.limits.idle_timeout;
        match self.idle_since.filter(|_| !idle_timeout.is_zero()) {
            Some(since) if since + idle_timeout < jwt.at() => Deadline::Idle(since + idle_timeout),
            _ => jwt,
        }
    }

    /// The exit a deadline calls for, or none when the JWT has not expired by the wall clock
    /// after all (the timer is capped at a year, and the clocks may drift apart).
    fn on_deadline(&self, deadline: Deadline) -> Option<Exit> {
        match deadline {
            Deadline::Idle(_) => Some(Exit::Close(CloseReason::Idle)),
            Deadline::AuthExpiry(_) if now_secs() < self.jwt_expires => None,
            Deadline::AuthExpiry(_) => {
                self.outbox.push_control(protocol::error(
                    &None,
                    "auth_expired",
                    "authToken expired: send an auth frame with a fresh one before it does",
                ));
                Some(Exit::Close(CloseReason::AuthExpired))
            }
        }
    }

    /// Writes frames, or gives up after the slow-consumer timeout.
    async fn flush(&self, socket: &mut WebSocket, mut frames: Vec<Utf8Bytes>) -> Result<(), Exit> {
        if self.outbox.drain_into(&mut frames).is_err() {
            return Err(Exit::Close(CloseReason::TooManyReplies));
        }
        if frames.is_empty() {
            return Ok(());
        }
        let write = async {
            for frame in frames {
                socket.feed(Message::Text(frame)).await?;
            }
            socket.flush().await
        };
        match tokio::time::timeout(self.state.config.limits.slow_consumer, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Exit::Gone),
            Err(_) => Err(Exit::Close(CloseReason::SlowConsumer)),
        }
    }

    /// The close a broken client frame calls for (RFC 6455 §7.4.1: 1007 for a text frame that
    /// is not UTF-8, 1002 for a frame the protocol forbids), or none when the transport itself
    /// failed and there is no one left to tell.
    fn on_transport_error(&self, err: &axum::Error) -> Exit {
        let Some(err) = std::error::Error::source(err)
            .and_then(|source| source.downcast_ref::<tungstenite::Error>())
        else {
            return Exit::Gone;
        };
        match err {
            tungstenite::Error::Capacity(_) => Exit::Close(CloseReason::FrameTooLarge),
            tungstenite::Error::Utf8(_) => Exit::Close(CloseReason::InvalidUtf8),
            tungstenite::Error::Protocol(violation) if is_client_violation(violation) => {
                Exit::Close(CloseReason::ProtocolViolation)
            }
            _ => Exit::Gone,
        }
    }

    /// Handles one client message; returns an exit when the connection must end. Every frame
    /// counts toward the message rate, control frames too: a Ping costs the server a Pong.
    fn on_message(&mut self, message: Message) -> Option<Exit> {
        if !self.within_rate() {
            return Some(Exit::Close(CloseReason::RateLimited));
        }
        match message {
            Message::Text(text) => self.on_text(text.as_str()),
            Message::Binary(_) => {
                self.reply(protocol::error(
                    &None,
                    "bad_frame",
                    "binary frames are not supported; send JSON text frames",
                ));
                None
            }
            Message::Close(_) => Some(Exit::Gone),
            Message::Ping(_) | Message::Pong(_) => None,
        }
    }

    fn within_rate(&mut self) -> bool {
        if self.window_start.elapsed() >= Duration::from_secs(1) {
            self.window_start = Instant::now();
            self.window_messages = 0;
        }
        self.window_messages += 1;
        self.window_messages <= self.state.config.limits.max_messages_per_sec
    }

    fn on_text(&mut self, text: &str) -> Option<Exit> {
        #[cfg(feature = "fault-injection")]
        if text == "__panic__" {
            panic!("fault injection: a panic inside one connection's task");
        }
        let request = match protocol::parse_frame(text) {
            Ok(request) => request,
            Err(bad) => {
                self.reply(protocol::error(&bad.id, "bad_frame", &bad.message));
                return None;
            }
        };
        let id = request.id;
        match request.frame {
            ClientFrame::Ping => self.reply(protocol::pong()),
            ClientFrame::Subscribe { token } => return self.subscribe(&id, &token),
            ClientFrame::Unsubscribe { signature } => self.unsubscribe(&id, &signature),
            ClientFrame::Auth { auth_token } => self.refresh_auth(&id, &auth_token),
        }
        None
    }

    fn reply(&self, frame: Utf8Bytes) {
        self.outbox.push_control(frame);
    }

    fn subscribe(&mut self, id: &Option<Value>, token: &str) -> Option<Exit> {
        let subscription = match verify_subscription(&self.state, token, &self.claims) {
            Ok(subscription) => subscription,
            Err(err) => {
                self.reply(protocol::error(id, err.code(), &err.to_string()));
                return None;
            }
        };
        if let Some(existing) = self.subscriptions.get(subscription.signature.as_str()) {
            self.reply(protocol::subscribed(
                id,
                &existing.query().name,
                &existing.signature,
            ));
            return None;
        }
        if self.subscriptions.len() >= self.state.config.limits.max_subscriptions_per_socket {
            return Some(Exit::Close(CloseReason::TooManySubscriptions));
        }
        let query_name = subscription.query.name.clone();
        let signature = subscription.signature.clone();
        if let Some(attached) = self.attach(id, subscription) {
            // Queued after the snapshot, but control frames are written first.
            self.reply(protocol::subscribed(id, &query_name, &signature));
            self.notify_too_large(&attached);
        }
        None
    }

    /// Attaches a verified subscription, or tells the client why the hub refused it (a
    /// `too_many_signatures` error; the socket and its other subscriptions stay).
    fn attach(
        &mut self,
        id: &Option<Value>,
        subscription: VerifiedSubscription,
    ) -> Option<Arc<Signature>> {
        let attached = self.subscriptions.attach(&subscription, &self.outbox);
        match attached {
            Ok(signature) => {
                self.idle_since = None;
                Some(signature)
            }
            Err(refused) => {
                let scope = match refused {
                    SignatureRefused::PerUser { .. } => "user",
                    SignatureRefused::Total { .. } => "server",
                };
                self.state
                    .metrics
                    .refused_signatures
                    .get_or_create(&ScopeLabel { scope })
                    .inc();
                self.reply(protocol::signature_error(
                    id,
                    "too_many_signatures",
                    &subscription.signature,
                    &refused.to_string(),
                ));
                None
            }
        }
    }

    /// A new follower of a signature whose latest value is over a limit learns it at once.
    fn notify_too_large(&self, signature: &Signature) {
        if let Some(notice) = signature.too_large_notice() {
            self.reply(notice);
        }
    }

    fn unsubscribe(&mut self, id: &Option<Value>, signature: &str) {
        if self.detach(signature) {
            self.reply(protocol::unsubscribed(id, signature));
        } else {
            self.reply(protocol::error(
                id,
                "not_subscribed",
                "this socket has no subscription with that signature",
            ));
        }
    }

    /// Drops the subscriptions the hub revoked (a registry reload removed or changed their
    /// query); the hub already sent each its error event and forgot the socket.
    /// Returns whether any was dropped (the idle deadline may then start).
    fn forget_revoked(&mut self) -> bool {
        let forgot = self.subscriptions.forget_revoked(&self.outbox);
        self.start_idle_if_empty();
        forgot
    }

    fn detach(&mut self, signature: &str) -> bool {
        let detached = self.subscriptions.detach(signature, &self.outbox);
        self.start_idle_if_empty();
        detached
    }

    fn start_idle_if_empty(&mut self) {
        if self.subscriptions.is_empty() && self.idle_since.is_none() {
            self.idle_since = Some(Instant::now());
        }
    }

    /// After an `auth` frame: drops, with a `forbidden` error each, the subscriptions whose
    /// query's `auth` rules the new claims no longer pass.
    fn drop_forbidden(&mut self) {
        let forbidden = self.subscriptions.forbidden_for(&self.claims);
        for (signature, refusal) in forbidden {
            if self.detach(&signature) {
                self.reply(protocol::signature_error(
                    &None,
                    "forbidden",
                    &signature,
                    &format!("{refusal}: the new authToken no longer passes this query's auth rules, so the subscription was dropped"),
                ));
            }
        }
    }

    fn refresh_auth(&mut self, id: &Option<Value>, jwt: &str) {
        let seen = self.state.auth.key_set().map(|set| set.generation());
        match self.state.auth.verify_jwt(jwt) {
            Ok(claims) if claims.user == self.claims.user => {
                // Claims other than the user's may change: every rule is checked again.
                self.jwt_expires = claims.exp;
                let expires = claims.exp;
                self.claims = claims;
                self.drop_forbidden();
                self.reply(protocol::authenticated(id, expires));
            }
            Ok(_) => {
                let err = ApiError::from(AuthError::UserMismatch);
                self.reply(protocol::error(
                    id,
                    err.code(),
                    "the new authToken belongs to another user",
                ));
            }
            Err(err) => {
                if matches!(err, AuthError::UnknownKey | AuthError::KeysUnavailable) {
                    // This loop does not wait on the network: fetch the key set in the
                    // background (within the on-demand limit) for the client's next attempt.
                    if let (Some(set), Some(seen)) = (self.state.auth.key_set(), seen) {
                        set.refetch_in_background(seen);
                    }
                }
                let err = ApiError::from(err);
                self.reply(protocol::error(id, err.code(), &err.to_string()));
            }
        }
    }
}
