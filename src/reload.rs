//! Reloading the registry of a running gateway (SIGHUP).
//!
//! A registry edit must not need a restart (every socket would reconnect) and must not be able
//! to take a working gateway down. So the new registry is loaded and checked against the
//! database exactly as at start-up (every query prepares, every watch is in place) before
//! anything changes; if it fails, the old one stays and the error is logged. Once it passes it
//! is put in force for new subscriptions, and the signatures in memory move to it (see
//! `hub::reload`): changed queries are recomputed, removed ones end with an `error` event.

use crate::hub::Reloaded;
use crate::registry::{Registry, RegistryError};
use crate::state::AppState;

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub signatures: Reloaded,
}

/// Loads, checks and puts in force the configured registry; on any error the registry in force
/// stays as it was.
pub async fn reload_registry(state: &AppState) -> Result<ReloadReport, RegistryError> {
    let next = Registry::configured(&state.config.queries)?;
    next.check(&state.pool).await?;
    if state.config.read_database.is_some() {
        next.check(&state.read_pool).await?;
    }
    let mut report = compare(&state.registry.get(), &next);
    state.registry.replace(next);
    report.signatures = state.hub.reload(&state.registry.get());
    Ok(report)
}

fn compare(old: &Registry, new: &Registry) -> ReloadReport {
    let mut report = ReloadReport::default();
    for query in new.queries() {
        match old.get(&query.name) {
            None => report.added += 1,
            Some(before) if **before != **query => report.changed += 1,
            Some(_) => {}
        }
    }
    report.removed = old
        .queries()
        .filter(|query| new.get(&query.name).is_none())
        .count();
    report
}
