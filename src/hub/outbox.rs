//! A socket's outbox: what is waiting to be written to one WebSocket.
//!
//! Updates are keyed by signature and the newest value replaces an unsent older one (counts
//! are state, not events), so the outbox holds at most one update per subscription and its
//! memory is bounded by the subscription limit whatever the client's reading speed. Control
//! frames (replies, errors) queue in order, up to a fixed bound. The socket task is the only
//! reader; producers never wait.

use std::collections::VecDeque;
use std::sync::Mutex;

use axum::extract::ws::Utf8Bytes;
use indexmap::IndexMap;
use tokio::sync::Notify;

/// Control frames allowed to wait; past this the client is not reading its replies.
pub const MAX_CONTROL_FRAMES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many unsent replies")]
pub struct ControlOverflow;

#[derive(Default)]
struct Pending {
    control: VecDeque<Utf8Bytes>,
    updates: IndexMap<u64, Utf8Bytes>,
    /// Signatures the hub ended (their query left the registry, or changed beyond its args),
    /// for the socket task to drop from its subscriptions.
    revoked: Vec<u64>,
    overflowed: bool,
}

#[derive(Default)]
pub struct Outbox {
    pending: Mutex<Pending>,
    ready: Notify,
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues the newest value of a signature; returns true when it replaced an unsent one.
    pub fn push_update(&self, signature: u64, frame: Utf8Bytes) -> bool {
        let replaced = self.lock().updates.insert(signature, frame).is_some();
        self.ready.notify_one();
        replaced
    }

    /// Queues a reply or error event.
    pub fn push_control(&self, frame: Utf8Bytes) {
        {
            let mut pending = self.lock();
            if pending.control.len() >= MAX_CONTROL_FRAMES {
                pending.overflowed = true;
            } else {
                pending.control.push_back(frame);
            }
        }
        self.ready.notify_one();
    }

    /// Drops an unsent update of a signature the socket no longer follows.
    pub fn forget(&self, signature: u64) {
        self.lock().updates.shift_remove(&signature);
    }

    /// Ends the socket's subscription to a signature on the hub's side: its unsent update is
    /// dropped, `notice` (an error event naming it) queued, and the socket task told to forget
    /// it ([`Self::take_revoked`]).
    pub fn revoke(&self, signature: u64, notice: Utf8Bytes) {
        {
            let mut pending = self.lock();
            pending.updates.shift_remove(&signature);
            pending.revoked.push(signature);
        }
        self.push_control(notice);
    }

    /// The signatures revoked since the last call.
    pub fn take_revoked(&self) -> Vec<u64> {
        std::mem::take(&mut self.lock().revoked)
    }

    /// Moves everything pending into `out`: control frames first, then updates.
    pub fn drain_into(&self, out: &mut Vec<Utf8Bytes>) -> Result<(), ControlOverflow> {
        let mut pending = self.lock();
        if pending.overflowed {
            return Err(ControlOverflow);
        }
        out.extend(pending.control.drain(..));
        out.extend(pending.updates.drain(..).map(|(_, frame)| frame));
        Ok(())
    }

    /// Waits until something is pending (returns at once if something already is).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    pub fn is_empty(&self) -> bool {
        let pending = self.lock();
        pending.control.is_empty() && pending.updates.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(outbox: &Outbox) -> Vec<String> {
        let mut out = Vec::new();
        outbox.drain_into(&mut out).expect("no overflow");
        out.iter().map(|f| f.as_str().to_owned()).collect()
    }

    #[test]
    fn the_newest_value_replaces_an_unsent_one_and_keeps_its_place() {
        let outbox = Outbox::new();
        assert!(!outbox.push_update(1, "a1".into()));
        assert!(!outbox.push_update(2, "b1".into()));
        assert!(outbox.push_update(1, "a2".into()));
        outbox.push_control("reply".into());
        assert_eq!(drained(&outbox), vec!["reply", "a2", "b1"]);
        assert!(outbox.is_empty());
    }

    #[test]
    fn forgotten_signatures_are_not_sent() {
        let outbox = Outbox::new();
        outbox.push_update(1, "a".into());
        outbox.forget(1);
        assert!(drained(&outbox).is_empty());
    }

    #[test]
    fn too_many_control_frames_is_an_overflow() {
        let outbox = Outbox::new();
        for _ in 0..=MAX_CONTROL_FRAMES {
            outbox.push_control("x".into());
        }
        assert_eq!(outbox.drain_into(&mut Vec::new()), Err(ControlOverflow));
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_reader() {
        let outbox = std::sync::Arc::new(Outbox::new());
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.ready().await }
        });
        outbox.push_update(1, "x".into());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }
}
