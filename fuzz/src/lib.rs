//! Shared fixtures of the fuzz targets: the example registry under `examples/blog/queries/` and an
//! authenticator with fixed test secrets. Nothing here is used by statgate itself.

use std::path::PathBuf;
use std::time::Duration;

use statgate::auth::Authenticator;
use statgate::config::Secret;
use statgate::registry::Registry;

/// The subscription-token key of the fuzz targets (a test value, never a deployed secret).
pub const TOKEN_SECRET: &str = "fuzz-token-key-0123456789abcdefghijklmnop";
/// The JWT secret of the fuzz targets.
pub const JWT_SECRET: &str = "fuzz-jwt-secret-0123456789abcdefghijklmnop";
/// Long enough that tokens minted into the seed corpus stay unexpired.
pub const TOKEN_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The example registry of the repository (`../examples/blog/queries`).
pub fn registry() -> Registry {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/blog/queries");
    Registry::load(&dir).expect("the example registry loads")
}

pub fn authenticator() -> Authenticator {
    Authenticator::from_parts(
        &[Secret::new(JWT_SECRET)],
        &[Secret::new(TOKEN_SECRET)],
        None,
        None,
        TOKEN_TTL,
    )
}
