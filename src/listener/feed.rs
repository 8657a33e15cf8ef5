//! What every change feed hands on, and the state `/readyz` reads.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::matcher::Change;
use crate::telemetry::Metrics;

/// What a feed hands to the dispatcher.
#[derive(Debug)]
pub enum FeedEvent {
    Change(Change),
    /// Changes may have been lost: recompute everything.
    Resync,
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
