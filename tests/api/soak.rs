//! A bounded soak (issue 7): hundreds of sockets with subscribe/unsubscribe churn, concurrent
//! writers, a listener kill and a full PostgreSQL restart in the middle. At the end every
//! socket holds the database's value for every signature it follows, versions never went back,
//! and once the sockets close nothing is left behind (no connection, subscription, signature or
//! due recompute). RSS of the test process (gateway and clients) is printed before and after.
//! Every warning and error the soak's runtime logs is captured: no error-level line may
//! appear, and every warning must be one the injected faults explain.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::helpers::{run_with_captured_logs, send_json, PrivateServer, TestApp, XorShift};

const SOCKETS: usize = 200;
const USERS: usize = 20;
const POSTS: usize = 30;
const SOAK: Duration = Duration::from_secs(24);

/// What one socket follows and holds.
#[derive(Default)]
struct Held {
    active: HashSet<String>,
    values: HashMap<String, (u64, Value)>,
    regressions: u64,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Warnings the soak's faults cause: the listener's backend killed and PostgreSQL restarted
/// (connections lost and re-established, recomputes and readiness checks failing meanwhile).
const EXPECTED_WARNINGS: &[&str] = &[
    "statgate::listener",
    "statgate::recompute",
    "statgate::http",
    "statgate::app",
    // sqlx finds the connections the restart cut when they come back to a pool.
    "sqlx_core::pool",
];

/// The soak runs on its own runtime whose threads log to a capture: other tests in this process
/// log to the global subscriber, so their lines cannot be mistaken for the soak's.
#[test]
fn soak_with_churn_writers_a_listener_kill_and_a_restart_loses_no_value() {
    let ((), lines) = run_with_captured_logs("warn", soak());
    let errors: Vec<&String> = lines
        .iter()
        .filter(|l| l.trim_start().starts_with("ERROR"))
        .collect();
    let unexpected: Vec<&String> = lines
        .iter()
        .filter(|l| l.trim_start().starts_with("WARN"))
        .filter(|l| {
            !EXPECTED_WARNINGS
                .iter()
                .any(|target| l.contains(&format!(" {target}")))
        })
        .collect();
    println!(
        "soak logs: {} lines at warn or above, {} errors, {} unexpected warnings",
        lines.len(),
        errors.len(),
        unexpected.len()
    );
    for line in &lines {
        println!("  {line}");
    }
    assert!(
        errors.is_empty(),
        "error-level lines during the soak: {errors:#?}"
    );
    assert!(
        unexpected.is_empty(),
        "warnings the faults do not explain: {unexpected:#?}"
    );
}

async fn soak() {
    let (mut private, db) = PrivateServer::start("soak").await;
    let url = private.url.clone();
    let app = Arc::new(TestApp::spawn_on(url, db, |_| {}).await);

    let posts: Vec<i64> = sqlx::query_scalar(
        "insert into posts (title, author_id) select 'soak ' || i, 'a' from generate_series(1, $1) i returning id",
    )
    .bind(POSTS as i32)
    .fetch_all(&app.db)
    .await
    .expect("posts");
    // One token per (user, post): tokens are stateless, any socket of that user may use them.
    let mut tokens: HashMap<(usize, usize), (String, String)> = HashMap::new();
    for user in 0..USERS {
        for (p, post) in posts.iter().enumerate() {
            let token = app
                .subscribe(
                    &format!("u{user}"),
                    "posts/stats/commentCount",
                    json!({"postId": post}),
                )
                .await;
            tokens.insert((user, p), token);
        }
    }
    let tokens = Arc::new(tokens);
    let signature_post: HashMap<String, i64> = tokens
        .iter()
        .map(|((_, p), (_, sig))| (sig.clone(), posts[*p]))
        .collect();

    let rss_before = rss_kib();
    let stop_churn = CancellationToken::new();
    let mut sockets = Vec::new();
    for s in 0..SOCKETS {
        let user = s % USERS;
        let mut ws = app.connect(&format!("u{user}"), None).await;
        let held = Arc::new(Mutex::new(Held::default()));
        let (held_task, tokens, stop) = (held.clone(), tokens.clone(), stop_churn.clone());
        let task = tokio::spawn(async move {
            let mut rng = XorShift(0x50a4_0000 + s as u64 * 7919);
            let mut churn = tokio::time::interval(Duration::from_millis(300 + (s as u64 % 7) * 50));
            let mut churning = true;
            loop {
                tokio::select! {
                    message = ws.next() => match message {
                        Some(Ok(Message::Text(text))) => {
                            let Ok(event) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                            if event["event"] != "query:update" { continue; }
                            let sig = event["payload"]["signature"].as_str().unwrap_or_default().to_owned();
                            let version = event["payload"]["version"].as_u64().unwrap_or(0);
                            let mut held = held_task.lock().expect("lock");
                            if !held.active.contains(&sig) { continue; }
                            let previous = held.values.get(&sig).map(|(v, _)| *v).unwrap_or(0);
                            if version < previous { held.regressions += 1; }
                            held.values.insert(sig, (version, event["payload"]["data"].clone()));
                        }
                        Some(Ok(_)) => {}
                        _ => return false,
                    },
                    _ = churn.tick(), if churning => {
                        let (token, sig) = &tokens[&(user, rng.below(POSTS))];
                        let subscribe = {
                            let mut held = held_task.lock().expect("lock");
                            if held.active.contains(sig) {
                                held.active.remove(sig);
                                held.values.remove(sig);
                                false
                            } else {
                                held.active.insert(sig.clone());
                                true
                            }
                        };
                        let frame = if subscribe {
                            json!({"type": "subscribe", "token": token})
                        } else {
                            json!({"type": "unsubscribe", "signature": sig})
                        };
                        send_json(&mut ws, frame).await;
                    }
                    _ = stop.cancelled(), if churning => churning = false,
                }
            }
        });
        sockets.push((held, task));
    }

    let stop_writers = CancellationToken::new();
    let mut writers = Vec::new();
    for w in 0..3u64 {
        let (db, posts, stop) = (app.db.clone(), posts.clone(), stop_writers.clone());
        writers.push(tokio::spawn(async move {
            let mut rng = XorShift(0xfeed_0000 + w);
            let mut written = 0u64;
            while !stop.is_cancelled() {
                let post = posts[rng.below(posts.len())];
                let result = if rng.below(4) == 0 {
                    sqlx::query("delete from comments where id = (select id from comments where post_id = $1 limit 1)")
                        .bind(post)
                        .execute(&db)
                        .await
                } else {
                    sqlx::query("insert into comments (post_id, author_id, body) values ($1, 'soak', 'x')")
                        .bind(post)
                        .execute(&db)
                        .await
                };
                // Writes fail while PostgreSQL restarts; that is part of the soak.
                written += u64::from(result.is_ok());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            written
        }));
    }

    // Faults in the middle: the listener's backend killed, then a full restart.
    tokio::time::sleep(SOAK / 3).await;
    let listener: Vec<i32> = sqlx::query_scalar(
        "select pid from pg_stat_activity where application_name = $1 and datname = current_database()",
    )
    .bind(statgate::listener::LISTENER_APPLICATION_NAME)
    .fetch_all(&app.db)
    .await
    .expect("listener backend");
    for pid in listener {
        let _ = sqlx::query("select pg_terminate_backend($1)")
            .bind(pid)
            .execute(&app.db)
            .await;
    }
    tokio::time::sleep(SOAK / 3).await;
    private.restart().await;
    tokio::time::sleep(SOAK / 3).await;

    stop_churn.cancel();
    stop_writers.cancel();
    let mut written = 0;
    for writer in writers {
        written += writer.await.expect("writer");
    }
    assert!(written > 500, "the writers wrote ({written})");

    // Quiescence: every socket converges to the database for every signature it follows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let checked = loop {
        let counts: HashMap<i64, i64> =
            sqlx::query_as::<_, (i64, i64)>("select p.id, count(c.id) filter (where not c.deleted) from posts p left join comments c on c.post_id = p.id group by p.id")
                .fetch_all(&app.db)
                .await
                .map(|rows| rows.into_iter().collect())
                .expect("counts");
        let mut stale = Vec::new();
        let mut checked = 0;
        for (s, (held, task)) in sockets.iter().enumerate() {
            assert!(!task.is_finished(), "socket {s} was closed during the soak");
            let held = held.lock().expect("lock");
            assert_eq!(held.regressions, 0, "socket {s} saw a version go back");
            for sig in &held.active {
                checked += 1;
                let expected = json!(counts.get(&signature_post[sig]).copied().unwrap_or(0));
                if held.values.get(sig).map(|(_, v)| v) != Some(&expected) {
                    stale.push(format!(
                        "socket {s} {sig}: {:?} != {expected}",
                        held.values.get(sig)
                    ));
                }
            }
        }
        if stale.is_empty() {
            break checked;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} stale values after the soak, e.g. {:?}",
            stale.len(),
            &stale[..stale.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let rss_after = rss_kib();
    println!(
        "soak: {SOCKETS} sockets, {written} writes, 1 listener kill, 1 PostgreSQL restart, \
         {checked} (socket, signature) values checked, 0 lost; RSS {rss_before} KiB -> {rss_after} KiB"
    );

    // Nothing is left behind once the sockets go.
    for (_, task) in sockets {
        task.abort();
    }
    app.wait_released(
        Duration::from_secs(20),
        "state left behind after the sockets closed",
    )
    .await;
    app.shutdown.cancel();
    private.stop().await;
}
