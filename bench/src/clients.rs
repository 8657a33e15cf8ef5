//! What every benchmark needs: tokens, subscriptions, sockets, writers' database, and readings
//! of the gateway (its `/metrics` and `/proc`).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::{BenchError, Target};

pub type Socket = WebSocketStream<TcpStream>;

/// The user every benchmark socket acts as.
pub const BENCH_USER: &str = "bench";

/// An HS256 JWT for `sub`, valid for a day.
pub fn mint_jwt(target: &Target, sub: &str) -> Result<String, BenchError> {
    let secret = target
        .jwt_secret
        .as_deref()
        .ok_or_else(|| BenchError::Setup("set --jwt-secret (STATGATE_JWT_SECRET)".into()))?;
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": sub, "iat": now, "exp": now + 86_400});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|err| BenchError::Setup(format!("cannot sign a JWT: {err}")))
}

pub async fn database(target: &Target, connections: u32) -> Result<PgPool, BenchError> {
    let url = target
        .database_url
        .as_deref()
        .ok_or_else(|| BenchError::Setup("set --database-url (DATABASE_URL)".into()))?;
    Ok(PgPoolOptions::new()
        .max_connections(connections)
        .connect(url)
        .await?)
}

/// `n` fresh posts (with their zeroed post_stats rows), in id order.
pub async fn new_posts(db: &PgPool, n: usize) -> Result<Vec<i64>, BenchError> {
    Ok(sqlx::query_scalar(
        "insert into posts (title, author_id) select 'bench ' || i, 'bench' from generate_series(1, $1) i returning id",
    )
    .bind(n as i64)
    .fetch_all(db)
    .await?)
}

/// One comment on `post`; the caller knows the count this makes (it is the post's only writer).
/// Inserts a comment on `post`, written by that post's own author: comments also count per
/// author (`author_comment_counts`), and one author for every writer would make all writers
/// wait on that author's counter row.
pub async fn add_comment(db: &PgPool, post: i64) -> Result<(), BenchError> {
    sqlx::query("insert into comments (post_id, author_id, body) values ($1, 'bench-' || $1, 'x')")
        .bind(post)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn comment_counts(db: &PgPool, posts: &[i64]) -> Result<Vec<i64>, BenchError> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "select post_id, comment_count from post_stats where post_id = any($1) order by post_id",
    )
    .bind(posts)
    .fetch_all(db)
    .await?;
    let by_post: std::collections::HashMap<i64, i64> = rows.into_iter().collect();
    Ok(posts
        .iter()
        .map(|p| by_post.get(p).copied().unwrap_or(0))
        .collect())
}

#[derive(Deserialize)]
struct SubscribeReply {
    token: String,
}

/// Subscribes `BENCH_USER` to the comment count of each post; returns one token per post.
pub async fn subscribe_posts(
    target: &Target,
    http: &reqwest::Client,
    posts: &[i64],
) -> Result<Vec<String>, BenchError> {
    let jwt = mint_jwt(target, BENCH_USER)?;
    let requests = posts.iter().map(|post| {
        let body = json!({"queryName": "posts/stats/commentCount", "args": {"postId": post}, "authToken": jwt});
        let request = http
            .post(format!("{}/realtime/subscribe", target.url))
            .json(&body)
            .send();
        async move {
            let reply: SubscribeReply = request.await?.error_for_status()?.json().await?;
            Ok::<_, BenchError>(reply.token)
        }
    });
    futures_util::stream::iter(requests)
        .buffered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Opens one socket from `source`, with the subscription `token`, and small buffers (the
/// benchmark holds tens of thousands).
pub async fn open_socket(
    target: &Target,
    source: IpAddr,
    token: &str,
    jwt: &str,
) -> Result<Socket, BenchError> {
    let address = gateway_address(target)?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(address).await?;
    stream.set_nodelay(true)?;
    let ws_url = format!(
        "{}/realtime/ws?token={token}&authToken={jwt}",
        target.url.replacen("http", "ws", 1)
    );
    let mut request = ws_url.into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        http_header("statgate.realtime.v1")?,
    );
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(ws)
}

fn http_header(
    value: &'static str,
) -> Result<tokio_tungstenite::tungstenite::http::HeaderValue, BenchError> {
    value
        .parse()
        .map_err(|_| BenchError::Setup(format!("bad header value {value}")))
}

fn gateway_address(target: &Target) -> Result<SocketAddr, BenchError> {
    let host_port = target
        .url
        .split("://")
        .nth(1)
        .map(|rest| rest.trim_end_matches('/'))
        .ok_or_else(|| BenchError::Setup(format!("--url {} has no scheme", target.url)))?;
    host_port
        .parse()
        .map_err(|_| BenchError::Setup(format!("--url must be http://IP:PORT, got {}", target.url)))
}

/// One value a socket received.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub socket: u32,
    pub count: i64,
    pub version: u64,
    pub at: Instant,
}

#[derive(Deserialize)]
struct Frame {
    event: String,
    #[serde(default)]
    payload: Option<UpdatePayload>,
}

#[derive(Deserialize)]
struct UpdatePayload {
    data: Value,
    version: u64,
}

/// Reads `socket` until `stop`, reporting every `query:update` (server pings are answered by
/// tungstenite as it reads). Returns whether the socket was still open at the end.
pub fn spawn_reader(
    index: u32,
    mut socket: Socket,
    arrivals: mpsc::UnboundedSender<Arrival>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<bool> {
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => {
                    let _ = socket.close(None).await;
                    return true;
                }
                message = socket.next() => message,
            };
            match message {
                Some(Ok(Message::Text(text))) => {
                    let Ok(frame) = serde_json::from_str::<Frame>(text.as_str()) else {
                        continue;
                    };
                    let Some(payload) = frame.payload.filter(|_| frame.event == "query:update")
                    else {
                        continue;
                    };
                    let count = payload.data.as_i64().unwrap_or(-1);
                    let arrival = Arrival {
                        socket: index,
                        count,
                        version: payload.version,
                        at: Instant::now(),
                    };
                    if arrivals.send(arrival).is_err() {
                        return true;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return false,
                Some(Ok(_)) => {}
            }
        }
    })
}

/// Reader tasks over a set of sockets, reporting on one channel, stopped together.
pub struct Readers {
    tasks: Vec<tokio::task::JoinHandle<bool>>,
    stop: CancellationToken,
}

impl Readers {
    /// Opens one socket per token (socket `i` uses token `i` and reports as `i`; source
    /// addresses rotate) and reads each from the moment it is open: sockets opened early must
    /// answer the gateway's pings while the rest are still connecting, or a slow opening (tens
    /// of thousands of sockets on a busy machine) gets them closed by the heartbeat.
    pub async fn open(
        target: &Target,
        tokens: &[&str],
    ) -> Result<(Readers, mpsc::UnboundedReceiver<Arrival>), BenchError> {
        let jwt = mint_jwt(target, BENCH_USER)?;
        let (arrivals_tx, arrivals) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let opens = tokens.iter().enumerate().map(|(i, token)| {
            let source = target.sources[i % target.sources.len()];
            let (jwt, arrivals_tx, stop) = (jwt.as_str(), arrivals_tx.clone(), stop.clone());
            async move {
                let socket = open_socket(target, source, token, jwt).await?;
                Ok::<_, BenchError>(spawn_reader(i as u32, socket, arrivals_tx, stop))
            }
        });
        let opened: Result<Vec<_>, _> = futures_util::stream::iter(opens)
            .buffered(target.connect_concurrency.max(1))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect();
        match opened {
            Ok(tasks) => Ok((Readers { tasks, stop }, arrivals)),
            Err(err) => {
                stop.cancel();
                Err(err)
            }
        }
    }

    /// Closes every socket; returns how many had been closed by the gateway before.
    pub async fn stop(self) -> usize {
        self.stop.cancel();
        closed_early(self.tasks).await
    }
}

/// Waits for reader tasks; returns how many ended because their socket closed.
pub async fn closed_early(tasks: Vec<tokio::task::JoinHandle<bool>>) -> usize {
    let mut closed = 0;
    for task in tasks {
        if !task.await.unwrap_or(false) {
            closed += 1;
        }
    }
    closed
}

/// Counters from the gateway's `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GatewayCounters {
    pub notifications: f64,
    pub recompute_statements: f64,
    pub pushes: f64,
    pub coalesced: f64,
}

impl GatewayCounters {
    pub async fn read(http: &reqwest::Client, target: &Target) -> Result<Self, BenchError> {
        let text = http
            .get(format!("{}/metrics", target.url))
            .send()
            .await?
            .text()
            .await?;
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or(0.0)
        };
        Ok(GatewayCounters {
            notifications: value("statgate_notifications_total"),
            recompute_statements: value("statgate_recompute_statements_total"),
            pushes: value("statgate_pushes_total"),
            coalesced: value("statgate_coalesced_updates_total"),
        })
    }

    pub fn since(&self, before: &Self) -> Self {
        GatewayCounters {
            notifications: self.notifications - before.notifications,
            recompute_statements: self.recompute_statements - before.recompute_statements,
            pushes: self.pushes - before.pushes,
            coalesced: self.coalesced - before.coalesced,
        }
    }
}

/// The change in `pg_stat_statements` calls between two readings, or "n/a".
pub fn calls_between(before: Option<f64>, after: Option<f64>) -> serde_json::Value {
    match (before, after) {
        (Some(before), Some(after)) => json!(after - before),
        _ => json!("n/a"),
    }
}

/// Calls of statgate's recompute statements according to `pg_stat_statements`, if installed.
pub async fn recompute_calls(db: &PgPool) -> Option<f64> {
    let _ = sqlx::query("create extension if not exists pg_stat_statements")
        .execute(db)
        .await;
    sqlx::query_scalar::<_, Option<f64>>(
        "select sum(calls)::float8 from pg_stat_statements where query like '%statgate_args%' and query not like '%pg_stat_statements%'",
    )
    .fetch_one(db)
    .await
    .ok()
    .flatten()
}

/// Resident memory and CPU time of a process, from `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct ProcessReading {
    pub rss_bytes: u64,
    /// The highest RSS of the process so far (`VmHWM`).
    pub peak_rss_bytes: u64,
    pub cpu_seconds: f64,
    pub at: Instant,
}

impl ProcessReading {
    pub fn read(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |field: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        let rss_kib = kib("VmRSS:")?;
        let peak_kib = kib("VmHWM:").unwrap_or(rss_kib);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        let ticks = 100.0; // USER_HZ on Linux
        Some(ProcessReading {
            rss_bytes: rss_kib * 1024,
            peak_rss_bytes: peak_kib * 1024,
            cpu_seconds: (utime + stime) / ticks,
            at: Instant::now(),
        })
    }

    /// Cores used between two readings.
    pub fn cores_since(&self, before: &Self) -> f64 {
        let wall = self.at.duration_since(before.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        (self.cpu_seconds - before.cpu_seconds) / wall
    }
}

pub fn http_client() -> Result<reqwest::Client, BenchError> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()?)
}
