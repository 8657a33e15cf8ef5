//! Changes the watch triggers could not record, made visible to operators.
//!
//! The triggers never fail an application's write for statgate's sake: when even the overflow
//! payload cannot be sent (the change table unusable, a broken `emit_change`), the change is lost
//! to every gateway. Their last resort counts it in `statgate.unrecorded_changes` (migration
//! 0007) besides warning the writing client, which no operator sees. This task reads the total
//! every interval into the `statgate_unrecorded_changes` gauge and, when it grows, logs which
//! tables lost changes and resyncs every signature: a lost change may have touched any of them.
//! Reads go through the pool (primary), one small aggregate per interval.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::feed::FeedEvent;
use crate::telemetry::Metrics;

const TOTAL: &str = "select coalesce(sum(count), 0)::int8 from statgate.unrecorded_changes";
/// The tables behind a growth, for the log (a handful: the count is what matters).
const BY_TABLE: &str = "select schema_name, table_name, sum(count)::int8,
        (array_agg(last_error order by last_at desc nulls last))[1]
   from statgate.unrecorded_changes group by 1, 2 order by 3 desc limit 5";

/// The task: polls the count of unrecorded changes until shutdown.
pub struct UnrecordedChanges {
    pool: PgPool,
    every: Duration,
    events: mpsc::Sender<FeedEvent>,
    metrics: Arc<Metrics>,
    /// The total before the gateway served anyone: what was lost before is covered by every
    /// subscription's first value, what is lost after is a growth. Read at start-up, not at the
    /// task's first tick, so a change lost between a first subscription and that tick is not
    /// taken for the baseline (seen in CI under load).
    baseline: Option<i64>,
}

impl UnrecordedChanges {
    /// Reads the baseline; call it before the gateway accepts its first subscription. A
    /// database that cannot answer yet leaves the first successful read as the baseline.
    pub async fn start(
        pool: PgPool,
        every: Duration,
        events: mpsc::Sender<FeedEvent>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let baseline = total(&pool).await.ok();
        if let Some(total) = baseline {
            metrics.unrecorded_changes.set(total);
        }
        Self {
            pool,
            every,
            events,
            metrics,
            baseline,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.every, self.every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last = self.baseline;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let total = match total(&self.pool).await {
                Ok(total) => total,
                Err(err) => {
                    if !failing {
                        tracing::warn!(error = %err, "cannot read statgate.unrecorded_changes (database down, or migration 0007 missing)");
                    }
                    failing = true;
                    continue;
                }
            };
            failing = false;
            self.metrics.unrecorded_changes.set(total);
            // Without a baseline from start-up, the first read is it.
            if let Some(before) = last.filter(|before| total > *before) {
                self.report(total - before).await;
                if self.events.send(FeedEvent::Resync).await.is_err() {
                    return;
                }
            }
            last = Some(total);
        }
    }

    async fn report(&self, lost: i64) {
        let tables: Vec<(String, String, i64, Option<String>)> = sqlx::query_as(BY_TABLE)
            .fetch_all(&self.pool)
            .await
            .unwrap_or_default();
        let tables: Vec<String> = tables
            .into_iter()
            .map(|(schema, table, count, error)| {
                format!(
                    "{schema}.{table}: {count} ({})",
                    error.as_deref().unwrap_or("no error recorded")
                )
            })
            .collect();
        tracing::warn!(
            lost,
            tables = %tables.join("; "),
            "changes the triggers could not record (statgate.unrecorded_changes grew); resyncing every signature"
        );
    }
}

/// The changes the triggers could not record, in total.
async fn total(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(TOTAL).fetch_one(pool).await
}
