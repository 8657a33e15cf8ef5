//! A subscription token presented on the socket (in the upgrade URL or a `subscribe` frame),
//! checked again here: a token proves that its args passed validation and the query's `auth`
//! rules when it was signed; the rules are checked again against the claims of the socket's
//! current JWT, so a token is worth nothing to a caller whose JWT does not pass them.

use std::sync::Arc;

use crate::auth::{AuthError, Claims};
use crate::error::ApiError;
use crate::registry::args::CanonicalArgs;
use crate::registry::Query;
use crate::state::AppState;

/// A subscription token that passed every check, with its query and validated args.
pub struct VerifiedSubscription {
    pub signature: String,
    pub query: Arc<Query>,
    pub args: CanonicalArgs,
}

/// Verifies a subscription token for the caller of `jwt`, re-validates its args against the
/// registry and checks the query's `auth` rules against the caller's claims.
pub fn verify_subscription(
    state: &AppState,
    token: &str,
    jwt: &Claims,
) -> Result<VerifiedSubscription, ApiError> {
    let claims = state.auth.verify_token(token)?;
    if claims.user != jwt.user {
        return Err(AuthError::UserMismatch.into());
    }
    let query = state
        .registry
        .get()
        .get(&claims.query)
        .ok_or_else(|| ApiError::UnknownQuery(claims.query.clone()))?
        .clone();
    let args_value: serde_json::Value =
        serde_json::from_str(&claims.args).map_err(|_| AuthError::InvalidToken)?;
    let args = query.validate(&args_value)?;
    if args.json != claims.args {
        return Err(AuthError::InvalidToken.into());
    }
    query.authorize(&args, jwt)?;
    let signature = claims.signature();
    Ok(VerifiedSubscription {
        signature,
        query,
        args,
    })
}
