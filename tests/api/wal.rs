//! The WAL feed (`STATGATE_CHANGE_FEED=wal`): what it costs writers, what serve refuses, and
//! its slots: a named slot resumes without a resync, even after SIGKILL; an invalidated one is
//! created again with a resync. The acceptance tests shared with the other feeds are
//! `every_feed!` tests in `realtime`, `matching` and `resilience`.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;
use statgate::config::ChangeFeed;
use statgate::Application;

use crate::helpers::{
    converge_to, fresh_database, metric, wait_until, wait_until_ready, PrivateServer, Received,
    TestApp, Ws,
};

const WAIT: Duration = Duration::from_secs(30);

async fn wal_app(url: String, db: PgPool, slot: Option<&str>) -> TestApp {
    let slot = slot.map(str::to_owned);
    TestApp::spawn_on(url, db, move |config| {
        config.feed.mode = ChangeFeed::Wal;
        config.feed.wal_slot = slot;
    })
    .await
}

/// The backends of the gateway's replication connection.
async fn walsenders(db: &PgPool) -> Vec<i32> {
    sqlx::query_scalar(
        "select pid from pg_stat_activity where application_name = $1 and datname = current_database()",
    )
    .bind(statgate::listener::wal::WAL_APPLICATION_NAME)
    .fetch_all(db)
    .await
    .expect("pg_stat_activity")
}

/// Waits until PostgreSQL has the confirmed position of `slot` (a name, or a `like` pattern)
/// at or past the WAL written so far: the gateway has matched and scheduled every change before.
async fn wait_confirmed(db: &PgPool, slot: &str) {
    let written: String = sqlx::query_scalar("select pg_current_wal_lsn()::text")
        .fetch_one(db)
        .await
        .expect("lsn");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let caught_up: Option<bool> = sqlx::query_scalar(
            "select bool_and(confirmed_flush_lsn >= $2::pg_lsn) from pg_replication_slots
              where slot_name like $1 and database = current_database()",
        )
        .bind(slot)
        .bind(&written)
        .fetch_optional(db)
        .await
        .expect("slot")
        .flatten();
        if caught_up == Some(true) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot {slot} never confirmed {written}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `read()` once it has not moved for 300 ms (work scheduled before has run).
async fn settled(read: impl Fn() -> u64) -> u64 {
    let mut last = read();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
}

fn summary(post: i64, comments: i64) -> Value {
    json!({"postId": post, "commentCount": comments, "reactionCount": 0})
}

#[tokio::test]
async fn in_wal_mode_writers_run_no_watch_trigger_and_the_publication_lists_the_watched_tables() {
    let app = TestApp::spawn_feed(ChangeFeed::Wal).await;
    let triggers: i64 =
        sqlx::query_scalar("select count(*) from pg_trigger where tgname like 'statgate_watch%'")
            .fetch_one(&app.db)
            .await
            .expect("triggers");
    assert_eq!(triggers, 0, "no watch trigger runs in wal mode");
    let (watched, published): (Vec<String>, Vec<String>) = sqlx::query_as(
        "select (select array_agg(tbl::text order by tbl::text) from statgate.watches),
                (select array_agg(schemaname || '.' || tablename order by schemaname || '.' || tablename)
                   from pg_publication_tables where pubname = 'statgate_watches')",
    )
    .fetch_one(&app.db)
    .await
    .expect("publication");
    let qualified: Vec<String> = watched
        .iter()
        .map(|t| {
            if t.contains('.') {
                t.clone()
            } else {
                format!("public.{t}")
            }
        })
        .collect();
    assert_eq!(qualified, published);

    let post = app.new_post().await;
    let (signature, mut ws, mut received) = app.watch_comments(post).await;
    app.add_comment(post).await;
    converge_to(&mut ws, &mut received, &signature, json!(1)).await;
    let (changes, notified): (i64, i64) = sqlx::query_as(
        "select (select count(*) from statgate.changes),
                (select count(*) from pg_stat_activity where wait_event = 'NotifyQueue')",
    )
    .fetch_one(&app.db)
    .await
    .expect("counts");
    assert_eq!((changes, notified), (0, 0), "nothing written for the feed");
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("statgate_wal_feed_lag_bytes")
            && metrics.contains("statgate_wal_feed_lag_seconds"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_server_without_wal_level_logical_is_refused_with_the_setting_to_change() {
    let (private, db) = PrivateServer::start_with("wal-replica", &[("wal_level", "replica")]).await;
    let mut config =
        statgate::Config::for_tests(private.url.clone(), crate::helpers::queries_dir());
    config.feed.mode = ChangeFeed::Wal;
    let err = match Application::build(config).await {
        Ok(_) => panic!("serve must refuse wal mode with wal_level = replica"),
        Err(err) => err.to_string(),
    };
    assert!(
        err.contains("wal_level = logical")
            && err.contains("wal_level = replica")
            && err.contains("restart PostgreSQL"),
        "{err}"
    );
    db.close().await;
}

#[tokio::test]
async fn a_role_that_may_not_replicate_is_refused_with_the_statement_that_allows_it() {
    let (_, db) = fresh_database().await;
    let role = format!("gate_{}", std::process::id());
    sqlx::query(&format!("create role {role} login"))
        .execute(&db)
        .await
        .expect("role");
    let options: sqlx::postgres::PgConnectOptions = db.connect_options().as_ref().clone();
    let as_role = PgPool::connect_with(options.clone().username(&role))
        .await
        .expect("connect as the role");
    let err = statgate::listener::wal::checks::check(&as_role)
        .await
        .expect_err("no REPLICATION");
    assert!(
        err.to_string()
            .contains(&format!("ALTER ROLE {role} REPLICATION")),
        "{err}"
    );
    as_role.close().await;
    for grant in [
        "select statgate.set_feed_mode('wal')".to_owned(),
        format!("alter role {role} replication"),
        format!("grant usage on schema statgate to {role}"),
        format!("grant select on statgate.watches to {role}"),
    ] {
        sqlx::query(&grant).execute(&db).await.expect("grant");
    }
    let as_role = PgPool::connect_with(options.clone().username(&role))
        .await
        .expect("connect as the role");
    statgate::listener::wal::checks::check(&as_role)
        .await
        .expect("a role with REPLICATION passes");
}

/// Opens one socket per post on `posts/stats/summary` (a query that always runs its SQL).
async fn watch_summaries(app: &TestApp, posts: &[i64]) -> Vec<(i64, String, Ws, Received)> {
    let mut sockets = Vec::new();
    for post in posts {
        let (signature, ws, received) = app
            .watch("u1", "posts/stats/summary", json!({"postId": post}))
            .await;
        sockets.push((*post, signature, ws, received));
    }
    sockets
}

/// Signatures of `posts/stats/summary` recomputed so far.
fn summary_recomputes(app: &TestApp) -> u64 {
    let metrics = app.state.metrics();
    metrics
        .recomputes
        .get_or_create(&metrics.query("posts/stats/summary"))
        .get()
}

/// Kills the replication connection of a gateway holding 20 signatures, writes one comment on
/// each of 3 posts while it reconnects, and returns the signatures recomputed and the resyncs
/// that the reconnect cost once the 3 sockets hold their new values.
async fn recomputes_of_a_reconnect(slot: Option<&str>) -> (u64, u64) {
    let name = format!("wal-reconnect-{}", slot.unwrap_or("temporary"));
    let (_private, db) = PrivateServer::start(&name).await;
    let app = wal_app(_private.url.clone(), db, slot).await;
    let mut posts = Vec::new();
    for _ in 0..20 {
        posts.push(app.new_post().await);
    }
    // The posts' own changes behind us before anyone follows them (see
    // `a_carried_value_is_pushed_from_the_changed_row_without_a_statement`).
    wait_confirmed(&app.db, slot.unwrap_or("statgate\\_tmp\\_%")).await;
    let mut sockets = watch_summaries(&app, &posts).await;
    let recomputes = settled(|| summary_recomputes(&app)).await;
    let metrics = app.state.metrics();
    let resyncs = metrics.resyncs.get();

    let backends = walsenders(&app.db).await;
    assert_eq!(backends.len(), 1, "one replication connection");
    sqlx::query("select pg_terminate_backend($1)")
        .bind(backends[0])
        .execute(&app.db)
        .await
        .expect("terminate");
    for post in &posts[..3] {
        app.add_comment(*post).await;
    }
    for (post, signature, ws, received) in sockets.iter_mut().take(3) {
        converge_to(ws, received, signature, summary(*post, 1)).await;
    }
    wait_until(WAIT, "the feed reconnected", || {
        metrics.listener_reconnects.get() >= 1
    })
    .await;
    let after = settled(|| summary_recomputes(&app)).await;
    (after - recomputes, metrics.resyncs.get() - resyncs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_named_slot_a_lost_replication_connection_resumes_and_recomputes_only_what_changed()
{
    let (recomputes, resyncs) = recomputes_of_a_reconnect(Some("node_resume")).await;
    assert_eq!(resyncs, 0, "a resumed slot needs no resync");
    assert_eq!(recomputes, 3, "the 3 changed signatures, not all 20");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_temporary_slot_a_lost_replication_connection_resyncs_every_signature() {
    let (recomputes, resyncs) = recomputes_of_a_reconnect(None).await;
    assert_eq!(resyncs, 1);
    assert!(
        recomputes >= 20,
        "the resync recomputes every signature: {recomputes}"
    );
}

/// The node of a named slot stops; while it is down the WAL grows past
/// `max_slot_wal_keep_size` and a checkpoint invalidates the slot. The node starts again: it
/// finds the slot lost, says so, counts it, creates it again and resyncs, and serves the
/// values written while it was down.
#[test]
fn a_slot_invalidated_while_its_node_was_down_is_created_again_with_a_resync() {
    let ((), lines) = crate::helpers::run_with_captured_logs("statgate=info", async {
        let (private, db) =
            PrivateServer::start_with("wal-lost", &[("max_slot_wal_keep_size", "1MB")]).await;
        let app = wal_app(private.url.clone(), db.clone(), Some("node_lost")).await;
        let post = app.new_post().await;
        let (_, first, _) = app.watch_comments(post).await;
        drop(first);
        app.shutdown.cancel();
        let _ = tokio::time::timeout(WAIT, app.done).await;

        for _ in 0..4 {
            sqlx::query("insert into comments (post_id, author_id, body) values ($1, 'a', 'x')")
                .bind(post)
                .execute(&db)
                .await
                .expect("comment");
            sqlx::query("select pg_switch_wal()")
                .execute(&db)
                .await
                .expect("switch");
        }
        sqlx::query("checkpoint")
            .execute(&db)
            .await
            .expect("checkpoint");
        let status: String = sqlx::query_scalar(
            "select wal_status from pg_replication_slots where slot_name = 'node_lost'",
        )
        .fetch_one(&db)
        .await
        .expect("slot");
        assert_eq!(status, "lost", "the checkpoint invalidated the slot");

        let app = wal_app(private.url.clone(), db.clone(), Some("node_lost")).await;
        let metrics = app.state.metrics();
        assert_eq!(metrics.wal_slot_invalidations.get(), 1);
        assert!(metrics.resyncs.get() >= 1, "a recreated slot resyncs");
        let (signature, mut ws, mut received) = app.watch_comments(post).await;
        assert_eq!(received.value(&signature), Some(&json!(4)));
        app.add_comment(post).await;
        converge_to(&mut ws, &mut received, &signature, json!(5)).await;
        let status: String = sqlx::query_scalar(
            "select wal_status from pg_replication_slots where slot_name = 'node_lost'",
        )
        .fetch_one(&db)
        .await
        .expect("slot");
        assert_ne!(status, "lost");
        app.shutdown.cancel();
        let _ = tokio::time::timeout(WAIT, app.done).await;
    });
    assert!(
        lines
            .iter()
            .any(|l| l.contains("replication slot invalidated")
                && l.contains("max_slot_wal_keep_size")),
        "{lines:#?}"
    );
}

/// The gateway binary on `url` with named slot `slot`, listening on `port`, its log in `log`.
fn gateway(url: &str, slot: &str, port: u16, log: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_statgate"))
        .arg("serve")
        .env("DATABASE_URL", url)
        .env("STATGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("STATGATE_QUERIES", crate::helpers::queries_dir())
        .env("STATGATE_JWT_SECRET", SIGKILL_JWT_SECRET)
        .env(
            "STATGATE_TOKEN_SECRET",
            "sigkill-test-token-secret-0123456789abcdef",
        )
        .env("STATGATE_CHANGE_FEED", "wal")
        .env("STATGATE_WAL_SLOT", slot)
        .env("STATGATE_PARITY_SAMPLE_RATE", "0")
        .env_remove("STATGATE_DEMO")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("statgate starts")
}

const SIGKILL_JWT_SECRET: &str = "sigkill-test-jwt-secret-0123456789abcdefgh";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Subscribes over HTTP and opens the socket of `posts/stats/summary` for `post`.
async fn socket_on(http: &reqwest::Client, port: u16, jwt: &str, post: i64) -> (String, Ws) {
    let reply: Value = http
        .post(format!("http://127.0.0.1:{port}/realtime/subscribe"))
        .json(&json!({"queryName": "posts/stats/summary", "args": {"postId": post}, "authToken": jwt}))
        .send()
        .await
        .expect("subscribe")
        .json()
        .await
        .expect("json");
    let token = reply["token"].as_str().expect("token");
    let (ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://127.0.0.1:{port}/realtime/ws?authToken={jwt}&token={token}"
    ))
    .await
    .expect("connects");
    (
        reply["signature"].as_str().expect("signature").to_owned(),
        ws,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_with_sigkill_resumes_its_named_slot_without_a_resync_and_converges() {
    const POSTS: usize = 12;
    let (private, db) = PrivateServer::start("wal-sigkill").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let mut config =
        statgate::Config::for_tests(private.url.clone(), crate::helpers::queries_dir());
    config.auth.jwt_secrets = vec![statgate::config::Secret::new(SIGKILL_JWT_SECRET)];
    let jwt = statgate::auth::Authenticator::new(&config)
        .mint_jwt("u1", Duration::from_secs(600))
        .expect("jwt");

    let port = free_port();
    let mut first = gateway(
        &private.url,
        "node_kill",
        port,
        &dir.path().join("first.log"),
    );
    wait_until_ready(&http, &format!("http://127.0.0.1:{port}"), WAIT).await;
    let mut posts = Vec::new();
    for i in 0..POSTS {
        let id: i64 = sqlx::query_scalar(
            "insert into posts (title, author_id) values ($1, 'a') returning id",
        )
        .bind(format!("p{i}"))
        .fetch_one(&db)
        .await
        .expect("post");
        posts.push(id);
    }
    for post in &posts {
        let (signature, mut ws) = socket_on(&http, port, &jwt, *post).await;
        let mut received = Received::default();
        converge_to(&mut ws, &mut received, &signature, summary(*post, 0)).await;
    }
    // Writers go on through the kill and the restart, on the first 4 posts only.
    let written = posts[..4].to_vec();
    let writer_db = db.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let writer = tokio::spawn(async move {
        let mut n = 0u64;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            let post = written[(n % 4) as usize];
            if sqlx::query("insert into comments (post_id, author_id, body) values ($1, 'w', 'x')")
                .bind(post)
                .execute(&writer_db)
                .await
                .is_ok()
            {
                n += 1;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        n
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = first.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill")
        .success());
    let _ = first.wait().await;
    tokio::time::sleep(Duration::from_millis(700)).await;

    let port = free_port();
    let log = dir.path().join("second.log");
    let second = gateway(&private.url, "node_kill", port, &log);
    wait_until_ready(&http, &format!("http://127.0.0.1:{port}"), WAIT).await;
    let mut sockets = Vec::new();
    for post in &posts {
        sockets.push((*post, socket_on(&http, port, &jwt, *post).await));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await.expect("writer");
    assert!(writes > 20, "writers kept writing: {writes}");
    for (post, (signature, ws)) in &mut sockets {
        let count: i64 =
            sqlx::query_scalar("select count(*) from comments where post_id = $1 and not deleted")
                .bind(*post)
                .fetch_one(&db)
                .await
                .expect("count");
        let mut received = Received::default();
        converge_to(ws, &mut received, signature, summary(*post, count)).await;
    }
    let metrics = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    drop(second);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("resuming from its confirmed position (no resync)"),
        "{text}"
    );
    assert_eq!(metric(&metrics, "statgate_resyncs_total"), 0.0, "{metrics}");
    // Each socket's first value is one recompute; after that only the 4 written posts change.
    let recomputes = metric(
        &metrics,
        "statgate_recomputes_total{query=\"posts/stats/summary\"}",
    );
    assert!(
        recomputes >= POSTS as f64,
        "every re-subscribed signature got its first value: {recomputes}"
    );
    assert!(
        recomputes - POSTS as f64 <= writes as f64,
        "beyond the first values, only changes recompute (no pass over every signature): \
         {recomputes} recomputes for {POSTS} signatures and {writes} writes"
    );
    let _ = sqlx::query("select pg_drop_replication_slot('node_kill')")
        .execute(&db)
        .await;
}

/// Values of `posts/stats/commentCount` taken from the row a change carried.
fn carried(app: &TestApp) -> u64 {
    let metrics = app.state.metrics();
    metrics
        .carried_values
        .get_or_create(&metrics.query("posts/stats/commentCount"))
        .get()
}

#[tokio::test]
async fn a_carried_value_is_pushed_from_the_changed_row_without_a_statement() {
    let app = TestApp::spawn_with(|config| {
        config.feed.mode = ChangeFeed::Wal;
        config.recompute.parity_sample_rate = 0.0;
    })
    .await;
    let metrics = app.state.metrics();
    let post = app.new_post().await;
    // The post's own change (its stats row's insert) is behind us before anyone follows the
    // post: it matches no signature. Read after the first value, it was left to the SQL, and
    // its statement, when it ran more than `settled`'s pause later (seen under the full
    // suite's load), was counted among the five.
    wait_confirmed(&app.db, "statgate\\_tmp\\_%").await;
    let (signature, mut ws, mut received) = app.watch_comments(post).await;
    let statements = settled(|| metrics.recompute_statements.get()).await;
    for n in 1..=5 {
        app.add_comment(post).await;
        converge_to(&mut ws, &mut received, &signature, json!(n)).await;
    }
    assert_eq!(
        metrics.recompute_statements.get(),
        statements,
        "five values, no statement"
    );
    assert_eq!(carried(&app), 5);

    // A deleted row: its value is whatever the SQL gives for a missing row (null here).
    sqlx::query("delete from post_stats where post_id = $1")
        .bind(post)
        .execute(&app.db)
        .await
        .expect("delete the stats row");
    converge_to(&mut ws, &mut received, &signature, Value::Null).await;
    assert!(
        metrics.recompute_statements.get() > statements,
        "the SQL ran"
    );
    // The row comes back (the trigger creates it for the next comment): carried again.
    app.add_comment(post).await;
    converge_to(&mut ws, &mut received, &signature, json!(1)).await;
    assert_eq!(carried(&app), 6);
}

#[tokio::test]
async fn with_parity_sampling_at_1_every_carried_value_still_runs_its_sql() {
    let app = TestApp::spawn_with(|config| {
        config.feed.mode = ChangeFeed::Wal;
        config.recompute.parity_sample_rate = 1.0;
    })
    .await;
    let metrics = app.state.metrics();
    let post = app.new_post().await;
    let (signature, mut ws, mut received) = app.watch_comments(post).await;
    let statements = metrics.recompute_statements.get();
    app.add_comment(post).await;
    converge_to(&mut ws, &mut received, &signature, json!(1)).await;
    assert_eq!(carried(&app), 0);
    assert!(
        metrics.recompute_statements.get() >= statements + 2,
        "the query's SQL and its parity SQL"
    );
}

#[tokio::test]
async fn a_carried_declaration_the_database_contradicts_is_refused_at_start_up() {
    let (url, db) = fresh_database().await;
    let post: i64 =
        sqlx::query_scalar("insert into posts (title, author_id) values ('p', 'a') returning id")
            .fetch_one(&db)
            .await
            .expect("post");
    sqlx::query("insert into comments (post_id, author_id, body) values ($1, 'a', 'x')")
        .bind(post)
        .execute(&db)
        .await
        .expect("comment");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("wrong.toml"),
        r#"[comments]
sql = "SELECT comment_count AS count FROM post_stats WHERE post_id = :postId"
args = { postId = "int8" }
returns = "value"
watch = [{ table = "post_stats", match = { post_id = ":postId" } }]
carried = { table = "post_stats", column = "reaction_count", key = { post_id = ":postId" } }

[byTitle]
sql = "SELECT id AS count FROM posts WHERE title = :title"
args = { title = "text" }
returns = "value"
watch = [{ table = "posts" }]
carried = { table = "posts", column = "id", key = { title = ":title" } }
"#,
    )
    .expect("registry");
    let mut config = statgate::Config::for_tests(url, dir.path().to_owned());
    config.migrate = false;
    let err = match Application::build(config).await {
        Ok(_) => panic!("a contradicted carried declaration must be refused"),
        Err(err) => err.to_string(),
    };
    assert!(
        err.contains("query wrong/comments: carried: for args") && err.contains("reaction_count"),
        "{err}"
    );
    assert!(
        err.contains("query wrong/byTitle: carried: no unique index"),
        "{err}"
    );
}
