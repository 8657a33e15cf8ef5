//! A new registry for the signatures in memory (SIGHUP, see `crate::reload`).
//!
//! Each active signature meets its query's new definition:
//! * unchanged: nothing happens (it takes the new `Arc`, so later batches group with new ones);
//! * changed, its args still valid and canonically the same, its `auth` rules the same: it
//!   takes the new definition, its watch entries are registered again, and it is recomputed
//!   (the new SQL may give another value, which is pushed like any change);
//! * gone, or changed so that its args or rights no longer hold: it is retired. Every follower
//!   gets an `error` event naming it (`query_removed` / `query_changed`) and the socket drops
//!   the subscription; a client that wants it again subscribes again, through every check.
//!
//! Retiring takes the signature out of every map at once, so a new subscription with the same
//! signature string starts a fresh one under the new definition.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::fanout::Hub;
use super::signature::Signature;
use crate::registry::{Query, Registry};
use crate::wire;

/// What a reload did to the signatures in memory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Signatures whose query changed and that were recomputed under the new definition.
    pub resynced: usize,
    /// Signatures whose query is gone or changed incompatibly, with their followers told.
    pub retired: usize,
}

/// Why a signature cannot go on under a new registry.
enum Retire {
    Removed,
    Changed(&'static str),
}

impl Hub {
    /// Moves every active signature to `registry`'s definitions (see the module doc).
    pub fn reload(&self, registry: &Registry) -> Reloaded {
        let mut report = Reloaded::default();
        let mut due = Vec::new();
        for signature in self.signatures() {
            let current = signature.query();
            let outcome = match registry.get(&current.name) {
                None => Err(Retire::Removed),
                Some(next) if **next == *current => {
                    signature.set_query(next.clone());
                    Ok(false)
                }
                Some(next) => self.redefine(&signature, &current, next),
            };
            match outcome {
                Ok(false) => {}
                Ok(true) => {
                    report.resynced += 1;
                    due.push(signature.id);
                }
                Err(why) => {
                    report.retired += 1;
                    self.retire(&signature, why);
                }
            }
        }
        self.scheduler.mark_due(due);
        report
    }

    fn signatures(&self) -> Vec<Arc<Signature>> {
        self.by_id
            .iter()
            .map(|entry| entry.value().clone())
            .collect()
    }

    /// Gives a signature its query's changed definition, if its args and rights still hold;
    /// `Ok(true)` when it must be recomputed.
    fn redefine(
        &self,
        signature: &Signature,
        current: &Query,
        next: &Arc<Query>,
    ) -> Result<bool, Retire> {
        if next.auth != current.auth {
            return Err(Retire::Changed("its auth rules changed"));
        }
        let args: serde_json::Value = serde_json::from_str(&signature.args_json)
            .map_err(|_| Retire::Changed("its args no longer parse"))?;
        let canonical = next
            .validate(&args)
            .map_err(|_| Retire::Changed("its args no longer fit the query"))?;
        if *canonical.json != *signature.args_json {
            return Err(Retire::Changed("its args now have another canonical form"));
        }
        signature.set_query(next.clone());
        self.matcher.remove(signature.id);
        self.matcher
            .insert(signature.id, next.watch_entries(&canonical.values));
        Ok(true)
    }

    /// Takes a signature out of the hub and tells each follower (see the module doc).
    fn retire(&self, signature: &Arc<Signature>, why: Retire) {
        let id = signature.id;
        self.by_name
            .remove_if(&signature.signature, |_, current| current.id == id);
        if self.by_id.remove(&id).is_none() {
            return; // retired by someone else meanwhile
        }
        self.matcher.remove(id);
        let (code, message) = match why {
            Retire::Removed => (
                "query_removed",
                "the query was removed from the registry: this subscription has ended".to_owned(),
            ),
            Retire::Changed(how) => (
                "query_changed",
                format!("the query changed ({how}): subscribe again"),
            ),
        };
        let notice = wire::signature_error(&None, code, &signature.signature, &message);
        let followers = std::mem::take(&mut signature.lock().subscribers);
        for outbox in followers.values() {
            outbox.revoke(id, notice.clone());
        }
        self.metrics.subscriptions.dec_by(followers.len() as i64);
        self.metrics.signatures.dec();
        self.signature_places.fetch_sub(1, Ordering::Relaxed);
        for mut followed in self.by_user.iter_mut() {
            followed.remove(&id);
        }
        self.by_user.retain(|_, followed| !followed.is_empty());
        tracing::info!(signature = %signature.signature, code, sockets = followers.len(), "subscription ended by a registry reload");
    }
}
