//! `GET /realtime/ws`: checks the JWT and the subscription token **before** the upgrade
//! (401/403 as plain HTTP errors), then hands the socket to `ws::connection`.

use std::net::SocketAddr;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::subscription::{verify_subscription, VerifiedSubscription};
use crate::auth::{bearer, AuthError, Claims};
use crate::error::ApiError;
use crate::state::AppState;

/// Socket buffers are sized for small JSON frames, not tungstenite's 128 KiB default: idle
/// sockets are the common case and their memory adds up. tungstenite zeroes the free part of
/// the read buffer before every read attempt, so a smaller one is also cheaper per frame sent;
/// a larger client frame (a long token) grows it to that frame's size.
const READ_BUFFER_BYTES: usize = 1024;
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

#[derive(Debug, Deserialize)]
pub struct WsParams {
    token: Option<String>,
    #[serde(rename = "authToken")]
    auth_token: Option<String>,
}

fn jwt_from(params: &WsParams, headers: &HeaderMap) -> Option<String> {
    params.auth_token.clone().or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer)
            .map(str::to_owned)
    })
}

pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    params: Result<Query<WsParams>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match authorize(&state, &headers, params).await {
        Ok((claims, initial)) => match upgrade {
            Ok(upgrade) => {
                let client = crate::limits::client_address(
                    peer.ip(),
                    &headers,
                    state.config.limits.trust_forwarded_for,
                );
                let slot = match state.socket_limits.acquire(&claims.user, client) {
                    Ok(slot) => slot,
                    Err(scope) => return ApiError::TooManySockets { scope }.into_response(),
                };
                let limits = &state.config.limits;
                let tracker = state.sockets.clone();
                upgrade
                    .protocols([crate::wire::PROTOCOL])
                    .read_buffer_size(READ_BUFFER_BYTES)
                    .write_buffer_size(WRITE_BUFFER_BYTES)
                    .max_message_size(limits.max_frame_bytes)
                    .max_frame_size(limits.max_frame_bytes)
                    .on_upgrade(move |socket| {
                        tracker.track_future(async move {
                            super::connection::run(socket, state, claims, initial).await;
                            drop(slot);
                        })
                    })
            }
            Err(rejection) => {
                ApiError::InvalidRequest(format!("not a WebSocket upgrade: {rejection}"))
                    .into_response()
            }
        },
        Err(err) => err.into_response(),
    }
}

async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    params: Result<Query<WsParams>, QueryRejection>,
) -> Result<(Claims, Option<VerifiedSubscription>), ApiError> {
    let Query(params) =
        params.map_err(|rejection| ApiError::InvalidRequest(rejection.body_text()))?;
    let jwt = jwt_from(&params, headers).ok_or(AuthError::MissingJwt)?;
    let claims = state.auth.verify_jwt_refreshing(&jwt).await?;
    let initial = match params.token.as_deref() {
        Some(token) => Some(verify_subscription(state, token, &claims)?),
        None => None,
    };
    Ok((claims, initial))
}
