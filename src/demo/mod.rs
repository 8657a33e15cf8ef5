//! Demo mode's own surface (README.md, "The demo page"): the page at `/` and the `/demo/api/...`
//! endpoints it calls to write example data, plus the "traffic" generator.
//!
//! Why a module of its own: none of this is part of the gateway's contract. It exists so a
//! newcomer sees counters move within a minute of `cargo run`, and so a browser test can
//! drive the real page. It is mounted **only** when `config.demo` is true; outside demo mode
//! `/` and `/demo/...` fall through to the normal JSON 404, so a production gateway never
//! exposes a write endpoint or a token mint. The page talks to statgate exactly as any
//! browser app would (POST /realtime/subscribe, then one WebSocket); this module never
//! pushes values itself, and never reaches into the hub, matcher or recompute pipeline.

mod assets;
mod routes;
mod traffic;
mod writes;

use std::sync::Arc;

use axum::Router;

use crate::error::ApiError;
use crate::state::AppState;
pub use traffic::{Traffic, TrafficStatus, MAX_RATE};

/// The demo user: the page subscribes as `alice`, and her JWT is minted by the demo endpoint.
pub const DEMO_USER: &str = "alice";

/// What the demo handlers share: the gateway's state and the one traffic generator.
#[derive(Clone)]
pub(crate) struct DemoState {
    app: AppState,
    traffic: Arc<Traffic>,
}

/// The demo routes (page, assets, `/demo/api/...`); the caller mounts them only in demo mode.
pub fn router(app: AppState) -> Router<AppState> {
    let state = DemoState {
        traffic: Arc::new(Traffic::default()),
        app,
    };
    routes::routes(state)
}

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
    Mint(String),
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
