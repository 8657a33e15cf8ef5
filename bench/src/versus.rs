//! `versus`: one load, measured the same way against statgate or against the hand-written
//! baseline server (`bench/baseline-node`), so the two can be compared side by side
//! (`scripts/bench-versus`, docs/BENCHMARKS.md).
//!
//! S sockets with one subscription each, spread evenly over P fresh posts; single-comment
//! inserts fall due at R per second for D seconds and W writers take them, each on its own
//! posts, so a writer knows the count each insert makes. For every insert and every socket following its post,
//! the latency runs from the moment the writer had its COMMIT back to the moment the socket
//! holds a count at least the insert's: a later value covers an earlier one, and a value that
//! beats the acknowledgement counts as 0. After the writes, the sockets get a bounded settling
//! time to hold their post's count; then every socket's last value is compared with the
//! database. The report adds the writers' commit latency, the server's SQL statements per
//! insert and where the CPU went (the machine, the server, PostgreSQL, this generator).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rand::Rng;
use serde_json::json;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::{mpsc, Semaphore};

use super::clients::{self, Arrival, GatewayCounters, ProcessReading, Readers};
use super::cpu::{self, MachineCpu, ProcStat, TreeCpu};
use super::report::{round, Latencies, Report};
use super::statements::StatementCalls;
use super::{BenchError, Target};

/// The server at `--url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Server {
    /// statgate, serving the example application (`posts/stats/commentCount`).
    Statgate,
    /// The hand-written server of `bench/baseline-node` (`ws://…/?post=<id>`).
    Baseline,
}

#[derive(Debug, Clone, Args)]
pub struct VersusArgs {
    /// The server at --url (pass its process id as --gateway-pid for its CPU).
    #[arg(long = "target", value_enum)]
    pub server: Server,
    /// The name this run goes by in the report (default: the target's), to tell apart variants
    /// of one server, e.g. statgate on a schema with fewer counters.
    #[arg(long)]
    pub label: Option<String>,
    /// Sockets, one subscription each.
    #[arg(long, default_value_t = 5000)]
    pub sockets: usize,
    /// Posts the sockets follow, evenly (socket i follows post i mod P).
    #[arg(long, default_value_t = 1000)]
    pub posts: usize,
    /// Single-row inserts per second, all writers together.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// Seconds of writing.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Concurrent writers, one database connection each: inserts fall due at --rate and go to
    /// whichever writer is free.
    #[arg(long, default_value_t = 16)]
    pub writers: usize,
    /// Seconds the sockets get, after the writes, to hold their post's count.
    #[arg(long, default_value_t = 10)]
    pub settle_secs: u64,
}

/// The baseline's frames: `{"post": 17, "count": 3}`; the count is its own version.
fn decode_baseline(text: &str) -> Option<(i64, u64)> {
    let frame: serde_json::Value = serde_json::from_str(text).ok()?;
    let count = frame.get("count")?.as_i64()?;
    Some((count, u64::try_from(count).unwrap_or(0)))
}

/// One committed insert, as its writer saw it.
struct Committed {
    post: usize,
    /// The post's count this insert made.
    count: i64,
    sent: Instant,
    acked: Instant,
}

struct WriterTally {
    written: u64,
    failed: u64,
    commit: Latencies,
}

pub async fn run(target: &Target, args: VersusArgs) -> Result<Report, BenchError> {
    let posts_wanted = args.posts.max(1);
    let writers = args.writers.clamp(1, posts_wanted);
    let db = clients::database(target, writers as u32 + 2).await?;
    let http = clients::http_client()?;
    let load_at_start = cpu::load_average();
    let posts = clients::new_posts(&db, posts_wanted).await?;
    let socket_post: Vec<usize> = (0..args.sockets).map(|i| i % posts.len()).collect();

    let opened_at = Instant::now();
    let (readers, mut arrivals) =
        open_sockets(target, args.server, &http, &posts, &socket_post).await?;
    let open_secs = opened_at.elapsed().as_secs_f64();
    let mut ledger = Ledger::new(&socket_post, posts.len());
    ledger
        .await_snapshots(&mut arrivals, Duration::from_secs(60))
        .await;
    let snapshots_missing = args.sockets - ledger.holding;

    // Writers' connections are opened before the first reading, so their set-up is not counted.
    let mut connections = Vec::with_capacity(writers);
    for _ in 0..writers {
        connections.push(db.acquire().await?);
    }
    let postmaster = postmaster_pid(&db).await;
    let before = Readings::take(target, args.server, &db, &http, postmaster).await;

    let (committed_tx, mut committed) = mpsc::unbounded_channel();
    let schedule = Arc::new(Semaphore::new(0));
    let writer_tasks: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(w, connection)| {
            let own: Vec<(usize, i64)> = (0..posts.len())
                .filter(|p| p % writers == w)
                .map(|p| (p, posts[p]))
                .collect();
            tokio::spawn(write(
                connection,
                own,
                schedule.clone(),
                committed_tx.clone(),
            ))
        })
        .collect();
    drop(committed_tx);
    let releasing = tokio::spawn(release_inserts(schedule, args.rate, args.seconds));

    // Writing: commits and arrivals as they come, until every writer has stopped.
    loop {
        tokio::select! {
            biased;
            event = committed.recv() => match event {
                Some(event) => ledger.on_commit(event),
                None => break,
            },
            Some(arrival) = arrivals.recv() => ledger.on_arrival(arrival),
        }
    }
    let writes_ended = Instant::now();
    let untaken = releasing.await.unwrap_or(0);
    let mut tally = WriterTally {
        written: 0,
        failed: 0,
        commit: Latencies::new(),
    };
    for task in writer_tasks {
        if let Ok(one) = task.await {
            tally.written += one.written;
            tally.failed += one.failed;
            tally.commit.merge(&one.commit);
        }
    }

    // Settling: until every socket holds its post's count, for at most --settle-secs.
    let settle_deadline = tokio::time::Instant::now() + Duration::from_secs(args.settle_secs);
    while ledger.sockets_behind() > 0 {
        match tokio::time::timeout_at(settle_deadline, arrivals.recv()).await {
            Ok(Some(arrival)) => ledger.on_arrival(arrival),
            _ => break,
        }
    }
    let settle_secs = writes_ended.elapsed().as_secs_f64();
    let after = Readings::take(target, args.server, &db, &http, postmaster).await;

    let final_counts = clients::comment_counts(&db, &posts).await?;
    let lost = ledger
        .last
        .iter()
        .zip(&socket_post)
        .filter(|(held, post)| **held != final_counts[**post])
        .count();
    let writers_disagree = (0..posts.len())
        .filter(|p| ledger.committed(*p) != final_counts[*p])
        .count();
    let closed_early = readers.stop().await;

    let server_name = format!("{:?}", args.server).to_lowercase();
    let mut report = Report::new("versus");
    report
        .add(
            "label",
            args.label.clone().unwrap_or_else(|| server_name.clone()),
        )
        .add("target", server_name)
        .add("sockets", args.sockets)
        .add("posts", posts.len())
        .add("writers", writers)
        .add("target_inserts_per_sec", args.rate)
        .add("seconds", args.seconds)
        .add("load_average_1m_at_start", json!(load_at_start))
        .add("open_sockets_secs", round(open_secs))
        .add("snapshots_missing", snapshots_missing)
        .add("inserts_committed", tally.written)
        .add("inserts_failed", tally.failed)
        .add("inserts_due_but_not_started", untaken)
        .add(
            "achieved_inserts_per_sec",
            round(tally.written as f64 / args.seconds.max(1) as f64),
        )
        .add("commit_to_client", ledger.commit_to_client.summary())
        .add("insert_to_client", ledger.insert_to_client.summary())
        .add("arrived_before_commit_ack", ledger.before_ack)
        .add("updates_expected", ledger.updates_expected())
        .add("updates_undelivered", ledger.updates_undelivered())
        .add("settle_secs", round(settle_secs))
        .add("lost_final_values", lost)
        .add(
            "posts_where_writers_disagree_with_database",
            writers_disagree,
        )
        .add("count_regressions", ledger.regressions)
        .add("sockets_closed_early", closed_early)
        .add("writers_commit", tally.commit.summary());
    add_statements(&mut report, &before, &after, tally.written);
    add_cpu(&mut report, &before, &after);
    Ok(report)
}

async fn open_sockets(
    target: &Target,
    server: Server,
    http: &reqwest::Client,
    posts: &[i64],
    socket_post: &[usize],
) -> Result<(Readers, mpsc::UnboundedReceiver<Arrival>), BenchError> {
    match server {
        Server::Statgate => {
            let tokens = clients::subscribe_posts(target, http, posts).await?;
            let socket_tokens: Vec<&str> =
                socket_post.iter().map(|p| tokens[*p].as_str()).collect();
            Readers::open(target, &socket_tokens).await
        }
        Server::Baseline => {
            let base = target.url.replacen("http", "ws", 1);
            let base = base.trim_end_matches('/');
            let urls: Vec<String> = socket_post
                .iter()
                .map(|p| format!("{base}/?post={}", posts[*p]))
                .collect();
            Readers::open_urls(target, &urls, None, decode_baseline).await
        }
    }
}

/// The inserts due so far, at exactly `rate` per second from the start: permits on a semaphore
/// that the writers take, one per insert. Open loop: a slow commit holds up only its own
/// writer, the others take the inserts that fall due meanwhile, and inserts that no writer was
/// free to take wait for the next free one. Writing ends after `seconds`; what is still due
/// then is dropped (and reported).
async fn release_inserts(schedule: Arc<Semaphore>, rate: u32, seconds: u64) -> u64 {
    let total = u64::from(rate) * seconds;
    let started = tokio::time::Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut released = 0u64;
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while tokio::time::Instant::now() < until {
        ticks.tick().await;
        let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        let due = due.min(total);
        if due > released {
            schedule.add_permits((due - released) as usize);
            released = due;
        }
    }
    let untaken = schedule.available_permits() as u64;
    schedule.close();
    untaken
}

/// One writer: whenever an insert falls due and it is free, a single-row insert on one of its
/// own posts (picked at random), on its own connection, until the schedule closes.
async fn write(
    mut connection: PoolConnection<Postgres>,
    own: Vec<(usize, i64)>,
    schedule: Arc<Semaphore>,
    committed: mpsc::UnboundedSender<Committed>,
) -> WriterTally {
    let mut counts: HashMap<usize, i64> = HashMap::new();
    let mut tally = WriterTally {
        written: 0,
        failed: 0,
        commit: Latencies::new(),
    };
    while let Ok(due) = schedule.acquire().await {
        due.forget();
        let (index, post) = own[rand::rng().random_range(0..own.len())];
        let sent = Instant::now();
        match clients::add_comment(&mut *connection, post).await {
            Ok(()) => {
                let acked = Instant::now();
                let count = counts.entry(index).or_insert(0);
                *count += 1;
                tally.written += 1;
                tally.commit.record(acked - sent);
                let _ = committed.send(Committed {
                    post: index,
                    count: *count,
                    sent,
                    acked,
                });
            }
            Err(_) => tally.failed += 1,
        }
    }
    tally
}

/// Each insert's commit, each socket's values, and the deliveries they make.
struct Ledger<'a> {
    socket_post: &'a [usize],
    /// Per post, per count (index count - 1): when the insert making it was sent and acked.
    commits: Vec<Vec<(Instant, Instant)>>,
    /// Deliveries seen before the aggregator had the insert's commit: (post, count) → times.
    pending: HashMap<(usize, i64), Vec<Instant>>,
    /// The highest count each socket has held (-1: nothing yet).
    reached: Vec<i64>,
    /// The last count each socket received (-1: nothing yet).
    last: Vec<i64>,
    holding: usize,
    regressions: u64,
    before_ack: u64,
    commit_to_client: Latencies,
    insert_to_client: Latencies,
}

impl<'a> Ledger<'a> {
    fn new(socket_post: &'a [usize], posts: usize) -> Self {
        Ledger {
            socket_post,
            commits: vec![Vec::new(); posts],
            pending: HashMap::new(),
            reached: vec![-1; socket_post.len()],
            last: vec![-1; socket_post.len()],
            holding: 0,
            regressions: 0,
            before_ack: 0,
            commit_to_client: Latencies::new(),
            insert_to_client: Latencies::new(),
        }
    }

    /// Waits (at most `timeout`, or 5 s without any frame) until every socket holds a value.
    async fn await_snapshots(
        &mut self,
        arrivals: &mut mpsc::UnboundedReceiver<Arrival>,
        timeout: Duration,
    ) {
        let deadline = Instant::now() + timeout;
        while self.holding < self.socket_post.len() && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(5), arrivals.recv()).await {
                Ok(Some(arrival)) => self.on_arrival(arrival),
                _ => break,
            }
        }
    }

    /// The post's count after every committed insert.
    fn committed(&self, post: usize) -> i64 {
        self.commits[post].len() as i64
    }

    fn on_commit(&mut self, event: Committed) {
        let log = &mut self.commits[event.post];
        // One writer per post, inserting one at a time: counts arrive as 1, 2, 3, …
        debug_assert_eq!(log.len() as i64 + 1, event.count);
        log.push((event.sent, event.acked));
        for at in self
            .pending
            .remove(&(event.post, event.count))
            .unwrap_or_default()
        {
            self.record(event.sent, event.acked, at);
        }
    }

    fn on_arrival(&mut self, arrival: Arrival) {
        let socket = arrival.socket as usize;
        let Some(post) = self.socket_post.get(socket).copied() else {
            return;
        };
        if self.last[socket] < 0 {
            self.holding += 1;
        }
        if arrival.count < self.last[socket] {
            self.regressions += 1;
        }
        self.last[socket] = arrival.count;
        let reached = self.reached[socket];
        if arrival.count <= reached {
            return;
        }
        self.reached[socket] = arrival.count;
        // Every insert this value covers is now delivered to this socket.
        for count in (reached.max(0) + 1)..=arrival.count {
            match self.commits[post].get(count as usize - 1).copied() {
                Some((sent, acked)) => self.record(sent, acked, arrival.at),
                None => self
                    .pending
                    .entry((post, count))
                    .or_default()
                    .push(arrival.at),
            }
        }
    }

    fn record(&mut self, sent: Instant, acked: Instant, at: Instant) {
        if at < acked {
            self.before_ack += 1;
        }
        self.commit_to_client
            .record(at.saturating_duration_since(acked));
        self.insert_to_client
            .record(at.saturating_duration_since(sent));
    }

    /// Sockets that do not yet hold their post's committed count.
    fn sockets_behind(&self) -> usize {
        self.reached
            .iter()
            .zip(self.socket_post)
            .filter(|(reached, post)| **reached < self.committed(**post))
            .count()
    }

    /// (insert, socket following its post) pairs.
    fn updates_expected(&self) -> u64 {
        self.socket_post
            .iter()
            .map(|post| self.committed(*post) as u64)
            .sum()
    }

    /// Pairs whose socket never held the insert's count.
    fn updates_undelivered(&self) -> u64 {
        self.reached
            .iter()
            .zip(self.socket_post)
            .map(|(reached, post)| (self.committed(*post) - (*reached).max(0)).max(0) as u64)
            .sum()
    }
}

/// The PostgreSQL server's postmaster, when it runs on this machine: the parent of this
/// connection's backend, if that is a `postgres` process.
async fn postmaster_pid(db: &PgPool) -> Option<u32> {
    let backend: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(db)
        .await
        .ok()?;
    let parent = ProcStat::read(u32::try_from(backend).ok()?)?.ppid;
    let name = std::fs::read_to_string(format!("/proc/{parent}/comm")).ok()?;
    (name.trim() == "postgres").then_some(parent)
}

/// Counters read at the start and at the end of the measured window.
struct Readings {
    machine: Option<MachineCpu>,
    server: Option<ProcessReading>,
    postgres: Option<TreeCpu>,
    generator: Option<ProcessReading>,
    statements: Option<StatementCalls>,
    gateway: Option<GatewayCounters>,
    at: Instant,
}

impl Readings {
    async fn take(
        target: &Target,
        server: Server,
        db: &PgPool,
        http: &reqwest::Client,
        postmaster: Option<u32>,
    ) -> Readings {
        let statements = StatementCalls::read(db).await;
        let gateway = match server {
            Server::Statgate => GatewayCounters::read(http, target).await.ok(),
            Server::Baseline => None,
        };
        Readings {
            machine: MachineCpu::read(),
            server: target.gateway_pid.and_then(ProcessReading::read),
            postgres: postmaster.and_then(TreeCpu::read),
            generator: ProcessReading::read(std::process::id()),
            statements,
            gateway,
            at: Instant::now(),
        }
    }
}

fn add_statements(report: &mut Report, before: &Readings, after: &Readings, inserts: u64) {
    let per_insert = |calls: f64| round(calls / (inserts as f64).max(1.0));
    match (&before.statements, &after.statements) {
        (Some(before), Some(after)) => {
            let ran = after.server_since(before);
            report
                .add("statements_per_insert", per_insert(ran.total))
                .add("statements_source", "pg_stat_statements")
                .add("server_statements", ran.total)
                .add("server_statements_top", ran.top_json());
        }
        _ => match (&before.gateway, &after.gateway) {
            (Some(before), Some(after)) => {
                let counters = after.since(before);
                report
                    .add(
                        "statements_per_insert",
                        per_insert(counters.recompute_statements),
                    )
                    .add("statements_source", "statgate_recompute_statements_total");
            }
            _ => {
                report
                    .add("statements_per_insert", "n/a")
                    .add("statements_source", "n/a (no pg_stat_statements)");
            }
        },
    }
    if let (Some(before), Some(after)) = (&before.gateway, &after.gateway) {
        let counters = after.since(before);
        report.add(
            "gateway",
            json!({
                "notifications_per_insert": per_insert(counters.notifications),
                "recompute_statements_per_insert": per_insert(counters.recompute_statements),
                "pushes": counters.pushes,
                "coalesced_updates": counters.coalesced,
            }),
        );
    }
}

fn add_cpu(report: &mut Report, before: &Readings, after: &Readings) {
    let process = |b: &Option<ProcessReading>, a: &Option<ProcessReading>| match (b, a) {
        (Some(b), Some(a)) => Some(a.cores_since(b)),
        _ => None,
    };
    let server = process(&before.server, &after.server);
    let generator = process(&before.generator, &after.generator);
    let postgres = match (&before.postgres, &after.postgres) {
        (Some(b), Some(a)) => Some(a.cores_since(b)),
        _ => None,
    };
    let machine = match (&before.machine, &after.machine) {
        (Some(b), Some(a)) => Some((a.busy_percent_since(b), a.cores())),
        _ => None,
    };
    // What the machine spent beside the three processes of the run (the box may be shared).
    let others = match (machine, server, postgres, generator) {
        (Some((busy, cores)), Some(s), Some(p), Some(g)) => {
            Some(busy / 100.0 * cores as f64 - s - p - g)
        }
        _ => None,
    };
    let shown = |cores: Option<f64>| cores.map_or(json!("n/a"), |c| json!(round(c)));
    report.add(
        "cpu",
        json!({
            "window_secs": round(after.at.duration_since(before.at).as_secs_f64()),
            "machine_busy_pct": shown(machine.map(|(busy, _)| busy)),
            "machine_cores": machine.map(|(_, cores)| cores),
            "server_cores": shown(server),
            "postgres_cores": shown(postgres),
            "generator_cores": shown(generator),
            "other_cores": shown(others),
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(socket: u32, count: i64, at: Instant) -> Arrival {
        Arrival {
            socket,
            count,
            version: count as u64,
            at,
        }
    }

    #[test]
    fn a_later_value_delivers_every_insert_it_covers() {
        let socket_post = [0usize, 0];
        let mut ledger = Ledger::new(&socket_post, 1);
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        ledger.on_arrival(arrival(0, 0, ms(0)));
        ledger.on_arrival(arrival(1, 0, ms(0)));
        for count in 1..=2 {
            ledger.on_commit(Committed {
                post: 0,
                count,
                sent: ms(10 * count as u64),
                acked: ms(10 * count as u64 + 2),
            });
        }
        // Socket 0 skips count 1: its value 2 delivers both inserts. Socket 1 gets only 1.
        ledger.on_arrival(arrival(0, 2, ms(30)));
        ledger.on_arrival(arrival(1, 1, ms(13)));
        assert_eq!(ledger.updates_expected(), 4);
        assert_eq!(ledger.updates_undelivered(), 1);
        assert_eq!(ledger.sockets_behind(), 1);
        assert_eq!(ledger.commit_to_client.len(), 3);
        // 30 - 12, 30 - 22, 13 - 12 ms.
        let summary = ledger.commit_to_client.summary();
        let max = summary["max_ms"].as_f64().expect("max");
        assert!((18.0..18.1).contains(&max), "{summary}");
    }

    #[test]
    fn a_value_that_beats_its_commit_acknowledgement_counts_as_zero() {
        let socket_post = [0usize];
        let mut ledger = Ledger::new(&socket_post, 1);
        let t0 = Instant::now();
        ledger.on_arrival(arrival(0, 0, t0));
        // The socket has count 1 at 5 ms, before the aggregator hears of the commit at 6 ms.
        ledger.on_arrival(arrival(0, 1, t0 + Duration::from_millis(5)));
        ledger.on_commit(Committed {
            post: 0,
            count: 1,
            sent: t0 + Duration::from_millis(1),
            acked: t0 + Duration::from_millis(6),
        });
        assert_eq!(ledger.before_ack, 1);
        assert_eq!(ledger.commit_to_client.len(), 1);
        assert_eq!(ledger.updates_undelivered(), 0);
        assert_eq!(ledger.sockets_behind(), 0);
    }

    #[test]
    fn the_baselines_frames_carry_the_count() {
        assert_eq!(decode_baseline(r#"{"post":17,"count":3}"#), Some((3, 3)));
        assert_eq!(decode_baseline(r#"{"post":17,"count":null}"#), None);
        assert_eq!(decode_baseline("not json"), None);
    }
}
