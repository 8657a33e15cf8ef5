//! The database: where it comes from (external or embedded), the pool, and migrations
//! ([`migrations`]).
//!
//! Recompute statements run on the pool with a server-side `statement_timeout`, so a slow
//! query cannot hold a connection forever. The LISTEN connection is not from this pool
//! (see `listener`).

pub mod migrations;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::{Config, Database};
use crate::embedded::{EmbeddedError, EmbeddedOptions, EmbeddedPostgres};

pub use migrations::{MigrationError, MigrationReport, MigrationSet};

/// The database the embedded server serves to statgate.
const EMBEDDED_DATABASE: &str = "postgres";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid DATABASE_URL: {0}")]
    Url(#[source] sqlx::Error),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] MigrationError),
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
}

/// A connection URL and, for the embedded server, the handle that keeps it running.
pub struct DatabaseHandle {
    pub url: String,
    pub embedded: Option<EmbeddedPostgres>,
}

impl DatabaseHandle {
    /// Uses `DATABASE_URL`, or starts the embedded server.
    pub async fn open(config: &Config) -> Result<Self, DbError> {
        match &config.database {
            Database::External(url) => Ok(DatabaseHandle {
                url: url.expose().to_owned(),
                embedded: None,
            }),
            Database::Embedded { data_dir } => {
                let options = EmbeddedOptions {
                    data_dir: data_dir.clone(),
                    ..EmbeddedOptions::default()
                };
                let server = EmbeddedPostgres::start(options).await?;
                Ok(DatabaseHandle {
                    url: server.url(EMBEDDED_DATABASE),
                    embedded: Some(server),
                })
            }
        }
    }

    /// Stops the embedded server, if there is one.
    pub async fn close(mut self) {
        if let Some(server) = self.embedded.as_mut() {
            if let Err(err) = server.stop().await {
                tracing::warn!(error = %err, "embedded postgresql did not stop cleanly");
            }
        }
    }
}

/// Connects the recompute pool, with the statement timeout set on every connection.
pub async fn connect_pool(url: &str, config: &Config) -> Result<PgPool, DbError> {
    let timeout_ms = config.recompute.statement_timeout.as_millis().to_string();
    let options: PgConnectOptions = url.parse().map_err(DbError::Url)?;
    let options = options
        .options([("statement_timeout", timeout_ms.as_str())])
        .application_name("statgate");
    PgPoolOptions::new()
        .max_connections(config.recompute.pool_size)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(DbError::Connect)
}

/// Applies statgate's migrations, and the example application's with
/// [`MigrationSet::WithExample`].
pub async fn migrate(pool: &PgPool, set: MigrationSet) -> Result<MigrationReport, DbError> {
    Ok(migrations::migrate(pool, set).await?)
}
