//! Which signatures are due for recompute, which are running, and which must run again.
//!
//! At most one run per signature at a time: a signature marked due while it runs is re-run
//! once when the current run ends, however many changes arrived meanwhile (light load: minimal
//! latency; heavy load: natural coalescing). It sits between the dispatcher and the hub, which
//! mark signatures due, and the recompute driver, which takes them; it knows only ids, so
//! nothing it depends on depends on it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use tokio::sync::Notify;

/// Why a signature is due: a change that named it, or whole-table work (a resync, an
/// `overflow` payload) that recomputes it among many others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Lane {
    Bulk,
    Targeted,
}

/// The due signatures in two queues. `queued` is the truth (which lane an id waits in); an id
/// promoted from bulk to targeted leaves a stale entry in `bulk`, skipped when reached.
#[derive(Default)]
struct Due {
    targeted: VecDeque<u64>,
    bulk: VecDeque<u64>,
    queued: HashMap<u64, Lane>,
    running: HashSet<u64>,
    /// Marked while running: queued again, in this lane, when the run ends.
    rerun: HashMap<u64, Lane>,
}

impl Due {
    /// Queues `id` in `lane` (or promotes it to targeted); true if it was not due there before.
    fn queue(&mut self, id: u64, lane: Lane) -> bool {
        match self.queued.get(&id).copied() {
            Some(current) if current >= lane => false,
            Some(_) => {
                self.queued.insert(id, lane);
                self.targeted.push_back(id);
                true
            }
            None => {
                self.queued.insert(id, lane);
                match lane {
                    Lane::Targeted => self.targeted.push_back(id),
                    Lane::Bulk => self.bulk.push_back(id),
                }
                true
            }
        }
    }

    /// Takes up to `limit` ids waiting in `lane`, in queue order.
    fn take(&mut self, lane: Lane, limit: usize, into: &mut Vec<u64>) {
        let mut taken = 0;
        while taken < limit {
            let next = match lane {
                Lane::Targeted => self.targeted.pop_front(),
                Lane::Bulk => self.bulk.pop_front(),
            };
            let Some(id) = next else {
                break;
            };
            if self.queued.get(&id) == Some(&lane) {
                self.queued.remove(&id);
                self.running.insert(id);
                into.push(id);
                taken += 1;
            }
        }
    }
}

/// Which signatures are due, running, or due again after their current run.
///
/// Two lanes: signatures a change named (targeted) always go first, so a normal change never
/// waits behind whole-table work; bulk ones (a resync, an `overflow` payload) are handed out a
/// bounded number at a time, so they progress without holding up what arrives meanwhile. A
/// signature due in both runs once, as targeted. Nothing due is ever dropped.
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

    /// Marks signatures a change named for recompute, ahead of bulk work. A running one is
    /// re-run once after it finishes.
    pub fn mark_due(&self, ids: impl IntoIterator<Item = u64>) {
        self.mark(ids, Lane::Targeted);
    }

    /// Marks signatures for recompute as part of whole-table work (a resync, an overflow),
    /// behind targeted ones. Pass them grouped by query: they are handed out in this order, a
    /// bounded number at a time, and batched by query.
    pub fn mark_bulk(&self, ids: impl IntoIterator<Item = u64>) {
        self.mark(ids, Lane::Bulk);
    }

    fn mark(&self, ids: impl IntoIterator<Item = u64>, lane: Lane) {
        let mut due = self.lock();
        let mut added = false;
        for id in ids {
            if due.running.contains(&id) {
                let again = due.rerun.entry(id).or_insert(lane);
                *again = (*again).max(lane);
            } else {
                added |= due.queue(id, lane);
            }
        }
        drop(due);
        if added {
            self.wake.notify_one();
        }
    }

    /// Takes every targeted signature and up to `bulk_limit` bulk ones, and marks them running.
    pub fn take_due(&self, bulk_limit: usize) -> Vec<u64> {
        let mut due = self.lock();
        let mut ids = Vec::new();
        due.take(Lane::Targeted, usize::MAX, &mut ids);
        due.take(Lane::Bulk, bulk_limit, &mut ids);
        ids
    }

    /// Marks `id` running unless it is due or running already: the caller then computes its
    /// value itself (a value carried by a change) and ends the run with [`Self::finish`]. No
    /// run of it can start meanwhile, and one marked meanwhile runs after.
    pub fn claim(&self, id: u64) -> bool {
        let mut due = self.lock();
        if due.queued.contains_key(&id) || due.running.contains(&id) {
            return false;
        }
        due.running.insert(id);
        true
    }

    /// Ends the runs of `ids`; those marked meanwhile are queued again.
    pub fn finish(&self, ids: &[u64]) {
        let mut due = self.lock();
        let mut again = false;
        for id in ids {
            due.running.remove(id);
            if let Some(lane) = due.rerun.remove(id) {
                again |= due.queue(*id, lane);
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
        due.queued.is_empty() && due.running.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_runs_once_at_a_time_and_reruns_once_if_marked_meanwhile() {
        let scheduler = Scheduler::new();
        scheduler.mark_due([1, 2, 1]);
        assert_eq!(scheduler.take_due(usize::MAX), vec![1, 2]);
        scheduler.mark_due([1]);
        scheduler.mark_due([1]);
        assert!(
            scheduler.take_due(usize::MAX).is_empty(),
            "running signatures are not handed out twice"
        );
        scheduler.finish(&[1, 2]);
        assert_eq!(
            scheduler.take_due(usize::MAX),
            vec![1],
            "one re-run for any number of marks"
        );
        scheduler.finish(&[1]);
        assert!(scheduler.take_due(usize::MAX).is_empty());
        assert!(scheduler.is_idle());
    }

    #[test]
    fn targeted_signatures_go_before_bulk_ones_which_come_a_bounded_number_at_a_time() {
        let scheduler = Scheduler::new();
        scheduler.mark_bulk(1..=10);
        scheduler.mark_due([20, 21]);
        assert_eq!(scheduler.take_due(3), vec![20, 21, 1, 2, 3]);
        scheduler.mark_due([30]);
        assert_eq!(
            scheduler.take_due(3),
            vec![30, 4, 5, 6],
            "a change arriving during bulk work is taken at the next turn"
        );
        scheduler.mark_due([8]);
        assert_eq!(
            scheduler.take_due(0),
            vec![8],
            "a bulk signature named by a change is promoted"
        );
        assert_eq!(
            scheduler.take_due(usize::MAX),
            vec![7, 9, 10],
            "promoted once, run once"
        );
        scheduler.finish(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 21, 30]);
        assert!(scheduler.is_idle());
    }

    #[test]
    fn a_claimed_signature_is_not_handed_out_and_runs_after_if_marked_meanwhile() {
        let scheduler = Scheduler::new();
        assert!(scheduler.claim(1));
        assert!(!scheduler.claim(1), "one claim at a time");
        scheduler.mark_due([1]);
        assert!(
            scheduler.take_due(10).is_empty(),
            "a claimed signature does not run"
        );
        scheduler.finish(&[1]);
        assert_eq!(
            scheduler.take_due(10),
            vec![1],
            "marked meanwhile: it runs after"
        );
        assert!(!scheduler.claim(1), "running");
        scheduler.finish(&[1]);
        scheduler.mark_due([2]);
        assert!(!scheduler.claim(2), "due: the run will compute it");
    }

    #[test]
    fn a_running_signature_marked_in_both_lanes_reruns_once_as_targeted() {
        let scheduler = Scheduler::new();
        scheduler.mark_bulk([1, 2]);
        assert_eq!(scheduler.take_due(10), vec![1, 2]);
        scheduler.mark_bulk([1, 2]);
        scheduler.mark_due([1]);
        scheduler.finish(&[1, 2]);
        scheduler.mark_bulk([3]);
        assert_eq!(scheduler.take_due(0), vec![1], "1 reruns as targeted");
        assert_eq!(scheduler.take_due(10), vec![2, 3], "2 reruns as bulk");
        scheduler.finish(&[1, 2, 3]);
        assert!(scheduler.is_idle());
        assert!(scheduler.take_due(10).is_empty());
    }
}
