//! The table change feed (`STATGATE_CHANGE_FEED=table`): the watch triggers append their
//! payloads to `statgate.changes` (migration 0004) instead of calling `pg_notify`, and this
//! poller reads the new rows every few milliseconds and hands the dispatcher the same
//! [`FeedEvent`]s the LISTEN connection would. It lives under `listener` because it is the
//! listener's other mode: same payloads, same dispatcher, same [`super::ListenerStatus`] for `/readyz`.
//!
//! Why: NOTIFY takes a database-wide lock at commit, so notifying writers commit one at a
//! time; appending a row does not serialise them. The rows also outlive the poller's
//! connection, so a lost connection or a stopped gateway loses no change.
//!
//! How it reads "exactly the rows that became visible since last time": commit order is not
//! `id` order, so remembering the last id would skip a slow transaction's rows. Each row
//! carries its writer's transaction id; every read returns, with the rows, the snapshot it
//! was taken in, and the next read asks for the rows whose transaction that snapshot did not
//! see (still running, or not yet started). Nothing is deleted on read, so several gateways
//! can share one database; rows are deleted once they are older than [`RETENTION`].
//!
//! It must never delete a row that a live gateway may not have read yet, and never block
//! writers (it only reads, and deletes old rows in small statements).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, PgPool};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::feed::FeedEvent;
use super::payload::{parse_payload, UnreadablePayloads};
use super::supervisor::{Ended, Feed};
use crate::config::ChangeFeed;
use crate::telemetry::Metrics;

/// `application_name` of the polling connection, as seen in `pg_stat_activity`.
pub const POLLER_APPLICATION_NAME: &str = "statgate-feed-poller";
/// Rows are kept this long after the poller first saw their transaction finished, so every
/// gateway polling the same database reads them first.
pub const RETENTION: Duration = Duration::from_secs(60);
/// How often old rows are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// A poll that takes longer fails, and the poller reconnects.
const POLL_TIMEOUT_MS: &str = "5000";

/// One read: the snapshot it ran in, and the payloads of the rows that snapshot sees and the
/// previous one did not, in id order. The snapshot and the rows come from one statement, so
/// from one snapshot.
const READ_NEW: &str = "select pg_current_snapshot()::text,
        coalesce((select array_agg(payload order by id) from statgate.changes
                   where xid >= $1::text::xid8 or xid = any($2::text::xid8[])), '{}')";
const SWEEP: &str = "delete from statgate.changes where xid < $1::text::xid8";

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("change table read failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("unreadable snapshot {0:?}")]
    Snapshot(String),
    #[error(
        "STATGATE_CHANGE_FEED=table or wal needs migration 0004 (statgate.set_feed_mode is \
         missing): run `statgate migrate`"
    )]
    NotMigrated,
}

/// A `pg_snapshot` (`xmin:xmax:xip,…`): transactions below `xmin` had finished, those at or
/// above `xmax` had not started, and those in `in_progress` were running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub xmin: u64,
    pub xmax: u64,
    pub in_progress: Vec<u64>,
}

impl Snapshot {
    pub fn parse(text: &str) -> Result<Snapshot, FeedError> {
        let bad = || FeedError::Snapshot(text.to_owned());
        let mut parts = text.split(':');
        let (Some(xmin), Some(xmax), Some(xip), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let number = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
        let in_progress = xip
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(number)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Snapshot {
            xmin: number(xmin)?,
            xmax: number(xmax)?,
            in_progress,
        })
    }
}

/// What the next read asks for: rows of transactions at or above `from`, or in `also`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    from: u64,
    also: Vec<u64>,
}

impl Cursor {
    /// Before the first read: every row still in the table (changes made while no gateway
    /// ran are delivered).
    pub fn everything() -> Cursor {
        Cursor {
            from: 0,
            also: Vec::new(),
        }
    }

    /// After a read in `snapshot`: the rows that snapshot did not see.
    pub fn after(snapshot: &Snapshot) -> Cursor {
        Cursor {
            from: snapshot.xmax,
            also: snapshot.in_progress.clone(),
        }
    }

    fn start_param(&self) -> String {
        self.from.to_string()
    }

    /// The in-progress list as an array literal, `{1,2}`.
    fn running_param(&self) -> String {
        let list: Vec<String> = self.also.iter().map(u64::to_string).collect();
        format!("{{{}}}", list.join(","))
    }
}

/// Makes the database's watch triggers use `mode`, so the triggers and this gateway agree.
/// Every gateway of one database must be configured alike: the last to start decides.
pub async fn set_database_mode(pool: &PgPool, mode: ChangeFeed) -> Result<(), FeedError> {
    let installed: bool =
        sqlx::query_scalar("select to_regproc('statgate.set_feed_mode') is not null")
            .fetch_one(pool)
            .await?;
    if !installed {
        // Before migration 0004 the triggers can only notify.
        return match mode {
            ChangeFeed::Notify => Ok(()),
            ChangeFeed::Table | ChangeFeed::Wal => Err(FeedError::NotMigrated),
        };
    }
    let previous: Option<String> = sqlx::query_scalar("select statgate.set_feed_mode($1)")
        .bind(mode.as_str())
        .fetch_one(pool)
        .await?;
    if previous.as_deref() != Some(mode.as_str()) {
        tracing::info!(
            previous = previous.as_deref().unwrap_or("unset"),
            mode = mode.as_str(),
            "change feed mode of the database set"
        );
    }
    Ok(())
}

/// The change-table feed: each session is one polling connection (run by a
/// [`Supervisor`](super::Supervisor)); the cursor and the sweep schedule outlive sessions.
pub struct TableFeed {
    database_url: String,
    interval: Duration,
    metrics: Arc<Metrics>,
    cursor: Cursor,
    sweeps: Sweeps,
}

impl TableFeed {
    pub fn new(database_url: String, interval: Duration, metrics: Arc<Metrics>) -> Self {
        TableFeed {
            database_url,
            interval,
            metrics,
            cursor: Cursor::everything(),
            sweeps: Sweeps::default(),
        }
    }

    /// One attempt to connect. A connection counts only once it may read the change table:
    /// otherwise (a role missing its grant) every poll would fail at once and the poller would
    /// reconnect and resync in a hot loop, ready all the while.
    async fn open(&self) -> Result<PgConnection, sqlx::Error> {
        let options: PgConnectOptions = self.database_url.parse()?;
        let options = options
            .application_name(POLLER_APPLICATION_NAME)
            .options([("statement_timeout", POLL_TIMEOUT_MS)]);
        let mut connection = PgConnection::connect_with(&options).await?;
        sqlx::query("select from statgate.changes limit 0")
            .execute(&mut connection)
            .await?;
        Ok(connection)
    }

    /// Reads new rows every tick until an error, shutdown, or the dispatcher is gone.
    async fn poll(
        &mut self,
        mut connection: PgConnection,
        events: &mpsc::Sender<FeedEvent>,
        shutdown: &CancellationToken,
    ) -> Ended {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut unreadable = UnreadablePayloads::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ended::Shutdown,
                _ = tick.tick() => {}
            }
            let (snapshot, payloads) = match read_new(&mut connection, &self.cursor).await {
                Ok(read) => read,
                Err(err) => return failed(&err),
            };
            for payload in &payloads {
                self.metrics.notifications.inc();
                match parse_payload(payload) {
                    Ok(change) => {
                        if events.send(FeedEvent::Change(change)).await.is_err() {
                            return Ended::Shutdown;
                        }
                    }
                    Err(err) => unreadable.drop_one(&err, &self.metrics),
                }
            }
            self.cursor = Cursor::after(&snapshot);
            if let Some(below) = self.sweeps.due(Instant::now(), snapshot.xmin) {
                if let Err(err) = sqlx::query(SWEEP)
                    .bind(below.to_string())
                    .execute(&mut connection)
                    .await
                {
                    return failed(&err.into());
                }
            }
        }
    }
}

fn failed(err: &FeedError) -> Ended {
    tracing::warn!(error = %err, "feed poller failed");
    Ended::Replace
}

impl Feed for TableFeed {
    type Session = PgConnection;
    type Error = sqlx::Error;
    const NAME: &'static str = "feed poller";

    fn connect(
        &self,
    ) -> impl std::future::Future<Output = Result<PgConnection, sqlx::Error>> + Send {
        self.open()
    }

    fn run(
        &mut self,
        session: PgConnection,
        events: &mpsc::Sender<FeedEvent>,
        shutdown: &CancellationToken,
    ) -> impl std::future::Future<Output = Ended> + Send {
        self.poll(session, events, shutdown)
    }
}

async fn read_new(
    connection: &mut PgConnection,
    cursor: &Cursor,
) -> Result<(Snapshot, Vec<String>), FeedError> {
    let (snapshot, payloads): (String, Vec<String>) = sqlx::query_as(READ_NEW)
        .bind(cursor.start_param())
        .bind(cursor.running_param())
        .fetch_one(connection)
        .await?;
    Ok((Snapshot::parse(&snapshot)?, payloads))
}

/// The deletion schedule: every [`SWEEP_EVERY`] the poller notes the oldest running
/// transaction; rows of transactions below a mark noted [`RETENTION`] ago are deleted (those
/// transactions had finished a full retention period ago, so every live poller has read them).
#[derive(Debug, Default)]
struct Sweeps {
    marks: VecDeque<(Instant, u64)>,
}

impl Sweeps {
    /// Records `xmin` when a mark is due, and returns the bound to delete below, if any.
    fn due(&mut self, now: Instant, xmin: u64) -> Option<u64> {
        let mark_due = self
            .marks
            .back()
            .is_none_or(|(at, _)| now.duration_since(*at) >= SWEEP_EVERY);
        if !mark_due {
            return None;
        }
        self.marks.push_back((now, xmin));
        let mut below = None;
        while let Some((at, xid)) = self.marks.front() {
            if now.duration_since(*at) < RETENTION {
                break;
            }
            below = Some(*xid);
            self.marks.pop_front();
        }
        below
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_parse_with_and_without_running_transactions() {
        assert_eq!(
            Snapshot::parse("754:759:754,757").expect("parses"),
            Snapshot {
                xmin: 754,
                xmax: 759,
                in_progress: vec![754, 757],
            }
        );
        assert_eq!(
            Snapshot::parse("760:760:").expect("parses").in_progress,
            Vec::<u64>::new()
        );
        for bad in ["", "1:2", "1:2:3:4", "a:2:", "1:2:x", "-1:2:"] {
            assert!(Snapshot::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_next_read_asks_for_what_the_last_snapshot_did_not_see() {
        let first = Cursor::everything();
        assert_eq!(
            (first.start_param(), first.running_param()),
            ("0".into(), "{}".into())
        );
        let snapshot = Snapshot::parse("754:759:754,757").expect("parses");
        let next = Cursor::after(&snapshot);
        assert_eq!(
            (next.start_param(), next.running_param()),
            ("759".into(), "{754,757}".into())
        );
    }

    #[test]
    fn rows_are_deleted_only_a_full_retention_after_their_mark() {
        let start = Instant::now();
        let mut sweeps = Sweeps::default();
        assert_eq!(
            sweeps.due(start, 100),
            None,
            "the first mark deletes nothing"
        );
        assert_eq!(
            sweeps.due(start + Duration::from_secs(1), 110),
            None,
            "not due yet"
        );
        assert_eq!(sweeps.due(start + SWEEP_EVERY, 120), None);
        assert_eq!(
            sweeps.due(start + RETENTION, 500),
            Some(100),
            "the mark noted a retention ago bounds the delete"
        );
        assert_eq!(sweeps.due(start + RETENTION + SWEEP_EVERY, 600), Some(120));
    }
}
