//! Dispatch: each change from a feed becomes the set of signatures it touches, marked due.
//!
//! The step between the feeds (which know tables and rows) and recompute (which knows
//! signatures): the matcher finds the signatures a change touches, the hub records the change's
//! commit time on each (for the commit-to-push lag), and the scheduler marks them due. Whole-table
//! work is debounced here ([`debounce`]), so a burst of resyncs or `overflow` payloads, from a
//! flood of NOTIFYs by any role, costs one run.

mod carried;
mod debounce;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::hub::Hub;
use crate::listener::FeedEvent;
use crate::matcher::{Change, Matcher, TableName};
use crate::scheduler::Scheduler;
use crate::telemetry::Metrics;
use carried::CarriedValues;
use debounce::Debounce;

/// Whole-table work (resyncs, overflows) requested within this window after one runs is merged
/// into one run at the window's end.
pub const BULK_WINDOW: Duration = Duration::from_millis(500);

/// The dispatch task: matches each change and marks the signatures it touches as due.
///
/// A change naming rows marks its signatures as targeted work. Whole-table work (a resync, an
/// `overflow` payload) is bulk work, behind targeted work in the [`Scheduler`], and debounced
/// per table (overflow) or globally (resync) over [`BULK_WINDOW`]: a burst of requests costs
/// one run at once and one at the window's end.
///
/// A change that carries its row (the WAL feed) gives the signatures of `carried` queries their
/// value directly ([`carried`]); `parity_sample_rate` of them still run their SQL.
pub async fn dispatch(
    mut events: mpsc::Receiver<FeedEvent>,
    matcher: Arc<Matcher>,
    hub: Arc<Hub>,
    scheduler: Arc<Scheduler>,
    metrics: Arc<Metrics>,
    parity_sample_rate: f64,
) {
    let carried = CarriedValues {
        hub: hub.clone(),
        scheduler: scheduler.clone(),
        metrics: metrics.clone(),
        parity_sample_rate,
    };
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
                bulk.scheduler.mark_due(carried.apply(&change, matched));
            }
            Some(FeedEvent::Reached { lsn, confirmed }) => confirmed.reach(lsn),
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
                row: None,
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
