//! The state one running gateway shares between its request handlers, socket tasks and
//! long-lived tasks: configuration, registry, authenticator, pools, hub, metrics, limits and the
//! shutdown token. Built once by `crate::app`; cheap to clone (every part is an `Arc` or a
//! handle). It sits below `http`, `ws` and `demo`, which take it, and above the domain modules
//! it holds, so nothing that builds it is needed to use it.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::hub::Hub;
use crate::limits::{SocketLimits, SubscribeLimits};
use crate::listener::ListenerStatus;
use crate::registry::SharedRegistry;
use crate::telemetry::Metrics;

/// Everything a request handler or socket task may need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) config: Arc<Config>,
    /// Replaced whole on SIGHUP (see [`crate::reload`]).
    pub(crate) registry: Arc<SharedRegistry>,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) pool: PgPool,
    /// Where recompute queries run: the `DATABASE_READ_URL` replica, or `pool` itself.
    pub(crate) read_pool: PgPool,
    pub(crate) hub: Arc<Hub>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) listener: Arc<ListenerStatus>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) sockets: TaskTracker,
    pub(crate) next_socket: Arc<AtomicU64>,
    pub(crate) subscribe_limits: Arc<SubscribeLimits>,
    pub(crate) socket_limits: Arc<SocketLimits>,
    pub(crate) address: SocketAddr,
}

impl AppState {
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn auth(&self) -> &Authenticator {
        &self.auth
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The primary's pool (LISTEN, migrations and checks also run on the primary).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The address the gateway listens on (the real port when configured with port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}
