//! Wiring: [`Application::build`] opens the database, migrates, loads and checks the registry,
//! binds the listener (port 0 works, and [`Application::address`] reports the real one) and
//! starts the long-lived tasks; [`Application::run`] serves until the shutdown token fires and
//! then drains (docs/ARCHITECTURE.md: stop accepting, close sockets with 1001, drain within the deadline,
//! stop the listener, stop the embedded server).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::{ChangeFeed, Config};
use crate::db::{self, DatabaseHandle, DbError};
use crate::hub::Hub;
use crate::listener::table::{self, FeedError};
use crate::listener::unrecorded::UnrecordedChanges;
use crate::listener::wal::checks::WalSetupError;
use crate::listener::wal::TargetError;
use crate::listener::{Canary, ListenerStatus, NotifyFeed, Supervisor, TableFeed, WalFeed};
use crate::matcher::Matcher;
use crate::recompute::Recompute;
use crate::registry::{Registry, RegistryError, SharedRegistry};
use crate::scheduler::Scheduler;
pub use crate::state::AppState;
use crate::telemetry::Metrics;

/// Notifications buffered between the listener and the dispatcher.
const FEED_CAPACITY: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("demo seed failed: {0}")]
    Seed(sqlx::Error),
    #[error(transparent)]
    Feed(#[from] FeedError),
    #[error(transparent)]
    Wal(#[from] WalSetupError),
    #[error(transparent)]
    WalTarget(#[from] TargetError),
}

pub struct Application {
    state: AppState,
    tcp: TcpListener,
    database: DatabaseHandle,
    tasks: Vec<JoinHandle<()>>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let database = DatabaseHandle::open(&config).await?;
        match Self::build_on(config, &database).await {
            Ok((state, tcp, tasks)) => Ok(Application {
                state,
                tcp,
                database,
                tasks,
            }),
            Err(err) => {
                database.close().await;
                Err(err)
            }
        }
    }

    async fn build_on(
        config: Config,
        database: &DatabaseHandle,
    ) -> Result<(AppState, TcpListener, Vec<JoinHandle<()>>), StartError> {
        let pool = db::connect_pool(&database.url, &config).await?;
        if config.migrate {
            db::migrate(&pool, db::MigrationSet::for_mode(config.demo, false)).await?;
        }
        let registry = Registry::configured(&config.queries)?;
        registry.check(&pool).await?;
        let read_pool = match &config.read_database {
            Some(url) => {
                let read_pool = db::connect_pool(url.expose(), &config).await?;
                registry.check(&read_pool).await?;
                read_pool
            }
            None => pool.clone(),
        };
        table::set_database_mode(&pool, config.feed.mode).await?;
        if config.feed.mode == ChangeFeed::Wal {
            crate::listener::wal::checks::check(&pool).await?;
        }
        if config.demo {
            seed_demo(&pool).await?;
        }
        let tcp = TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| StartError::Bind {
                address: config.http.listen,
                source,
            })?;
        let address = tcp.local_addr().map_err(|source| StartError::Bind {
            address: config.http.listen,
            source,
        })?;
        tracing::info!(
            %address,
            queries = registry.len(),
            max_connections = config.http.max_connections,
            "statgate listening"
        );

        let metrics = Arc::new(Metrics::new());
        let matcher = Arc::new(Matcher::new());
        let scheduler = Arc::new(Scheduler::new());
        let hub = Arc::new(Hub::new(
            matcher.clone(),
            scheduler.clone(),
            metrics.clone(),
            crate::hub::HubLimits {
                max_signatures: config.limits.max_signatures,
                max_signatures_per_user: config.limits.max_signatures_per_user,
                max_value_rows: config.limits.max_value_rows,
                max_value_bytes: config.limits.max_value_bytes,
            },
        ));
        let status = Arc::new(ListenerStatus::default());
        let shutdown = CancellationToken::new();
        let (events_tx, events_rx) = mpsc::channel(FEED_CAPACITY);
        let unrecorded = if config.feed.unrecorded_check.is_zero() {
            None
        } else {
            Some(
                UnrecordedChanges::start(
                    pool.clone(),
                    config.feed.unrecorded_check,
                    events_tx.clone(),
                    metrics.clone(),
                )
                .await,
            )
        };

        let feed = match config.feed.mode {
            ChangeFeed::Notify => {
                let canary = (!config.feed.canary.is_zero())
                    .then(|| Canary::new(pool.clone(), config.feed.canary));
                let feed = NotifyFeed::new(database.url.clone(), metrics.clone(), canary);
                let supervisor = Supervisor::new(feed, events_tx, status.clone(), metrics.clone());
                tokio::spawn(supervisor.run(shutdown.clone()))
            }
            ChangeFeed::Table => {
                let feed = TableFeed::new(database.url.clone(), config.feed.poll, metrics.clone());
                let supervisor = Supervisor::new(feed, events_tx, status.clone(), metrics.clone());
                tokio::spawn(supervisor.run(shutdown.clone()))
            }
            ChangeFeed::Wal => {
                let feed = WalFeed::new(
                    &database.url,
                    config.feed.wal_slot.clone(),
                    pool.clone(),
                    metrics.clone(),
                    config.feed.canary,
                )?;
                let supervisor = Supervisor::new(feed, events_tx, status.clone(), metrics.clone());
                tokio::spawn(supervisor.run(shutdown.clone()))
            }
        };
        let recompute = Recompute {
            pool: read_pool.clone(),
            parity_sample_rate: config.recompute.parity_sample_rate,
            hub: hub.clone(),
            scheduler: scheduler.clone(),
            metrics: metrics.clone(),
            batch_size: config.recompute.batch,
            concurrency: config.recompute.concurrency,
            window: config.recompute.window,
        };
        let mut tasks = vec![
            feed,
            tokio::spawn(crate::dispatch::dispatch(
                events_rx,
                matcher,
                hub.clone(),
                scheduler,
                metrics.clone(),
                config.recompute.parity_sample_rate,
            )),
            tokio::spawn(recompute.run(shutdown.clone())),
        ];
        if let Some(unrecorded) = unrecorded {
            tasks.push(tokio::spawn(unrecorded.run(shutdown.clone())));
        }
        let subscribe_limits = Arc::new(crate::limits::SubscribeLimits::new(
            config.limits.subscribe_per_sec_per_user,
            config.limits.subscribe_per_sec_per_ip,
        ));
        let socket_limits = Arc::new(crate::limits::SocketLimits::new(
            config.limits.max_sockets_per_user,
            config.limits.max_sockets_per_ip,
        ));
        let auth = Arc::new(Authenticator::new(&config));
        if let Some(key_set) = auth.key_set() {
            tasks.push(key_set.start(shutdown.clone()).await);
        }
        let state = AppState {
            auth,
            config: Arc::new(config),
            registry: Arc::new(SharedRegistry::new(registry)),
            pool,
            read_pool,
            hub,
            metrics,
            listener: status,
            shutdown,
            sockets: TaskTracker::new(),
            next_socket: Arc::new(AtomicU64::new(1)),
            subscribe_limits,
            socket_limits,
            address,
        };
        Ok((state, tcp, tasks))
    }

    pub fn address(&self) -> SocketAddr {
        self.state.address
    }

    /// The embedded PostgreSQL server, when statgate runs one (no `DATABASE_URL`).
    pub fn embedded_database(&self) -> Option<&crate::embedded::EmbeddedPostgres> {
        self.database.embedded.as_ref()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Cancelling this token starts the graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains and stops everything.
    pub async fn run(self) -> Result<(), std::io::Error> {
        let Application {
            state,
            tcp,
            database,
            tasks,
        } = self;
        // The demo page and its write endpoints exist only in demo mode (see `crate::demo`).
        let demo = if state.config.demo {
            crate::demo::router(state.clone())
        } else {
            axum::Router::new()
        };
        let router = crate::http::router(state.clone(), demo);
        let grace = state.config.http.shutdown_grace;
        let deadline = crate::edge::Edge::new(&state.config.http, state.metrics.clone())
            .serve(tcp, router, state.shutdown.clone(), grace)
            .await;
        state.shutdown.cancel();
        state.sockets.close();
        if tokio::time::timeout_at(deadline, state.sockets.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "some sockets did not drain before the deadline"
            );
        }
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        state.pool.close().await;
        state.read_pool.close().await;
        database.close().await;
        tracing::info!("statgate stopped");
        Ok(())
    }
}

/// Seeds the example data when the demo seed function exists (idempotent).
async fn seed_demo(pool: &PgPool) -> Result<(), StartError> {
    let exists: bool = sqlx::query_scalar("select to_regproc('statgate_demo_seed') is not null")
        .fetch_one(pool)
        .await
        .map_err(StartError::Seed)?;
    if exists {
        sqlx::query("select statgate_demo_seed()")
            .execute(pool)
            .await
            .map_err(StartError::Seed)?;
    }
    Ok(())
}
