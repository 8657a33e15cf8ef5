//! `POST /realtime/subscribe`: turn (JWT, query name, args) into a signed subscription token.
//!
//! Checks run in this order, each with its own status: content type (415), body size (413),
//! JSON shape (400 `invalid_json`), JWT (401), query name (404), args (400 `invalid_args`),
//! `auth` rules (403). Nothing here touches the database. Rate limits (429 with `Retry-After`)
//! apply per client address before anything else and per user once the JWT is verified.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;
use crate::app::AppState;
use crate::auth::{bearer, AuthError};
use crate::telemetry::OutcomeLabel;
use crate::ws::protocol::PROTOCOL;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscribeRequest {
    query_name: String,
    #[serde(default)]
    args: Value,
    auth_token: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeReply {
    token: String,
    signature: String,
    expires_at: String,
    websocket: WebSocketInfo,
}

#[derive(Serialize)]
pub struct WebSocketInfo {
    url: String,
    protocol: &'static str,
    params: WebSocketParams,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebSocketParams {
    token_param: &'static str,
    auth_token_param: &'static str,
}

pub async fn subscribe(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SubscribeReply>, ApiError> {
    let client =
        crate::limits::client_address(peer.ip(), &headers, state.config.limits.trust_forwarded_for);
    let outcome = match state.subscribe_limits.check_ip(client) {
        Ok(()) => handle(&state, &headers, body).await,
        Err(refused) => Err(ApiError::from(refused)),
    };
    let label = OutcomeLabel {
        outcome: if outcome.is_ok() { "ok" } else { "rejected" },
    };
    state.metrics.subscribe_requests.get_or_create(&label).inc();
    outcome.map(Json)
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<SubscribeReply, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
            limit: state.config.limits.max_body_bytes,
        },
        _ => ApiError::InvalidJson(format!(
            "cannot read the request body: {}",
            rejection.body_text()
        )),
    })?;
    let request: SubscribeRequest = serde_json::from_slice(&body).map_err(|err| {
        ApiError::InvalidJson(format!(
            "body must be a JSON object {{\"queryName\": string, \"args\": object, \"authToken\": string}}: {err}"
        ))
    })?;
    let jwt = request
        .auth_token
        .as_deref()
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer)
        })
        .ok_or(AuthError::MissingJwt)?;
    let claims = state.auth.verify_jwt_refreshing(jwt).await?;
    state.subscribe_limits.check_user(&claims.user)?;
    let query = state
        .registry
        .get(&request.query_name)
        .ok_or_else(|| ApiError::UnknownQuery(request.query_name.clone()))?;
    let args = query.validate(&request.args)?;
    let limit = state.config.limits.max_args_bytes;
    if args.json.len() > limit {
        return Err(ApiError::ArgsTooLarge {
            size: args.json.len(),
            limit,
        });
    }
    query.authorize(&args, &claims)?;
    let (token, token_claims) = state.auth.sign_token(&claims.user, &query.name, &args.json);
    if token.len() > crate::auth::MAX_TOKEN_BYTES {
        // Escaping can grow args several times over (a control character becomes \u0001):
        // a token the WebSocket endpoint would refuse unread is not handed out.
        return Err(ApiError::TokenTooLarge { size: token.len() });
    }
    let expires_at = DateTime::<Utc>::from_timestamp(token_claims.expires as i64, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    Ok(SubscribeReply {
        token,
        signature: query.signature(&args),
        expires_at,
        websocket: WebSocketInfo {
            url: websocket_url(state, headers),
            protocol: PROTOCOL,
            params: WebSocketParams {
                token_param: "token",
                auth_token_param: "authToken",
            },
        },
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// `STATGATE_PUBLIC_URL` when set, else the request's Host (and `X-Forwarded-Proto`).
fn websocket_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(public) = &state.config.public_url {
        let ws = public
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        return format!("{ws}/realtime/ws");
    }
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .filter(|host| {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| state.address.to_string());
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    format!("{}://{host}/realtime/ws", if secure { "wss" } else { "ws" })
}
