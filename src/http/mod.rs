//! HTTP endpoints (docs/PROTOCOL.md): subscribe, health, readiness, metrics, the query list, and the
//! WebSocket route. Handlers are thin: they parse, call the domain modules, and map errors
//! through [`crate::error::ApiError`].

mod subscribe;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// The gateway's routes, with `extra` routes the application mounts beside them (demo mode's
/// page and endpoints), behind one fallback, body limit, time limit and CORS policy.
pub fn router(state: AppState, extra: Router<AppState>) -> Router {
    let body_limit = state.config.limits.max_body_bytes;
    let request_timeout = state.config.http.request_timeout;
    let router = Router::new()
        .route("/realtime/subscribe", post(subscribe::subscribe))
        .route(
            "/realtime/subscribe/batch",
            post(subscribe::subscribe_batch),
        )
        .route("/realtime/ws", get(crate::ws::upgrade))
        .route("/realtime/queries", get(queries))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(extra);
    let cors = cors_layer(&state.config.http.cors_origins);
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            time_limit,
        ))
        .layer(cors)
        .with_state(state)
}

/// Cross-origin access for browser apps served from another origin than the gateway
/// (`STATGATE_CORS_ORIGINS`): the subscribe endpoints are called with `fetch`, JSON bodies and an
/// `Authorization` header, which browsers allow across origins only after a preflight. No
/// origin listed: no origin is allowed (same-origin only, the default). WebSockets need none.
/// `Retry-After` and `WWW-Authenticate` are exposed, so a page can honour a 429 or a 401.
fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return CorsLayer::new();
    }
    let allow = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .expose_headers([header::RETRY_AFTER, header::WWW_AUTHENTICATE])
        .max_age(Duration::from_secs(600))
}

async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// Bounds every request, reading its body included (a body dribbled a byte at a time would
/// otherwise hold its connection for as long as the client likes): 408 `request_timeout` after
/// `STATGATE_REQUEST_TIMEOUT_SECS`, and the connection closes since its body was not read to
/// the end. A WebSocket upgrade's request ends with its 101: the socket lives on outside.
async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::RequestTimeout { limit }.into_response(),
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 only while the LISTEN connection and the pools (primary and read replica) work.
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if !state.listener.is_connected() {
        return Err(ApiError::NotReady("the LISTEN connection is down".into()));
    }
    ping(&state.pool, "database pool").await?;
    if state.config.read_database.is_some() {
        ping(&state.read_pool, "read replica pool").await?;
    }
    Ok(Json(json!({ "status": "ready" })))
}

async fn ping(pool: &sqlx::PgPool, what: &str) -> Result<(), ApiError> {
    let ping = sqlx::query("select 1").execute(pool);
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness: {what} check failed");
            Err(ApiError::NotReady(format!("the {what} is not answering")))
        }
        Err(_) => Err(ApiError::NotReady(format!(
            "the {what} did not answer within 2 s"
        ))),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn queries(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "queries": state.registry.get().describe() }))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}
