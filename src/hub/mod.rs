//! The hub: active signatures, who follows them, and fan-out of new values.
//!
//! One [`Signature`] exists per distinct `<query>::<args>` with at least one subscriber. It
//! holds the last value sent and the outboxes of the sockets following it. A new value is
//! serialised once and the same bytes are queued to every outbox; an unchanged value is not
//! sent at all. Attaching the first subscriber registers the signature in the matcher *before*
//! its first computation is scheduled, so no change can slip between the two (SPEC §6).
//!
//! Locks here are short and synchronous; nothing awaits while holding one.

pub mod outbox;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use serde::Serialize;
use serde_json::Value;

pub use outbox::Outbox;

use crate::matcher::Matcher;
use crate::recompute::Scheduler;
use crate::registry::Query;
use crate::telemetry::Metrics;

/// One active signature.
pub struct Signature {
    pub id: u64,
    pub signature: Arc<str>,
    pub query: Arc<Query>,
    /// Canonical args JSON, spliced as-is into the batch's jsonb array.
    pub args_json: Arc<str>,
    /// Earliest commit time (µs) of a change not yet reflected in a pushed value; 0 = none.
    pending_since: AtomicI64,
    state: Mutex<SignatureState>,
}

#[derive(Default)]
struct SignatureState {
    subscribers: HashMap<u64, Arc<Outbox>>,
    current: Option<Current>,
    failures: u32,
}

struct Current {
    value: Value,
    version: u64,
    frame: Utf8Bytes,
}

#[derive(Serialize)]
struct UpdateFrame<'a> {
    event: &'static str,
    payload: UpdatePayload<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UpdatePayload<'a> {
    query_name: &'a str,
    signature: &'a str,
    data: &'a Value,
    version: u64,
}

impl Signature {
    fn lock(&self) -> MutexGuard<'_, SignatureState> {
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

    pub fn subscriber_count(&self) -> usize {
        self.lock().subscribers.len()
    }

    /// True once a value was published (the first computation has happened).
    pub fn has_value(&self) -> bool {
        self.lock().current.is_some()
    }
}

/// Outcome of publishing a computed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The value changed and was queued to this many sockets.
    Sent {
        version: u64,
        sockets: usize,
    },
    Unchanged,
}

pub struct Hub {
    by_name: DashMap<Arc<str>, Arc<Signature>>,
    by_id: DashMap<u64, Arc<Signature>>,
    next_id: AtomicU64,
    matcher: Arc<Matcher>,
    scheduler: Arc<Scheduler>,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(matcher: Arc<Matcher>, scheduler: Arc<Scheduler>, metrics: Arc<Metrics>) -> Self {
        Hub {
            by_name: DashMap::new(),
            by_id: DashMap::new(),
            next_id: AtomicU64::new(1),
            matcher,
            scheduler,
            metrics,
        }
    }

    /// Adds a socket to a signature, creating and scheduling the signature if it is new. If a
    /// value is already known, it is queued to the socket at once (the snapshot).
    pub fn attach(
        &self,
        name: &str,
        query: &Arc<Query>,
        args: &serde_json::Map<String, Value>,
        args_json: &str,
        socket: u64,
        outbox: &Arc<Outbox>,
    ) -> Arc<Signature> {
        self.metrics.subscriptions.inc();
        match self.by_name.entry(Arc::from(name)) {
            Entry::Occupied(existing) => {
                let signature = existing.get().clone();
                let mut state = signature.lock();
                state.subscribers.insert(socket, outbox.clone());
                if let Some(current) = &state.current {
                    outbox.push_update(signature.id, current.frame.clone());
                    self.metrics.pushes.inc();
                }
                drop(state);
                signature
            }
            Entry::Vacant(vacant) => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let mut state = SignatureState::default();
                state.subscribers.insert(socket, outbox.clone());
                let signature = Arc::new(Signature {
                    id,
                    signature: vacant.key().clone(),
                    query: query.clone(),
                    args_json: Arc::from(args_json),
                    pending_since: AtomicI64::new(0),
                    state: Mutex::new(state),
                });
                self.matcher.insert(id, query.watch_entries(args));
                self.by_id.insert(id, signature.clone());
                vacant.insert(signature.clone());
                self.metrics.signatures.inc();
                self.scheduler.mark_due([id]);
                signature
            }
        }
    }

    /// Removes a socket from a signature; the last one out removes the signature.
    pub fn detach(&self, signature: &Signature, socket: u64) {
        let mut was_subscribed = false;
        let removed = self.by_name.remove_if(&signature.signature, |_, current| {
            if current.id != signature.id {
                return false;
            }
            let mut state = current.lock();
            was_subscribed = state.subscribers.remove(&socket).is_some();
            state.subscribers.is_empty()
        });
        if was_subscribed {
            self.metrics.subscriptions.dec();
        }
        if let Some((_, gone)) = removed {
            self.by_id.remove(&gone.id);
            self.matcher.remove(gone.id);
            self.metrics.signatures.dec();
        }
    }

    pub fn get(&self, id: u64) -> Option<Arc<Signature>> {
        self.by_id.get(&id).map(|entry| entry.value().clone())
    }

    pub fn all_ids(&self) -> Vec<u64> {
        self.by_id.iter().map(|entry| *entry.key()).collect()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Sends a computed value to every follower if it differs from the last one sent.
    pub fn publish(&self, signature: &Signature, value: Value) -> Published {
        let mut state = signature.lock();
        state.failures = 0;
        if state
            .current
            .as_ref()
            .is_some_and(|current| current.value == value)
        {
            return Published::Unchanged;
        }
        let version = state
            .current
            .as_ref()
            .map_or(1, |current| current.version + 1);
        let frame = UpdateFrame {
            event: "query:update",
            payload: UpdatePayload {
                query_name: &signature.query.name,
                signature: &signature.signature,
                data: &value,
                version,
            },
        };
        let frame = Utf8Bytes::from(serde_json::to_string(&frame).unwrap_or_default());
        for outbox in state.subscribers.values() {
            if outbox.push_update(signature.id, frame.clone()) {
                self.metrics.coalesced_updates.inc();
            }
        }
        let sockets = state.subscribers.len();
        self.metrics.pushes.inc_by(sockets as u64);
        state.current = Some(Current {
            value,
            version,
            frame,
        });
        Published::Sent { version, sockets }
    }

    /// Counts a failed recompute; returns the number of consecutive failures. From `notify_after`
    /// failures on, every follower gets an error event naming the signature.
    pub fn record_failure(&self, signature: &Signature, notify_after: u32, message: &str) -> u32 {
        let mut state = signature.lock();
        state.failures += 1;
        if state.failures == notify_after {
            let frame = serde_json::json!({
                "event": "error",
                "payload": { "code": "recompute_failed", "signature": &*signature.signature, "message": message }
            });
            let frame = Utf8Bytes::from(frame.to_string());
            for outbox in state.subscribers.values() {
                outbox.push_control(frame.clone());
            }
        }
        state.failures
    }
}
