//! What every change feed hands on, and the state `/readyz` reads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::matcher::Change;
use crate::telemetry::Metrics;

/// What a feed hands to the dispatcher.
#[derive(Debug)]
pub enum FeedEvent {
    Change(Change),
    /// Changes may have been lost: recompute everything.
    Resync,
    /// Every change sent before this one is matched and scheduled once the dispatcher reaches
    /// it: the feed may then tell its source that it has them (the WAL feed confirms `lsn`).
    Reached {
        lsn: u64,
        confirmed: Arc<Confirmed>,
    },
}

/// The last position the dispatcher reached (see [`FeedEvent::Reached`]), for the feed that
/// sent it: only grows, and wakes whoever waits for it.
#[derive(Debug, Default)]
pub struct Confirmed {
    lsn: AtomicU64,
    changed: Notify,
}

impl Confirmed {
    pub fn get(&self) -> u64 {
        self.lsn.load(Ordering::Acquire)
    }

    pub(crate) fn reach(&self, lsn: u64) {
        if self.lsn.fetch_max(lsn, Ordering::AcqRel) < lsn {
            self.changed.notify_one();
        }
    }

    /// Resolves once the position grew since the last call returned.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Whether the LISTEN connection is up, for `/readyz`.
#[derive(Debug, Default)]
pub struct ListenerStatus {
    connected: AtomicBool,
}

impl ListenerStatus {
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self, connected: bool, metrics: &Metrics) {
        self.connected.store(connected, Ordering::Relaxed);
        metrics.listener_connected.set(i64::from(connected));
    }
}
