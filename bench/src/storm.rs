//! `reconnect-storm`: N clients drop at once while their values change, then all come back at
//! once (a fresh `POST /realtime/subscribe` each, then a socket). Time until every client holds
//! the database's value, and the SQL statements that cost.

use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::clients::{self, GatewayCounters, ProcessReading, Readers};
use super::report::{gateway_figures, round, Report};
use super::{BenchError, Target};

#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    /// Clients (one socket and one subscription each).
    #[arg(long, default_value_t = 5000)]
    pub clients: usize,
    /// Signatures the clients are spread over.
    #[arg(long, default_value_t = 500)]
    pub signatures: usize,
    /// Give up after this long.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
}

pub async fn run(target: &Target, args: StormArgs) -> Result<Report, BenchError> {
    let db = clients::database(target, 4).await?;
    let http = clients::http_client()?;
    let posts = clients::new_posts(&db, args.signatures.max(1)).await?;
    let client_post: Vec<usize> = (0..args.clients).map(|i| i % posts.len()).collect();

    // Everyone connected and holding a value.
    let tokens = clients::subscribe_posts(target, &http, &posts).await?;
    let first_tokens: Vec<&str> = client_post.iter().map(|p| tokens[*p].as_str()).collect();
    let (readers, mut arrivals) = Readers::open(target, &first_tokens).await?;
    let mut holding = 0;
    while holding < args.clients {
        match tokio::time::timeout(Duration::from_secs(10), arrivals.recv()).await {
            Ok(Some(_)) => holding += 1,
            _ => break,
        }
    }

    // Everyone drops; every value changes while they are away.
    readers.stop().await;
    sqlx::query(
        "insert into comments (post_id, author_id, body) select unnest($1::int8[]), 'bench', 'x'",
    )
    .bind(&posts)
    .execute(&db)
    .await?;
    let expected = clients::comment_counts(&db, &posts).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Everyone returns at once: a fresh subscribe request each, then a socket.
    let counters_before = GatewayCounters::read(&http, target).await?;
    let pg_before = clients::recompute_calls(&db).await;
    let cpu_before = target.gateway_pid.and_then(ProcessReading::read);
    let jwt = clients::mint_jwt(target, clients::BENCH_USER)?;
    let jwt = jwt.as_str();
    let started = Instant::now();
    let (tx, mut arrivals) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let returns = client_post.iter().enumerate().map(|(i, post)| {
        let http = http.clone();
        let tx = tx.clone();
        let stop = stop.clone();
        let source = target.sources[i % target.sources.len()];
        let post = posts[*post];
        async move {
            let token = clients::subscribe_posts(target, &http, &[post]).await?;
            let socket = clients::open_socket(target, source, &token[0], jwt).await?;
            Ok::<_, BenchError>(clients::spawn_reader(i as u32, socket, tx, stop))
        }
    });
    let readers: Vec<_> = futures_util::stream::iter(returns)
        .buffer_unordered(target.connect_concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    drop(tx);
    let reconnected = readers.iter().filter(|r| r.is_ok()).count();
    let mut current = vec![false; args.clients];
    let mut converged = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    while converged < args.clients {
        let Ok(Some(arrival)) = tokio::time::timeout_at(deadline, arrivals.recv()).await else {
            break;
        };
        let i = arrival.socket as usize;
        if arrival.count == expected[client_post[i]] && !current[i] {
            current[i] = true;
            converged += 1;
        }
    }
    let elapsed = started.elapsed();
    let cpu_after = target.gateway_pid.and_then(ProcessReading::read);
    let counters = GatewayCounters::read(&http, target)
        .await?
        .since(&counters_before);
    let pg_after = clients::recompute_calls(&db).await;
    stop.cancel();
    clients::closed_early(readers.into_iter().flatten().collect()).await;

    let mut report = Report::new("reconnect-storm");
    report
        .add("clients", args.clients)
        .add("signatures", posts.len())
        .add("reconnected", reconnected)
        .add("holding_current_value", converged)
        .add("secs_until_all_current", round(elapsed.as_secs_f64()))
        .add("recompute_statements", counters.recompute_statements)
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
