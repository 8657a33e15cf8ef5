//! One supervisor for every change feed: connect with back-off, announce, resync, run until the
//! session ends, and start again.
//!
//! Changes sent while a feed is away may be lost (NOTIFY has no replay), and even a feed that
//! keeps its changes may come back to another database than it left (a failover can lose commits
//! already pushed). So every new session, however it came about, is counted, logged and followed
//! by a resync before it forwards anything, and `/readyz` says 503 between sessions. Written
//! once here, the rule holds for every feed. The one exception is a session that says it
//! resumes (the WAL feed on a named slot that survived): it delivers every change after the
//! last position the dispatcher confirmed, so a resync would only repeat work.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::feed::{FeedEvent, ListenerStatus};
use crate::telemetry::Metrics;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Connection attempts are at most this far apart, so an outage ends in a reconnect within
/// this much of the database's return.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Shutdown,
    /// The connection was lost, found silent, or failed: replace it.
    Replace,
}

/// One change feed's sessions: how to open one, and how to run it.
pub trait Feed: Send {
    type Session: Send;
    /// Why a connection attempt failed (logged, then retried).
    type Error: std::fmt::Display + Send;
    /// How logs name it ("listener", "feed poller").
    const NAME: &'static str;

    /// One attempt to open a session: a connection that is ready to deliver.
    fn connect(&self) -> impl Future<Output = Result<Self::Session, Self::Error>> + Send;

    /// Whether `session` delivers every change after the last position this feed had
    /// confirmed, so that no resync is needed (see the module doc). No by default.
    fn resumes(_session: &Self::Session) -> bool {
        false
    }

    /// Forwards changes until the session ends.
    fn run(
        &mut self,
        session: Self::Session,
        events: &mpsc::Sender<FeedEvent>,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = Ended> + Send;
}

/// Runs a [`Feed`] until shutdown (see the module doc).
pub struct Supervisor<F> {
    feed: F,
    events: mpsc::Sender<FeedEvent>,
    status: Arc<ListenerStatus>,
    metrics: Arc<Metrics>,
}

impl<F: Feed> Supervisor<F> {
    pub fn new(
        feed: F,
        events: mpsc::Sender<FeedEvent>,
        status: Arc<ListenerStatus>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Supervisor {
            feed,
            events,
            status,
            metrics,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut first = true;
        while !shutdown.is_cancelled() {
            let feed = &self.feed;
            let Some(session) = retry_with_backoff(F::NAME, &shutdown, || feed.connect()).await
            else {
                break;
            };
            self.status.set(true, &self.metrics);
            let resumes = F::resumes(&session);
            if !first {
                self.metrics.listener_reconnects.inc();
            }
            match (first, resumes) {
                (true, false) => tracing::info!("{} connected", F::NAME),
                (true, true) => tracing::info!(
                    "{} connected, resuming from its confirmed position (no resync)",
                    F::NAME
                ),
                (false, false) => {
                    tracing::info!("{} reconnected, resyncing every signature", F::NAME)
                }
                (false, true) => tracing::info!(
                    "{} reconnected, resuming from its confirmed position (no resync)",
                    F::NAME
                ),
            }
            first = false;
            if !resumes && self.events.send(FeedEvent::Resync).await.is_err() {
                break;
            }
            let ended = self.feed.run(session, &self.events, &shutdown).await;
            self.status.set(false, &self.metrics);
            if ended == Ended::Shutdown {
                break;
            }
        }
        self.status.set(false, &self.metrics);
    }
}

/// Runs `attempt` until it succeeds, sleeping with capped exponential back-off between tries;
/// `None` once shutdown begins.
async fn retry_with_backoff<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        match attempt().await {
            Ok(connected) => return Some(connected),
            Err(err) => {
                tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "{what} cannot connect")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
