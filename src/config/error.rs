//! Why a configuration is refused: every message names the setting and what to do.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Secrets shorter than this are refused outside demo mode.
pub const MIN_SECRET_BYTES: usize = 32;

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
        "STATGATE_WAL_SLOT must be a replication slot name: 1 to 63 lowercase letters, digits and \
         underscores, got {0:?}"
    )]
    BadWalSlot(String),
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
