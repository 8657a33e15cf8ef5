//! The WAL change feed (`STATGATE_CHANGE_FEED=wal`): the watched tables' changes read from a
//! logical replication slot with PostgreSQL's `pgoutput` plugin and the publication
//! `statgate_watches` (migration 0010 keeps it equal to the watched tables).
//!
//! Why: the other feeds make every writer pay in its own transaction (the watch triggers build
//! a payload, then NOTIFY, whose commit-time lock serialises writers, or insert a row). Here no
//! watch trigger runs: the writer writes its rows and the WAL it writes anyway, and statgate
//! reads the changes after commit, in commit order, with the new row attached. Matching,
//! recompute and push are unchanged: each row change becomes the same
//! [`Change`](crate::matcher::Change) a trigger's payload would (see [`pgoutput`]).
//!
//! Nothing lost: a position is confirmed to PostgreSQL only once the dispatcher has matched and
//! scheduled every change before it ([`FeedEvent::Reached`]). With a temporary slot (the
//! default) a new connection starts at the server's current position, so every session
//! resyncs, as the other feeds do. With a named slot (`STATGATE_WAL_SLOT`) a reconnected or
//! restarted node resumes after its confirmed position and needs no resync (`listener::wal::slot`).
//!
//! Nothing retained forever: a named slot keeps the WAL it has not confirmed, also while its
//! node is down; `max_slot_wal_keep_size` bounds that, and a slot invalidated by it is created
//! again with a resync. `statgate_wal_feed_lag_bytes` and `_seconds` show how far behind it is.
//!
//! The replication protocol is spoken by `pgwire-replication` on a connection of its own;
//! TLS and SCRAM as the pool's (see [`target`]). A canary (as for LISTEN) sends a logical
//! decoding message through the pool every `STATGATE_FEED_CANARY_SECS` and replaces a session
//! that does not deliver it by the next one.

pub mod checks;
pub mod pgoutput;
mod slot;
pub mod target;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgwire_replication::{Lsn, PgWireError, ReplicationClient, ReplicationEvent};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::feed::{Confirmed, FeedEvent};
use super::supervisor::{Ended, Feed};
use crate::telemetry::Metrics;
use pgoutput::{DecodeError, Decoder};
use slot::{Opened, SlotError};
use target::Target;

pub use target::{TargetError, PUBLICATION, WAL_APPLICATION_NAME};

/// The prefix of the canary's logical decoding messages.
const CANARY_PREFIX: &str = "statgate.canary";
/// Connecting, authenticating and opening the slot may take this long.
const CONNECT_ATTEMPT: Duration = Duration::from_secs(5);
/// How often the slot's lag in bytes is read.
const LAG_EVERY: Duration = Duration::from_secs(2);
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("replication connection: {0}")]
    Replication(#[from] PgWireError),
    #[error("the replication connection did not open within {} s", CONNECT_ATTEMPT.as_secs())]
    Timeout,
    #[error(transparent)]
    Slot(#[from] SlotError),
}

/// Which slot a node reads.
#[derive(Debug)]
enum SlotChoice {
    /// `STATGATE_WAL_SLOT`: permanent, resumed across sessions and restarts.
    Named(String),
    /// One temporary slot per session, named after the gateway and the session.
    Temporary { prefix: String, next: AtomicU64 },
}

/// The WAL feed: each session is one replication connection on the node's slot (run by a
/// [`Supervisor`](super::Supervisor)).
pub struct WalFeed {
    target: Target,
    slot: SlotChoice,
    pool: PgPool,
    metrics: Arc<Metrics>,
    canary: Option<Duration>,
    gateway_id: String,
}

/// One open replication stream.
pub struct WalSession {
    client: ReplicationClient,
    slot: String,
    opened: Opened,
}

impl WalFeed {
    /// The feed of the database at `url`; `slot` is `STATGATE_WAL_SLOT`; probes go through
    /// `pool` every `canary` (zero: none).
    pub fn new(
        url: &str,
        slot: Option<String>,
        pool: PgPool,
        metrics: Arc<Metrics>,
        canary: Duration,
    ) -> Result<Self, TargetError> {
        let gateway_id = format!("{:012x}", rand::random::<u64>() >> 16);
        let slot = match slot {
            Some(name) => SlotChoice::Named(name),
            None => SlotChoice::Temporary {
                prefix: format!("statgate_tmp_{gateway_id}"),
                next: AtomicU64::new(1),
            },
        };
        Ok(WalFeed {
            target: Target::from_url(url)?,
            slot,
            pool,
            metrics,
            canary: (!canary.is_zero()).then_some(canary),
            gateway_id,
        })
    }

    async fn open(&self) -> Result<WalSession, WalError> {
        let (name, temporary) = match &self.slot {
            SlotChoice::Named(name) => (name.clone(), false),
            // A new name per session: the last session's walsender may not be gone yet.
            SlotChoice::Temporary { prefix, next } => (
                format!("{prefix}_{}", next.fetch_add(1, Ordering::Relaxed)),
                true,
            ),
        };
        let attempt = async {
            let mut client = ReplicationClient::connect_gated(self.target.config(&name)).await?;
            let opened = slot::open(&mut client, &name, temporary, &self.metrics).await?;
            client.start().await?;
            client.wait_started().await?;
            Ok::<_, WalError>(WalSession {
                client,
                slot: name.clone(),
                opened,
            })
        };
        let session = tokio::time::timeout(CONNECT_ATTEMPT, attempt)
            .await
            .map_err(|_| WalError::Timeout)??;
        tracing::info!(slot = %session.slot, opened = ?session.opened, "replication stream started");
        Ok(session)
    }

    /// Forwards the stream's changes until it ends, the canary finds it silent, or shutdown.
    async fn forward(
        &self,
        WalSession {
            mut client, slot, ..
        }: WalSession,
        events: &mpsc::Sender<FeedEvent>,
        shutdown: &CancellationToken,
    ) -> Ended {
        let confirmed = Arc::new(Confirmed::default());
        let lag = LagProbe::start(self.pool.clone(), slot.clone(), self.metrics.clone());
        let mut stream = Stream {
            decoder: Decoder::default(),
            transaction: None,
            events,
            confirmed: &confirmed,
            metrics: &self.metrics,
        };
        let mut canary = WalCanary::new(self.canary, &self.gateway_id);
        let ended = loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break Ended::Shutdown,
                _ = confirmed.changed() => {
                    client.update_applied_lsn(Lsn::from_u64(confirmed.get()));
                    continue;
                }
                _ = canary.tick() => {
                    if canary.overdue(&self.metrics) {
                        break Ended::Replace;
                    }
                    canary.send(&self.pool);
                    continue;
                }
                event = client.recv() => event,
            };
            let event = match event {
                Ok(Some(event)) => event,
                Ok(None) => {
                    tracing::warn!(slot = %slot, "replication stream ended");
                    break Ended::Replace;
                }
                Err(err) => {
                    tracing::warn!(slot = %slot, error = %err, "replication connection lost");
                    break Ended::Replace;
                }
            };
            if let ReplicationEvent::Message {
                prefix, content, ..
            } = &event
            {
                if prefix == CANARY_PREFIX {
                    canary.returned(content);
                    continue;
                }
            }
            if let Err(Gone) = stream.handle(event).await {
                break Ended::Shutdown;
            }
        };
        lag.stop();
        client.stop();
        ended
    }
}

impl Feed for WalFeed {
    type Session = WalSession;
    type Error = WalError;
    const NAME: &'static str = "wal feed";

    fn connect(&self) -> impl std::future::Future<Output = Result<WalSession, WalError>> + Send {
        self.open()
    }

    fn resumes(session: &WalSession) -> bool {
        session.opened == Opened::Resumed
    }

    fn run(
        &mut self,
        session: WalSession,
        events: &mpsc::Sender<FeedEvent>,
        shutdown: &CancellationToken,
    ) -> impl std::future::Future<Output = Ended> + Send {
        self.forward(session, events, shutdown)
    }
}

/// The dispatcher is gone (shutdown).
struct Gone;

/// The transaction being received.
struct Transaction {
    at_micros: i64,
    lsn: u64,
    /// A message of it could not be decoded, and a resync was asked for.
    resynced: bool,
}

/// Turns the stream's events into [`FeedEvent`]s, in order.
struct Stream<'a> {
    decoder: Decoder,
    transaction: Option<Transaction>,
    events: &'a mpsc::Sender<FeedEvent>,
    confirmed: &'a Arc<Confirmed>,
    metrics: &'a Metrics,
}

impl Stream<'_> {
    async fn handle(&mut self, event: ReplicationEvent) -> Result<(), Gone> {
        match event {
            ReplicationEvent::Begin {
                final_lsn,
                commit_time_micros,
                ..
            } => {
                self.transaction = Some(Transaction {
                    at_micros: commit_time_micros.saturating_add(PG_EPOCH_MICROS),
                    lsn: final_lsn.as_u64(),
                    resynced: false,
                });
            }
            ReplicationEvent::XLogData { data, .. } => self.decode(&data).await?,
            ReplicationEvent::Commit {
                end_lsn,
                commit_time_micros,
                ..
            } => {
                self.transaction = None;
                let at = commit_time_micros.saturating_add(PG_EPOCH_MICROS);
                let behind = (chrono::Utc::now().timestamp_micros() - at).max(0);
                self.metrics.wal_lag_seconds.set(behind as f64 / 1e6);
                self.reached(end_lsn).await?;
            }
            // Between transactions, the server has sent everything up to `wal_end`.
            ReplicationEvent::KeepAlive { wal_end, .. } if self.transaction.is_none() => {
                self.metrics.wal_lag_seconds.set(0.0);
                self.reached(wal_end).await?;
            }
            ReplicationEvent::KeepAlive { .. }
            | ReplicationEvent::Message { .. }
            | ReplicationEvent::StoppedAt { .. } => {}
        }
        Ok(())
    }

    async fn decode(&mut self, data: &[u8]) -> Result<(), Gone> {
        let (at, lsn) = self
            .transaction
            .as_ref()
            .map_or((None, 0), |t| (Some(t.at_micros), t.lsn));
        match self.decoder.decode(data, at, lsn) {
            Ok(changes) => {
                for change in changes {
                    self.metrics.notifications.inc();
                    self.send(FeedEvent::Change(change)).await?;
                }
            }
            Err(err) => self.undecodable(&err).await?,
        }
        Ok(())
    }

    /// A message statgate cannot read: which rows changed is unknown, so every signature is
    /// recomputed (once per transaction). The stream goes on: a later message of another
    /// table is still read.
    async fn undecodable(&mut self, err: &DecodeError) -> Result<(), Gone> {
        self.metrics.notification_errors.inc();
        let already = self
            .transaction
            .as_mut()
            .is_some_and(|t| std::mem::replace(&mut t.resynced, true));
        if !already {
            tracing::error!(error = %err, "a WAL change could not be decoded; resyncing every signature");
            self.send(FeedEvent::Resync).await?;
        }
        Ok(())
    }

    async fn reached(&mut self, lsn: Lsn) -> Result<(), Gone> {
        self.send(FeedEvent::Reached {
            lsn: lsn.as_u64(),
            confirmed: self.confirmed.clone(),
        })
        .await
    }

    async fn send(&self, event: FeedEvent) -> Result<(), Gone> {
        self.events.send(event).await.map_err(|_| Gone)
    }
}

/// Reads the slot's lag in bytes into `statgate_wal_feed_lag_bytes` every [`LAG_EVERY`], on
/// the pool, for as long as the session runs.
struct LagProbe(tokio::task::JoinHandle<()>);

impl LagProbe {
    fn start(pool: PgPool, slot: String, metrics: Arc<Metrics>) -> LagProbe {
        LagProbe(tokio::spawn(async move {
            let mut tick = tokio::time::interval(LAG_EVERY);
            loop {
                tick.tick().await;
                let lag: Result<Option<i64>, _> = sqlx::query_scalar(
                    "select (pg_current_wal_lsn() - confirmed_flush_lsn)::int8 \
                     from pg_replication_slots where slot_name = $1",
                )
                .bind(&slot)
                .fetch_optional(&pool)
                .await
                .map(Option::flatten);
                if let Ok(Some(bytes)) = lag {
                    metrics.wal_lag_bytes.set(bytes.max(0));
                }
            }
        }))
    }

    fn stop(self) {
        self.0.abort();
    }
}

/// The canary of one session: a logical decoding message sent through the pool every
/// interval must come back through the stream by the next one (see the module doc).
struct WalCanary {
    interval: Option<tokio::time::Interval>,
    gateway_id: String,
    sequence: u64,
    /// The probe not back yet; cleared by its return, or by its sender if it could not be sent.
    outstanding: Arc<std::sync::Mutex<Option<String>>>,
}

impl WalCanary {
    fn new(every: Option<Duration>, gateway_id: &str) -> WalCanary {
        let interval = every.map(|every| {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        WalCanary {
            interval,
            gateway_id: gateway_id.to_owned(),
            sequence: 0,
            outstanding: Arc::default(),
        }
    }

    /// The next probe time; never, without a canary.
    async fn tick(&mut self) {
        match self.interval.as_mut() {
            Some(interval) => {
                interval.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// True (and counted) when the last probe has not come back.
    fn overdue(&self, metrics: &Metrics) -> bool {
        let outstanding = self.lock().clone();
        let Some(tag) = outstanding else {
            return false;
        };
        metrics.canary_failures.inc();
        tracing::warn!(probe = %tag, "wal feed silent: a probe did not come back; replacing the replication connection");
        true
    }

    /// Sends the next probe from a task of its own; one that cannot be sent is not waited for
    /// (pool trouble does not condemn the stream).
    fn send(&mut self, pool: &PgPool) {
        self.sequence += 1;
        let tag = format!("{}:{}", self.gateway_id, self.sequence);
        *self.lock() = Some(tag.clone());
        let pool = pool.clone();
        let outstanding = self.outstanding.clone();
        tokio::spawn(async move {
            let sent = sqlx::query("select pg_logical_emit_message(false, $1, $2)")
                .bind(CANARY_PREFIX)
                .bind(&tag)
                .execute(&pool)
                .await;
            if let Err(err) = sent {
                tracing::warn!(error = %err, "wal feed probe could not be sent");
                let mut outstanding = outstanding
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if outstanding.as_deref() == Some(tag.as_str()) {
                    *outstanding = None;
                }
            }
        });
    }

    fn returned(&mut self, content: &[u8]) {
        let mut outstanding = self.lock();
        if outstanding.as_deref().map(str::as_bytes) == Some(content) {
            *outstanding = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.outstanding
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
