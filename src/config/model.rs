//! The validated configuration the rest of the crate receives, in groups that follow the
//! gateway's parts: the network edge ([`HttpConfig`]), identity ([`AuthConfig`]), the change
//! feed ([`FeedConfig`]), recompute ([`RecomputeConfig`]) and per-client [`Limits`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

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

/// Where the watch triggers send their change payloads (`STATGATE_CHANGE_FEED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChangeFeed {
    /// `pg_notify('statgate_changes', …)`, received on a LISTEN connection.
    Notify,
    /// Rows appended to `statgate.changes`, polled by statgate.
    Table,
    /// The watched tables' changes read from a logical replication slot (`pgoutput`): no
    /// watch trigger runs at all.
    Wal,
}

impl ChangeFeed {
    /// The name `statgate.set_feed_mode` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeFeed::Notify => "notify",
            ChangeFeed::Table => "table",
            ChangeFeed::Wal => "wal",
        }
    }
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
    pub queries: Queries,
    pub demo: bool,
    pub migrate: bool,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub feed: FeedConfig,
    pub recompute: RecomputeConfig,
    pub limits: Limits,
}

/// The network edge: where the gateway listens, how long a connection may take, how many.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Base URL put in the subscribe reply; `None`: from the request's Host.
    pub public_url: Option<String>,
    /// `STATGATE_CORS_ORIGINS`: validated origins, or `*`.
    pub cors_origins: Vec<String>,
    /// Server WebSocket ping interval; silent sockets close after two.
    pub heartbeat: Duration,
    /// Drain deadline on SIGTERM.
    pub shutdown_grace: Duration,
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
}

/// Who callers are: JWT verification and the subscription tokens statgate signs.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub jwt_secrets: Vec<Secret>,
    pub jwt_audience: Option<String>,
    pub jwt_issuer: Option<String>,
    /// The claim naming the user (`STATGATE_JWT_USER_CLAIM`).
    pub jwt_user_claim: String,
    /// The identity provider's key set, when authTokens may be signed by it.
    pub jwks: Option<JwksConfig>,
    pub token_secrets: Vec<Secret>,
    pub token_ttl: Duration,
}

/// How changes reach the gateway.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    pub mode: ChangeFeed,
    /// Interval between reads of `statgate.changes` in table mode.
    pub poll: Duration,
    /// Interval of change-feed probes; zero: off.
    pub canary: Duration,
    /// Interval of the check for changes the triggers could not record; zero: off.
    pub unrecorded_check: Duration,
    /// `STATGATE_WAL_SLOT`: the permanent replication slot of this node in `wal` mode; `None`:
    /// a temporary slot per session.
    pub wal_slot: Option<String>,
}

/// How values are recomputed.
#[derive(Debug, Clone)]
pub struct RecomputeConfig {
    pub pool_size: u32,
    pub statement_timeout: Duration,
    /// Signatures of one query per statement.
    pub batch: usize,
    /// Statements in flight.
    pub concurrency: usize,
    /// Time to let changes gather before a round.
    pub window: Duration,
    /// Share of recomputes also compared with the query's parity SQL.
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
    /// Active signatures in all; zero: no limit.
    pub max_signatures: usize,
    /// Distinct signatures one user follows over all its sockets; zero: no limit.
    pub max_signatures_per_user: usize,
    /// Rows of one value (a JSON array; other values are one row); zero: no limit.
    pub max_value_rows: usize,
    /// Bytes of one value's JSON; zero: no limit.
    pub max_value_bytes: usize,
}

impl Config {
    /// A configuration for tests: an external database, fixed secrets, port 0, short timers.
    pub fn for_tests(database_url: String, queries_dir: PathBuf) -> Self {
        Config {
            database: Database::External(Secret::new(database_url)),
            read_database: None,
            queries: Queries::Directory(queries_dir),
            demo: false,
            migrate: true,
            http: HttpConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                public_url: None,
                cors_origins: Vec::new(),
                heartbeat: Duration::from_secs(25),
                shutdown_grace: Duration::from_secs(5),
                header_read_timeout: Duration::from_secs(10),
                request_timeout: Duration::from_secs(10),
                keep_alive_timeout: Duration::from_secs(5),
                max_connections: 0,
                max_connections_per_ip: 0,
            },
            auth: AuthConfig {
                jwt_secrets: vec![Secret::new("test-jwt-secret-0123456789abcdefghijklmnop")],
                jwt_audience: None,
                jwt_issuer: None,
                jwt_user_claim: "sub".into(),
                jwks: None,
                token_secrets: vec![Secret::new("test-token-secret-0123456789abcdefghijklmn")],
                token_ttl: Duration::from_secs(3600),
            },
            feed: FeedConfig {
                mode: ChangeFeed::Notify,
                poll: Duration::from_millis(10),
                canary: Duration::from_secs(5),
                unrecorded_check: Duration::from_secs(5),
                wal_slot: None,
            },
            recompute: RecomputeConfig {
                pool_size: 8,
                statement_timeout: Duration::from_secs(5),
                batch: 256,
                concurrency: 4,
                window: Duration::ZERO,
                parity_sample_rate: 0.0,
            },
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
                max_signatures: 100_000,
                max_signatures_per_user: 1000,
                max_value_rows: 1000,
                max_value_bytes: 64 * 1024,
            },
        }
    }
}
