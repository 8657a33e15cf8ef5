//! The subscriptions one socket holds, keyed by signature. Owning them through this type is
//! what makes a connection leave nothing behind: dropping it detaches every one from the hub,
//! however the connection ended.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::auth::Claims;
use crate::hub::{Hub, Outbox, Signature, SignatureRefused};

use super::subscription::VerifiedSubscription;

/// The socket's subscriptions; detaches them all when dropped.
pub(super) struct Subscriptions {
    hub: Arc<Hub>,
    user: Arc<str>,
    socket: u64,
    by_signature: HashMap<Arc<str>, Arc<Signature>>,
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        for signature in self.by_signature.values() {
            self.hub.detach(&self.user, signature, self.socket);
        }
    }
}

impl Subscriptions {
    pub(super) fn new(hub: Arc<Hub>, user: &str, socket: u64) -> Self {
        Self {
            hub,
            user: Arc::from(user),
            socket,
            by_signature: HashMap::new(),
        }
    }

    pub(super) fn get(&self, signature: &str) -> Option<&Arc<Signature>> {
        self.by_signature.get(signature)
    }

    pub(super) fn len(&self) -> usize {
        self.by_signature.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_signature.is_empty()
    }

    /// Attaches a verified subscription to the hub, which sends its values to `outbox`.
    pub(super) fn attach(
        &mut self,
        subscription: &VerifiedSubscription,
        outbox: &Arc<Outbox>,
    ) -> Result<Arc<Signature>, SignatureRefused> {
        let signature = self.hub.attach(
            &self.user,
            &subscription.signature,
            &subscription.query,
            &subscription.args.values,
            &subscription.args.json,
            self.socket,
            outbox,
        )?;
        self.by_signature
            .insert(signature.signature.clone(), signature.clone());
        Ok(signature)
    }

    /// Detaches one subscription from the hub and forgets its pending value; false if the
    /// socket holds none with that signature.
    pub(super) fn detach(&mut self, signature: &str, outbox: &Outbox) -> bool {
        let Some(existing) = self.by_signature.remove(signature) else {
            return false;
        };
        self.hub.detach(&self.user, &existing, self.socket);
        outbox.forget(existing.id);
        true
    }

    /// Forgets the subscriptions the hub revoked (it already detached them and told the
    /// client); returns whether any was.
    pub(super) fn forget_revoked(&mut self, outbox: &Outbox) -> bool {
        let revoked = outbox.take_revoked();
        if revoked.is_empty() {
            return false;
        }
        self.by_signature
            .retain(|_, signature| !revoked.contains(&signature.id));
        true
    }

    /// The signatures `claims` may no longer hold, each with the reason.
    pub(super) fn forbidden_for(&self, claims: &Claims) -> Vec<(Arc<str>, String)> {
        self.by_signature
            .iter()
            .filter(|(_, subscription)| !subscription.query().auth.is_empty())
            .filter_map(|(signature, subscription)| {
                let refusal = auth_refusal(subscription, claims)?;
                Some((signature.clone(), refusal))
            })
            .collect()
    }
}

/// Why `claims` may not hold `subscription`, if they may not.
fn auth_refusal(subscription: &Signature, claims: &Claims) -> Option<String> {
    let query = subscription.query();
    let args = serde_json::from_str::<Value>(&subscription.args_json)
        .ok()
        .and_then(|args| query.validate(&args).ok());
    match args {
        Some(args) => query
            .authorize(&args, claims)
            .err()
            .map(|forbidden| forbidden.to_string()),
        // Args the registry accepted when subscribing always validate again; refuse if not.
        None => Some("the subscription's args no longer validate".to_owned()),
    }
}
