//! Where the replication connection goes: the server, role and database of `DATABASE_URL`,
//! with its TLS mode, as the replication client wants them.

use pgwire_replication::{ReplicationConfig, SslMode, TlsConfig};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// The publication the feed reads (migration 0010).
pub const PUBLICATION: &str = "statgate_watches";
/// `application_name` of the replication connection, as seen in `pg_stat_activity` and
/// `pg_stat_replication`.
pub const WAL_APPLICATION_NAME: &str = "statgate-wal-feed";

/// Session settings of the replication connection: values arrive as their type's text
/// output, so dates and times are rendered the one way the matcher reads them.
const SESSION_OPTIONS: &str = "-c datestyle=ISO,YMD -c timezone=UTC -c extra_float_digits=1";

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid DATABASE_URL for the replication connection: {0}")]
    Url(String),
}

/// The replication connection's server, role and database.
#[derive(Clone)]
pub struct Target {
    host: String,
    port: u16,
    user: String,
    password: String,
    database: String,
    tls: TlsConfig,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Target({}@{}:{}/{})",
            self.user, self.host, self.port, self.database
        )
    }
}

impl Target {
    /// Reads `url` as sqlx does (the `PG*` environment variables fill what it leaves out); the
    /// password comes from the URL, else `PGPASSWORD`.
    pub fn from_url(url: &str) -> Result<Target, TargetError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|err: sqlx::Error| TargetError::Url(err.to_string()))?;
        let parsed = url::Url::parse(url).map_err(|err| TargetError::Url(err.to_string()))?;
        let password = match parsed.password() {
            Some(password) => percent_decode(password),
            None => std::env::var("PGPASSWORD").unwrap_or_default(),
        };
        let query = |name: &str| {
            parsed
                .query_pairs()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
        };
        let root = query("sslrootcert").map(Into::into);
        let tls = match options.get_ssl_mode() {
            PgSslMode::Disable | PgSslMode::Allow => TlsConfig::disabled(),
            PgSslMode::Prefer => TlsConfig {
                mode: SslMode::Prefer,
                ..TlsConfig::default()
            },
            PgSslMode::Require => TlsConfig::require(),
            PgSslMode::VerifyCa => TlsConfig::verify_ca(root),
            PgSslMode::VerifyFull => TlsConfig::verify_full(root),
        };
        let host = match options.get_socket() {
            Some(socket) => socket.to_string_lossy().into_owned(),
            None => options.get_host().to_owned(),
        };
        Ok(Target {
            host,
            port: options.get_port(),
            user: options.get_username().to_owned(),
            password,
            database: options
                .get_database()
                .unwrap_or(options.get_username())
                .to_owned(),
            tls,
        })
    }

    /// The configuration of one replication session on `slot`.
    pub fn config(&self, slot: &str) -> ReplicationConfig {
        let config = ReplicationConfig::new(
            self.host.clone(),
            self.user.clone(),
            self.password.clone(),
            self.database.clone(),
            slot,
            PUBLICATION,
        )
        .with_port(self.port)
        .with_options(SESSION_OPTIONS)
        .with_application_name(WAL_APPLICATION_NAME)
        // Confirmed positions reach the server within a second of the dispatcher reaching
        // them; an idle stream still says it is alive every few seconds.
        .with_status_interval(std::time::Duration::from_secs(1))
        .with_wakeup_interval(std::time::Duration::from_secs(5));
        if self.host.starts_with('/') {
            config
        } else {
            config.with_tls(self.tls.clone())
        }
    }
}

fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("p={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_gives_server_role_password_and_database() {
        let target =
            Target::from_url("postgres://gate:p%40ss+w@db.example:6432/app?sslmode=require")
                .expect("parses");
        assert_eq!(
            (
                target.host.as_str(),
                target.port,
                target.user.as_str(),
                target.password.as_str(),
                target.database.as_str()
            ),
            ("db.example", 6432, "gate", "p@ss+w", "app")
        );
        assert_eq!(target.tls.mode, SslMode::Require);
        let config = target.config("node_1");
        assert_eq!(config.slot, "node_1");
        assert_eq!(config.publication.names(), [PUBLICATION]);
        assert!(format!("{target:?}").contains("gate@db.example"));
        assert!(
            !format!("{target:?}").contains("p@ss"),
            "no password in logs"
        );
    }
}
