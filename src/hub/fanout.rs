//! The hub proper: which signatures are active, who follows them, and fan-out of new values
//! within the memory limits (see the `hub` module doc).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::outbox::Outbox;
use super::signature::{Current, Signature, SignatureState};
use crate::matcher::Matcher;
use crate::registry::Query;
use crate::scheduler::Scheduler;
use crate::telemetry::Metrics;
use crate::wire;

/// Outcome of publishing a computed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The value changed and was queued to this many sockets.
    Sent {
        version: u64,
        sockets: usize,
    },
    Unchanged,
    /// Over a [`HubLimits`] limit: not stored, not sent; the followers were told.
    TooLarge(ValueTooLarge),
}

/// Why a value was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ValueTooLarge {
    #[error("the value has {rows} rows, over the limit of {limit} (STATGATE_MAX_VALUE_ROWS)")]
    Rows { rows: usize, limit: usize },
    #[error(
        "the value is {bytes} bytes of JSON, over the limit of {limit} (STATGATE_MAX_VALUE_BYTES)"
    )]
    Bytes { bytes: usize, limit: usize },
}

/// Why a subscription was refused a new signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureRefused {
    #[error("this user follows {limit} signatures, the limit (STATGATE_MAX_SIGNATURES_PER_USER): unsubscribe from one first")]
    PerUser { limit: usize },
    #[error("the server holds {limit} signatures, the limit (STATGATE_MAX_SIGNATURES): only values someone already follows can be subscribed to now")]
    Total { limit: usize },
}

/// What the hub may hold; 0 means no limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct HubLimits {
    pub max_signatures: usize,
    pub max_signatures_per_user: usize,
    /// Rows of a value that is a JSON array (any other value is one row).
    pub max_value_rows: usize,
    /// Bytes of a value's JSON.
    pub max_value_bytes: usize,
}

impl HubLimits {
    /// Checks a value's rows, then serialises it once and checks its bytes.
    fn admit(&self, value: &Value) -> Result<Box<RawValue>, ValueTooLarge> {
        let rows = value.as_array().map_or(1, Vec::len);
        if self.max_value_rows != 0 && rows > self.max_value_rows {
            return Err(ValueTooLarge::Rows {
                rows,
                limit: self.max_value_rows,
            });
        }
        // A `Value` always serialises (its keys are strings); the default is `null`.
        let data = serde_json::value::to_raw_value(value).unwrap_or_default();
        let bytes = data.get().len();
        if self.max_value_bytes != 0 && bytes > self.max_value_bytes {
            return Err(ValueTooLarge::Bytes {
                bytes,
                limit: self.max_value_bytes,
            });
        }
        Ok(data)
    }
}

pub struct Hub {
    pub(super) by_name: DashMap<Arc<str>, Arc<Signature>>,
    pub(super) by_id: DashMap<u64, Arc<Signature>>,
    /// Per user: the signatures it follows, with the number of its sockets following each.
    pub(super) by_user: DashMap<Arc<str>, HashMap<u64, usize>>,
    /// Signatures counted against `limits.max_signatures` (taken before a signature exists).
    pub(super) signature_places: AtomicUsize,
    pub(super) next_id: AtomicU64,
    pub(super) limits: HubLimits,
    pub(super) matcher: Arc<Matcher>,
    pub(super) scheduler: Arc<Scheduler>,
    pub(super) metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(
        matcher: Arc<Matcher>,
        scheduler: Arc<Scheduler>,
        metrics: Arc<Metrics>,
        limits: HubLimits,
    ) -> Self {
        Hub {
            by_name: DashMap::new(),
            by_id: DashMap::new(),
            by_user: DashMap::new(),
            signature_places: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            limits,
            matcher,
            scheduler,
            metrics,
        }
    }

    /// Adds `user`'s socket to a signature, creating and scheduling the signature if it is
    /// new, unless that would take the user or the server past its signature limit. If a
    /// value is already known, it is queued to the socket at once (the snapshot).
    #[allow(clippy::too_many_arguments)]
    pub fn attach(
        &self,
        user: &str,
        name: &str,
        query: &Arc<Query>,
        args: &serde_json::Map<String, Value>,
        args_json: &str,
        socket: u64,
        outbox: &Arc<Outbox>,
    ) -> Result<Arc<Signature>, SignatureRefused> {
        // Held until the socket is attached, so that two sockets of one user cannot both take
        // its last place.
        let mut followed = self.by_user.entry(Arc::from(user)).or_default();
        let known = self.by_name.get(name).map(|entry| entry.id);
        let already_followed = known.is_some_and(|id| followed.contains_key(&id));
        let per_user = self.limits.max_signatures_per_user;
        if !already_followed && per_user != 0 && followed.len() >= per_user {
            return Err(SignatureRefused::PerUser { limit: per_user });
        }
        let signature = self.attach_socket(name, query, args, args_json, socket, outbox)?;
        *followed.entry(signature.id).or_insert(0) += 1;
        Ok(signature)
    }

    fn attach_socket(
        &self,
        name: &str,
        query: &Arc<Query>,
        args: &serde_json::Map<String, Value>,
        args_json: &str,
        socket: u64,
        outbox: &Arc<Outbox>,
    ) -> Result<Arc<Signature>, SignatureRefused> {
        match self.by_name.entry(Arc::from(name)) {
            Entry::Occupied(existing) => {
                self.metrics.subscriptions.inc();
                let signature = existing.get().clone();
                let mut state = signature.lock();
                state.subscribers.insert(socket, outbox.clone());
                if let Some(current) = &state.current {
                    outbox.push_update(signature.id, current.frame.clone());
                    self.metrics.pushes.inc();
                }
                drop(state);
                Ok(signature)
            }
            Entry::Vacant(vacant) => {
                let total = self.limits.max_signatures;
                if self.signature_places.fetch_add(1, Ordering::Relaxed) >= total && total != 0 {
                    self.signature_places.fetch_sub(1, Ordering::Relaxed);
                    return Err(SignatureRefused::Total { limit: total });
                }
                self.metrics.subscriptions.inc();
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let mut state = SignatureState::default();
                state.subscribers.insert(socket, outbox.clone());
                let signature = Arc::new(Signature {
                    id,
                    signature: vacant.key().clone(),
                    query: RwLock::new(query.clone()),
                    args_json: Arc::from(args_json),
                    pending_since: AtomicI64::new(0),
                    basis: AtomicU64::new(0),
                    state: Mutex::new(state),
                });
                self.matcher.insert(id, query.watch_entries(args));
                self.by_id.insert(id, signature.clone());
                vacant.insert(signature.clone());
                self.metrics.signatures.inc();
                self.scheduler.mark_due([id]);
                Ok(signature)
            }
        }
    }

    /// Removes `user`'s socket from a signature; the last one out removes the signature.
    pub fn detach(&self, user: &str, signature: &Signature, socket: u64) {
        self.detach_socket(signature, socket);
        if let Some(mut followed) = self.by_user.get_mut(user) {
            if let Some(sockets) = followed.get_mut(&signature.id) {
                *sockets = sockets.saturating_sub(1);
                if *sockets == 0 {
                    followed.remove(&signature.id);
                }
            }
        }
        self.by_user
            .remove_if(user, |_, followed| followed.is_empty());
    }

    fn detach_socket(&self, signature: &Signature, socket: u64) {
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
            self.signature_places.fetch_sub(1, Ordering::Relaxed);
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

    /// Sends a computed value to every follower if it differs from the last one sent, and if
    /// it is within the value limits.
    pub fn publish(&self, signature: &Signature, value: Value) -> Published {
        let admitted = self.limits.admit(&value);
        drop(value);
        let mut state = signature.lock();
        state.failures = 0;
        let data = match admitted {
            Ok(data) => data,
            Err(too_large) => return self.refuse_value(signature, &mut state, too_large),
        };
        let hash: [u8; 32] = Sha256::digest(data.get().as_bytes()).into();
        if state
            .current
            .as_ref()
            .is_some_and(|current| current.hash == hash)
        {
            return Published::Unchanged;
        }
        let version = state.version + 1;
        let frame = wire::update(
            &signature.query().name,
            &signature.signature,
            &data,
            version,
        );
        for outbox in state.subscribers.values() {
            if outbox.push_update(signature.id, frame.clone()) {
                self.metrics.coalesced_updates.inc();
            }
        }
        let sockets = state.subscribers.len();
        self.metrics.pushes.inc_by(sockets as u64);
        state.current = Some(Current { hash, frame });
        state.version = version;
        state.too_large = None;
        Published::Sent { version, sockets }
    }

    /// Forgets the last value of a signature whose new value is over a limit, and tells its
    /// followers once (until a value fits again).
    fn refuse_value(
        &self,
        signature: &Signature,
        state: &mut SignatureState,
        too_large: ValueTooLarge,
    ) -> Published {
        self.metrics
            .values_too_large
            .get_or_create(&self.metrics.query(&signature.query().name))
            .inc();
        state.current = None;
        if state.too_large.is_none() {
            let frame = wire::signature_error(
                &None,
                "value_too_large",
                &signature.signature,
                &format!("{too_large}: it is not sent until a change brings it within the limit"),
            );
            for outbox in state.subscribers.values() {
                outbox.forget(signature.id);
                outbox.push_control(frame.clone());
            }
            state.too_large = Some(frame);
        }
        Published::TooLarge(too_large)
    }

    /// Counts a failed recompute; returns the number of consecutive failures. From `notify_after`
    /// failures on, every follower gets an error event naming the signature.
    pub fn record_failure(&self, signature: &Signature, notify_after: u32, message: &str) -> u32 {
        let mut state = signature.lock();
        state.failures += 1;
        if state.failures == notify_after {
            let frame =
                wire::signature_error(&None, "recompute_failed", &signature.signature, message);
            for outbox in state.subscribers.values() {
                outbox.push_control(frame.clone());
            }
        }
        state.failures
    }
}
