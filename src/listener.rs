//! The change feed: one dedicated connection doing `LISTEN statgate_changes`, and the task
//! that turns each notification into due signatures.
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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgListener, PgNotification, PgPoolOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::listener::debounce::Debounce;
use crate::matcher::{Change, Matcher, TableName};
use crate::scheduler::Scheduler;
use crate::telemetry::Metrics;

pub mod debounce;
pub mod table;
pub mod unrecorded;

pub const CHANNEL: &str = "statgate_changes";
/// Longest wait between two connection attempts of the change feed, so that after an outage it
/// is back (and resynced) within about this long of PostgreSQL accepting connections again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// How long one attempt to open the LISTEN connection may take (sqlx retries a refused
/// connection within it); a failed attempt is logged and retried with back-off.
const CONNECT_ATTEMPT: Duration = Duration::from_secs(2);
/// `application_name` of the LISTEN connection, as seen in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "statgate-listener";
/// Whole-table work (a resync, or an `overflow` payload's table) asked for again within this
/// long after it ran is merged into one more run at the window's end.
pub const BULK_WINDOW: Duration = Duration::from_millis(500);
/// Unreadable payloads are logged at most this often (each one is counted).
const UNREADABLE_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the listener hands to the dispatcher.
#[derive(Debug)]
pub enum FeedEvent {
    Change(Change),
    /// Notifications may have been lost: recompute everything.
    Resync,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("payload is not JSON: {0}")]
    Json(String),
    #[error("unsupported payload version {0}")]
    Version(u64),
}

#[derive(Deserialize)]
struct Payload {
    v: u64,
    #[serde(default = "public")]
    schema: String,
    table: String,
    #[serde(default)]
    op: String,
    #[serde(default)]
    rows: HashMap<String, Value>,
    #[serde(default)]
    overflow: bool,
    at: Option<i64>,
}

fn public() -> String {
    "public".to_owned()
}

/// Parses a `statgate_changes` payload (docs/ARCHITECTURE.md, "The change payload"). A column whose value is not a list is
/// treated as a list of one.
pub fn parse_payload(payload: &str) -> Result<Change, PayloadError> {
    let parsed: Payload =
        serde_json::from_str(payload).map_err(|err| PayloadError::Json(err.to_string()))?;
    if parsed.v != 1 {
        return Err(PayloadError::Version(parsed.v));
    }
    let rows = parsed
        .rows
        .into_iter()
        .map(|(column, values)| match values {
            Value::Array(values) => (column, values),
            single => (column, vec![single]),
        })
        .collect();
    Ok(Change {
        table: TableName {
            schema: parsed.schema,
            table: parsed.table,
        },
        op: parsed.op,
        rows,
        overflow: parsed.overflow,
        at_micros: parsed.at,
    })
}

/// Unreadable payloads. statgate's triggers never write one, so whoever sent it is not telling
/// statgate about a change: it is dropped (resyncing for it would let any role that can NOTIFY
/// make the gateway recompute everything), counted in `statgate_notification_errors_total` and
/// logged at most once per [`UNREADABLE_LOG_EVERY`], with how many were dropped since.
#[derive(Debug, Default)]
pub(crate) struct UnreadablePayloads {
    last_logged: Option<tokio::time::Instant>,
    since_logged: u64,
}

impl UnreadablePayloads {
    pub(crate) fn drop_one(&mut self, err: &PayloadError, metrics: &Metrics) {
        metrics.notification_errors.inc();
        self.since_logged += 1;
        let now = tokio::time::Instant::now();
        if self
            .last_logged
            .is_some_and(|at| now.duration_since(at) < UNREADABLE_LOG_EVERY)
        {
            return;
        }
        tracing::warn!(error = %err, dropped = self.since_logged,
            "unreadable change payloads dropped (statgate's triggers never send them)");
        self.last_logged = Some(now);
        self.since_logged = 0;
    }
}

/// Whether the LISTEN connection is up, for `/readyz`.
#[derive(Debug, Default)]
pub struct ListenerStatus {
    connected: AtomicBool,
}

impl ListenerStatus {
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn set(&self, connected: bool, metrics: &Metrics) {
        self.connected.store(connected, Ordering::Relaxed);
        metrics.listener_connected.set(i64::from(connected));
    }
}

/// The listener task: connects (with back-off), LISTENs, forwards, reconnects.
pub struct Listener {
    pub database_url: String,
    pub events: mpsc::Sender<FeedEvent>,
    pub status: Arc<ListenerStatus>,
    pub metrics: Arc<Metrics>,
    pub canary: Option<Canary>,
}

/// A probe sent through the database on an interval to prove the feed still delivers. A LISTEN
/// connection can look alive (TCP up, no error) while nothing arrives: a stalled backend, a
/// proxy that dropped its state. If a probe is not back by the next interval, the connection is
/// treated as dead: it is replaced (which resyncs every signature) and `/readyz` says 503 until
/// then. Probes travel through the pool, so a probe that cannot be *sent* (pool trouble) does
/// not condemn the listener.
pub struct Canary {
    pub pool: sqlx::PgPool,
    pub every: Duration,
    /// Distinguishes this gateway's probes from other gateways' on the same database.
    pub gateway_id: String,
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

/// Why a LISTEN session ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Shutdown,
    /// The connection was lost, found silent, or the dispatcher is gone: replace it.
    Replace,
}

/// A LISTEN connection and the backend serving it.
struct Connected {
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

impl Listener {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut first = true;
        while !shutdown.is_cancelled() {
            let Some(Connected {
                listener,
                backend_pid,
            }) = self.connect(&shutdown).await
            else {
                break;
            };
            self.status.set(true, &self.metrics);
            if first {
                tracing::info!(backend_pid, "listener connected");
            } else {
                self.metrics.listener_reconnects.inc();
                tracing::info!(
                    backend_pid,
                    "listener reconnected, resyncing every signature"
                );
            }
            first = false;
            if self.events.send(FeedEvent::Resync).await.is_err() {
                break;
            }
            let ended = self.forward(listener, backend_pid, &shutdown).await;
            self.status.set(false, &self.metrics);
            if ended == Ended::Shutdown {
                break;
            }
        }
        self.status.set(false, &self.metrics);
    }

    /// Connects and LISTENs, retrying with capped exponential back-off until shutdown.
    async fn connect(&self, shutdown: &CancellationToken) -> Option<Connected> {
        retry_with_backoff("listener", shutdown, || async {
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
            Ok(Connected {
                listener,
                backend_pid,
            })
        })
        .await
    }

    /// Forwards notifications until the connection drops, the canary finds it silent, or
    /// shutdown.
    async fn forward(
        &self,
        listener: PgListener,
        backend_pid: i32,
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
                    if self.events.send(FeedEvent::Change(change)).await.is_err() {
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

/// Runs `attempt` until it succeeds, sleeping with capped exponential back-off between tries;
/// `None` once shutdown begins. Both change-feed modes connect through it.
pub(crate) async fn retry_with_backoff<T, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        match attempt().await {
            Ok(connected) => return Some(connected),
            Err(err) => {
                tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "{what} cannot connect")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The dispatch task: matches each change and marks the signatures it touches as due.
///
/// A change naming rows marks its signatures as targeted work. Whole-table work (a resync, an
/// `overflow` payload) is bulk work, behind targeted work in the [`Scheduler`], and debounced
/// per table (overflow) or globally (resync) over [`BULK_WINDOW`]: a burst of requests costs
/// one run at once and one at the window's end.
pub async fn dispatch(
    mut events: mpsc::Receiver<FeedEvent>,
    matcher: Arc<Matcher>,
    hub: Arc<Hub>,
    scheduler: Arc<Scheduler>,
    metrics: Arc<Metrics>,
) {
    let bulk = Bulk {
        matcher,
        hub,
        scheduler,
        metrics,
    };
    let mut resyncs: Debounce<()> = Debounce::new(BULK_WINDOW);
    let mut overflows: Debounce<TableName> = Debounce::new(BULK_WINDOW);
    loop {
        let next_due = [resyncs.next_due(), overflows.next_due()]
            .into_iter()
            .flatten()
            .min();
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => Some(event),
                None => break,
            },
            _ = tokio::time::sleep_until(next_due.unwrap_or_else(tokio::time::Instant::now)), if next_due.is_some() => None,
        };
        let now = tokio::time::Instant::now();
        match event {
            Some(FeedEvent::Change(change)) if change.overflow => {
                let matched = bulk.note(&change);
                if matched.is_empty() {
                    // Nobody follows the table: nothing to run, nothing to remember.
                } else if overflows.request(change.table.clone(), now) {
                    bulk.recompute(matched.into_iter().collect());
                } else {
                    bulk.metrics.bulk_merged.inc();
                }
            }
            Some(FeedEvent::Change(change)) => {
                let matched = bulk.note(&change);
                bulk.scheduler.mark_due(matched);
            }
            Some(FeedEvent::Resync) => {
                if resyncs.request((), now) {
                    bulk.resync(&mut overflows);
                } else {
                    bulk.metrics.bulk_merged.inc();
                }
            }
            None => {}
        }
        if !resyncs.take_due(now).is_empty() {
            bulk.resync(&mut overflows);
        }
        for table in overflows.take_due(now) {
            let everything_on = Change {
                table,
                op: String::new(),
                rows: HashMap::new(),
                overflow: true,
                at_micros: None,
            };
            bulk.recompute(bulk.matcher.matches(&everything_on).into_iter().collect());
        }
    }
}

/// What the dispatcher needs to mark work due.
struct Bulk {
    matcher: Arc<Matcher>,
    hub: Arc<Hub>,
    scheduler: Arc<Scheduler>,
    metrics: Arc<Metrics>,
}

impl Bulk {
    /// The signatures `change` touches, with its commit time noted on each (for the lag).
    fn note(&self, change: &Change) -> HashSet<u64> {
        let matched = self.matcher.matches(change);
        // Debug level answers "why did (or didn't) my counter move?": each change, the
        // columns it carried, and how many signatures it matched (values are not logged).
        tracing::debug!(
            table = %format!("{}.{}", change.table.schema, change.table.table),
            op = %change.op,
            columns = ?change.rows.keys().collect::<Vec<_>>(),
            overflow = change.overflow,
            matched = matched.len(),
            "change"
        );
        self.metrics.matched_signatures.inc_by(matched.len() as u64);
        for id in &matched {
            if let Some(signature) = self.hub.get(*id) {
                signature.note_change(change.at_micros);
            }
        }
        matched
    }

    /// Every active signature as bulk work; a resync covers every pending overflow.
    fn resync(&self, overflows: &mut Debounce<TableName>) {
        self.metrics.resyncs.inc();
        overflows.clear_pending();
        self.recompute(self.hub.all_ids());
    }

    /// Marks `ids` as bulk work, grouped by query so each chunk batches into few statements.
    fn recompute(&self, mut ids: Vec<u64>) {
        ids.sort_by_cached_key(|id| self.hub.get(*id).map(|s| s.query().name.clone()));
        self.scheduler.mark_bulk(ids);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_parse_into_changes() {
        let change = parse_payload(r#"{"v":1,"schema":"public","table":"post_stats","op":"UPDATE","rows":{"post_id":[3,99]},"at":1700000000000000}"#)
            .expect("parses");
        assert_eq!(change.table, TableName::parse("post_stats"));
        assert_eq!(change.rows["post_id"], vec![json!(3), json!(99)]);
        assert_eq!(change.at_micros, Some(1_700_000_000_000_000));
        assert!(!change.overflow);
    }

    #[test]
    fn overflow_payloads_have_no_rows() {
        let change = parse_payload(r#"{"v":1,"table":"post_stats","op":"INSERT","overflow":true}"#)
            .expect("parses");
        assert!(change.overflow);
        assert_eq!(change.table.schema, "public");
    }

    #[test]
    fn bad_payloads_are_errors_not_panics() {
        for bad in [
            "",
            "{",
            "[]",
            "null",
            r#"{"v":2,"table":"t"}"#,
            r#"{"v":1}"#,
            r#"{"v":1,"table":5}"#,
            r#"{"v":1,"table":"t","rows":[1]}"#,
        ] {
            assert!(parse_payload(bad).is_err(), "{bad}");
        }
    }
}
