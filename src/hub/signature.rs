//! One active signature: its query, its canonical args, its followers' outboxes and the last
//! value it sent (as the frame new followers get, and a hash to recognise an unchanged value).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use axum::extract::ws::Utf8Bytes;

use super::outbox::Outbox;
use crate::registry::Query;

/// One active signature.
pub struct Signature {
    pub id: u64,
    pub signature: Arc<str>,
    /// The query's current definition: a registry reload may replace it (see [`Hub::reload`]).
    pub(super) query: RwLock<Arc<Query>>,
    /// Canonical args JSON, spliced as-is into the batch's jsonb array.
    pub args_json: Arc<str>,
    /// Earliest commit time (µs) of a change not yet reflected in a pushed value; 0 = none.
    pub(super) pending_since: AtomicI64,
    /// The WAL position the current value reflects, for a carried query: a statement's
    /// position (see `registry::sql::POSITION`) or the commit of the carried row; 0 = unknown.
    pub(super) basis: AtomicU64,
    pub(super) state: Mutex<SignatureState>,
}

#[derive(Default)]
pub(super) struct SignatureState {
    pub(super) subscribers: HashMap<u64, Arc<Outbox>>,
    pub(super) current: Option<Current>,
    /// The last version sent (0: none yet); versions only grow, even across a value that
    /// was too large.
    pub(super) version: u64,
    /// The `value_too_large` error event while the latest value is over a limit (new
    /// subscribers get it instead of a stale snapshot).
    pub(super) too_large: Option<Utf8Bytes>,
    pub(super) failures: u32,
}

/// The value last sent: its frame (the snapshot for new subscribers) and the SHA-256 of its
/// JSON (to recognise an unchanged value without keeping the value itself).
pub(super) struct Current {
    pub(super) hash: [u8; 32],
    pub(super) frame: Utf8Bytes,
}

impl Signature {
    /// The query this signature computes (its definition may change on a registry reload).
    pub fn query(&self) -> Arc<Query> {
        self.query
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(super) fn set_query(&self, query: Arc<Query>) {
        *self
            .query
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = query;
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, SignatureState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers the commit time of a change that touched this signature (keeps the oldest).
    pub fn note_change(&self, at_micros: Option<i64>) {
        if let Some(at) = at_micros.filter(|at| *at > 0) {
            let _ =
                self.pending_since
                    .compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Takes the pending commit time for a recompute that starts now.
    pub fn take_pending_since(&self) -> Option<i64> {
        Some(self.pending_since.swap(0, Ordering::Relaxed)).filter(|at| *at > 0)
    }

    /// Puts back a commit time whose recompute failed.
    pub fn restore_pending_since(&self, at: Option<i64>) {
        self.note_change(at);
    }

    /// The WAL position the current value reflects (0: unknown); see the field.
    pub fn basis(&self) -> u64 {
        self.basis.load(Ordering::Acquire)
    }

    /// Records the WAL position of a value just computed or carried.
    pub fn set_basis(&self, lsn: u64) {
        self.basis.store(lsn, Ordering::Release);
    }

    pub fn subscriber_count(&self) -> usize {
        self.lock().subscribers.len()
    }

    /// The `value_too_large` error event while the latest value is over a limit: a new
    /// subscriber gets it in place of a snapshot.
    pub fn too_large_notice(&self) -> Option<Utf8Bytes> {
        self.lock().too_large.clone()
    }

    /// True once a value was published (the first computation has happened).
    pub fn has_value(&self) -> bool {
        self.lock().current.is_some()
    }
}
