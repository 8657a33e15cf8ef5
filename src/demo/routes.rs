//! The demo endpoints: the page and its assets, a JWT for the demo user, the post list, the
//! write buttons (add/delete a comment or a reaction, log steps) and the traffic switch.
//!
//! Every write is plain SQL on the example application's tables; the triggers and the
//! gateway's normal pipeline do the rest, exactly as for any application's writes. Handlers
//! parse their input strictly (4xx with a precise message) and never unwrap database results.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use std::sync::Arc;

use super::error::{parse_post_id, DemoError};
use super::traffic::{Traffic, TrafficStatus, MAX_RATE};
use super::{assets, writes};
use crate::error::ApiError;
use crate::state::AppState;

/// How long the page's demo JWT lives; the page fetches a fresh one on every (re)connect.
const DEMO_JWT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Posts listed on the page (the seed makes 30).
const MAX_POSTS: i64 = 100;

type Reply = Result<(StatusCode, Json<Value>), ApiError>;

/// The demo user: the page subscribes as `alice`, and her JWT is minted by the demo endpoint.
pub const DEMO_USER: &str = "alice";

/// What the demo handlers share: the gateway's state and the one traffic generator.
#[derive(Clone)]
struct DemoState {
    app: AppState,
    traffic: Arc<Traffic>,
}

/// The demo routes (page, assets, `/demo/api/...`); the caller mounts them only in demo mode.
pub fn router(app: AppState) -> Router<AppState> {
    let state = DemoState {
        traffic: Arc::new(Traffic::default()),
        app,
    };
    routes(state)
}

fn routes(state: DemoState) -> Router<AppState> {
    Router::new()
        .route("/", get(assets::index))
        .route("/demo/assets/app.js", get(assets::app_js))
        .route("/demo/assets/style.css", get(assets::style_css))
        .route("/demo/assets/statgate-client.js", get(assets::client_js))
        .route("/demo/api/token", get(token))
        .route("/demo/api/posts", get(posts))
        .route(
            "/demo/api/posts/{id}/comments",
            post(add_comment).delete(delete_comment),
        )
        .route(
            "/demo/api/posts/{id}/reactions",
            post(add_reaction).delete(delete_reaction),
        )
        .route("/demo/api/steps", post(add_steps))
        .route("/demo/api/traffic", get(traffic_status).post(set_traffic))
        .with_state(state)
}

async fn token(State(demo): State<DemoState>) -> Result<Json<Value>, ApiError> {
    let jwt = demo
        .app
        .auth
        .mint_jwt(DEMO_USER, DEMO_JWT_TTL)
        .map_err(DemoError::Mint)?;
    Ok(Json(json!({ "user": DEMO_USER, "authToken": jwt })))
}

#[derive(Serialize, sqlx::FromRow)]
struct PostItem {
    id: i64,
    title: String,
}

async fn posts(State(demo): State<DemoState>) -> Result<Json<Value>, ApiError> {
    let posts: Vec<PostItem> = sqlx::query_as("select id, title from posts order by id limit $1")
        .bind(MAX_POSTS)
        .fetch_all(&demo.app.pool)
        .await
        .map_err(DemoError::from)?;
    Ok(Json(json!({ "user": DEMO_USER, "posts": posts })))
}

fn post_id(path: Result<Path<String>, PathRejection>) -> Result<i64, DemoError> {
    match path {
        Ok(Path(raw)) => parse_post_id(&raw),
        Err(rejection) => Err(DemoError::BadPostId(rejection.body_text())),
    }
}

async fn post_exists(demo: &DemoState, post: i64) -> Result<(), DemoError> {
    let found: Option<i64> = sqlx::query_scalar("select id from posts where id = $1")
        .bind(post)
        .fetch_optional(&demo.app.pool)
        .await?;
    found.map(|_| ()).ok_or(DemoError::UnknownPost(post))
}

/// Runs a write that returns the touched row's id, or none when nothing matched; tells an
/// unknown post apart from a post with nothing to delete.
async fn write(
    demo: &DemoState,
    post: i64,
    what: &'static str,
    written: sqlx::Result<Option<i64>>,
    created: bool,
) -> Reply {
    match written.map_err(DemoError::from)? {
        Some(id) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(json!({ "postId": post, "id": id }))))
        }
        None => {
            post_exists(demo, post).await?;
            Err(DemoError::NothingToDelete { post, what }.into())
        }
    }
}

async fn add_comment(
    State(demo): State<DemoState>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let post = post_id(path)?;
    let pool = &demo.app.pool;
    let written =
        writes::add_comment(pool, Some(post), DEMO_USER, "a comment from the demo page").await;
    write(&demo, post, "comment", written, true).await
}

async fn delete_comment(
    State(demo): State<DemoState>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let post = post_id(path)?;
    let written = writes::delete_comment(&demo.app.pool, Some(post)).await;
    write(&demo, post, "comment", written, false).await
}

async fn add_reaction(
    State(demo): State<DemoState>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let post = post_id(path)?;
    let written = writes::add_reaction(&demo.app.pool, Some(post), DEMO_USER, "like").await;
    write(&demo, post, "reaction", written, true).await
}

async fn delete_reaction(
    State(demo): State<DemoState>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let post = post_id(path)?;
    let written = writes::delete_reaction(&demo.app.pool, Some(post)).await;
    write(&demo, post, "reaction", written, false).await
}

/// Logs a walk of a few hundred steps for the demo user, now (moves the rollup panel).
async fn add_steps(State(demo): State<DemoState>) -> Reply {
    let value = f64::from(rand::random_range(200..1200_u32));
    let id = writes::add_steps(&demo.app.pool, DEMO_USER, value)
        .await
        .map_err(DemoError::from)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "user": DEMO_USER, "steps": value })),
    ))
}

async fn traffic_status(State(demo): State<DemoState>) -> Json<TrafficStatus> {
    Json(demo.traffic.status().await)
}

/// `{"enabled": true, "rate": 5}` turns traffic on at 5 writes/s; `{"enabled": false}` off.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrafficRequest {
    enabled: bool,
    rate: Option<u32>,
}

async fn set_traffic(
    State(demo): State<DemoState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TrafficStatus>, ApiError> {
    let body = body.map_err(|rejection| DemoError::BadJson(rejection.body_text()))?;
    let request: TrafficRequest =
        serde_json::from_slice(&body).map_err(|err| DemoError::BadJson(err.to_string()))?;
    if !request.enabled {
        return Ok(Json(demo.traffic.stop().await));
    }
    let rate = request.rate.unwrap_or(demo.traffic.status().await.rate);
    if !(1..=MAX_RATE).contains(&rate) {
        return Err(DemoError::BadTraffic(format!(
            "rate must be between 1 and {MAX_RATE} writes per second, got {rate}"
        ))
        .into());
    }
    Ok(Json(demo.traffic.start(&demo.app, rate).await))
}
