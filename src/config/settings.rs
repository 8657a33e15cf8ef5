//! Every setting as a flag and an environment variable (the README's "Configuration" table is
//! their documentation). Validated into a [`Config`](super::Config) by `config::validate`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::model::ChangeFeed;
use super::parse::parse_switch;

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
    /// How changes reach statgate: `notify` (LISTEN/NOTIFY), `table` (the watch triggers
    /// append to `statgate.changes`, which statgate polls) or `wal` (a logical replication slot;
    /// no watch trigger runs). Every gateway of one database must use the same mode: statgate
    /// sets it in the database at start-up.
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
    /// `wal` mode: the name of this node's permanent replication slot, so a restarted node
    /// resumes where it stopped without a resync (one name per node; lowercase letters, digits
    /// and `_`). Unset: a temporary slot per connection, and a resync after each reconnect.
    #[arg(long, env = "STATGATE_WAL_SLOT", global = true)]
    pub wal_slot: Option<String>,
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
