//! The NOTIFY change feed (the default): one dedicated connection doing
//! `LISTEN statgate_changes`.
//!
//! Notifications sent while the connection is down are lost by PostgreSQL's design, so every
//! (re)connect is followed by a resync: every active signature is recomputed and the ones that
//! changed are pushed (docs/ARCHITECTURE.md). `/readyz` reports 503 while the connection is down. The
//! connection is separate from the pool, so pool exhaustion never blocks the feed.
//!
//! Every new LISTEN connection must be one this module made, counted and resynced after. sqlx's
//! `PgListener` would otherwise reconnect on its own: with `eager_reconnect` (its default) inside
//! the receive that found the connection lost, and in any later receive if that one was dropped
//! half-way, silently either way. So the listener is built with `eager_reconnect(false)`, its
//! receive in progress lives in a stream that no `select!` branch can drop, the stream ends at
//! the first loss and the listener is dropped with it (never asked again); the next connection is
//! a new listener. As a second line, the canary's probe is sent only while the backend this
//! module connected (its pid) is alive, so a connection replaced behind its back fails the next
//! probe and is replaced in turn (with a resync).

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgListener, PgNotification, PgPoolOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::feed::FeedEvent;
use super::payload::{parse_payload, UnreadablePayloads};
use super::supervisor::{Ended, Feed};
use crate::telemetry::Metrics;
use std::sync::Arc;

pub const CHANNEL: &str = "statgate_changes";
/// One connection attempt may take this long (PostgreSQL refusing or not answering).
const CONNECT_ATTEMPT: Duration = Duration::from_secs(2);
/// `application_name` of the LISTEN connection, as seen in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "statgate-listener";

/// The LISTEN feed: each session is one LISTEN connection (run by a
/// [`Supervisor`](super::Supervisor)).
pub struct NotifyFeed {
    database_url: String,
    metrics: Arc<Metrics>,
    canary: Option<Canary>,
}

/// A probe sent through the database on an interval to prove the feed still delivers. A LISTEN
/// connection can look alive (TCP up, no error) while nothing arrives: a stalled backend, a
/// proxy that dropped its state. If a probe is not back by the next interval, the connection is
/// treated as dead: it is replaced (which resyncs every signature) and `/readyz` says 503 until
/// then. Probes travel through the pool, so a probe that cannot be *sent* (pool trouble) does
/// not condemn the listener.
pub struct Canary {
    pool: sqlx::PgPool,
    every: Duration,
    /// Distinguishes this gateway's probes from other gateways' on the same database.
    gateway_id: String,
}

impl Canary {
    /// A probe every `every`, sent through `pool`, tagged with a random gateway id.
    pub fn new(pool: sqlx::PgPool, every: Duration) -> Self {
        Canary {
            pool,
            every,
            gateway_id: format!("{:016x}", rand::random::<u64>()),
        }
    }
}

#[derive(Deserialize)]
struct Probe {
    canary: String,
}

/// This gateway's probe tag, if `payload` is a probe (anyone's); `None` for a change.
fn probe_of(payload: &str) -> Option<String> {
    if !payload.starts_with(r#"{"canary""#) {
        return None;
    }
    serde_json::from_str::<Probe>(payload)
        .ok()
        .map(|probe| probe.canary)
}

/// A LISTEN connection and the backend serving it.
pub struct Connected {
    listener: PgListener,
    backend_pid: i32,
}

/// The notifications of one LISTEN connection, ending after its first loss (an `Err`). The
/// receive in progress lives in the stream: dropping a `next()` future (a `select!` branch that
/// lost the race) does not drop it, so sqlx never gets to reconnect behind our back. After a
/// loss the listener is dropped, so it is never asked to receive again.
fn notifications(listener: PgListener) -> impl Stream<Item = Result<PgNotification, String>> {
    futures_util::stream::unfold(Some(listener), |listener| async move {
        let mut listener = listener?;
        match listener.try_recv().await {
            Ok(Some(notification)) => Some((Ok(notification), Some(listener))),
            Ok(None) => Some((Err("the connection was closed".to_owned()), None)),
            Err(err) => Some((Err(err.to_string()), None)),
        }
    })
}

impl NotifyFeed {
    pub fn new(database_url: String, metrics: Arc<Metrics>, canary: Option<Canary>) -> Self {
        NotifyFeed {
            database_url,
            metrics,
            canary,
        }
    }

    /// One attempt to connect and LISTEN.
    async fn open(&self) -> Result<Connected, sqlx::Error> {
        // Named, so operators (and tests) can tell the feed's backend from the pool's.
        let options: PgConnectOptions = self.database_url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_ATTEMPT)
            .connect_lazy_with(options.application_name(LISTENER_APPLICATION_NAME));
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.ignore_pool_close_event(true);
        // A lost connection is reported at once and never re-established by sqlx: the
        // next connection is a new listener, counted and followed by a resync.
        listener.eager_reconnect(false);
        listener.listen(CHANNEL).await?;
        let backend_pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
            .fetch_one(&mut listener)
            .await?;
        tracing::info!(backend_pid, "listening on {CHANNEL}");
        Ok(Connected {
            listener,
            backend_pid,
        })
    }

    /// Forwards notifications until the connection drops, the canary finds it silent, or
    /// shutdown.
    async fn forward(
        &self,
        Connected {
            listener,
            backend_pid,
        }: Connected,
        events: &mpsc::Sender<FeedEvent>,
        shutdown: &CancellationToken,
    ) -> Ended {
        let every = self
            .canary
            .as_ref()
            .map_or(Duration::from_secs(3600), |c| c.every);
        let mut probe_tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sequence = 0u64;
        let mut outstanding: Option<String> = None;
        // Probes are sent from their own task, so a busy pool never holds up this loop; one
        // that could not be sent is reported back here and not waited for.
        let (unsent_tx, mut unsent) = mpsc::channel::<String>(4);
        let mut received = std::pin::pin!(notifications(listener));
        let mut unreadable = UnreadablePayloads::default();
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return Ended::Shutdown,
                received = received.next() => received,
                Some(tag) = unsent.recv() => {
                    if outstanding.as_deref() == Some(tag.as_str()) {
                        outstanding = None;
                    }
                    continue;
                }
                _ = probe_tick.tick(), if self.canary.is_some() => {
                    if let Some(tag) = &outstanding {
                        self.metrics.canary_failures.inc();
                        tracing::warn!(probe = %tag, backend_pid, waited_ms = every.as_millis() as u64, "change feed silent: a probe did not come back; replacing the listener");
                        return Ended::Replace;
                    }
                    sequence += 1;
                    outstanding = self.send_probe(sequence, backend_pid, unsent_tx.clone());
                    continue;
                }
            };
            let notification = match received {
                Some(Ok(notification)) => notification,
                Some(Err(reason)) => {
                    tracing::warn!(backend_pid, error = %reason, "listener connection lost");
                    return Ended::Replace;
                }
                None => return Ended::Replace,
            };
            if let Some(tag) = probe_of(notification.payload()) {
                if outstanding.as_deref() == Some(tag.as_str()) {
                    outstanding = None;
                }
                continue;
            }
            self.metrics.notifications.inc();
            match parse_payload(notification.payload()) {
                Ok(change) => {
                    if events.send(FeedEvent::Change(change)).await.is_err() {
                        return Ended::Shutdown;
                    }
                }
                Err(err) => unreadable.drop_one(&err, &self.metrics),
            }
        }
    }

    /// Starts sending probe `sequence` through the pool and returns its tag; if it cannot be
    /// sent within half an interval, the tag comes back on `unsent` (nothing to wait for). The
    /// probe is sent only while backend `backend_pid` (the LISTEN connection this module made)
    /// is alive: if another connection replaced it unseen, the probe never comes back and the
    /// listener is replaced, with a resync.
    fn send_probe(
        &self,
        sequence: u64,
        backend_pid: i32,
        unsent: mpsc::Sender<String>,
    ) -> Option<String> {
        let canary = self.canary.as_ref()?;
        let tag = format!("{}:{sequence}", canary.gateway_id);
        let payload = serde_json::json!({ "canary": tag }).to_string();
        let pool = canary.pool.clone();
        let within = canary.every / 2;
        let sent_tag = tag.clone();
        tokio::spawn(async move {
            let send = sqlx::query("select pg_notify($1, $2) from pg_stat_activity where pid = $3")
                .bind(CHANNEL)
                .bind(&payload)
                .bind(backend_pid)
                .execute(&pool);
            let failure = match tokio::time::timeout(within, send).await {
                Ok(Ok(_)) => return,
                Ok(Err(err)) => err.to_string(),
                Err(_) => format!("not sent within {} ms", within.as_millis()),
            };
            tracing::warn!(error = %failure, "change-feed probe could not be sent");
            let _ = unsent.send(sent_tag).await;
        });
        Some(tag)
    }
}

impl Feed for NotifyFeed {
    type Session = Connected;
    type Error = sqlx::Error;
    const NAME: &'static str = "listener";

    fn connect(&self) -> impl std::future::Future<Output = Result<Connected, sqlx::Error>> + Send {
        self.open()
    }

    fn run(
        &mut self,
        session: Connected,
        events: &mpsc::Sender<FeedEvent>,
        shutdown: &CancellationToken,
    ) -> impl std::future::Future<Output = Ended> + Send {
        self.forward(session, events, shutdown)
    }
}
