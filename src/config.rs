//! Configuration: the command line, the environment variables of the README's "Configuration", and the typed
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

/// Secrets shorter than this are refused outside demo mode (docs/PROTOCOL.md).
pub const MIN_SECRET_BYTES: usize = 32;

mod demo_secrets;

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
    #[error(
        "neither STATGATE_JWT_SECRET nor STATGATE_JWKS_URL is set: statgate needs a way to verify \
         authTokens outside demo mode (an HS256 secret of {MIN_SECRET_BYTES} bytes or more, or the \
         JSON Web Key Set URL of your identity provider; or run with --demo for local development)"
    )]
    NoJwtVerifier,
    #[error("STATGATE_JWKS_URL must be an http:// or https:// URL, got {0:?}")]
    BadJwksUrl(String),
    #[error(
        "STATGATE_CORS_ORIGINS holds {0:?}, which is not an origin: give scheme, host and \
         optional port, no path (https://app.example.com), or *"
    )]
    BadCorsOrigin(String),
    #[error("STATGATE_JWT_USER_CLAIM must name a claim (e.g. sub)")]
    EmptyUserClaim,
    #[error(
        "demo mode would listen on {listen}, which is not a loopback address: demo mode serves an \
         unauthenticated token mint and write endpoints, so it only listens on loopback unless \
         STATGATE_DEMO_ALLOW_REMOTE=on says otherwise"
    )]
    DemoNotLoopback { listen: SocketAddr },
    #[error("cannot keep the demo secrets in {path}: {source}")]
    DemoSecrets {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "STATGATE_KEEP_ALIVE_TIMEOUT_SECS ({keep_alive}) exceeds STATGATE_HEADER_READ_TIMEOUT_SECS \
         ({header_read}): the header timeout also runs while a connection waits for its next \
         request, so it would close idle connections first"
    )]
    KeepAliveOverHeaderTimeout { keep_alive: u64, header_read: u64 },
    #[error(
        "STATGATE_MAX_CONNECTIONS_PER_IP ({connections}) must be above STATGATE_MAX_SOCKETS_PER_IP \
         ({sockets}): every WebSocket is a TCP connection, and an address at its socket limit still \
         needs connections for its subscribe requests (raise the first or lower the second)"
    )]
    ConnectionsBelowSockets { connections: usize, sockets: usize },
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
    /// Apply statgate's migrations (schema `statgate` only) and exit.
    Migrate {
        /// Also apply the example application (posts, comments, reactions, measurements and
        /// their stats): for trying statgate out, its tests and its benchmarks. Demo mode
        /// always applies it.
        #[arg(long)]
        example: bool,
    },
    /// Load the registry and prepare every query against the database.
    Check,
    /// Mint a JWT with the configured secret (development only).
    Token {
        /// The user id, put in the `sub` claim (and in `STATGATE_JWT_USER_CLAIM`).
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
    /// Log lines as text (coloured on a terminal) or one JSON object per line.
    #[arg(long, env = "STATGATE_LOG_FORMAT", value_enum, default_value_t = crate::telemetry::LogFormat::Text, global = true)]
    pub log_format: crate::telemetry::LogFormat,
    /// Which log lines to write, as `RUST_LOG` directives (e.g. `debug`, `info,statgate=debug`).
    #[arg(long, env = "RUST_LOG", global = true)]
    pub log: Option<String>,
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
    /// Origins (`https://app.example.com`, comma-separated, or `*`) whose pages may call the
    /// subscribe endpoints across origins (CORS); none: same-origin only.
    #[arg(
        long,
        env = "STATGATE_CORS_ORIGINS",
        value_delimiter = ',',
        global = true
    )]
    pub cors_origins: Vec<String>,
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
    /// The claim that names the user (auth rules, limits, logs): a string or a number.
    #[arg(
        long,
        env = "STATGATE_JWT_USER_CLAIM",
        default_value = "sub",
        global = true
    )]
    pub jwt_user_claim: String,
    /// An identity provider's JSON Web Key Set (http or https URL): authTokens signed by its
    /// keys (RS256/384/512, ES256/384, EdDSA) are accepted.
    #[arg(long, env = "STATGATE_JWKS_URL", global = true)]
    pub jwks_url: Option<String>,
    /// Seconds between two routine fetches of the key set.
    #[arg(
        long,
        env = "STATGATE_JWKS_REFRESH_SECS",
        default_value_t = 600,
        global = true
    )]
    pub jwks_refresh_secs: u64,
    /// Seconds between two fetches of the key set caused by an authToken naming an unknown key
    /// (`kid`): a flood of made-up key ids costs the identity provider one fetch per interval.
    #[arg(
        long,
        env = "STATGATE_JWKS_MIN_REFETCH_SECS",
        default_value_t = 30,
        global = true
    )]
    pub jwks_min_refetch_secs: u64,
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
    /// Registry directory (default `./queries`; in demo mode, the example application's
    /// registry compiled into the binary).
    #[arg(long, env = "STATGATE_QUERIES", global = true)]
    pub queries: Option<PathBuf>,
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
    /// Let demo mode listen on a non-loopback address (its token mint and write endpoints are
    /// then open to the network).
    #[arg(
        long,
        env = "STATGATE_DEMO_ALLOW_REMOTE",
        default_value = "off",
        num_args = 0..=1,
        default_missing_value = "on",
        action = clap::ArgAction::Set,
        value_parser = parse_switch,
        global = true
    )]
    pub demo_allow_remote: bool,
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
    /// Seconds between reads of `statgate.unrecorded_changes`, the changes the triggers could
    /// not record (0 turns the check off).
    #[arg(
        long,
        env = "STATGATE_UNRECORDED_CHECK_SECS",
        default_value_t = 5,
        global = true
    )]
    pub unrecorded_check_secs: u64,
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
    /// Most subscriptions in one `POST /realtime/subscribe/batch` (each counts against the
    /// per-user subscribe rate).
    #[arg(
        long,
        env = "STATGATE_MAX_BATCH_SUBSCRIPTIONS",
        default_value_t = 100,
        global = true
    )]
    pub max_batch_subscriptions: usize,
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
    /// Seconds a client has to send a whole request head (request line and headers), counted
    /// from the moment the connection opens or its previous response was sent.
    #[arg(
        long,
        env = "STATGATE_HEADER_READ_TIMEOUT_SECS",
        default_value_t = 10,
        global = true
    )]
    pub header_read_timeout_secs: u64,
    /// Seconds one HTTP request may take, reading its body included (408 after).
    #[arg(
        long,
        env = "STATGATE_REQUEST_TIMEOUT_SECS",
        default_value_t = 10,
        global = true
    )]
    pub request_timeout_secs: u64,
    /// Seconds an idle keep-alive connection stays open between requests (0: no keep-alive).
    #[arg(
        long,
        env = "STATGATE_KEEP_ALIVE_TIMEOUT_SECS",
        default_value_t = 5,
        global = true
    )]
    pub keep_alive_timeout_secs: u64,
    /// Open TCP connections in all, WebSockets included (0: no limit; default: the open-files
    /// limit minus 256 descriptors kept for the database, files and the listener).
    #[arg(long, env = "STATGATE_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<usize>,
    /// Open TCP connections per peer address, WebSockets included (0: no limit). Not applied
    /// with STATGATE_TRUST_FORWARDED_FOR, where every peer is the proxy.
    #[arg(
        long,
        env = "STATGATE_MAX_CONNECTIONS_PER_IP",
        default_value_t = 11_000,
        global = true
    )]
    pub max_connections_per_ip: usize,
    /// Active signatures (distinct query + args) in all; a subscription that would create one
    /// more gets a `too_many_signatures` error event (0: no limit).
    #[arg(
        long,
        env = "STATGATE_MAX_SIGNATURES",
        default_value_t = 100_000,
        global = true
    )]
    pub max_signatures: usize,
    /// Distinct signatures one user follows over all its sockets (0: no limit).
    #[arg(
        long,
        env = "STATGATE_MAX_SIGNATURES_PER_USER",
        default_value_t = 1000,
        global = true
    )]
    pub max_signatures_per_user: usize,
    /// Rows of one computed value (a JSON array); a larger value is not stored or sent, and its
    /// followers get a `value_too_large` error event (0: no limit).
    #[arg(
        long,
        env = "STATGATE_MAX_VALUE_ROWS",
        default_value_t = 1000,
        global = true
    )]
    pub max_value_rows: usize,
    /// Bytes of one computed value's JSON, with the same effect as the row limit (0: no limit).
    #[arg(long, env = "STATGATE_MAX_VALUE_BYTES", default_value_t = 64 * 1024, global = true)]
    pub max_value_bytes: usize,
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

/// Where the query registry comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queries {
    /// `STATGATE_QUERIES`, or `./queries`.
    Directory(PathBuf),
    /// The example application's registry compiled into the binary (demo mode's default).
    Example,
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
    /// `STATGATE_CORS_ORIGINS`: validated origins, or `*`.
    pub cors_origins: Vec<String>,
    pub jwt_secrets: Vec<Secret>,
    pub jwt_audience: Option<String>,
    pub jwt_issuer: Option<String>,
    /// The claim naming the user (`STATGATE_JWT_USER_CLAIM`).
    pub jwt_user_claim: String,
    /// The identity provider's key set, when authTokens may be signed by it.
    pub jwks: Option<JwksConfig>,
    pub token_secrets: Vec<Secret>,
    pub token_ttl: Duration,
    pub queries: Queries,
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
    /// Interval of the check for changes the triggers could not record; zero: off.
    pub unrecorded_check: Duration,
    pub shutdown_grace: Duration,
    pub change_feed: ChangeFeed,
    pub feed_poll: Duration,
    pub parity_sample_rate: f64,
}

/// Where and how often the identity provider's key set is fetched (`STATGATE_JWKS_*`).
#[derive(Debug, Clone)]
pub struct JwksConfig {
    pub url: reqwest::Url,
    /// Interval of routine fetches.
    pub refresh: Duration,
    /// Least interval between two fetches caused by an unknown `kid`.
    pub min_refetch: Duration,
}

/// Per-request and per-socket limits (docs/PROTOCOL.md, docs/RELIABILITY.md).
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
    /// Most subscriptions in one batch request (never zero).
    pub max_batch_subscriptions: usize,
    pub max_sockets_per_user: usize,
    pub max_sockets_per_ip: usize,
    pub slow_consumer: Duration,
    /// Time to receive a request head, from accept or from the previous response.
    pub header_read_timeout: Duration,
    /// Time to answer one request, its body included.
    pub request_timeout: Duration,
    /// Zero: no keep-alive (one request per connection).
    pub keep_alive_timeout: Duration,
    /// Open TCP connections in all; zero: no limit.
    pub max_connections: usize,
    /// Open TCP connections per peer address; zero: no limit.
    pub max_connections_per_ip: usize,
    /// Active signatures in all; zero: no limit.
    pub max_signatures: usize,
    /// Distinct signatures one user follows over all its sockets; zero: no limit.
    pub max_signatures_per_user: usize,
    /// Rows of one value (a JSON array; other values are one row); zero: no limit.
    pub max_value_rows: usize,
    /// Bytes of one value's JSON; zero: no limit.
    pub max_value_bytes: usize,
}

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
            listen: self.listen,
            public_url: self
                .public_url
                .map(|url| url.trim_end_matches('/').to_owned()),
            cors_origins,
            jwt_secrets,
            jwt_audience: self.jwt_audience,
            jwt_issuer: self.jwt_issuer,
            jwt_user_claim,
            jwks,
            token_secrets,
            token_ttl: Duration::from_secs(self.token_ttl_secs),
            queries: match self.queries {
                Some(dir) => Queries::Directory(dir),
                None if demo => Queries::Example,
                None => Queries::Directory(PathBuf::from("./queries")),
            },
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
                max_batch_subscriptions: self.max_batch_subscriptions,
                max_sockets_per_user: self.max_sockets_per_user,
                max_sockets_per_ip: self.max_sockets_per_ip,
                slow_consumer: Duration::from_secs(self.slow_consumer_secs),
                header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
                request_timeout: Duration::from_secs(self.request_timeout_secs),
                keep_alive_timeout: Duration::from_secs(self.keep_alive_timeout_secs),
                max_connections: self.max_connections.unwrap_or_else(default_max_connections),
                max_connections_per_ip,
                max_signatures: self.max_signatures,
                max_signatures_per_user: self.max_signatures_per_user,
                max_value_rows: self.max_value_rows,
                max_value_bytes: self.max_value_bytes,
            },
            pool_size: self.pool_size,
            statement_timeout: Duration::from_millis(self.statement_timeout_ms),
            recompute_batch: self.recompute_batch,
            recompute_concurrency: self.recompute_concurrency,
            recompute_window: Duration::from_millis(self.recompute_window_ms),
            feed_canary: Duration::from_secs(self.feed_canary_secs),
            unrecorded_check: Duration::from_secs(self.unrecorded_check_secs),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            change_feed: self.change_feed,
            feed_poll: Duration::from_millis(self.feed_poll_ms),
            parity_sample_rate: self.parity_sample_rate,
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

impl Config {
    /// A configuration for tests: an external database, fixed secrets, port 0, short timers.
    pub fn for_tests(database_url: String, queries_dir: PathBuf) -> Self {
        Config {
            database: Database::External(Secret::new(database_url)),
            read_database: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            cors_origins: Vec::new(),
            jwt_secrets: vec![Secret::new("test-jwt-secret-0123456789abcdefghijklmnop")],
            jwt_audience: None,
            jwt_issuer: None,
            jwt_user_claim: "sub".into(),
            jwks: None,
            token_secrets: vec![Secret::new("test-token-secret-0123456789abcdefghijklmn")],
            token_ttl: Duration::from_secs(3600),
            queries: Queries::Directory(queries_dir),
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
                max_batch_subscriptions: 100,
                max_sockets_per_user: 0,
                max_sockets_per_ip: 0,
                slow_consumer: Duration::from_secs(10),
                header_read_timeout: Duration::from_secs(10),
                request_timeout: Duration::from_secs(10),
                keep_alive_timeout: Duration::from_secs(5),
                max_connections: 0,
                max_connections_per_ip: 0,
                max_signatures: 100_000,
                max_signatures_per_user: 1000,
                max_value_rows: 1000,
                max_value_bytes: 64 * 1024,
            },
            pool_size: 8,
            statement_timeout: Duration::from_secs(5),
            recompute_batch: 256,
            recompute_concurrency: 4,
            recompute_window: Duration::ZERO,
            feed_canary: Duration::from_secs(5),
            unrecorded_check: Duration::from_secs(5),
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

    /// Demo-mode settings whose embedded data directory (and so the demo secrets file) lives in
    /// `dir`.
    fn demo_settings(dir: &tempfile::TempDir, args: &[&str]) -> Settings {
        let data_dir = dir.path().join("pgdata");
        let mut argv = vec!["--demo", "--data-dir", data_dir.to_str().expect("utf-8")];
        argv.extend_from_slice(args);
        settings(&argv)
    }

    #[test]
    fn a_missing_secret_is_refused_outside_demo_mode() {
        let err = settings(&["--database-url", "postgres://x/y"])
            .into_config()
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("neither STATGATE_JWT_SECRET nor STATGATE_JWKS_URL is set"),
            "{message}"
        );
        let long = "x".repeat(40);
        let err = settings(&["--database-url", "postgres://x/y", "--jwt-secret", &long])
            .into_config()
            .unwrap_err();
        assert!(
            err.to_string().contains("STATGATE_TOKEN_SECRET is not set"),
            "{err}"
        );
    }

    #[test]
    fn a_key_set_url_alone_verifies_jwts_and_must_be_http_or_https() {
        let long = "x".repeat(40);
        let config = settings(&[
            "--database-url",
            "postgres://x/y",
            "--token-secret",
            &long,
            "--jwks-url",
            "https://idp.example/.well-known/jwks.json",
        ])
        .into_config()
        .expect("config");
        assert!(config.jwt_secrets.is_empty());
        let jwks = config.jwks.expect("a key set");
        assert_eq!(
            jwks.url.as_str(),
            "https://idp.example/.well-known/jwks.json"
        );
        assert_eq!(jwks.refresh, Duration::from_secs(600));
        assert_eq!(jwks.min_refetch, Duration::from_secs(30));
        assert_eq!(config.jwt_user_claim, "sub");
        for bad in [
            "ftp://idp.example/jwks",
            "not a url",
            "file:///etc/jwks.json",
        ] {
            let err = settings(&[
                "--database-url",
                "postgres://x/y",
                "--token-secret",
                &long,
                "--jwks-url",
                bad,
            ])
            .into_config()
            .unwrap_err();
            assert!(err.to_string().contains("STATGATE_JWKS_URL"), "{err}");
        }
        let err = settings(&["--jwt-user-claim", " "])
            .into_config()
            .unwrap_err();
        assert!(err.to_string().contains("STATGATE_JWT_USER_CLAIM"), "{err}");
    }

    #[test]
    fn demo_mode_refuses_a_non_loopback_address_unless_told_explicitly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = demo_settings(&dir, &["--listen", "0.0.0.0:8080"])
            .into_config()
            .unwrap_err();
        assert!(
            err.to_string().contains("STATGATE_DEMO_ALLOW_REMOTE=on"),
            "{err}"
        );
        assert!(
            !dir.path().join("pgdata.demo-secrets").exists(),
            "a refused configuration writes nothing"
        );
        let config = demo_settings(
            &dir,
            &["--listen", "0.0.0.0:8080", "--demo-allow-remote", "on"],
        )
        .into_config()
        .expect("allowed explicitly");
        assert!(config.demo);
        assert!(
            demo_settings(&dir, &["--listen", "0.0.0.0:8080", "--demo-allow-remote"])
                .into_config()
                .is_ok(),
            "the bare flag means on"
        );
        for loopback in ["127.0.0.1:8080", "[::1]:8080"] {
            assert!(demo_settings(&dir, &["--listen", loopback])
                .into_config()
                .is_ok());
        }
    }

    #[test]
    fn demo_mode_draws_a_random_secret_for_the_one_left_unset_and_keeps_it_per_data_directory() {
        let jwt = "configured-jwt-secret-0123456789abcdefghij";
        let dir = tempfile::tempdir().expect("tempdir");
        let first = demo_settings(&dir, &["--jwt-secret", jwt])
            .into_config()
            .expect("config");
        assert_eq!(first.jwt_secrets, vec![Secret::new(jwt)]);
        assert_eq!(first.token_secrets.len(), 1);
        assert!(first.token_secrets[0].expose().len() >= MIN_SECRET_BYTES);
        let again = demo_settings(&dir, &["--jwt-secret", jwt])
            .into_config()
            .expect("config");
        assert_eq!(
            again.token_secrets, first.token_secrets,
            "kept across restarts"
        );
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let other = demo_settings(&elsewhere, &["--jwt-secret", jwt])
            .into_config()
            .expect("config");
        assert_ne!(other.token_secrets, first.token_secrets);
        // Against DATABASE_URL there is no data directory of statgate's: one per process.
        let external = |_: ()| {
            settings(&["--demo", "--database-url", "postgres://x/y"])
                .into_config()
                .expect("config")
        };
        assert_ne!(external(()).jwt_secrets, external(()).jwt_secrets);
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
    fn a_batch_size_of_zero_is_refused_and_the_default_is_one_hundred() {
        let err = settings(&["--max-batch-subscriptions", "0"])
            .into_config()
            .unwrap_err();
        assert!(
            err.to_string().contains("STATGATE_MAX_BATCH_SUBSCRIPTIONS"),
            "{err}"
        );
        let config = settings(&[]).into_config().expect("demo defaults");
        assert_eq!(config.limits.max_batch_subscriptions, 100);
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
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("pgdata");
        let config = settings(&["--data-dir", data_dir.to_str().expect("utf-8")])
            .into_config()
            .expect("demo config");
        assert!(config.demo);
        assert_eq!(config.jwt_secrets.len(), 1);
        assert!(format!("{:?}", config.jwt_secrets).contains("redacted"));
    }

    #[test]
    fn commands_that_sign_nothing_need_no_secret_but_still_refuse_a_short_one() {
        let config = settings(&["--database-url", "postgres://x/y"])
            .into_config_without_secrets()
            .expect("no secrets needed");
        assert!(config.jwt_secrets.is_empty() && config.token_secrets.is_empty());
        let err = settings(&["--database-url", "postgres://x/y", "--jwt-secret", "short"])
            .into_config_without_secrets()
            .unwrap_err();
        assert!(err.to_string().contains("5 bytes"), "{err}");
    }

    #[test]
    fn cors_origins_are_origins_or_a_star() {
        let config = settings(&[
            "--cors-origins",
            "https://app.example.com/,http://localhost:3000",
        ])
        .into_config()
        .expect("config");
        assert_eq!(
            config.cors_origins,
            ["https://app.example.com", "http://localhost:3000"]
        );
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "ftp://x.org",
        ] {
            let err = settings(&["--cors-origins", bad])
                .into_config()
                .unwrap_err();
            assert!(err.to_string().contains("not an origin"), "{bad}: {err}");
        }
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
        let dir = tempfile::tempdir().expect("tempdir");
        let config = demo_settings(&dir, &[]).into_config().expect("config");
        assert_eq!(config.change_feed, ChangeFeed::Notify);
        assert_eq!(config.feed_poll, Duration::from_millis(10));
        let config = demo_settings(&dir, &["--change-feed", "table", "--feed-poll-ms", "25"])
            .into_config()
            .expect("config");
        assert_eq!(config.change_feed, ChangeFeed::Table);
        assert_eq!(config.feed_poll, Duration::from_millis(25));
        assert!(Cli::try_parse_from(["statgate", "--change-feed", "kafka"]).is_err());
    }

    #[test]
    fn the_edge_limits_are_consistent_or_refused() {
        let config = settings(&[]).into_config().expect("defaults");
        assert_eq!(config.limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.limits.keep_alive_timeout, Duration::from_secs(5));
        assert_eq!(config.limits.max_connections_per_ip, 11_000);
        assert!(config.limits.max_connections >= 64);
        let err = settings(&["--keep-alive-timeout-secs", "30"])
            .into_config()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("STATGATE_HEADER_READ_TIMEOUT_SECS"),
            "{err}"
        );
        let err = settings(&["--max-connections-per-ip", "500"])
            .into_config()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("STATGATE_MAX_SOCKETS_PER_IP (10000)"),
            "{err}"
        );
        let config = settings(&[
            "--max-connections-per-ip",
            "500",
            "--max-sockets-per-ip",
            "400",
        ])
        .into_config()
        .expect("consistent");
        assert_eq!(config.limits.max_connections_per_ip, 500);
        let config = settings(&["--trust-forwarded-for", "--max-connections", "0"])
            .into_config()
            .expect("behind a proxy");
        assert_eq!(
            config.limits.max_connections_per_ip, 0,
            "the peer is the proxy"
        );
        assert_eq!(config.limits.max_connections, 0, "0 turns the total off");
        assert!(settings(&["--header-read-timeout-secs", "0"])
            .into_config()
            .is_err());
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
