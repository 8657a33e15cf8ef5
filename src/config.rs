//! Configuration: the command line, the environment variables of SPEC §7, and the typed
//! [`Config`] the rest of the crate receives.
//!
//! Only this module knows about flags and environment variables; library code takes a
//! `Config` (tests build one as a literal through [`Config::for_tests`]). Secrets live in
//! [`Secret`], which never prints its contents.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Secrets shorter than this are refused outside demo mode (SPEC §4).
pub const MIN_SECRET_BYTES: usize = 32;

/// The fixed demo secret: demo tokens keep working across restarts, and it is long enough to
/// pass the same checks as a real one. It is never used outside demo mode.
const DEMO_SECRET: &str = "statgate-demo-secret-do-not-use-in-production";

/// A secret string whose `Debug` and `Display` never reveal it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{name} is not set: statgate needs at least one secret of {MIN_SECRET_BYTES} bytes or more \
         outside demo mode (set {name}, or run with --demo for local development)"
    )]
    MissingSecret { name: &'static str },
    #[error(
        "{name} holds a secret of {len} bytes: secrets must be at least {MIN_SECRET_BYTES} bytes \
         (generate one with `openssl rand -base64 48`)"
    )]
    ShortSecret { name: &'static str, len: usize },
    #[error("{name} must be a positive number, got {value}")]
    NotPositive { name: &'static str, value: u64 },
    #[error("{name} must be between 0 and 1, got {value}")]
    NotAFraction { name: &'static str, value: f64 },
    #[error("DATABASE_READ_URL is set without DATABASE_URL: a read replica needs the primary it follows")]
    ReadUrlWithoutUrl,
}

#[derive(Debug, Parser)]
#[command(
    name = "statgate",
    version,
    about = "Realtime stat subscriptions over WebSockets, fed by PostgreSQL"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Apply the migrations and exit.
    Migrate,
    /// Load the registry and prepare every query against the database.
    Check,
    /// Mint a JWT with the configured secret (development only).
    Token {
        /// The user id, put in the `sub` claim.
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. `30m`, `1h`, `7d`.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Generate client types from the registry and the database's column types.
    Codegen {
        #[command(subcommand)]
        target: CodegenTarget,
    },
    /// Compare every declared counter and rollup with live SQL; exits 1 on drift.
    Verify {
        /// Only this counter (its name in `statgate.counters`).
        #[arg(long)]
        counter: Option<String>,
    },
    /// Rewrite a counter or rollup from its source table.
    Refresh {
        /// The counter's name in `statgate.counters`.
        name: String,
    },
    /// GET PATH from the gateway at STATGATE_LISTEN (a wildcard address on loopback); exits 0
    /// on a 2xx answer, 1 otherwise. For container HEALTHCHECKs: needs no curl.
    Healthcheck {
        /// `/healthz` (the process answers) or `/readyz` (its database connections work).
        #[arg(default_value = "/healthz")]
        path: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CodegenTarget {
    /// TypeScript declarations for `@statgate/client` (migrates first unless `--no-migrate`).
    Ts {
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Every setting, from flags or environment variables.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// PostgreSQL to use; unset means the embedded server.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// A read replica for recompute queries (the LISTEN connection, migrations and checks stay
    /// on `DATABASE_URL`).
    #[arg(long, env = "DATABASE_READ_URL", global = true, hide_env_values = true)]
    pub database_read_url: Option<String>,
    /// Address to bind.
    #[arg(
        long,
        env = "STATGATE_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,
    /// Base URL put in the subscribe reply (default: from the request's Host header).
    #[arg(long, env = "STATGATE_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// HS256 secret(s) for authTokens, comma-separated.
    #[arg(
        long,
        env = "STATGATE_JWT_SECRET",
        value_delimiter = ',',
        global = true,
        hide_env_values = true
    )]
    pub jwt_secret: Vec<String>,
    /// Required `aud` claim of authTokens, when set.
    #[arg(long, env = "STATGATE_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,
    /// Required `iss` claim of authTokens, when set.
    #[arg(long, env = "STATGATE_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,
    /// Subscription-token key(s), comma-separated; the first signs, all verify.
    #[arg(
        long,
        env = "STATGATE_TOKEN_SECRET",
        value_delimiter = ',',
        global = true,
        hide_env_values = true
    )]
    pub token_secret: Vec<String>,
    /// Lifetime of subscription tokens, in seconds.
    #[arg(
        long,
        env = "STATGATE_TOKEN_TTL_SECS",
        default_value_t = 3600,
        global = true
    )]
    pub token_ttl_secs: u64,
    /// Registry directory.
    #[arg(
        long,
        env = "STATGATE_QUERIES",
        default_value = "./queries",
        global = true
    )]
    pub queries: PathBuf,
    /// Embedded PostgreSQL data directory.
    #[arg(
        long,
        env = "STATGATE_DATA_DIR",
        default_value = "./.statgate/pgdata",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Demo mode (default: on when DATABASE_URL is unset).
    #[arg(long, env = "STATGATE_DEMO", global = true, num_args = 0..=1, default_missing_value = "true", value_parser = parse_switch)]
    pub demo: Option<bool>,
    /// Skip the migrations on `serve`.
    #[arg(long, env = "STATGATE_NO_MIGRATE", global = true)]
    pub no_migrate: bool,
    /// Server WebSocket ping interval, in seconds.
    #[arg(
        long,
        env = "STATGATE_HEARTBEAT_SECS",
        default_value_t = 25,
        global = true
    )]
    pub heartbeat_secs: u64,
    /// Maximum HTTP request body, in bytes.
    #[arg(long, env = "STATGATE_MAX_BODY_BYTES", default_value_t = 64 * 1024, global = true)]
    pub max_body_bytes: usize,
    /// Maximum WebSocket message from a client, in bytes.
    #[arg(long, env = "STATGATE_MAX_FRAME_BYTES", default_value_t = 16 * 1024, global = true)]
    pub max_frame_bytes: usize,
    /// Maximum subscriptions on one socket.
    #[arg(
        long,
        env = "STATGATE_MAX_SUBSCRIPTIONS_PER_SOCKET",
        default_value_t = 1000,
        global = true
    )]
    pub max_subscriptions_per_socket: usize,
    /// Maximum client messages per second on one socket.
    #[arg(
        long,
        env = "STATGATE_MAX_MESSAGES_PER_SEC",
        default_value_t = 100,
        global = true
    )]
    pub max_messages_per_sec: u32,
    /// Largest canonical args JSON of one subscription, in bytes (the args travel in the
    /// subscription token, which travels in a URL).
    #[arg(
        long,
        env = "STATGATE_MAX_ARGS_BYTES",
        default_value_t = 4096,
        global = true
    )]
    pub max_args_bytes: usize,
    /// Seconds a socket may hold no subscription before it is closed with 4008 (0: never).
    #[arg(
        long,
        env = "STATGATE_IDLE_TIMEOUT_SECS",
        default_value_t = 300,
        global = true
    )]
    pub idle_timeout_secs: u64,
    /// Take the client address for per-address limits from the last `X-Forwarded-For` entry
    /// (the address the proxy in front saw). Only behind a proxy that sets it: a client
    /// reaching statgate directly could otherwise pick its own address.
    #[arg(
        long,
        env = "STATGATE_TRUST_FORWARDED_FOR",
        default_value = "off",
        value_parser = parse_switch,
        global = true
    )]
    pub trust_forwarded_for: bool,
    /// Seconds a socket may fail to drain its outbox before it is closed with 4009.
    #[arg(
        long,
        env = "STATGATE_SLOW_CONSUMER_SECS",
        default_value_t = 10,
        global = true
    )]
    pub slow_consumer_secs: u64,
    /// Connections in the recompute pool.
    #[arg(long, env = "STATGATE_POOL_SIZE", default_value_t = 8, global = true)]
    pub pool_size: u32,
    /// Statement timeout for recompute queries, in milliseconds.
    #[arg(
        long,
        env = "STATGATE_STATEMENT_TIMEOUT_MS",
        default_value_t = 5000,
        global = true
    )]
    pub statement_timeout_ms: u64,
    /// Signatures of one query recomputed in one SQL statement, at most.
    #[arg(
        long,
        env = "STATGATE_RECOMPUTE_BATCH",
        default_value_t = 256,
        global = true
    )]
    pub recompute_batch: usize,
    /// Recompute statements in flight, at most.
    #[arg(
        long,
        env = "STATGATE_RECOMPUTE_CONCURRENCY",
        default_value_t = 4,
        global = true
    )]
    pub recompute_concurrency: usize,
    /// Milliseconds to gather changes before a recompute round (0: start at once). Trades
    /// latency for fewer, larger statements under sustained write load.
    #[arg(
        long,
        env = "STATGATE_RECOMPUTE_WINDOW_MS",
        default_value_t = 0,
        global = true
    )]
    pub recompute_window_ms: u64,
    /// Seconds between change-feed probes; a probe not back by the next one condemns the LISTEN
    /// connection (0 turns probing off).
    #[arg(
        long,
        env = "STATGATE_FEED_CANARY_SECS",
        default_value_t = 5,
        global = true
    )]
    pub feed_canary_secs: u64,
    /// `POST /realtime/subscribe` requests per second per user (bursts to twice; 0: no limit).
    #[arg(
        long,
        env = "STATGATE_SUBSCRIBE_PER_SEC_PER_USER",
        default_value_t = 100,
        global = true
    )]
    pub subscribe_per_sec_per_user: u32,
    /// `POST /realtime/subscribe` requests per second per client address (bursts to twice; 0: no limit).
    #[arg(
        long,
        env = "STATGATE_SUBSCRIBE_PER_SEC_PER_IP",
        default_value_t = 1000,
        global = true
    )]
    pub subscribe_per_sec_per_ip: u32,
    /// Open WebSockets per user (0: no limit).
    #[arg(
        long,
        env = "STATGATE_MAX_SOCKETS_PER_USER",
        default_value_t = 100,
        global = true
    )]
    pub max_sockets_per_user: usize,
    /// Open WebSockets per client address (0: no limit).
    #[arg(
        long,
        env = "STATGATE_MAX_SOCKETS_PER_IP",
        default_value_t = 10_000,
        global = true
    )]
    pub max_sockets_per_ip: usize,
    /// Seconds to wait for sockets to drain on shutdown.
    #[arg(
        long,
        env = "STATGATE_SHUTDOWN_GRACE_SECS",
        default_value_t = 10,
        global = true
    )]
    pub shutdown_grace_secs: u64,
    /// How changes reach statgate: `notify` (LISTEN/NOTIFY) or `table` (the watch triggers
    /// append to `statgate.changes`, which statgate polls). Every gateway of one database
    /// must use the same mode: statgate sets it in the database at start-up.
    #[arg(
        long,
        env = "STATGATE_CHANGE_FEED",
        value_enum,
        default_value_t = ChangeFeed::Notify,
        global = true
    )]
    pub change_feed: ChangeFeed,
    /// Interval between two reads of `statgate.changes` in `table` mode, in milliseconds.
    #[arg(
        long,
        env = "STATGATE_FEED_POLL_MS",
        default_value_t = 10,
        global = true
    )]
    pub feed_poll_ms: u64,
    /// Share of recomputes (0 to 1) also checked against a query's `parity` SQL; the first
    /// computation of every signature is always checked.
    #[arg(
        long,
        env = "STATGATE_PARITY_SAMPLE_RATE",
        default_value_t = 0.01,
        global = true
    )]
    pub parity_sample_rate: f64,
}

/// Where the watch triggers send their change payloads (`STATGATE_CHANGE_FEED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChangeFeed {
    /// `pg_notify('statgate_changes', …)`, received on a LISTEN connection.
    Notify,
    /// Rows appended to `statgate.changes`, polled by statgate.
    Table,
}

impl ChangeFeed {
    /// The name `statgate.set_feed_mode` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeFeed::Notify => "notify",
            ChangeFeed::Table => "table",
        }
    }
}

fn parse_switch(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        other => Err(format!("expected on/off, got {other:?}")),
    }
}

/// Parses `90`, `90s`, `30m`, `1h`, `7d`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let amount: u64 = digits
        .parse()
        .map_err(|_| format!("not a duration: {value:?}"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown duration unit {unit:?} (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(amount.saturating_mul(seconds)))
}

/// Where the gateway's PostgreSQL comes from.
#[derive(Debug, Clone)]
pub enum Database {
    /// `DATABASE_URL`: a server someone else runs (production).
    External(Secret),
    /// The embedded server, with its data directory.
    Embedded { data_dir: PathBuf },
}

/// The validated configuration of one gateway.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: Database,
    /// `DATABASE_READ_URL`: where recompute queries run, if not on `database`.
    pub read_database: Option<Secret>,
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub jwt_secrets: Vec<Secret>,
    pub jwt_audience: Option<String>,
    pub jwt_issuer: Option<String>,
    pub token_secrets: Vec<Secret>,
    pub token_ttl: Duration,
    pub queries_dir: PathBuf,
    pub demo: bool,
    pub migrate: bool,
    pub heartbeat: Duration,
    pub limits: Limits,
    pub pool_size: u32,
    pub statement_timeout: Duration,
    pub recompute_batch: usize,
    pub recompute_concurrency: usize,
    pub recompute_window: Duration,
    /// Interval of change-feed probes; zero: off.
    pub feed_canary: Duration,
    pub shutdown_grace: Duration,
    pub change_feed: ChangeFeed,
    pub feed_poll: Duration,
    pub parity_sample_rate: f64,
}

/// Per-request and per-socket limits (SPEC §5, §8).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_frame_bytes: usize,
    pub max_subscriptions_per_socket: usize,
    pub max_messages_per_sec: u32,
    pub max_args_bytes: usize,
    /// Zero: sockets without subscriptions stay open.
    pub idle_timeout: Duration,
    pub trust_forwarded_for: bool,
    pub subscribe_per_sec_per_user: u32,
    pub subscribe_per_sec_per_ip: u32,
    pub max_sockets_per_user: usize,
    pub max_sockets_per_ip: usize,
    pub slow_consumer: Duration,
}

impl Settings {
    /// Validates the settings into a [`Config`]; refuses missing or short secrets unless demo.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let demo = self.demo.unwrap_or(self.database_url.is_none());
        let jwt_secrets = secrets("STATGATE_JWT_SECRET", self.jwt_secret, demo)?;
        let token_secrets = secrets("STATGATE_TOKEN_SECRET", self.token_secret, demo)?;
        for (name, value) in [
            ("STATGATE_HEARTBEAT_SECS", self.heartbeat_secs),
            ("STATGATE_TOKEN_TTL_SECS", self.token_ttl_secs),
            ("STATGATE_SLOW_CONSUMER_SECS", self.slow_consumer_secs),
            ("STATGATE_MAX_ARGS_BYTES", self.max_args_bytes as u64),
            ("STATGATE_RECOMPUTE_BATCH", self.recompute_batch as u64),
            (
                "STATGATE_RECOMPUTE_CONCURRENCY",
                self.recompute_concurrency as u64,
            ),
            ("STATGATE_POOL_SIZE", u64::from(self.pool_size)),
            ("STATGATE_FEED_POLL_MS", self.feed_poll_ms),
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
        if self.database_read_url.is_some() && self.database_url.is_none() {
            return Err(ConfigError::ReadUrlWithoutUrl);
        }
        let database = match self.database_url {
            Some(url) => Database::External(Secret::new(url)),
            None => Database::Embedded {
                data_dir: self.data_dir,
            },
        };
        Ok(Config {
            database,
            read_database: self.database_read_url.map(Secret::new),
            listen: self.listen,
            public_url: self
                .public_url
                .map(|url| url.trim_end_matches('/').to_owned()),
            jwt_secrets,
            jwt_audience: self.jwt_audience,
            jwt_issuer: self.jwt_issuer,
            token_secrets,
            token_ttl: Duration::from_secs(self.token_ttl_secs),
            queries_dir: self.queries,
            demo,
            migrate: !self.no_migrate,
            heartbeat: Duration::from_secs(self.heartbeat_secs),
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
                max_sockets_per_user: self.max_sockets_per_user,
                max_sockets_per_ip: self.max_sockets_per_ip,
                slow_consumer: Duration::from_secs(self.slow_consumer_secs),
            },
            pool_size: self.pool_size,
            statement_timeout: Duration::from_millis(self.statement_timeout_ms),
            recompute_batch: self.recompute_batch,
            recompute_concurrency: self.recompute_concurrency,
            recompute_window: Duration::from_millis(self.recompute_window_ms),
            feed_canary: Duration::from_secs(self.feed_canary_secs),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            change_feed: self.change_feed,
            feed_poll: Duration::from_millis(self.feed_poll_ms),
            parity_sample_rate: self.parity_sample_rate,
        })
    }
}

fn secrets(
    name: &'static str,
    values: Vec<String>,
    demo: bool,
) -> Result<Vec<Secret>, ConfigError> {
    let values: Vec<String> = values
        .into_iter()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .collect();
    if values.is_empty() {
        return if demo {
            Ok(vec![Secret::new(DEMO_SECRET)])
        } else {
            Err(ConfigError::MissingSecret { name })
        };
    }
    if !demo {
        if let Some(short) = values.iter().find(|value| value.len() < MIN_SECRET_BYTES) {
            return Err(ConfigError::ShortSecret {
                name,
                len: short.len(),
            });
        }
    }
    Ok(values.into_iter().map(Secret::new).collect())
}

impl Config {
    /// A configuration for tests: an external database, fixed secrets, port 0, short timers.
    pub fn for_tests(database_url: String, queries_dir: PathBuf) -> Self {
        Config {
            database: Database::External(Secret::new(database_url)),
            read_database: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            jwt_secrets: vec![Secret::new("test-jwt-secret-0123456789abcdefghijklmnop")],
            jwt_audience: None,
            jwt_issuer: None,
            token_secrets: vec![Secret::new("test-token-secret-0123456789abcdefghijklmn")],
            token_ttl: Duration::from_secs(3600),
            queries_dir,
            demo: false,
            migrate: true,
            heartbeat: Duration::from_secs(25),
            limits: Limits {
                max_body_bytes: 64 * 1024,
                max_frame_bytes: 16 * 1024,
                max_subscriptions_per_socket: 1000,
                max_messages_per_sec: 1000,
                max_args_bytes: 4096,
                idle_timeout: Duration::ZERO,
                trust_forwarded_for: false,
                subscribe_per_sec_per_user: 0,
                subscribe_per_sec_per_ip: 0,
                max_sockets_per_user: 0,
                max_sockets_per_ip: 0,
                slow_consumer: Duration::from_secs(10),
            },
            pool_size: 8,
            statement_timeout: Duration::from_secs(5),
            recompute_batch: 256,
            recompute_concurrency: 4,
            recompute_window: Duration::ZERO,
            feed_canary: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
            change_feed: ChangeFeed::Notify,
            feed_poll: Duration::from_millis(10),
            parity_sample_rate: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Settings {
        let mut argv = vec!["statgate"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("arguments parse").settings
    }

    #[test]
    fn a_missing_secret_is_refused_outside_demo_mode() {
        let err = settings(&["--database-url", "postgres://x/y"])
            .into_config()
            .unwrap_err();
        assert!(
            err.to_string().contains("STATGATE_JWT_SECRET is not set"),
            "{err}"
        );
    }

    #[test]
    fn a_short_secret_is_refused_outside_demo_mode() {
        let long = "x".repeat(40);
        let err = settings(&[
            "--database-url",
            "postgres://x/y",
            "--jwt-secret",
            "short",
            "--token-secret",
            &long,
        ])
        .into_config()
        .unwrap_err();
        assert!(err.to_string().contains("5 bytes"), "{err}");
    }

    #[test]
    fn a_parity_rate_outside_zero_to_one_and_a_read_url_without_a_primary_are_refused() {
        let err = settings(&["--parity-sample-rate", "1.5"])
            .into_config()
            .unwrap_err();
        assert!(err.to_string().contains("between 0 and 1"), "{err}");
        let err = settings(&["--database-read-url", "postgres://replica/y"])
            .into_config()
            .unwrap_err();
        assert!(err.to_string().contains("without DATABASE_URL"), "{err}");
        let long = "x".repeat(40);
        let config = settings(&[
            "--database-url",
            "postgres://primary/y",
            "--database-read-url",
            "postgres://replica/y",
            "--jwt-secret",
            &long,
            "--token-secret",
            &long,
        ])
        .into_config()
        .expect("config");
        assert_eq!(
            config.read_database.as_ref().map(Secret::expose),
            Some("postgres://replica/y")
        );
        assert!(
            !format!("{config:?}").contains("replica"),
            "the URL is redacted"
        );
    }

    #[test]
    fn demo_mode_supplies_secrets_and_is_the_default_without_a_database_url() {
        let config = settings(&[]).into_config().expect("demo config");
        assert!(config.demo);
        assert_eq!(config.jwt_secrets.len(), 1);
        assert!(format!("{:?}", config.jwt_secrets).contains("redacted"));
    }

    #[test]
    fn secrets_are_split_on_commas_for_rotation() {
        let a = "a".repeat(32);
        let b = "b".repeat(32);
        let list = format!("{a},{b}");
        let config = settings(&[
            "--database-url",
            "postgres://x/y",
            "--jwt-secret",
            &list,
            "--token-secret",
            &list,
        ])
        .into_config()
        .expect("config");
        assert_eq!(config.token_secrets, vec![Secret::new(a), Secret::new(b)]);
    }

    #[test]
    fn the_change_feed_is_notify_unless_table_is_asked_for() {
        let config = settings(&[]).into_config().expect("config");
        assert_eq!(config.change_feed, ChangeFeed::Notify);
        assert_eq!(config.feed_poll, Duration::from_millis(10));
        let config = settings(&["--change-feed", "table", "--feed-poll-ms", "25"])
            .into_config()
            .expect("config");
        assert_eq!(config.change_feed, ChangeFeed::Table);
        assert_eq!(config.feed_poll, Duration::from_millis(25));
        assert!(Cli::try_parse_from(["statgate", "--change-feed", "kafka"]).is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
