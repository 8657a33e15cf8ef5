//! Recompute: turn "these signatures may have changed" into fresh values (docs/ARCHITECTURE.md).
//!
//! The driver takes what the [`Scheduler`] says is due, groups it by query, and runs each group
//! in batches of bounded size as **one** SQL statement per batch, with a bounded number of
//! statements in flight.
//!
//! Failures are isolated: a failed batch is retried signature by signature, so one bad arg set
//! cannot hold back the others; a signature that keeps failing is retried with back-off and
//! its followers get an error event. A statement timeout (set on the pool) bounds every run.
//!
//! Parity: a query may declare `parity`, the live SQL of the same value. The first value of
//! every signature, and a configured share of later ones, is compared with it (one more
//! statement per batch); on divergence the live value is served, a warning names the
//! signature, and `statgate_parity_divergences` counts it. A stats table that drifted (a
//! bug in a hand-written trigger, a manual edit) then shows up instead of being pushed. A batch
//! due a check runs both statements in one read-only REPEATABLE READ transaction, so in one
//! snapshot: a write committing between the two cannot pass for a divergence.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde_json::Value;
use sqlx::{PgExecutor, PgPool, Row};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::{Hub, Published, Signature};
use crate::registry::Query;
use crate::scheduler::Scheduler;
use crate::telemetry::Metrics;

/// Consecutive failures after which followers get an error event.
const NOTIFY_AFTER_FAILURES: u32 = 3;
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How a batch due a parity check begins: both statements see one snapshot, and a read
/// replica (`DATABASE_READ_URL`) accepts it.
const ONE_SNAPSHOT: &str = "begin isolation level repeatable read read only";

/// Everything the recompute driver needs.
#[derive(Clone)]
pub struct Recompute {
    pub pool: PgPool,
    pub hub: Arc<Hub>,
    pub scheduler: Arc<Scheduler>,
    pub metrics: Arc<Metrics>,
    /// Share of recomputes (after a signature's first) compared with the query's parity SQL.
    pub parity_sample_rate: f64,
    pub batch_size: usize,
    pub concurrency: usize,
    /// Time to let changes gather after the first one before a round starts.
    pub window: Duration,
}

impl Recompute {
    /// The driver loop: runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let in_flight = Arc::new(Semaphore::new(self.concurrency));
        let workers = TaskTracker::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.scheduler.wait() => {}
            }
            if !self.window.is_zero() {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(self.window) => {}
                }
            }
            loop {
                // Take work only once a statement slot is free, so what is taken runs now and
                // a targeted signature marked meanwhile is taken before the next bulk chunk.
                let Some(permit) = acquire(&in_flight, &shutdown).await else {
                    return;
                };
                let ids = self.scheduler.take_due(self.batch_size);
                if ids.is_empty() {
                    break;
                }
                let mut first = Some(permit);
                for batch in self.batches(&ids) {
                    let permit = match first.take() {
                        Some(permit) => permit,
                        None => match acquire(&in_flight, &shutdown).await {
                            Some(permit) => permit,
                            None => return,
                        },
                    };
                    let this = self.clone();
                    let shutdown = shutdown.clone();
                    workers.spawn(async move {
                        this.run_batch(&batch, &shutdown).await;
                        drop(permit);
                    });
                }
            }
        }
        workers.close();
    }

    /// Groups due signatures by query into batches, in the order the queries first appear
    /// (targeted ones first); ids whose signature is gone finish now.
    fn batches(&self, ids: &[u64]) -> Vec<Vec<Arc<Signature>>> {
        let mut by_query: IndexMap<*const Query, Vec<Arc<Signature>>> = IndexMap::new();
        let mut gone = Vec::new();
        let signatures: Vec<Arc<Signature>> = ids
            .iter()
            .filter_map(|id| {
                let signature = self.hub.get(*id);
                if signature.is_none() {
                    gone.push(*id);
                }
                signature
            })
            .collect();
        self.scheduler.finish(&gone);
        // Grouped by definition, not name: just after a registry reload, signatures of one name
        // may still hold the old definition for a moment.
        for signature in &signatures {
            by_query
                .entry(Arc::as_ptr(&signature.query()))
                .or_default()
                .push(signature.clone());
        }
        by_query
            .into_values()
            .flat_map(|group| {
                group
                    .chunks(self.batch_size)
                    .map(<[Arc<Signature>]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    async fn run_batch(&self, batch: &[Arc<Signature>], shutdown: &CancellationToken) {
        if let Some(first) = batch.first() {
            tracing::debug!(query = %first.query().name, signatures = batch.len(), "recompute");
        }
        let pending: Vec<Option<i64>> = batch.iter().map(|s| s.take_pending_since()).collect();
        match self.compute(batch).await {
            Ok(values) => {
                for ((signature, value), since) in batch.iter().zip(values).zip(&pending) {
                    self.deliver(signature, value, *since);
                }
            }
            Err(err) if batch.len() > 1 => {
                tracing::warn!(query = %batch[0].query().name, signatures = batch.len(), error = %err, "batch recompute failed, retrying one by one");
                for (signature, since) in batch.iter().zip(&pending) {
                    let single = std::slice::from_ref(signature);
                    match self.compute(single).await {
                        Ok(mut values) => {
                            self.deliver(signature, values.pop().unwrap_or(Value::Null), *since)
                        }
                        Err(err) => self.fail(signature, *since, &err, shutdown),
                    }
                }
            }
            Err(err) => {
                if let Some(signature) = batch.first() {
                    self.fail(
                        signature,
                        pending.first().copied().flatten(),
                        &err,
                        shutdown,
                    );
                }
            }
        }
        let ids: Vec<u64> = batch.iter().map(|s| s.id).collect();
        self.scheduler.finish(&ids);
    }

    /// The values to serve for `batch`, in batch order. Without a parity check due, one
    /// statement; with one, the computed and the parity statement in one snapshot, and the live
    /// value served wherever the two disagree.
    async fn compute(&self, batch: &[Arc<Signature>]) -> Result<Vec<Value>, sqlx::Error> {
        let Some((parity, chosen)) = self.parity_due(batch) else {
            return self.execute(batch, &self.pool).await;
        };
        let mut snapshot = self.pool.begin_with(ONE_SNAPSHOT).await?;
        let values = self.execute(batch, &mut *snapshot).await?;
        let checked: Vec<Arc<Signature>> = chosen.iter().map(|&i| batch[i].clone()).collect();
        let live = self.run_statement(&parity, &checked, &mut *snapshot).await;
        // Read only: nothing to keep. An error here only drops the check.
        let _ = snapshot.rollback().await;
        Ok(self.compare_with_parity(batch, values, &chosen, live))
    }

    /// The parity statement of the batch's query and the indices due a check, if any: the
    /// signatures without a value yet, and a sample of the others.
    fn parity_due(&self, batch: &[Arc<Signature>]) -> Option<(String, Vec<usize>)> {
        let statement = batch.first()?.query().parity_statement.clone()?;
        let chosen: Vec<usize> = (0..batch.len())
            .filter(|&i| !batch[i].has_value() || rand::random::<f64>() < self.parity_sample_rate)
            .collect();
        (!chosen.is_empty()).then_some((statement, chosen))
    }

    /// Publishes a value. One over the value limits is parked: not retried on a timer, but
    /// recomputed on the next change that touches it (its commit time is kept for the lag).
    fn deliver(&self, signature: &Signature, value: Value, since: Option<i64>) {
        let published = self.hub.publish(signature, value);
        tracing::debug!(signature = %signature.signature, outcome = ?published, "recomputed");
        match published {
            Published::Sent { .. } => self.metrics.observe_push_lag(since),
            Published::TooLarge(too_large) => {
                signature.restore_pending_since(since);
                tracing::warn!(signature = %signature.signature, reason = %too_large, "value over the limit, not sent");
            }
            Published::Unchanged => {}
        }
    }

    fn fail(
        &self,
        signature: &Arc<Signature>,
        since: Option<i64>,
        err: &sqlx::Error,
        shutdown: &CancellationToken,
    ) {
        signature.restore_pending_since(since);
        let message = match err.as_database_error() {
            Some(db) => db.message().to_owned(),
            None => "the database did not answer".to_owned(),
        };
        let failures = self
            .hub
            .record_failure(signature, NOTIFY_AFTER_FAILURES, &message);
        tracing::warn!(signature = %signature.signature, failures, error = %err, "recompute failed");
        let delay = FIRST_RETRY
            .saturating_mul(1 << failures.min(10))
            .min(MAX_RETRY);
        let scheduler = self.scheduler.clone();
        let id = signature.id;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(delay) => scheduler.mark_due([id]),
            }
        });
    }

    /// Runs one batch as one statement; values come back in batch order.
    async fn execute<'e>(
        &self,
        batch: &[Arc<Signature>],
        on: impl PgExecutor<'e>,
    ) -> Result<Vec<Value>, sqlx::Error> {
        let Some(query) = batch.first().map(|s| s.query()) else {
            return Ok(Vec::new());
        };
        let label = self.metrics.query(&query.name);
        let started = Instant::now();
        let result = self.run_statement(&query.statement, batch, on).await;
        self.metrics
            .recompute_duration
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => self
                .metrics
                .recomputes
                .get_or_create(&label)
                .inc_by(batch.len() as u64),
            Err(_) => self.metrics.recompute_errors.get_or_create(&label).inc(),
        };
        result
    }

    /// Compares the computed values of the `chosen` signatures with `live`, their values from
    /// the query's parity SQL in the same snapshot, and returns the values to serve: the live
    /// one wherever the two disagree. A failed parity statement serves the computed values.
    fn compare_with_parity(
        &self,
        batch: &[Arc<Signature>],
        mut values: Vec<Value>,
        chosen: &[usize],
        live: Result<Vec<Value>, sqlx::Error>,
    ) -> Vec<Value> {
        let Some(first) = batch.first() else {
            return values;
        };
        let label = self.metrics.query(&first.query().name);
        let live = match live {
            Ok(live) => live,
            Err(err) => {
                tracing::warn!(query = %label.query, error = %err, "parity check failed; serving the computed values");
                return values;
            }
        };
        self.metrics
            .parity_checks
            .get_or_create(&label)
            .inc_by(chosen.len() as u64);
        for (&index, live) in chosen.iter().zip(live) {
            let Some(value) = values.get_mut(index) else {
                continue;
            };
            if *value != live {
                self.metrics.parity_divergences.get_or_create(&label).inc();
                tracing::warn!(signature = %batch[index].signature, computed = %value, live = %live,
                    "parity check: the computed value disagrees with the live SQL; serving the live value");
                *value = live;
            }
        }
        values
    }

    /// Runs `statement` (a batched statement of the batch's query) for the batch's arg sets.
    async fn run_statement<'e>(
        &self,
        statement: &str,
        batch: &[Arc<Signature>],
        on: impl PgExecutor<'e>,
    ) -> Result<Vec<Value>, sqlx::Error> {
        let mut args =
            String::with_capacity(2 + batch.iter().map(|s| s.args_json.len() + 1).sum::<usize>());
        args.push('[');
        for (index, signature) in batch.iter().enumerate() {
            if index > 0 {
                args.push(',');
            }
            args.push_str(&signature.args_json);
        }
        args.push(']');
        self.metrics.recompute_statements.inc();
        let rows = sqlx::query(statement).bind(args).fetch_all(on).await?;
        let mut values = vec![Value::Null; batch.len()];
        for row in rows {
            let ordinal: i64 = row.try_get(0)?;
            let text: Option<String> = row.try_get(1)?;
            // A carried query's statement also says what WAL position its snapshot reached.
            if row.len() > 2 {
                let position: Option<i64> = row.try_get(2)?;
                if let (Some(position), Some(signature)) = (
                    position.and_then(|p| u64::try_from(p).ok()),
                    usize::try_from(ordinal)
                        .ok()
                        .and_then(|n| n.checked_sub(1))
                        .and_then(|i| batch.get(i)),
                ) {
                    signature.set_basis(position);
                }
            }
            let value = match text {
                Some(text) => {
                    serde_json::from_str(&text).map_err(|err| sqlx::Error::Decode(Box::new(err)))?
                }
                None => Value::Null,
            };
            if let Some(slot) = usize::try_from(ordinal)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| values.get_mut(i))
            {
                *slot = value;
            }
        }
        Ok(values)
    }
}

/// A statement slot, or `None` once shutdown begins.
async fn acquire(
    in_flight: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        _ = shutdown.cancelled() => None,
        permit = in_flight.clone().acquire_owned() => permit.ok(),
    }
}
