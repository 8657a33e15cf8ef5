//! Faults the gateway must ride out: a killed listener, a restarted PostgreSQL, silent and
//! never-reading clients, and SIGTERM to the real binary.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use sqlx::PgPool;
use statgate::config::ChangeFeed;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{
    assert_pong, close_of, converge_to, every_feed, next_event, read_until, run_with_captured_logs,
    send_json, send_text, wait_for, wait_until, wait_until_ready, PrivateServer, Received, TestApp,
    Ws,
};

const WAIT: Duration = Duration::from_secs(30);

/// One socket per post, each holding its post's comment count.
struct Watchers {
    sockets: Vec<(i64, String, Ws, Received)>,
}

impl Watchers {
    async fn open(app: &TestApp, posts: &[i64]) -> Watchers {
        let mut sockets = Vec::new();
        for post in posts {
            let (signature, ws, received) = app.watch_comments(*post).await;
            sockets.push((*post, signature, ws, received));
        }
        Watchers { sockets }
    }

    /// Every socket converges to the database's count; a closed socket fails the test.
    async fn converge(&mut self, app: &TestApp) {
        for (post, signature, ws, received) in &mut self.sockets {
            let expected = json!(app.comment_count(*post).await);
            converge_to(ws, received, signature, expected).await;
        }
    }
}

async fn posts(app: &TestApp, n: usize) -> Vec<i64> {
    let mut posts = Vec::new();
    for _ in 0..n {
        posts.push(app.new_post().await);
    }
    posts
}

/// Comments on the posts in turn until told to stop; write errors (server down) are retried.
fn keep_writing(
    db: PgPool,
    posts: Vec<i64>,
) -> (Arc<tokio::sync::Notify>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let mut written = 0u64;
        for post in posts.iter().cycle() {
            let write = sqlx::query(
                "insert into comments (post_id, author_id, body) values ($1, 'w', 'x')",
            )
            .bind(post)
            .execute(&db);
            tokio::select! {
                _ = stopped.notified() => break,
                result = write => if result.is_ok() { written += 1 },
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        written
    });
    (stop, task)
}

async fn listener_backends(db: &PgPool) -> Vec<i32> {
    feed_backends(db, ChangeFeed::Notify).await
}

/// The backends of the gateway's change feed of kind `feed` on this database.
async fn feed_backends(db: &PgPool, feed: ChangeFeed) -> Vec<i32> {
    let name = match feed {
        ChangeFeed::Notify => statgate::listener::LISTENER_APPLICATION_NAME,
        ChangeFeed::Table => statgate::listener::table::POLLER_APPLICATION_NAME,
        ChangeFeed::Wal => statgate::listener::wal::WAL_APPLICATION_NAME,
    };
    sqlx::query_scalar(
        "select pid from pg_stat_activity where application_name = $1 and datname = current_database()",
    )
    .bind(name)
    .fetch_all(db)
    .await
    .expect("pg_stat_activity")
}

every_feed!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] killing_the_listener_backend_loses_no_final_value => kill_the_feed_backend);

async fn kill_the_feed_backend(feed: ChangeFeed) {
    let app = TestApp::spawn_feed(feed).await;
    let posts = posts(&app, 5).await;
    let mut watchers = Watchers::open(&app, &posts).await;
    let (stop, writer) = keep_writing(app.db.clone(), posts.clone());

    tokio::time::sleep(Duration::from_millis(200)).await;
    let backends = feed_backends(&app.db, feed).await;
    assert_eq!(backends.len(), 1, "one LISTEN connection per gateway");
    let killed: bool = sqlx::query_scalar("select pg_terminate_backend($1)")
        .bind(backends[0])
        .fetch_one(&app.db)
        .await
        .expect("terminate");
    assert!(killed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.notify_one();
    assert!(writer.await.expect("writer") > 0);

    watchers.converge(&app).await;
    let fresh = feed_backends(&app.db, feed).await;
    assert_eq!(fresh.len(), 1);
    assert_ne!(fresh[0], backends[0], "the listener reconnected");
    assert!(app.state.metrics().listener_reconnects.get() >= 1);
}

every_feed!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] a_full_postgresql_restart_keeps_sockets_open_and_converges => restart_postgresql);

async fn restart_postgresql(feed: ChangeFeed) {
    let (mut private, db) = PrivateServer::start(&format!("restart-{}", feed.as_str())).await;
    let url = private.url.clone();
    let app = TestApp::spawn_on(url, db, |config| config.feed.mode = feed).await;
    let posts = posts(&app, 5).await;
    let mut watchers = Watchers::open(&app, &posts).await;
    for post in &posts {
        app.add_comment(*post).await;
    }
    watchers.converge(&app).await;

    private.stop().await;
    let unready = tokio::time::Instant::now() + WAIT;
    while app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .is_ok_and(|response| response.status() == 200)
    {
        assert!(
            tokio::time::Instant::now() < unready,
            "/readyz stayed 200 with the database down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    private.restart().await;
    wait_until_ready(&app.http, &app.url(""), WAIT).await;
    for post in &posts {
        for _ in 0..3 {
            app.add_comment(*post).await;
        }
    }
    watchers.converge(&app).await;
    for (post, signature, _, received) in &watchers.sockets {
        assert_eq!(received.value(signature), Some(&json!(4)), "post {post}");
    }

    app.shutdown.cancel();
    let _ = tokio::time::timeout(WAIT, app.done).await;
    private.stop().await;
}

/// Issue 15, item 1: sqlx's `PgListener` reconnected inside a receive that a canary branch
/// then dropped, so the next receive re-LISTENed silently: no resync, the gauge stuck at 1, and
/// changes committed before the silent re-LISTEN were never pushed. Three 8 s outages with a
/// short canary interval (its branch fires many times during each), writes to posts nobody
/// wrote before right after each start.
#[test]
fn three_postgresql_outages_are_each_seen_and_every_socket_converges_after_each() {
    let lines = survive_outages("outages", ChangeFeed::Notify, 3);
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert!(
        count("listener connection lost") >= 3,
        "every outage is logged as a lost listener: {lines:#?}"
    );
    assert!(
        count("listener reconnected") >= 3,
        "every reconnect is logged: {lines:#?}"
    );
}

/// The table feed's poller has its own loop: the same outage is seen and followed by a resync.
#[test]
fn in_table_mode_a_postgresql_outage_is_seen_and_every_socket_converges() {
    let lines = survive_outages("outage-table", ChangeFeed::Table, 1);
    let count = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert!(count("feed poller failed") >= 1, "{lines:#?}");
    assert!(count("feed poller reconnected") >= 1, "{lines:#?}");
}

/// Stops a private PostgreSQL for 8 s `rounds` times, writes to two new posts right after each
/// start, and checks that every socket converges within 5 s of the writes, that the feed's gauge
/// went to 0 during the outage and that its reconnect counter moved. Returns the feed's log.
fn survive_outages(name: &str, feed: ChangeFeed, rounds: usize) -> Vec<String> {
    const OUTAGE: Duration = Duration::from_secs(8);
    let ((), lines) = run_with_captured_logs("statgate=info", async {
        let (mut private, db) = PrivateServer::start(name).await;
        let app = TestApp::spawn_on(private.url.clone(), db, |config| {
            config.feed.canary = Duration::from_secs(1);
            config.feed.mode = feed;
        })
        .await;
        let posts = posts(&app, rounds * 2 + 1).await;
        let mut watchers = Watchers::open(&app, &posts).await;
        let metrics = &app.state.metrics();
        for round in 0..rounds {
            let reconnects = metrics.listener_reconnects.get();
            private.stop().await;
            let (mut seen_down, until) = (false, tokio::time::Instant::now() + OUTAGE);
            while tokio::time::Instant::now() < until {
                seen_down |= metrics.listener_connected.get() == 0;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            private.restart().await;
            for post in &posts[round * 2..round * 2 + 2] {
                for _ in 0..3 {
                    comment_until_written(&app.db, *post).await;
                }
            }
            let writes_stopped = tokio::time::Instant::now();
            for (post, signature, ws, received) in &mut watchers.sockets {
                let expected = json!(app.comment_count(*post).await);
                let left = (writes_stopped + Duration::from_secs(5))
                    .saturating_duration_since(tokio::time::Instant::now());
                read_until(ws, received, left, |r| {
                    r.value(signature) == Some(&expected)
                })
                .await;
            }
            assert!(
                seen_down,
                "outage {round}: statgate_listener_connected stayed 1 with PostgreSQL down"
            );
            assert!(
                metrics.listener_reconnects.get() > reconnects,
                "outage {round}: statgate_listener_reconnects_total did not move"
            );
        }
        app.shutdown.cancel();
        let _ = tokio::time::timeout(WAIT, app.done).await;
        private.stop().await;
    });
    let feed_lines: Vec<String> = lines
        .into_iter()
        .filter(|l| l.contains("statgate::listener"))
        .collect();
    for line in &feed_lines {
        println!("{line}");
    }
    feed_lines
}

/// Inserts one comment on `post`, retrying while the database is still coming back.
async fn comment_until_written(db: &PgPool, post: i64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while sqlx::query("insert into comments (post_id, author_id, body) values ($1, 'w', 'x')")
        .bind(post)
        .execute(db)
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the database came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 15, item 4: any role may `NOTIFY statgate_changes`. Every unreadable payload used to
/// cost a full resync and every overflow payload a recompute of the whole table. From a role
/// with no grants, 1,000 garbage and overflow payloads in 5 s: unreadable ones are dropped and
/// counted, overflows merge into a few table recomputes, a normal change still reaches its
/// subscriber fast, and everything converges afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_flood_from_a_role_without_grants_costs_a_handful_of_bulk_recomputes() {
    const SIGNATURES: usize = 200;
    let app = TestApp::spawn_with(|config| {
        config.limits.subscribe_per_sec_per_user = 0;
        config.limits.subscribe_per_sec_per_ip = 0;
        config.limits.max_messages_per_sec = 100_000;
    })
    .await;
    let posts = posts(&app, SIGNATURES).await;
    let mut bystanders = app.connect("u1", None).await;
    let mut expected_snapshots = Vec::new();
    for post in &posts {
        let (token, signature) = app
            .subscribe("u1", "posts/stats/commentCount", json!({"postId": post}))
            .await;
        send_json(
            &mut bystanders,
            json!({"type": "subscribe", "token": token}),
        )
        .await;
        expected_snapshots.push(signature);
    }
    let mut seen = Received::default();
    read_until(&mut bystanders, &mut seen, WAIT, |r| {
        expected_snapshots.iter().all(|s| r.value(s).is_some())
    })
    .await;
    let probe_post = app.new_post().await;
    let (probe, mut probe_ws, mut probe_received) = app.watch_comments(probe_post).await;

    // A role with no grants at all: it can still NOTIFY any channel.
    let role = format!("flooder_{}", std::process::id());
    sqlx::query(&format!("create role {role} nologin"))
        .execute(&app.db)
        .await
        .expect("role");
    let mut flooder = app.db.acquire().await.expect("connection").detach();
    sqlx::query(&format!("set role {role}"))
        .execute(&mut flooder)
        .await
        .expect("set role");

    let metrics = &app.state.metrics();
    let label = metrics.query("posts/stats/commentCount");
    let recomputes = || metrics.recomputes.get_or_create(&label).get();
    let (resyncs, recomputed, errors) = (
        metrics.resyncs.get(),
        recomputes(),
        metrics.notification_errors.get(),
    );
    let flood = tokio::spawn(async move {
        let overflow =
            r#"{"v":1,"schema":"public","table":"post_stats","op":"UPDATE","overflow":true}"#;
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        for i in 0..1000 {
            tick.tick().await;
            let payload = if i % 2 == 0 {
                format!("garbage {i}")
            } else {
                overflow.to_owned()
            };
            sqlx::query("select pg_notify('statgate_changes', $1)")
                .bind(payload)
                .execute(&mut flooder)
                .await
                .expect("any role may notify");
        }
    });

    // Normal changes during the flood: commit → push, as the probe's subscriber sees it.
    let mut latencies = Vec::new();
    while !flood.is_finished() {
        let started = std::time::Instant::now();
        app.add_comment(probe_post).await;
        let expected = json!(latencies.len() + 1);
        read_until(&mut probe_ws, &mut probe_received, WAIT, |r| {
            r.value(&probe) == Some(&expected)
        })
        .await;
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    flood.await.expect("flood sent");
    wait_until(WAIT, "every unreadable payload was counted", || {
        metrics.notification_errors.get() >= errors + 500
    })
    .await;

    for post in &posts[..10] {
        app.add_comment(*post).await;
    }
    for (post, signature) in posts.iter().zip(&expected_snapshots) {
        let expected = json!(app.comment_count(*post).await);
        converge_to(&mut bystanders, &mut seen, signature, expected).await;
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let (full_resyncs, table_recomputes) =
        (metrics.resyncs.get() - resyncs, recomputes() - recomputed);
    println!(
        "flood: {} full resyncs, {table_recomputes} recomputes of {SIGNATURES} signatures; \
         commit→push of {} normal changes: median {median:?}, max {:?}",
        full_resyncs,
        latencies.len(),
        latencies.last()
    );
    assert_eq!(
        metrics.notification_errors.get() - errors,
        500,
        "every unreadable payload is counted"
    );
    assert!(full_resyncs <= 3, "{full_resyncs} full resyncs");
    assert!(
        table_recomputes <= 15 * SIGNATURES as u64,
        "{table_recomputes} recomputes for 500 overflow payloads"
    );
    assert!(latencies.len() >= 10, "{} samples", latencies.len());
    assert!(
        median < Duration::from_millis(100),
        "median commit→push {median:?} during the flood"
    );
}

#[tokio::test]
async fn server_pings_keep_a_reading_client_and_close_a_silent_one_with_4000() {
    let app =
        TestApp::spawn_with(|config| config.http.heartbeat = Duration::from_millis(300)).await;
    let (token, _) = app
        .subscribe("u1", "posts/stats/commentCount", json!({"postId": 1}))
        .await;

    // tungstenite answers Ping frames while it reads: this client stays.
    let mut reading = app.connect("u1", Some(&token)).await;
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(message)) = tokio::time::timeout_at(until, reading.next()).await {
        match message.expect("frame") {
            Message::Ping(_) => pings += 1,
            Message::Close(frame) => panic!("a live client was closed: {frame:?}"),
            _ => {}
        }
    }
    assert!(
        pings >= 3,
        "server Ping frames arrive every interval ({pings})"
    );
    assert_pong(&mut reading, "the socket still answers").await;

    // This one never reads, so it never answers: after two silent intervals it is closed.
    let mut silent = app.connect("u1", Some(&token)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(close_of(&mut silent).await.0, 4000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_with_4009_and_released() {
    let app = TestApp::spawn_with(|config| {
        config.limits.slow_consumer = Duration::from_secs(1);
    })
    .await;
    let posts: Vec<i64> = sqlx::query_scalar(
        "insert into posts (title, author_id) select 'p' || i, 'a' from generate_series(1, 520) i returning id",
    )
    .fetch_all(&app.db)
    .await
    .expect("posts");
    // Four large signatures (500 rows each): every statement below changes all of them.
    let mut tokens = Vec::new();
    for offset in 0..4 {
        let ids = &posts[offset * 5..offset * 5 + 500];
        let (token, _) = app
            .subscribe("u1", "posts/stats/counts", json!({"postIds": ids}))
            .await;
        tokens.push(token);
    }
    let mut lazy = app.connect("u1", Some(&tokens[0])).await;
    for token in &tokens[1..] {
        send_json(&mut lazy, json!({"type": "subscribe", "token": token})).await;
    }

    let before = app.state.metrics().slow_consumer_closes.get();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut statements = 0;
    while app.state.metrics().slow_consumer_closes.get() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a client that never reads was not closed after {statements} statements"
        );
        sqlx::query(
            "insert into comments (post_id, author_id, body) select unnest($1::int8[]), 'w', 'x'",
        )
        .bind(&posts)
        .execute(&app.db)
        .await
        .expect("bulk comment");
        statements += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Reading now drains what the kernel buffered, then the close frame.
    assert_eq!(close_of(&mut lazy).await.0, 4009);

    // Everything it held is released: no socket and no subscriber remain.
    app.wait_released(WAIT, "the closed socket was not released")
        .await;
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_and_the_binary_exits_0() {
    let (url, db) = crate::helpers::fresh_database().await;
    drop(db);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let jwt_secret = "sigterm-test-jwt-secret-0123456789abcdefgh";
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_statgate"))
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("STATGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("STATGATE_QUERIES", crate::helpers::queries_dir())
        .env("STATGATE_JWT_SECRET", jwt_secret)
        .env(
            "STATGATE_TOKEN_SECRET",
            "sigterm-test-token-secret-0123456789abcdef",
        )
        .env("STATGATE_SHUTDOWN_GRACE_SECS", "5")
        .env_remove("STATGATE_DEMO")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("statgate starts");

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_ready(&http, &base, WAIT).await;
    let mut config = statgate::Config::for_tests(url.clone(), crate::helpers::queries_dir());
    config.auth.jwt_secrets = vec![statgate::config::Secret::new(jwt_secret)];
    let jwt = statgate::auth::Authenticator::new(&config)
        .mint_jwt("u1", Duration::from_secs(600))
        .expect("jwt");
    let reply: serde_json::Value = http
        .post(format!("{base}/realtime/subscribe"))
        .json(&json!({"queryName": "posts/stats/commentCount", "args": {"postId": 1}, "authToken": jwt}))
        .send()
        .await
        .expect("subscribe")
        .json()
        .await
        .expect("json");
    let token = reply["token"].as_str().expect("token");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://127.0.0.1:{port}/realtime/ws?authToken={jwt}&token={token}"
    ))
    .await
    .expect("connects");
    assert!(next_event(&mut ws, WAIT).await.is_some(), "snapshot");

    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    assert_eq!(close_of(&mut ws).await.0, 1001);
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits within the drain deadline")
        .expect("waited");
    assert!(exit.success(), "exit status {exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_silently_stops_delivering_is_found_by_the_canary_and_replaced() {
    let app = TestApp::spawn_with(|config| config.feed.canary = Duration::from_millis(300)).await;
    let posts = posts(&app, 2).await;
    let mut watchers = Watchers::open(&app, &posts).await;
    let backends = listener_backends(&app.db).await;
    assert_eq!(backends.len(), 1);
    let stalled = backends[0].to_string();

    // The backend stops (as a hung process or a dead NAT entry would): its TCP connection
    // stays up and nothing errors, but no notification reaches the gateway any more.
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &stalled])
            .status()
            .expect("kill runs")
    };
    assert!(signal("-STOP").success());
    for post in &posts {
        app.add_comment(*post).await;
    }
    let result = async {
        watchers.converge(&app).await;
        let failures = app.state.metrics().canary_failures.get();
        let fresh = listener_backends(&app.db).await;
        (failures, fresh)
    }
    .await;
    signal("-CONT");
    let _ = sqlx::query("select pg_terminate_backend($1)")
        .bind(backends[0])
        .execute(&app.db)
        .await;

    let (failures, fresh) = result;
    assert!(failures >= 1, "the canary noticed the silent feed");
    assert!(
        fresh.iter().any(|pid| *pid != backends[0]),
        "a new listener connection replaced the stalled one"
    );
}

/// A registry with a query that fails for some args (division by zero), next to the example's.
fn registry_with_a_failing_query() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        std::fs::create_dir_all(to).expect("mkdir");
        for file in std::fs::read_dir(from).expect("read queries") {
            let file = file.expect("entry").path();
            if file.extension().is_some_and(|e| e == "toml") {
                std::fs::copy(&file, to.join(file.file_name().expect("name"))).expect("copy");
            }
        }
    };
    let queries = crate::helpers::queries_dir();
    copy(&queries.join("posts"), &dir.path().join("posts"));
    std::fs::create_dir_all(dir.path().join("risky")).expect("mkdir");
    std::fs::write(
        dir.path().join("risky/ratio.toml"),
        r#"[perComment]
description = "100 divided by a divisor, per post: fails for divisor 0."
sql = "SELECT comment_count * 100 / :divisor AS v FROM post_stats WHERE post_id = :postId"
args = { postId = "int8", divisor = "int8" }
returns = "value"
watch = [{ table = "post_stats", match = { post_id = ":postId" } }]
"#,
    )
    .expect("write query");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_whose_query_fails_does_not_hold_back_the_others() {
    let registry = registry_with_a_failing_query();
    let dir = registry.path().to_owned();
    let app = TestApp::spawn_with(move |config| {
        config.queries = statgate::config::Queries::Directory(dir)
    })
    .await;
    let post = app.new_post().await;
    app.add_comment(post).await;
    let (bad_token, bad_sig) = app
        .subscribe(
            "u1",
            "risky/ratio/perComment",
            json!({"postId": post, "divisor": 0}),
        )
        .await;
    let (good_token, good_sig) = app
        .subscribe(
            "u1",
            "risky/ratio/perComment",
            json!({"postId": post, "divisor": 4}),
        )
        .await;
    // Both on one socket, so they are due together and batched into one statement.
    let mut ws = app.connect("u1", Some(&bad_token)).await;
    send_json(&mut ws, json!({"type": "subscribe", "token": good_token})).await;

    let good = wait_for(&mut ws, WAIT, |e| {
        e["event"] == "query:update" && e["payload"]["signature"] == good_sig
    })
    .await;
    assert_eq!(good["payload"]["data"], json!(25));

    // Changes keep flowing to the healthy signature while the other keeps failing; the failing
    // one's followers are told, with the database's reason.
    let mut error = None;
    for expected in [50, 75] {
        app.add_comment(post).await;
        let update = wait_for(&mut ws, WAIT, |e| {
            if e["event"] == "error" && e["payload"]["signature"] == bad_sig {
                error = Some(e.clone());
            }
            e["event"] == "query:update" && e["payload"]["signature"] == good_sig
        })
        .await;
        assert_eq!(update["payload"]["data"], json!(expected));
        assert_ne!(update["payload"]["signature"], json!(bad_sig));
    }
    let error = match error {
        Some(error) => error,
        None => {
            wait_for(&mut ws, WAIT, |e| {
                e["event"] == "error" && e["payload"]["signature"] == bad_sig
            })
            .await
        }
    };
    assert_eq!(error["payload"]["code"], "recompute_failed");
    assert!(
        error["payload"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("division by zero")),
        "{error}"
    );
}

#[tokio::test]
async fn a_panic_in_one_connections_task_closes_only_that_connection() {
    let app = TestApp::spawn().await;
    let post = app.new_post().await;
    let (signature, mut survivor, mut received) = app.watch_comments(post).await;
    let (_, mut doomed, _) = app.watch_comments(post).await;

    // `__panic__` panics the socket's task (the fault-injection feature, on in tests only).
    send_text(&mut doomed, "__panic__").await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(message)) = doomed.next().await {
            if message.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the panicking connection ended");

    app.add_comment(post).await;
    converge_to(&mut survivor, &mut received, &signature, json!(1)).await;
    wait_until(
        Duration::from_secs(10),
        "the panicked connection released its gauge and subscription",
        || {
            app.state.metrics().connections.get() == 1
                && app.state.metrics().subscriptions.get() == 1
        },
    )
    .await;
    let health = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200, "the process goes on");
}

#[tokio::test]
async fn an_exhausted_pool_holds_back_neither_the_listener_nor_the_canary() {
    let app = TestApp::spawn_with(|config| {
        config.recompute.pool_size = 2;
        config.feed.canary = Duration::from_secs(2);
    })
    .await;
    let post = app.new_post().await;
    let (signature, mut ws, mut received) = app.watch_comments(post).await;

    // Every pool connection taken for longer than a probe interval: recomputes and canary
    // probes wait for a connection, while each change must still reach the listener at once
    // (a probe awaited in the listener's loop would hold it up for half an interval).
    let held = (
        app.state.pool().acquire().await.expect("first"),
        app.state.pool().acquire().await.expect("second"),
    );
    let failures = app.state.metrics().canary_failures.get();
    let mut slowest = Duration::ZERO;
    for _ in 0..12 {
        let before = app.state.metrics().notifications.get();
        let started = std::time::Instant::now();
        app.add_comment(post).await;
        wait_until(
            Duration::from_secs(5),
            "the listener took the change while the pool was exhausted",
            || app.state.metrics().notifications.get() > before,
        )
        .await;
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        slowest < Duration::from_millis(600),
        "a change waited {slowest:?} for the listener"
    );
    assert_eq!(
        app.state.metrics().canary_failures.get(),
        failures,
        "an unsendable probe is not a lost one"
    );
    assert_eq!(app.state.metrics().listener_reconnects.get(), 0);

    drop(held);
    converge_to(&mut ws, &mut received, &signature, json!(12)).await;
}
