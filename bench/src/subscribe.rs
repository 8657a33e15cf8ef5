//! `subscribe`: `POST /realtime/subscribe` as fast as C concurrent clients can, for T seconds.

use std::time::{Duration, Instant};

use clap::Args;
use rand::Rng;
use serde_json::json;

use super::clients::{self, ProcessReading, BENCH_USER};
use super::report::{round, Latencies, Report};
use super::{BenchError, Target};

#[derive(Debug, Clone, Args)]
pub struct SubscribeArgs {
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Distinct post ids the requests pick from (each a different signature).
    #[arg(long, default_value_t = 10_000)]
    pub posts: i64,
}

pub async fn run(target: &Target, args: SubscribeArgs) -> Result<Report, BenchError> {
    let http = clients::http_client()?;
    let jwt = clients::mint_jwt(target, BENCH_USER)?;
    let url = format!("{}/realtime/subscribe", target.url);
    let cpu_before = target.gateway_pid.and_then(ProcessReading::read);
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let http = http.clone();
            let jwt = jwt.clone();
            let url = url.clone();
            let posts = args.posts.max(1);
            tokio::spawn(async move {
                let mut latencies = Latencies::new();
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < until {
                    let post = rand::rng().random_range(1..=posts);
                    let body = json!({"queryName": "posts/stats/commentCount", "args": {"postId": post}, "authToken": jwt});
                    let sent = Instant::now();
                    match http.post(&url).json(&body).send().await {
                        Ok(response) if response.status().is_success() => {
                            let _ = response.bytes().await;
                            latencies.record(sent.elapsed());
                            ok += 1;
                        }
                        _ => failed += 1,
                    }
                }
                (latencies, ok, failed)
            })
        })
        .collect();
    let mut latencies = Latencies::new();
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut merged = Vec::new();
    for worker in workers {
        if let Ok((l, o, f)) = worker.await {
            merged.push(l);
            ok += o;
            failed += f;
        }
    }
    for l in &merged {
        latencies.merge(l);
    }
    let cpu_after = target.gateway_pid.and_then(ProcessReading::read);

    let mut report = Report::new("subscribe");
    report
        .add("concurrency", args.concurrency)
        .add("seconds", args.seconds)
        .add("requests_ok", ok)
        .add("requests_failed", failed)
        .add(
            "requests_per_sec",
            round(ok as f64 / args.seconds.max(1) as f64),
        )
        .add("latency", latencies.summary())
        .add(
            "gateway_cores",
            match (cpu_before, cpu_after) {
                (Some(b), Some(a)) => json!(round(a.cores_since(&b))),
                _ => json!("n/a (pass --gateway-pid)"),
            },
        );
    Ok(report)
}
