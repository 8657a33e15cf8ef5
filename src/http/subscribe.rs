//! `POST /realtime/subscribe` and `POST /realtime/subscribe/batch`: turn (JWT, query name, args)
//! into a signed subscription token, one at a time or up to `STATGATE_MAX_BATCH_SUBSCRIPTIONS`
//! per request (a page that opens with dozens of counters makes one request, not dozens).
//!
//! Checks run in this order, each with its own status: content type (415), body size (413),
//! JSON shape (400 `invalid_json`), batch size (400 `invalid_request`), JWT (401), then for
//! each subscription: query name (404), args (400 `invalid_args`), `auth` rules (403). A batch
//! answers every entry on its own, in request order, with the status the single endpoint would
//! have answered; both endpoints run the same per-entry function ([`grant`]). Nothing here
//! touches the database. Rate limits (429 with `Retry-After`) apply per client address before
//! anything else (one unit per request) and per user once the JWT is verified (one unit per
//! subscription, so batching saves round trips, not budget).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use std::net::SocketAddr;
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{bearer, AuthError, Claims};
use crate::error::ApiError;
use crate::state::AppState;
use crate::telemetry::OutcomeLabel;
use crate::wire::PROTOCOL;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscribeRequest {
    query_name: String,
    #[serde(default)]
    args: Value,
    auth_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchRequest {
    /// Read as plain JSON first, so that a malformed entry is named by its index.
    subscriptions: Vec<Value>,
    auth_token: Option<String>,
}

/// One entry of a batch: the single request without its JWT.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchEntry {
    query_name: String,
    #[serde(default)]
    args: Value,
}

/// A subscription the caller may open: its token, its signature and when the token expires.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    token: String,
    signature: String,
    expires_at: String,
}

#[derive(Serialize)]
pub struct SubscribeReply {
    #[serde(flatten)]
    grant: Grant,
    websocket: WebSocketInfo,
}

#[derive(Serialize)]
pub struct BatchReply {
    results: Vec<BatchResult>,
    websocket: WebSocketInfo,
}

/// One entry's answer: a grant, or the error the single endpoint would have answered.
#[derive(Serialize)]
#[serde(untagged)]
enum BatchResult {
    Granted(Grant),
    Refused { error: Value },
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
    let outcome = match check_address(&state, peer, &headers) {
        Ok(()) => handle(&state, &headers, body).await,
        Err(refused) => Err(refused),
    };
    count(&state, outcome.is_ok(), 1);
    outcome.map(Json)
}

pub async fn subscribe_batch(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BatchReply>, ApiError> {
    let outcome = match check_address(&state, peer, &headers) {
        Ok(()) => handle_batch(&state, &headers, body).await,
        Err(refused) => Err(refused),
    };
    match &outcome {
        Ok(reply) => {
            let granted = reply
                .results
                .iter()
                .filter(|result| matches!(result, BatchResult::Granted(_)))
                .count();
            count(&state, true, granted);
            count(&state, false, reply.results.len() - granted);
        }
        Err(_) => count(&state, false, 1),
    }
    outcome.map(Json)
}

/// The per-address limit: one unit per request, checked before anything is parsed.
fn check_address(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<(), ApiError> {
    let client =
        crate::limits::client_address(peer.ip(), headers, state.config.limits.trust_forwarded_for);
    Ok(state.subscribe_limits.check_ip(client)?)
}

/// Counts subscriptions asked for, by outcome (a batch counts each entry).
fn count(state: &AppState, ok: bool, subscriptions: usize) {
    let label = OutcomeLabel {
        outcome: if ok { "ok" } else { "rejected" },
    };
    state
        .metrics
        .subscribe_requests
        .get_or_create(&label)
        .inc_by(subscriptions as u64);
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<SubscribeReply, ApiError> {
    let request: SubscribeRequest = read_json(
        state,
        headers,
        body,
        r#"{"queryName": string, "args": object, "authToken": string}"#,
    )?;
    let claims = caller(state, headers, request.auth_token.as_deref()).await?;
    state.subscribe_limits.check_user(&claims.user)?;
    Ok(SubscribeReply {
        grant: grant(state, &claims, &request.query_name, &request.args)?,
        websocket: websocket_info(state, headers),
    })
}

async fn handle_batch(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<BatchReply, ApiError> {
    let request: BatchRequest = read_json(
        state,
        headers,
        body,
        r#"{"subscriptions": [{"queryName": string, "args": object}, …], "authToken": string}"#,
    )?;
    let max = max_batch(state);
    let size = request.subscriptions.len();
    let charge = NonZeroU32::new(u32::try_from(size).unwrap_or(u32::MAX))
        .filter(|_| size <= max)
        .ok_or(ApiError::BatchSize { size, max })?;
    let entries = request
        .subscriptions
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            serde_json::from_value::<BatchEntry>(entry).map_err(|err| {
                ApiError::InvalidJson(format!(
                    "subscriptions[{index}] must be {{\"queryName\": string, \"args\": object}}: {err}"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let claims = caller(state, headers, request.auth_token.as_deref()).await?;
    state.subscribe_limits.check_user_n(&claims.user, charge)?;
    let results = entries
        .iter()
        .map(
            |entry| match grant(state, &claims, &entry.query_name, &entry.args) {
                Ok(granted) => BatchResult::Granted(granted),
                Err(err) => BatchResult::Refused {
                    error: err.entry_body(),
                },
            },
        )
        .collect();
    Ok(BatchReply {
        results,
        websocket: websocket_info(state, headers),
    })
}

/// `STATGATE_MAX_BATCH_SUBSCRIPTIONS`, or less when the per-user burst is smaller: a batch the
/// user's budget could never cover is refused as too large, not as "retry later".
fn max_batch(state: &AppState) -> usize {
    let setting = state.config.limits.max_batch_subscriptions;
    match state.subscribe_limits.user_burst() {
        Some(burst) => setting.min(usize::try_from(burst).unwrap_or(usize::MAX)),
        None => setting,
    }
}

/// The body as `T`: JSON content type (415), within the body limit (413), of the right shape
/// (400 `invalid_json`, naming `shape`).
fn read_json<T: DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    shape: &str,
) -> Result<T, ApiError> {
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
    serde_json::from_slice(&body)
        .map_err(|err| ApiError::InvalidJson(format!("body must be a JSON object {shape}: {err}")))
}

/// The verified claims of the JWT in the body, or else in `Authorization: Bearer` (a key set
/// is fetched again, rate-limited, for a `kid` it lacks).
async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    auth_token: Option<&str>,
) -> Result<Claims, ApiError> {
    let jwt = auth_token
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer)
        })
        .ok_or(AuthError::MissingJwt)?;
    Ok(state.auth.verify_jwt_refreshing(jwt).await?)
}

/// Every check of one subscription (query name, args and their size, `auth` rules), then its
/// token. The one place both endpoints decide whether a caller may subscribe.
fn grant(
    state: &AppState,
    claims: &Claims,
    query_name: &str,
    args: &Value,
) -> Result<Grant, ApiError> {
    let query = state
        .registry
        .get()
        .get(query_name)
        .cloned()
        .ok_or_else(|| ApiError::UnknownQuery(query_name.to_owned()))?;
    let args = query.validate(args)?;
    let limit = state.config.limits.max_args_bytes;
    if args.json.len() > limit {
        return Err(ApiError::ArgsTooLarge {
            size: args.json.len(),
            limit,
        });
    }
    query.authorize(&args, claims)?;
    let (token, token_claims) = state.auth.sign_token(&claims.user, &query.name, &args.json);
    if token.len() > crate::auth::MAX_TOKEN_BYTES {
        // Escaping can grow args several times over (a control character becomes \u0001):
        // a token the WebSocket endpoint would refuse unread is not handed out.
        return Err(ApiError::TokenTooLarge { size: token.len() });
    }
    let expires_at = DateTime::<Utc>::from_timestamp(token_claims.expires as i64, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    Ok(Grant {
        token,
        signature: query.signature(&args),
        expires_at,
    })
}

fn websocket_info(state: &AppState, headers: &HeaderMap) -> WebSocketInfo {
    WebSocketInfo {
        url: websocket_url(state, headers),
        protocol: PROTOCOL,
        params: WebSocketParams {
            token_param: "token",
            auth_token_param: "authToken",
        },
    }
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
    if let Some(public) = &state.config.http.public_url {
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
