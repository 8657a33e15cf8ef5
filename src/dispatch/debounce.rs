//! Debouncing of whole-table work: a full resync, or the recompute of every signature on a
//! table that an `overflow` payload asks for.
//!
//! Why: any database role may `NOTIFY statgate_changes` (see "Threat model" in
//! `docs/RELIABILITY.md`), and each such request recomputes many signatures. The first request
//! for a key runs at once (no added latency when they are rare); further ones within the window
//! after it merge into one run at the window's end. A burst therefore costs about one run per
//! window, and nothing asked for is skipped: the run at the window's end happens after the
//! last request it covers was received.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// Debounce state per key (a table, or `()` for the global resync).
#[derive(Debug)]
pub struct Debounce<K> {
    window: Duration,
    keys: HashMap<K, Slot>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    last_run: Instant,
    pending: bool,
}

impl<K: Hash + Eq + Clone> Debounce<K> {
    pub fn new(window: Duration) -> Self {
        Debounce {
            window,
            keys: HashMap::new(),
        }
    }

    /// A request for `key` at `now`: true if it is to run now; false if it was merged into a
    /// run at the end of the current window (see [`Debounce::take_due`]).
    pub fn request(&mut self, key: K, now: Instant) -> bool {
        self.forget_quiet(now);
        match self.keys.get_mut(&key) {
            Some(slot) if now < slot.last_run + self.window => {
                slot.pending = true;
                false
            }
            _ => {
                self.keys.insert(
                    key,
                    Slot {
                        last_run: now,
                        pending: false,
                    },
                );
                true
            }
        }
    }

    /// The keys whose merged run is due at `now`; each is recorded as run now.
    pub fn take_due(&mut self, now: Instant) -> Vec<K> {
        let mut due = Vec::new();
        for (key, slot) in &mut self.keys {
            if slot.pending && now >= slot.last_run + self.window {
                slot.pending = false;
                slot.last_run = now;
                due.push(key.clone());
            }
        }
        due
    }

    /// When the next merged run is due, if any is pending.
    pub fn next_due(&self) -> Option<Instant> {
        self.keys
            .values()
            .filter(|slot| slot.pending)
            .map(|slot| slot.last_run + self.window)
            .min()
    }

    /// Drops every pending run (a full resync covers them); the windows stay.
    pub fn clear_pending(&mut self) {
        for slot in self.keys.values_mut() {
            slot.pending = false;
        }
    }

    /// Forgets keys with nothing pending whose window has passed (the state stays bounded by
    /// the keys requested within one window).
    fn forget_quiet(&mut self, now: Instant) {
        let window = self.window;
        self.keys
            .retain(|_, slot| slot.pending || now < slot.last_run + window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(500);

    #[test]
    fn the_first_request_runs_at_once_and_a_burst_merges_into_one_run_at_the_window_end() {
        let start = Instant::now();
        let mut debounce = Debounce::new(WINDOW);
        assert!(debounce.request("t", start));
        assert_eq!(debounce.next_due(), None);
        for ms in [1, 50, 499] {
            assert!(!debounce.request("t", start + Duration::from_millis(ms)));
        }
        assert_eq!(debounce.next_due(), Some(start + WINDOW));
        assert!(debounce.take_due(start + WINDOW / 2).is_empty());
        assert_eq!(debounce.take_due(start + WINDOW), vec!["t"]);
        assert!(debounce.take_due(start + WINDOW * 3).is_empty(), "once");
        assert!(
            !debounce.request("t", start + WINDOW + Duration::from_millis(1)),
            "the merged run opened a new window"
        );
        assert!(debounce.request("t", start + WINDOW * 3), "quiet again");
    }

    #[test]
    fn keys_are_independent_and_quiet_ones_are_forgotten() {
        let start = Instant::now();
        let mut debounce = Debounce::new(WINDOW);
        assert!(debounce.request("a", start));
        assert!(debounce.request("b", start + Duration::from_millis(10)));
        assert!(!debounce.request("a", start + Duration::from_millis(20)));
        assert_eq!(debounce.take_due(start + WINDOW), vec!["a"]);
        assert!(debounce.request("c", start + WINDOW * 4));
        assert_eq!(debounce.keys.len(), 1, "a and b are forgotten");
    }

    #[test]
    fn clearing_drops_pending_runs_but_keeps_the_windows() {
        let start = Instant::now();
        let mut debounce = Debounce::new(WINDOW);
        assert!(debounce.request("a", start));
        assert!(!debounce.request("a", start + Duration::from_millis(1)));
        debounce.clear_pending();
        assert_eq!(debounce.next_due(), None);
        assert!(debounce.take_due(start + WINDOW).is_empty());
        assert!(!debounce.request("a", start + Duration::from_millis(2)));
    }
}
