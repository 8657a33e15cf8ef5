//! `idle`: hold N sockets (each with one subscription, answering the gateway's pings) for T
//! seconds; the gateway's RSS per socket and the CPU it spends on them.

use std::time::{Duration, Instant};

use clap::Args;

use super::clients::{self, ProcessReading, Readers};
use super::report::{round, Report};
use super::{BenchError, Target};

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Sockets to hold.
    #[arg(long, default_value_t = 10_000)]
    pub sockets: usize,
    /// Signatures the sockets are spread over.
    #[arg(long, default_value_t = 100)]
    pub signatures: usize,
    /// Seconds to hold them (include at least one heartbeat interval).
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
}

pub async fn run(target: &Target, args: IdleArgs) -> Result<Report, BenchError> {
    let pid = target
        .gateway_pid
        .ok_or_else(|| BenchError::Setup("idle needs --gateway-pid".into()))?;
    let db = clients::database(target, 2).await?;
    let http = clients::http_client()?;
    let posts = clients::new_posts(&db, args.signatures.max(1)).await?;
    let tokens = clients::subscribe_posts(target, &http, &posts).await?;
    let socket_tokens: Vec<&str> = (0..args.sockets)
        .map(|i| tokens[i % tokens.len()].as_str())
        .collect();

    let baseline = read(pid)?;
    let opened_at = Instant::now();
    let (readers, mut arrivals) = Readers::open(target, &socket_tokens).await?;
    let open_secs = opened_at.elapsed().as_secs_f64();
    let mut snapshots = 0;
    while snapshots < args.sockets {
        match tokio::time::timeout(Duration::from_secs(10), arrivals.recv()).await {
            Ok(Some(_)) => snapshots += 1,
            _ => break,
        }
    }

    let held_from = read(pid)?;
    let hold = tokio::spawn(async move { while arrivals.recv().await.is_some() {} });
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let held_to = read(pid)?;
    let closed_early = readers.stop().await;
    hold.abort();

    let grown = held_to.rss_bytes.saturating_sub(baseline.rss_bytes) as f64;
    let mut report = Report::new("idle");
    report
        .add("sockets", args.sockets)
        .add("signatures", posts.len())
        .add("seconds_held", args.seconds)
        .add("open_sockets_secs", round(open_secs))
        .add("snapshots_received", snapshots)
        .add("sockets_closed_early", closed_early)
        .add(
            "gateway_rss_baseline_mib",
            round(baseline.rss_bytes as f64 / 1_048_576.0),
        )
        .add(
            "gateway_rss_held_mib",
            round(held_to.rss_bytes as f64 / 1_048_576.0),
        )
        .add(
            "gateway_rss_per_socket_bytes",
            round(grown / args.sockets.max(1) as f64),
        )
        .add(
            "gateway_cores_while_held",
            round(held_to.cores_since(&held_from)),
        );
    Ok(report)
}

fn read(pid: u32) -> Result<ProcessReading, BenchError> {
    ProcessReading::read(pid).ok_or_else(|| BenchError::Setup(format!("cannot read /proc/{pid}")))
}
