//! Who is calling, and what they may receive: authToken (JWT) verification, the caller's
//! identity, and the stateless subscription token that statgate signs itself (docs/PROTOCOL.md).
//!
//! authTokens are verified by `jwt`: HS256 with the configured secrets, and tokens signed by
//! an identity provider's keys, which [`jwks`] fetches and keeps. The user is one configured
//! claim (`sub` unless `STATGATE_JWT_USER_CLAIM` names another); every other claim is kept for
//! `auth` rules.
//!
//! The subscription token is `base64url(claims JSON) "." base64url(HMAC-SHA256)`. Any node
//! holding one of the configured keys can verify it, so a client may subscribe on one node
//! and connect to another. The first key signs; every key verifies (rotation). This module
//! never logs a token or a secret, and its errors never contain one.

mod authenticator;
mod claims;
pub mod jwks;
mod jwt;

pub use authenticator::{Authenticator, TokenClaims};
pub use claims::{bearer, now_secs, AuthError, Claims, MAX_TOKEN_BYTES};
