//! The one place where errors become HTTP responses.
//!
//! Every error body is `{"error":{"code","message","details"}}`. Bad input is always a 4xx
//! with a precise message; a 5xx body is generic and its cause is logged, never returned.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::auth::AuthError;
use crate::registry::args::ArgsError;
use crate::registry::Forbidden;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidArgs(#[from] ArgsError),
    #[error(
        "args are {size} bytes once canonical; the limit is {limit} (STATGATE_MAX_ARGS_BYTES)"
    )]
    ArgsTooLarge { size: usize, limit: usize },
    #[error("these args make a subscription token of {size} bytes, over the {} a socket accepts (escaped characters count several times): use shorter args", crate::auth::MAX_TOKEN_BYTES)]
    TokenTooLarge { size: usize },
    #[error("{0}")]
    InvalidRequest(String),
    #[error("a batch holds 1 to {max} subscriptions (STATGATE_MAX_BATCH_SUBSCRIPTIONS, at most twice STATGATE_SUBSCRIBE_PER_SEC_PER_USER); this one holds {size}")]
    BatchSize { size: usize, max: usize },
    #[error("unknown query {0:?}")]
    UnknownQuery(String),
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("{0}")]
    Forbidden(String),
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("no route for {0}")]
    NotFound(String),
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// A route that exists, naming a resource that does not (e.g. an unknown demo post).
    #[error("{0}")]
    Missing(String),
    #[error("too many subscribe requests for this {scope}: retry after {} s", retry_after_secs(.retry_after))]
    RateLimited {
        scope: &'static str,
        retry_after: std::time::Duration,
    },
    #[error("too many open sockets for this {scope}: close one first")]
    TooManySockets { scope: &'static str },
    /// Refused at accept time: the TCP connection limit of the server or of the client's
    /// address is reached ([`refusal`] writes it, then the connection is closed).
    #[error("too many open connections for this {scope}: retry shortly")]
    TooManyConnections { scope: &'static str },
    #[error("the request did not complete within {} s (STATGATE_REQUEST_TIMEOUT_SECS)", .limit.as_secs())]
    RequestTimeout { limit: std::time::Duration },
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("internal error")]
    Internal(String),
}

/// Whole seconds for `Retry-After`, rounded up and at least 1.
fn retry_after_secs(wait: &std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

impl From<crate::limits::Refused> for ApiError {
    fn from(refused: crate::limits::Refused) -> Self {
        ApiError::RateLimited {
            scope: refused.scope,
            retry_after: refused.retry_after,
        }
    }
}

impl From<Forbidden> for ApiError {
    fn from(err: Forbidden) -> Self {
        ApiError::Forbidden(err.to_string())
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_)
            | ApiError::InvalidArgs(_)
            | ApiError::ArgsTooLarge { .. }
            | ApiError::TokenTooLarge { .. }
            | ApiError::InvalidRequest(_)
            | ApiError::BatchSize { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnknownQuery(_) | ApiError::NotFound(_) | ApiError::Missing(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Unauthorized(AuthError::UserMismatch) => StatusCode::FORBIDDEN,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } | ApiError::TooManySockets { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::NotReady(_) | ApiError::TooManyConnections { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidArgs(_)
            | ApiError::ArgsTooLarge { .. }
            | ApiError::TokenTooLarge { .. } => "invalid_args",
            ApiError::InvalidRequest(_) | ApiError::BatchSize { .. } => "invalid_request",
            ApiError::UnknownQuery(_) => "unknown_query",
            ApiError::Unauthorized(AuthError::UserMismatch) => "forbidden",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::NotFound(_) | ApiError::Missing(_) => "not_found",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::TooManySockets { .. } => "too_many_sockets",
            ApiError::TooManyConnections { .. } => "too_many_connections",
            ApiError::RequestTimeout { .. } => "request_timeout",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Internal(_) => "internal",
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::InvalidArgs(err) => json!(err.problems),
            ApiError::BatchSize { max, .. } => json!({ "maxSubscriptions": max }),
            _ => Value::Null,
        }
    }

    /// `{"code","message","details"}`: the body of an error response, inside `"error"`.
    fn body(&self) -> Value {
        json!({ "code": self.code(), "message": self.to_string(), "details": self.details() })
    }

    /// One refused entry of a batch reply: the error body with the status the single request
    /// would have answered.
    pub fn entry_body(&self) -> Value {
        let mut body = self.body();
        body["status"] = json!(self.status().as_u16());
        body
    }
}

impl ApiError {
    /// The whole JSON body of an error response: `{"error": …}`.
    fn envelope(&self) -> Value {
        json!({ "error": self.body() })
    }
}

/// The bytes of a whole HTTP/1.1 response for a connection refused before its request was
/// read (`crate::edge` writes them once, without waiting, and closes): the same JSON body as
/// any error, `Connection: close`, and `Retry-After: 1` (a place frees as soon as any
/// connection closes).
pub fn refusal(err: &ApiError) -> Vec<u8> {
    let body = err.envelope().to_string();
    let status = err.status();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\nretry-after: 1\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    )
    .into_bytes()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = %cause, "request failed");
        }
        let mut response = (self.status(), axum::Json(self.envelope())).into_response();
        if let ApiError::RateLimited { retry_after, .. } = &self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(retry_after)),
            );
        }
        if matches!(self, ApiError::Unauthorized(ref err) if *err != AuthError::UserMismatch) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
