//! From settings to a [`Config`]: every check that can refuse a configuration, with a message
//! naming the setting, before anything starts.

use std::path::PathBuf;
use std::time::Duration;

use super::demo_secrets;
use super::error::{ConfigError, MIN_SECRET_BYTES};
use super::model::{
    AuthConfig, Config, Database, FeedConfig, HttpConfig, JwksConfig, Limits, Queries,
    RecomputeConfig, Secret,
};
use super::settings::Settings;

impl Settings {
    /// Validates the settings into a [`Config`]; refuses missing or short secrets unless demo.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        self.validate(true)
    }

    /// As [`Self::into_config`], for commands that neither verify nor sign a token (`migrate`,
    /// `check`, `codegen`, `verify`, `refresh`): secrets may be left unset (the configuration
    /// then holds none), and are still checked when given.
    pub fn into_config_without_secrets(self) -> Result<Config, ConfigError> {
        self.validate(false)
    }

    fn validate(self, needs_secrets: bool) -> Result<Config, ConfigError> {
        let demo = self.demo.unwrap_or(self.database_url.is_none());
        if demo && !self.listen.ip().is_loopback() && !self.demo_allow_remote {
            return Err(ConfigError::DemoNotLoopback {
                listen: self.listen,
            });
        }
        let jwks = self
            .jwks_url
            .as_deref()
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| {
                Ok::<_, ConfigError>(JwksConfig {
                    url: jwks_url(url)?,
                    refresh: Duration::from_secs(self.jwks_refresh_secs),
                    min_refetch: Duration::from_secs(self.jwks_min_refetch_secs),
                })
            })
            .transpose()?;
        let cors_origins = cors_origins(self.cors_origins)?;
        let jwt_user_claim = self.jwt_user_claim.trim().to_owned();
        if jwt_user_claim.is_empty() {
            return Err(ConfigError::EmptyUserClaim);
        }
        let jwt_listed = secrets("STATGATE_JWT_SECRET", self.jwt_secret, demo)?;
        let token_listed = secrets("STATGATE_TOKEN_SECRET", self.token_secret, demo)?;
        for (name, value) in [
            ("STATGATE_HEARTBEAT_SECS", self.heartbeat_secs),
            ("STATGATE_TOKEN_TTL_SECS", self.token_ttl_secs),
            ("STATGATE_SLOW_CONSUMER_SECS", self.slow_consumer_secs),
            ("STATGATE_MAX_ARGS_BYTES", self.max_args_bytes as u64),
            (
                "STATGATE_MAX_BATCH_SUBSCRIPTIONS",
                self.max_batch_subscriptions as u64,
            ),
            ("STATGATE_RECOMPUTE_BATCH", self.recompute_batch as u64),
            (
                "STATGATE_RECOMPUTE_CONCURRENCY",
                self.recompute_concurrency as u64,
            ),
            ("STATGATE_POOL_SIZE", u64::from(self.pool_size)),
            ("STATGATE_FEED_POLL_MS", self.feed_poll_ms),
            ("STATGATE_JWKS_REFRESH_SECS", self.jwks_refresh_secs),
            (
                "STATGATE_HEADER_READ_TIMEOUT_SECS",
                self.header_read_timeout_secs,
            ),
            ("STATGATE_REQUEST_TIMEOUT_SECS", self.request_timeout_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::NotPositive { name, value });
            }
        }
        if !(0.0..=1.0).contains(&self.parity_sample_rate) {
            return Err(ConfigError::NotAFraction {
                name: "STATGATE_PARITY_SAMPLE_RATE",
                value: self.parity_sample_rate,
            });
        }
        if let Some(slot) = &self.wal_slot {
            if !is_slot_name(slot) {
                return Err(ConfigError::BadWalSlot(slot.clone()));
            }
        }
        if self.database_read_url.is_some() && self.database_url.is_none() {
            return Err(ConfigError::ReadUrlWithoutUrl);
        }
        if self.keep_alive_timeout_secs > self.header_read_timeout_secs {
            return Err(ConfigError::KeepAliveOverHeaderTimeout {
                keep_alive: self.keep_alive_timeout_secs,
                header_read: self.header_read_timeout_secs,
            });
        }
        // Behind a proxy every TCP peer is the proxy: a per-address connection count would
        // count all clients as one.
        let max_connections_per_ip = if self.trust_forwarded_for {
            0
        } else {
            self.max_connections_per_ip
        };
        if max_connections_per_ip != 0
            && self.max_sockets_per_ip != 0
            && max_connections_per_ip <= self.max_sockets_per_ip
        {
            return Err(ConfigError::ConnectionsBelowSockets {
                connections: max_connections_per_ip,
                sockets: self.max_sockets_per_ip,
            });
        }
        let demo_store = match (demo, &self.database_url) {
            (false, _) => None,
            (true, Some(_)) => Some(demo_secrets::DemoSecrets::per_process()),
            (true, None) => Some(demo_secrets::DemoSecrets::beside(&self.data_dir)),
        };
        // Last, so that a refused configuration writes no demo secret. Commands that sign and
        // verify nothing take only the secrets they are given.
        let (jwt_secrets, token_secrets) = if needs_secrets {
            unset_secrets(jwt_listed, token_listed, demo_store, jwks.is_some())?
        } else {
            (
                jwt_listed.unwrap_or_default(),
                token_listed.unwrap_or_default(),
            )
        };
        let database = match self.database_url {
            Some(url) => Database::External(Secret::new(url)),
            None => Database::Embedded {
                data_dir: self.data_dir,
            },
        };
        Ok(Config {
            database,
            read_database: self.database_read_url.map(Secret::new),
            queries: match self.queries {
                Some(dir) => Queries::Directory(dir),
                None if demo => Queries::Example,
                None => Queries::Directory(PathBuf::from("./queries")),
            },
            demo,
            migrate: !self.no_migrate,
            http: HttpConfig {
                listen: self.listen,
                public_url: self
                    .public_url
                    .map(|url| url.trim_end_matches('/').to_owned()),
                cors_origins,
                heartbeat: Duration::from_secs(self.heartbeat_secs),
                shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
                header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
                request_timeout: Duration::from_secs(self.request_timeout_secs),
                keep_alive_timeout: Duration::from_secs(self.keep_alive_timeout_secs),
                max_connections: self.max_connections.unwrap_or_else(default_max_connections),
                max_connections_per_ip,
            },
            auth: AuthConfig {
                jwt_secrets,
                jwt_audience: self.jwt_audience,
                jwt_issuer: self.jwt_issuer,
                jwt_user_claim,
                jwks,
                token_secrets,
                token_ttl: Duration::from_secs(self.token_ttl_secs),
            },
            feed: FeedConfig {
                mode: self.change_feed,
                poll: Duration::from_millis(self.feed_poll_ms),
                canary: Duration::from_secs(self.feed_canary_secs),
                unrecorded_check: Duration::from_secs(self.unrecorded_check_secs),
                wal_slot: self.wal_slot,
            },
            recompute: RecomputeConfig {
                pool_size: self.pool_size,
                statement_timeout: Duration::from_millis(self.statement_timeout_ms),
                batch: self.recompute_batch,
                concurrency: self.recompute_concurrency,
                window: Duration::from_millis(self.recompute_window_ms),
                parity_sample_rate: self.parity_sample_rate,
            },
            limits: Limits {
                max_body_bytes: self.max_body_bytes,
                max_frame_bytes: self.max_frame_bytes,
                max_subscriptions_per_socket: self.max_subscriptions_per_socket,
                max_messages_per_sec: self.max_messages_per_sec,
                max_args_bytes: self.max_args_bytes,
                idle_timeout: Duration::from_secs(self.idle_timeout_secs),
                trust_forwarded_for: self.trust_forwarded_for,
                subscribe_per_sec_per_user: self.subscribe_per_sec_per_user,
                subscribe_per_sec_per_ip: self.subscribe_per_sec_per_ip,
                max_batch_subscriptions: self.max_batch_subscriptions,
                max_sockets_per_user: self.max_sockets_per_user,
                max_sockets_per_ip: self.max_sockets_per_ip,
                slow_consumer: Duration::from_secs(self.slow_consumer_secs),
                max_signatures: self.max_signatures,
                max_signatures_per_user: self.max_signatures_per_user,
                max_value_rows: self.max_value_rows,
                max_value_bytes: self.max_value_bytes,
            },
        })
    }
}

/// Descriptors kept out of [`default_max_connections`]: the database pools, the LISTEN
/// connection, the registry and log files, the listening socket.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The process's open-files limit minus [`RESERVED_DESCRIPTORS`] (at least 64): past it,
/// accepting would fail with EMFILE and take the descriptors the database needs.
fn default_max_connections() -> usize {
    let soft = rlimit::Resource::NOFILE
        .get()
        .map_or(1024, |(soft, _hard)| soft);
    let usable = soft.saturating_sub(RESERVED_DESCRIPTORS).max(64);
    usize::try_from(usable).unwrap_or(usize::MAX)
}

/// The secrets a setting lists, or `None` when it lists none (the caller decides whether that
/// is an error or where the secret comes from instead).
fn secrets(
    name: &'static str,
    values: Vec<String>,
    demo: bool,
) -> Result<Option<Vec<Secret>>, ConfigError> {
    let values: Vec<String> = values
        .into_iter()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .collect();
    if values.is_empty() {
        return Ok(None);
    }
    if !demo {
        if let Some(short) = values.iter().find(|value| value.len() < MIN_SECRET_BYTES) {
            return Err(ConfigError::ShortSecret {
                name,
                len: short.len(),
            });
        }
    }
    Ok(Some(values.into_iter().map(Secret::new).collect()))
}

/// The secrets of both settings: those listed, else (demo mode) random ones, else an error.
/// Outside demo mode a key set may stand in for JWT secrets. In demo mode a secret left unset
/// is random, per data directory (kept beside it, so demo JWTs survive a restart) or, against
/// `DATABASE_URL`, per process; never a constant.
fn unset_secrets(
    jwt_listed: Option<Vec<Secret>>,
    token_listed: Option<Vec<Secret>>,
    demo_store: Option<demo_secrets::DemoSecrets>,
    has_key_set: bool,
) -> Result<(Vec<Secret>, Vec<Secret>), ConfigError> {
    let jwt_secrets = match (jwt_listed, &demo_store) {
        (Some(secrets), _) => secrets,
        // The demo page mints HS256 JWTs for its user, key set or not.
        (None, Some(store)) => vec![store.secret("STATGATE_JWT_SECRET")?],
        (None, None) if has_key_set => Vec::new(),
        (None, None) => return Err(ConfigError::NoJwtVerifier),
    };
    let token_secrets = match (token_listed, &demo_store) {
        (Some(secrets), _) => secrets,
        (None, Some(store)) => vec![store.secret("STATGATE_TOKEN_SECRET")?],
        (None, None) => {
            return Err(ConfigError::MissingSecret {
                name: "STATGATE_TOKEN_SECRET",
            })
        }
    };
    Ok((jwt_secrets, token_secrets))
}

/// The origins of `STATGATE_CORS_ORIGINS`, each `*` or `scheme://host[:port]` (what browsers
/// send in `Origin`), without a trailing slash.
fn cors_origins(values: Vec<String>) -> Result<Vec<String>, ConfigError> {
    values
        .into_iter()
        .map(|value| value.trim().trim_end_matches('/').to_owned())
        .filter(|value| !value.is_empty())
        .map(|origin| {
            if origin == "*" {
                return Ok(origin);
            }
            match reqwest::Url::parse(&origin) {
                Ok(url)
                    if matches!(url.scheme(), "http" | "https")
                        && url.has_host()
                        && url.path() == "/"
                        && url.query().is_none()
                        && url.origin().ascii_serialization() == origin =>
                {
                    Ok(origin)
                }
                _ => Err(ConfigError::BadCorsOrigin(origin)),
            }
        })
        .collect()
}

fn jwks_url(value: &str) -> Result<reqwest::Url, ConfigError> {
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        _ => Err(ConfigError::BadJwksUrl(value.to_owned())),
    }
}

/// What PostgreSQL accepts as a replication slot name.
fn is_slot_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}
