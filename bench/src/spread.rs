//! `spread`: S sockets over K signatures (uniform or Zipf), writers committing C changes/s for
//! T seconds. Latency from issuing each write to each socket holding its value, messages/s
//! delivered, and after quiescence the number of sockets whose last value differs from the
//! database (lost final values, which must be 0).
//!
//! Each post has exactly one writer, so the writer knows the count its insert produces and the
//! arrival of that count can be timed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::clients::{self, Arrival, GatewayCounters, ProcessReading, Readers};
use super::report::{gateway_figures, round, Latencies, Report};
use super::{BenchError, Target};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Distribution {
    Uniform,
    /// Zipf with exponent 1: a few hot signatures, a long tail.
    Zipf,
}

#[derive(Debug, Clone, Args)]
pub struct SpreadArgs {
    /// Sockets.
    #[arg(long, default_value_t = 2000)]
    pub sockets: usize,
    /// Signatures (posts); sockets are spread over them.
    #[arg(long, default_value_t = 500)]
    pub signatures: usize,
    /// Changes per second, all writers together.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Seconds of writing.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent writers (database connections).
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// How sockets and writes are spread over signatures.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
}

/// Picks indexes in `0..n` by the chosen distribution.
struct Picker {
    cdf: Option<Vec<f64>>,
    n: usize,
}

impl Picker {
    fn new(n: usize, distribution: Distribution) -> Self {
        let cdf = match distribution {
            Distribution::Uniform => None,
            Distribution::Zipf => {
                let weights: Vec<f64> = (1..=n).map(|k| 1.0 / k as f64).collect();
                let total: f64 = weights.iter().sum();
                let mut running = 0.0;
                Some(
                    weights
                        .iter()
                        .map(|w| {
                            running += w / total;
                            running
                        })
                        .collect(),
                )
            }
        };
        Picker { cdf, n: n.max(1) }
    }

    fn pick(&self, rng: &mut impl Rng) -> usize {
        match &self.cdf {
            None => rng.random_range(0..self.n),
            Some(cdf) => {
                let u: f64 = rng.random();
                cdf.partition_point(|c| *c < u).min(self.n - 1)
            }
        }
    }
}

/// A writer's timestamps: when it sent a write (`committed: false`) and when the commit was
/// acknowledged (`committed: true`). Commit→client lies between the two latencies they give.
struct Issued {
    post: usize,
    count: i64,
    at: Instant,
    committed: bool,
}

pub async fn run(target: &Target, args: SpreadArgs) -> Result<Report, BenchError> {
    let writers = args.writers.max(1);
    let db = clients::database(target, writers as u32 + 1).await?;
    let http = clients::http_client()?;
    let posts = clients::new_posts(&db, args.signatures.max(1)).await?;
    let tokens = clients::subscribe_posts(target, &http, &posts).await?;

    // Socket i follows post socket_post[i]: every post at least once, the rest by distribution.
    let picker = Picker::new(posts.len(), args.distribution);
    let mut rng = rand::rng();
    let socket_post: Vec<usize> = (0..args.sockets)
        .map(|i| {
            if i < posts.len() {
                i
            } else {
                picker.pick(&mut rng)
            }
        })
        .collect();
    let socket_tokens: Vec<&str> = socket_post.iter().map(|p| tokens[*p].as_str()).collect();
    let opened_at = Instant::now();
    let (readers, mut arrivals) = Readers::open(target, &socket_tokens).await?;
    let open_secs = opened_at.elapsed().as_secs_f64();

    // Snapshots first, so the run starts from a known state.
    let mut state = Aggregate::new(&socket_post);
    let snapshot_deadline = Instant::now() + Duration::from_secs(60);
    while state.holding < args.sockets && Instant::now() < snapshot_deadline {
        match tokio::time::timeout(Duration::from_secs(5), arrivals.recv()).await {
            Ok(Some(arrival)) => state.on_arrival(arrival),
            _ => break,
        }
    }
    let snapshots_missing = args.sockets - state.holding;
    let messages_before = state.messages;

    let counters_before = GatewayCounters::read(&http, target).await?;
    let pg_before = clients::recompute_calls(&db).await;
    let cpu_before = target.gateway_pid.and_then(ProcessReading::read);
    let (issued_tx, mut issued) = mpsc::unbounded_channel::<Issued>();
    let stop_writers = CancellationToken::new();
    let per_writer = Duration::from_secs_f64(writers as f64 / f64::from(args.rate.max(1)));
    let mut writer_tasks = Vec::new();
    for w in 0..writers {
        let own: Vec<usize> = (0..posts.len()).filter(|p| p % writers == w).collect();
        if own.is_empty() {
            continue;
        }
        let db = db.clone();
        let posts = posts.clone();
        let issued_tx = issued_tx.clone();
        let stop = stop_writers.clone();
        let picker = Picker::new(own.len(), args.distribution);
        writer_tasks.push(tokio::spawn(async move {
            let mut counts: HashMap<usize, i64> = HashMap::new();
            let mut ticks = tokio::time::interval(per_writer);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut written = 0u64;
            let mut failed = 0u64;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let post = own[picker.pick(&mut rand::rng())];
                let count = counts.entry(post).or_insert(0);
                *count += 1;
                let _ = issued_tx.send(Issued {
                    post,
                    count: *count,
                    at: Instant::now(),
                    committed: false,
                });
                match clients::add_comment(&db, posts[post]).await {
                    Ok(()) => {
                        written += 1;
                        let _ = issued_tx.send(Issued {
                            post,
                            count: *count,
                            at: Instant::now(),
                            committed: true,
                        });
                    }
                    Err(_) => {
                        failed += 1;
                        *count -= 1;
                    }
                }
            }
            (written, failed)
        }));
    }
    drop(issued_tx);

    let started = Instant::now();
    let write_until = tokio::time::Instant::now() + Duration::from_secs(args.seconds);
    let mut writing = true;
    let mut last_arrival = Instant::now();
    loop {
        tokio::select! {
            biased;
            Some(event) = issued.recv() => {
                state.on_issued(event);
            }
            Some(arrival) = arrivals.recv() => {
                last_arrival = arrival.at;
                state.on_arrival(arrival);
            }
            _ = tokio::time::sleep_until(write_until), if writing => {
                writing = false;
                stop_writers.cancel();
            }
            _ = tokio::time::sleep(Duration::from_millis(200)), if !writing => {
                // Quiescent: nothing arrived for 2 s after the writers stopped (bounded at 60 s).
                if last_arrival.elapsed() > Duration::from_secs(2) || started.elapsed() > Duration::from_secs(args.seconds + 60) {
                    break;
                }
            }
        }
    }
    let write_elapsed = Duration::from_secs(args.seconds);
    let cpu_after = target.gateway_pid.and_then(ProcessReading::read);
    let counters = GatewayCounters::read(&http, target)
        .await?
        .since(&counters_before);
    let pg_after = clients::recompute_calls(&db).await;
    let (mut written, mut failed) = (0u64, 0u64);
    for task in writer_tasks {
        let (w, f) = task.await.unwrap_or((0, 0));
        written += w;
        failed += f;
    }
    let final_counts = clients::comment_counts(&db, &posts).await?;
    let lost = state
        .last_count
        .iter()
        .zip(&socket_post)
        .filter(|(held, post)| **held != final_counts[**post])
        .count();
    let closed_early = readers.stop().await;

    let mut report = Report::new("spread");
    report
        .add("sockets", args.sockets)
        .add("signatures", posts.len())
        .add(
            "distribution",
            format!("{:?}", args.distribution).to_lowercase(),
        )
        .add("target_changes_per_sec", args.rate)
        .add("seconds", args.seconds)
        .add("writers", writers)
        .add("open_sockets_secs", round(open_secs))
        .add("snapshots_missing", snapshots_missing)
        .add("changes_written", written)
        .add("changes_failed", failed)
        .add(
            "achieved_changes_per_sec",
            round(written as f64 / write_elapsed.as_secs_f64()),
        )
        .add("write_to_client", state.latencies.summary())
        .add("commit_ack_to_client", state.after_ack.summary())
        .add("arrived_before_commit_ack", state.before_ack)
        .add("messages_received", state.messages - messages_before)
        .add(
            "messages_per_sec_delivered",
            round((state.messages - messages_before) as f64 / write_elapsed.as_secs_f64()),
        )
        .add("lost_final_values", lost)
        .add("version_regressions", state.regressions)
        .add("sockets_closed_early", closed_early)
        .add(
            "recompute_statements_per_notification",
            round(counters.recompute_statements / counters.notifications.max(1.0)),
        )
        // Since migration 0006 a comment also notifies for its author's counter, which no
        // socket follows here: per change is the figure that a second notification cannot halve.
        .add(
            "recompute_statements_per_change",
            round(counters.recompute_statements / (written as f64).max(1.0)),
        )
        .add(
            "pg_stat_statements_recompute_calls",
            clients::calls_between(pg_before, pg_after),
        )
        .add(
            "gateway",
            gateway_figures(&cpu_before, &cpu_after, &counters),
        );
    Ok(report)
}

/// What the sockets hold, and the latencies of values they received.
struct Aggregate<'a> {
    socket_post: &'a [usize],
    issued: HashMap<(usize, i64), Instant>,
    acked: HashMap<(usize, i64), Instant>,
    /// Arrivals awaiting their commit acknowledgement: (post, count) → arrival time.
    early: HashMap<(usize, i64), Vec<Instant>>,
    last_count: Vec<i64>,
    last_version: Vec<u64>,
    holding: usize,
    messages: u64,
    regressions: u64,
    latencies: Latencies,
    after_ack: Latencies,
    before_ack: u64,
}

impl<'a> Aggregate<'a> {
    fn new(socket_post: &'a [usize]) -> Self {
        Aggregate {
            socket_post,
            issued: HashMap::new(),
            acked: HashMap::new(),
            early: HashMap::new(),
            last_count: vec![-1; socket_post.len()],
            last_version: vec![0; socket_post.len()],
            holding: 0,
            messages: 0,
            regressions: 0,
            latencies: Latencies::new(),
            after_ack: Latencies::new(),
            before_ack: 0,
        }
    }

    fn on_issued(&mut self, event: Issued) {
        let key = (event.post, event.count);
        if !event.committed {
            self.issued.insert(key, event.at);
            return;
        }
        self.acked.insert(key, event.at);
        // Values that reached a client before the writer heard "COMMIT" count as 0 ms.
        for _ in self.early.remove(&key).unwrap_or_default() {
            self.before_ack += 1;
            self.after_ack.record(std::time::Duration::ZERO);
        }
    }

    fn on_arrival(&mut self, arrival: Arrival) {
        let socket = arrival.socket as usize;
        let Some(post) = self.socket_post.get(socket).copied() else {
            return;
        };
        self.messages += 1;
        if self.last_count[socket] < 0 {
            self.holding += 1;
        }
        if arrival.version <= self.last_version[socket] {
            self.regressions += 1;
        }
        self.last_version[socket] = arrival.version;
        self.last_count[socket] = arrival.count;
        let key = (post, arrival.count);
        if let Some(issued) = self.issued.get(&key) {
            self.latencies
                .record(arrival.at.saturating_duration_since(*issued));
            match self.acked.get(&key) {
                Some(acked) => self
                    .after_ack
                    .record(arrival.at.saturating_duration_since(*acked)),
                None => self.early.entry(key).or_default().push(arrival.at),
            }
        }
    }
}
