//! What a verified caller is made of, and the errors of verifying one.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Tokens longer than this are refused before any decoding work.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing authToken")]
    MissingJwt,
    #[error("authToken expired")]
    ExpiredJwt,
    #[error("invalid authToken: {0}")]
    InvalidJwt(String),
    #[error("invalid authToken: signed by a key (kid) the identity provider does not list")]
    UnknownKey,
    #[error(
        "invalid authToken: the identity provider's keys are not loaded yet (its key set could \
         not be fetched); retry later"
    )]
    KeysUnavailable,
    #[error("invalid subscription token")]
    InvalidToken,
    #[error("subscription token expired")]
    ExpiredToken,
    #[error("the subscription token belongs to another user")]
    UserMismatch,
    #[error("statgate mints HS256 JWTs only, and no STATGATE_JWT_SECRET is set")]
    NoSigningSecret,
}

/// A verified authToken: the user it names, its expiry, and every claim (for `auth` rules).
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// The configured user claim's value, as a string (a number claim is rendered).
    pub user: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Every claim of the token, the user claim and `exp` included.
    pub all: serde_json::Map<String, Value>,
}

impl Claims {
    /// A claim as a string, for `auth` rules (a string, number or boolean claim).
    pub fn claim(&self, name: &str) -> Option<String> {
        match self.all.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Extracts the JWT from an `Authorization: Bearer …` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_headers_are_parsed() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
    }
}
