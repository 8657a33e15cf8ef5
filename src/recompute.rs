//! Recompute: turn "these signatures may have changed" into fresh values (SPEC §6).
//!
//! The [`Scheduler`] guarantees at most one run per signature at a time: a signature marked
//! due while it runs is re-run once when the current run ends, however many changes arrived
//! meanwhile (light load: minimal latency; heavy load: natural coalescing). The driver takes
//! everything due, groups it by query, and runs each group in batches of bounded size as
//! **one** SQL statement per batch, with a bounded number of statements in flight.
//!
//! Failures are isolated: a failed batch is retried signature by signature, so one bad arg set
//! cannot hold back the others; a signature that keeps failing is retried with back-off and
//! its followers get an error event. A statement timeout (set on the pool) bounds every run.
//!
//! Parity: a query may declare `parity`, the live SQL of the same value. The first value of
//! every signature, and a configured share of later ones, is compared with it (one more
//! statement per batch); on divergence the live value is served, a warning names the
//! signature, and `statgate_parity_divergences` counts it. A stats table that drifted (a
//! bug in a hand-written trigger, a manual edit) then shows up instead of being pushed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::{PgPool, Row};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::{Hub, Published, Signature};
use crate::telemetry::Metrics;

/// Consecutive failures after which followers get an error event.
const NOTIFY_AFTER_FAILURES: u32 = 3;
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Due {
    queue: VecDeque<u64>,
    queued: HashSet<u64>,
    running: HashSet<u64>,
    rerun: HashSet<u64>,
}

/// Which signatures are due, running, or due again after their current run.
#[derive(Default)]
pub struct Scheduler {
    due: Mutex<Due>,
    wake: Notify,
}

impl Scheduler {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Due> {
        self.due
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks signatures for recompute. A running one is re-run once after it finishes.
    pub fn mark_due(&self, ids: impl IntoIterator<Item = u64>) {
        let mut due = self.lock();
        let mut added = false;
        for id in ids {
            if due.running.contains(&id) {
                due.rerun.insert(id);
            } else if due.queued.insert(id) {
                due.queue.push_back(id);
                added = true;
            }
        }
        drop(due);
        if added {
            self.wake.notify_one();
        }
    }

    /// Takes every due signature and marks it running.
    pub fn take_due(&self) -> Vec<u64> {
        let mut due = self.lock();
        let ids: Vec<u64> = due.queue.drain(..).collect();
        for id in &ids {
            due.queued.remove(id);
            due.running.insert(*id);
        }
        ids
    }

    /// Ends the runs of `ids`; those marked meanwhile are queued again.
    pub fn finish(&self, ids: &[u64]) {
        let mut due = self.lock();
        let mut again = false;
        for id in ids {
            due.running.remove(id);
            if due.rerun.remove(id) && due.queued.insert(*id) {
                due.queue.push_back(*id);
                again = true;
            }
        }
        drop(due);
        if again {
            self.wake.notify_one();
        }
    }

    pub async fn wait(&self) {
        self.wake.notified().await;
    }

    /// True when nothing is due or running (for tests and shutdown).
    pub fn is_idle(&self) -> bool {
        let due = self.lock();
        due.queue.is_empty() && due.running.is_empty()
    }
}

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
                let ids = self.scheduler.take_due();
                if ids.is_empty() {
                    break;
                }
                for batch in self.batches(&ids) {
                    let permit = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        permit = in_flight.clone().acquire_owned() => match permit { Ok(permit) => permit, Err(_) => return },
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

    /// Groups due signatures by query into batches; ids whose signature is gone finish now.
    fn batches(&self, ids: &[u64]) -> Vec<Vec<Arc<Signature>>> {
        let mut by_query: HashMap<&str, Vec<Arc<Signature>>> = HashMap::new();
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
        for signature in &signatures {
            by_query
                .entry(signature.query.name.as_str())
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
        let pending: Vec<Option<i64>> = batch.iter().map(|s| s.take_pending_since()).collect();
        match self.execute(batch).await {
            Ok(values) => {
                let values = self.check_parity(batch, values).await;
                for ((signature, value), since) in batch.iter().zip(values).zip(&pending) {
                    self.deliver(signature, value, *since);
                }
            }
            Err(err) if batch.len() > 1 => {
                tracing::warn!(query = %batch[0].query.name, signatures = batch.len(), error = %err, "batch recompute failed, retrying one by one");
                for (signature, since) in batch.iter().zip(&pending) {
                    let single = std::slice::from_ref(signature);
                    match self.execute(single).await {
                        Ok(values) => {
                            let mut values = self.check_parity(single, values).await;
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

    /// Publishes a value. One over the value limits is parked: not retried on a timer, but
    /// recomputed on the next change that touches it (its commit time is kept for the lag).
    fn deliver(&self, signature: &Signature, value: Value, since: Option<i64>) {
        match self.hub.publish(signature, value) {
            Published::Sent { .. } => {
                if let Some(since) = since {
                    let now = chrono::Utc::now().timestamp_micros();
                    self.metrics
                        .push_lag
                        .observe((now - since).max(0) as f64 / 1e6);
                }
            }
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
    async fn execute(&self, batch: &[Arc<Signature>]) -> Result<Vec<Value>, sqlx::Error> {
        let Some(query) = batch.first().map(|s| s.query.clone()) else {
            return Ok(Vec::new());
        };
        let label = self.metrics.query(&query.name);
        let started = Instant::now();
        let result = self.run_statement(&query.statement, batch).await;
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

    /// Compares the values of the signatures due a parity check with their query's live SQL
    /// and returns the values to serve: the live one wherever the two disagree.
    async fn check_parity(&self, batch: &[Arc<Signature>], mut values: Vec<Value>) -> Vec<Value> {
        let Some(statement) = batch.first().and_then(|s| s.query.parity_statement.clone()) else {
            return values;
        };
        let chosen: Vec<usize> = (0..batch.len())
            .filter(|&i| !batch[i].has_value() || rand::random::<f64>() < self.parity_sample_rate)
            .collect();
        if chosen.is_empty() {
            return values;
        }
        let checked: Vec<Arc<Signature>> = chosen.iter().map(|&i| batch[i].clone()).collect();
        let label = self.metrics.query(&batch[0].query.name);
        let live = match self.run_statement(&statement, &checked).await {
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
    async fn run_statement(
        &self,
        statement: &str,
        batch: &[Arc<Signature>],
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
        let rows = sqlx::query(statement)
            .bind(args)
            .fetch_all(&self.pool)
            .await?;
        let mut values = vec![Value::Null; batch.len()];
        for row in rows {
            let ordinal: i64 = row.try_get(0)?;
            let text: Option<String> = row.try_get(1)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_runs_once_at_a_time_and_reruns_once_if_marked_meanwhile() {
        let scheduler = Scheduler::new();
        scheduler.mark_due([1, 2, 1]);
        assert_eq!(scheduler.take_due(), vec![1, 2]);
        scheduler.mark_due([1]);
        scheduler.mark_due([1]);
        assert!(
            scheduler.take_due().is_empty(),
            "running signatures are not handed out twice"
        );
        scheduler.finish(&[1, 2]);
        assert_eq!(
            scheduler.take_due(),
            vec![1],
            "one re-run for any number of marks"
        );
        scheduler.finish(&[1]);
        assert!(scheduler.take_due().is_empty());
        assert!(scheduler.is_idle());
    }
}
