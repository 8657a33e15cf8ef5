//! Why a demo request failed, and how a post id is read from a path.

use crate::error::ApiError;

/// Why a demo request failed; mapped to HTTP in one place ([`From<DemoError> for ApiError`]).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("post id must be a positive integer, got {0:?}")]
    BadPostId(String),
    #[error("post {0} does not exist")]
    UnknownPost(i64),
    #[error("post {post} has no {what} to delete")]
    NothingToDelete { post: i64, what: &'static str },
    #[error("{0}")]
    BadTraffic(String),
    #[error("invalid JSON body: {0}")]
    BadJson(String),
    #[error("demo token could not be minted: {0}")]
    Mint(#[source] crate::auth::AuthError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<DemoError> for ApiError {
    fn from(err: DemoError) -> Self {
        match err {
            DemoError::BadPostId(_) | DemoError::BadTraffic(_) => {
                ApiError::InvalidRequest(err.to_string())
            }
            DemoError::BadJson(_) => ApiError::InvalidJson(err.to_string()),
            DemoError::UnknownPost(_) | DemoError::NothingToDelete { .. } => {
                ApiError::Missing(err.to_string())
            }
            DemoError::Mint(_) | DemoError::Database(_) => ApiError::Internal(err.to_string()),
        }
    }
}

/// Parses a post id from the path: digits only, positive, fits `bigint`.
pub(crate) fn parse_post_id(raw: &str) -> Result<i64, DemoError> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DemoError::BadPostId(raw.to_owned()));
    }
    match raw.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(DemoError::BadPostId(raw.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_ids_are_positive_decimal_integers() {
        assert_eq!(parse_post_id("17").ok(), Some(17));
        for bad in [
            "",
            "0",
            "-3",
            "+3",
            "abc",
            "1.5",
            " 1",
            "99999999999999999999",
        ] {
            assert!(parse_post_id(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
