//! Values carried by the change: a signature of a `carried` query (one column of one row of a
//! watched table, chosen by key columns bound to its args; see `crate::registry::carried`)
//! takes its new value from the row a WAL change carries, without a statement.
//!
//! A carried value is published only when it is certainly newer than the one shown, and
//! otherwise left to the SQL (the signature is marked due as any other):
//!
//! * the change must carry the signature's own row: its key columns equal the signature's args
//!   (a row that moved to another key, a delete, a truncate go to the SQL, which gives whatever
//!   the SQL gives for a missing row);
//! * no run of the signature may be due or running (a statement that started before this
//!   commit could publish an older value after it): the scheduler's claim excludes both, and a
//!   change arriving meanwhile runs after;
//! * the row's commit must come after the position the current value reflects: a statement's
//!   snapshot position (`registry::sql::POSITION`), or the last carried commit. A change the
//!   statement may already have seen, or may have just missed, is left to the SQL;
//! * a share `STATGATE_PARITY_SAMPLE_RATE` of carried values still runs the SQL (and the
//!   query's `parity` SQL, if any), as every other recompute is sampled.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::hub::{Hub, Published, Signature};
use crate::matcher::{key_of, Change, RowImage};
use crate::registry::Carried;
use crate::scheduler::Scheduler;
use crate::telemetry::Metrics;

/// Publishes carried values of the signatures a change matched.
pub(super) struct CarriedValues {
    pub(super) hub: Arc<Hub>,
    pub(super) scheduler: Arc<Scheduler>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) parity_sample_rate: f64,
}

impl CarriedValues {
    /// Publishes the value of every matched signature the change's row carries; returns the
    /// others, which are due for recompute.
    pub(super) fn apply(&self, change: &Change, matched: HashSet<u64>) -> Vec<u64> {
        let Some(row) = &change.row else {
            return matched.into_iter().collect();
        };
        matched
            .into_iter()
            .filter(|id| !self.carry(*id, change, row))
            .collect()
    }

    /// True when the signature's value was taken from `row`.
    fn carry(&self, id: u64, change: &Change, row: &RowImage) -> bool {
        let Some(signature) = self.hub.get(id) else {
            return false;
        };
        let query = signature.query();
        let Some(carried) = query.carried.as_ref().filter(|c| c.table == change.table) else {
            return false;
        };
        if self.parity_sample_rate > 0.0 && rand::random::<f64>() < self.parity_sample_rate {
            return false;
        }
        let Some(value) = value_for(&signature, carried, row) else {
            return false;
        };
        if !self.scheduler.claim(id) {
            return false;
        }
        let newer = row.lsn > signature.basis() && signature.basis() != 0;
        if newer {
            let since = signature.take_pending_since();
            match self.hub.publish(&signature, value.clone()) {
                Published::Sent { .. } => self.metrics.observe_push_lag(since),
                Published::TooLarge(_) => signature.restore_pending_since(since),
                Published::Unchanged => {}
            }
            signature.set_basis(row.lsn);
            self.metrics
                .carried_values
                .get_or_create(&self.metrics.query(&query.name))
                .inc();
        }
        self.scheduler.finish(&[id]);
        newer
    }
}

/// The carried column of `row` if `row` is the signature's row (its key columns equal the
/// signature's args); `None` otherwise, or when a value is missing (not sent, unreadable).
fn value_for<'r>(signature: &Signature, carried: &Carried, row: &'r RowImage) -> Option<&'r Value> {
    let args: Map<String, Value> = serde_json::from_str(&signature.args_json).ok()?;
    for key in &carried.key {
        let arg = key_of(key.kind, args.get(&key.arg)?)?;
        let column = key_of(key.kind, row.values.get(&key.column)?)?;
        if arg != column {
            return None;
        }
    }
    row.values.get(&carried.column)
}
