//! `memory`: one user subscribes to many large values (by default 1,001 signatures of
//! `posts/stats/counts`, 500 post ids each, so 500 rows per value), holds them, then closes
//! every socket. The gateway's RSS before, while held, at its peak (`VmHWM`), and some seconds
//! after the sockets closed: what one user can make the gateway hold, and whether the memory
//! goes back to the system afterwards.

use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use super::clients::{self, ProcessReading, Socket, BENCH_USER};
use super::report::{round, Report};
use super::{BenchError, Target};

/// How long the sockets may take to hold every value.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Between two subscribe frames: 80 a second, under `STATGATE_MAX_MESSAGES_PER_SEC` (100).
const FRAME_INTERVAL: Duration = Duration::from_millis(12);

#[derive(Debug, Clone, Args)]
pub struct MemoryArgs {
    /// Signatures (distinct sets of post ids) the one user subscribes to.
    #[arg(long, default_value_t = 1001)]
    pub signatures: usize,
    /// Post ids per signature (rows per value).
    #[arg(long, default_value_t = 500)]
    pub ids: usize,
    /// Subscriptions per socket (the gateway allows 1,000 by default).
    #[arg(long, default_value_t = 500)]
    pub per_socket: usize,
    /// Seconds to wait after the sockets close before the last RSS reading.
    #[arg(long, default_value_t = 30)]
    pub settle_secs: u64,
}

/// What one socket ended up holding.
#[derive(Default)]
struct Held {
    values: usize,
    /// Subscriptions answered with an error event instead of a value (e.g. over the
    /// per-user signature limit).
    refused: usize,
    value_bytes: usize,
}

pub async fn run(target: &Target, args: MemoryArgs) -> Result<Report, BenchError> {
    let pid = target
        .gateway_pid
        .ok_or_else(|| BenchError::Setup("memory needs --gateway-pid".into()))?;
    let db = clients::database(target, 2).await?;
    let http = clients::http_client()?;
    let posts = clients::new_posts(&db, args.signatures + args.ids.max(1) - 1).await?;
    let jwt = clients::mint_jwt(target, BENCH_USER)?;
    let tokens = subscribe_windows(target, &http, &jwt, &posts, &args).await?;

    let baseline = read(pid)?;
    let started = Instant::now();
    let mut sockets = Vec::new();
    let mut held = Held::default();
    for (n, chunk) in tokens.chunks(args.per_socket.max(1)).enumerate() {
        let source = target.sources[n % target.sources.len()];
        let (socket, got) = hold(target, source, &jwt, chunk).await?;
        held.values += got.values;
        held.refused += got.refused;
        held.value_bytes += got.value_bytes;
        sockets.push(socket);
    }
    let held_secs = started.elapsed().as_secs_f64();
    let holding = read(pid)?;

    for mut socket in sockets {
        let _ = socket.close(None).await;
    }
    let closed_at = Instant::now();
    let left = wait_released(&http, target, Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(closed_at.elapsed())).await;
    let after_1s = read(pid)?;
    tokio::time::sleep(Duration::from_secs(args.settle_secs).saturating_sub(closed_at.elapsed()))
        .await;
    let settled = read(pid)?;

    let mib = |bytes: u64| round(bytes as f64 / 1_048_576.0);
    let mut report = Report::new("memory");
    report
        .add("signatures_attempted", tokens.len())
        .add("rows_per_value", args.ids)
        .add("values_held", held.values)
        .add("subscriptions_refused", held.refused)
        .add("value_mib_received", mib(held.value_bytes as u64))
        .add("hold_secs", round(held_secs))
        .add("gateway_rss_baseline_mib", mib(baseline.rss_bytes))
        .add("gateway_rss_held_mib", mib(holding.rss_bytes))
        // VmHWM is updated lazily by the kernel and may trail the reading taken while held.
        .add(
            "gateway_rss_peak_mib",
            mib(settled.peak_rss_bytes.max(holding.rss_bytes)),
        )
        .add("gateway_rss_1s_after_close_mib", mib(after_1s.rss_bytes))
        .add("settle_secs", args.settle_secs)
        .add("gateway_rss_after_close_mib", mib(settled.rss_bytes))
        .add("gateway_signatures_left", left);
    Ok(report)
}

/// Subscribes `BENCH_USER` to `posts/stats/counts` over `args.signatures` distinct windows of
/// `args.ids` posts; one token per window.
async fn subscribe_windows(
    target: &Target,
    http: &reqwest::Client,
    jwt: &str,
    posts: &[i64],
    args: &MemoryArgs,
) -> Result<Vec<String>, BenchError> {
    let requests = (0..args.signatures).map(|i| {
        let window = &posts[i..i + args.ids.max(1)];
        let body = json!({"queryName": "posts/stats/counts", "args": {"postIds": window}, "authToken": jwt});
        let request = http
            .post(format!("{}/realtime/subscribe", target.url))
            .json(&body)
            .send();
        async move {
            let reply: Value = request.await?.error_for_status()?.json().await?;
            reply["token"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| BenchError::Setup(format!("no token in {reply}")))
        }
    });
    futures_util::stream::iter(requests)
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Opens one socket with the first token, subscribes to the others with frames (paced below
/// the gateway's default message rate of 100 per second), and reads meanwhile until every
/// subscription got its value or was refused.
async fn hold(
    target: &Target,
    source: std::net::IpAddr,
    jwt: &str,
    tokens: &[String],
) -> Result<(Socket, Held), BenchError> {
    let Some((first, rest)) = tokens.split_first() else {
        return Err(BenchError::Setup("no tokens".into()));
    };
    let socket = clients::open_socket(target, source, first, jwt).await?;
    let (mut sink, mut stream) = socket.split();
    let send = async {
        let mut pace = tokio::time::interval(FRAME_INTERVAL);
        for token in rest {
            pace.tick().await;
            let frame = json!({"type": "subscribe", "token": token}).to_string();
            sink.send(Message::text(frame)).await?;
        }
        Ok::<_, BenchError>(())
    };
    let read = async {
        let mut held = Held::default();
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        while held.values + held.refused < tokens.len() {
            let message = match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(message)) => message?,
                Ok(None) => return Err(BenchError::Setup("the gateway closed a socket".into())),
                Err(_) => {
                    return Err(BenchError::Setup(format!(
                        "only {} of {} values (and {} refusals) within {SETTLE_TIMEOUT:?}",
                        held.values,
                        tokens.len(),
                        held.refused
                    )))
                }
            };
            let Message::Text(text) = message else {
                continue;
            };
            let event: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
            match event["event"].as_str() {
                Some("query:update") => {
                    held.values += 1;
                    held.value_bytes += text.len();
                }
                Some("error") => held.refused += 1,
                _ => {}
            }
        }
        Ok(held)
    };
    let (sent, held) = futures_util::future::join(send, read).await;
    sent?;
    let held = held?;
    let socket = sink
        .reunite(stream)
        .map_err(|_| BenchError::Setup("socket halves do not match".into()))?;
    Ok((socket, held))
}

/// Waits until the gateway holds no signature (its sockets noticed the close); returns how
/// many were left at the deadline.
async fn wait_released(
    http: &reqwest::Client,
    target: &Target,
    within: Duration,
) -> Result<u64, BenchError> {
    let deadline = Instant::now() + within;
    loop {
        let text = http
            .get(format!("{}/metrics", target.url))
            .send()
            .await?
            .text()
            .await?;
        let left = text
            .lines()
            .find_map(|line| line.strip_prefix("statgate_signatures ")?.parse().ok())
            .unwrap_or(0);
        if left == 0 || Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn read(pid: u32) -> Result<ProcessReading, BenchError> {
    ProcessReading::read(pid).ok_or_else(|| BenchError::Setup(format!("cannot read /proc/{pid}")))
}
