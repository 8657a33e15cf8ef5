//! `fanout`: S sockets on ONE signature, one change at a time. For each change, the latency
//! from issuing the write to the first and to the last socket holding the new value.

use std::time::{Duration, Instant};

use clap::Args;
use tokio::sync::mpsc;

use super::clients::{self, GatewayCounters, ProcessReading, Readers};
use super::report::{gateway_figures, round, Latencies, Report};
use super::{BenchError, Target};

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Sockets on the signature.
    #[arg(long, default_value_t = 1000)]
    pub sockets: usize,
    /// Changes, one at a time.
    #[arg(long, default_value_t = 50)]
    pub changes: usize,
    /// Pause between changes.
    #[arg(long, default_value_t = 100)]
    pub pause_ms: u64,
    /// Give up on one change after this long.
    #[arg(long, default_value_t = 10)]
    pub change_timeout_secs: u64,
}

pub async fn run(target: &Target, args: FanoutArgs) -> Result<Report, BenchError> {
    let db = clients::database(target, 2).await?;
    let http = clients::http_client()?;
    let posts = clients::new_posts(&db, 1).await?;
    let post = posts[0];
    let tokens = clients::subscribe_posts(target, &http, &posts).await?;
    let token = tokens[0].as_str();

    let opened_at = Instant::now();
    let (readers, mut arrivals) = Readers::open(target, &vec![token; args.sockets]).await?;
    let open_secs = opened_at.elapsed().as_secs_f64();
    wait_for_all(&mut arrivals, args.sockets, 0, Duration::from_secs(30)).await;

    let counters_before = GatewayCounters::read(&http, target).await?;
    let cpu_before = target.gateway_pid.and_then(ProcessReading::read);
    let mut writer = CommentWriter { db: &db, post };
    let deliveries = Deliveries::measure(&mut arrivals, &args, &mut writer).await?;
    let cpu_after = target.gateway_pid.and_then(ProcessReading::read);
    let counters = GatewayCounters::read(&http, target)
        .await?
        .since(&counters_before);
    let closed_early = readers.stop().await;

    let mut report = Report::new("fanout");
    report
        .add("sockets", args.sockets)
        .add("changes", args.changes)
        .add("open_sockets_secs", round(open_secs));
    deliveries.add_to(&mut report);
    report
        .add("sockets_closed_early", closed_early)
        .add(
            "messages_per_sec_during_run",
            round(counters.pushes / deliveries.elapsed.as_secs_f64()),
        )
        .add(
            "gateway",
            gateway_figures(&cpu_before, &cpu_after, &counters),
        );
    Ok(report)
}

/// One change whose arrival at every socket is timed: after change `n`, every socket must hold
/// the count `n`.
pub(crate) trait Change {
    async fn make(&mut self, n: usize) -> Result<(), BenchError>;
}

/// The gateway's change: one comment on the post every socket follows.
struct CommentWriter<'a> {
    db: &'a sqlx::PgPool,
    post: i64,
}

impl Change for CommentWriter<'_> {
    async fn make(&mut self, _n: usize) -> Result<(), BenchError> {
        clients::add_comment(self.db, self.post).await
    }
}

/// First- and last-delivery latencies of changes made one at a time.
pub(crate) struct Deliveries {
    pub first: Latencies,
    pub last: Latencies,
    /// Changes that did not reach every socket within the timeout.
    pub incomplete: usize,
    pub elapsed: Duration,
}

impl Deliveries {
    pub async fn measure(
        arrivals: &mut mpsc::UnboundedReceiver<clients::Arrival>,
        args: &FanoutArgs,
        change: &mut impl Change,
    ) -> Result<Deliveries, BenchError> {
        let mut first = Latencies::new();
        let mut last = Latencies::new();
        let mut incomplete = 0;
        let timeout = Duration::from_secs(args.change_timeout_secs);
        let started = Instant::now();
        for n in 1..=args.changes {
            let issued = Instant::now();
            change.make(n).await?;
            match wait_for_all(arrivals, args.sockets, n as i64, timeout).await {
                Some((first_at, last_at)) => {
                    first.record(first_at.saturating_duration_since(issued));
                    last.record(last_at.saturating_duration_since(issued));
                }
                None => incomplete += 1,
            }
            tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
        }
        Ok(Deliveries {
            first,
            last,
            incomplete,
            elapsed: started.elapsed(),
        })
    }

    /// The first- and last-delivery summaries and the count of incomplete changes.
    pub fn add_to(&self, report: &mut Report) {
        report
            .add("first_delivery", self.first.summary())
            .add("last_delivery", self.last.summary())
            .add("changes_not_delivered_to_all", self.incomplete);
    }
}

/// Waits until every socket holds `count`; returns the first and last arrival times.
async fn wait_for_all(
    arrivals: &mut mpsc::UnboundedReceiver<clients::Arrival>,
    sockets: usize,
    count: i64,
    timeout: Duration,
) -> Option<(Instant, Instant)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = vec![false; sockets];
    let mut remaining = sockets;
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    while remaining > 0 {
        let arrival = tokio::time::timeout_at(deadline, arrivals.recv())
            .await
            .ok()??;
        if arrival.count != count {
            continue;
        }
        let slot = seen.get_mut(arrival.socket as usize)?;
        if !*slot {
            *slot = true;
            remaining -= 1;
            first = Some(first.map_or(arrival.at, |f| f.min(arrival.at)));
            last = Some(last.map_or(arrival.at, |l| l.max(arrival.at)));
        }
    }
    first.zip(last)
}
