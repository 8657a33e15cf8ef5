//! Which subscribers a change reaches (docs/REGISTRY.md): moves, bulk statements, ranges and arrays.

use std::time::Duration;

use serde_json::{json, Value};

use statgate::config::ChangeFeed;

use crate::helpers::{assert_silent, converge_to, every_feed, wait_for, TestApp};

const WAIT: Duration = Duration::from_secs(20);

fn update_of(signature: &str) -> impl FnMut(&Value) -> bool + '_ {
    move |e| e["event"] == "query:update" && e["payload"]["signature"] == signature
}

every_feed!(#[tokio::test] moving_a_comment_updates_the_subscribers_of_both_posts => move_a_comment);

async fn move_a_comment(feed: ChangeFeed) {
    let app = TestApp::spawn_feed(feed).await;
    let from = app.new_post().await;
    let to = app.new_post().await;
    app.add_comment(from).await;
    app.add_comment(from).await;
    let (from_token, from_sig) = app
        .subscribe("u1", "posts/stats/commentCount", json!({"postId": from}))
        .await;
    let (to_token, to_sig) = app
        .subscribe("u2", "posts/stats/commentCount", json!({"postId": to}))
        .await;
    let mut from_ws = app.connect("u1", Some(&from_token)).await;
    let mut to_ws = app.connect("u2", Some(&to_token)).await;
    assert_eq!(
        wait_for(&mut from_ws, WAIT, update_of(&from_sig)).await["payload"]["data"],
        json!(2)
    );
    assert_eq!(
        wait_for(&mut to_ws, WAIT, update_of(&to_sig)).await["payload"]["data"],
        json!(0)
    );

    sqlx::query(
        "update comments set post_id = $2 where id = (select min(id) from comments where post_id = $1)",
    )
    .bind(from)
    .bind(to)
    .execute(&app.db)
    .await
    .expect("move");

    let left = wait_for(&mut from_ws, WAIT, update_of(&from_sig)).await;
    let arrived = wait_for(&mut to_ws, WAIT, update_of(&to_sig)).await;
    assert_eq!(left["payload"]["data"], json!(1));
    assert_eq!(arrived["payload"]["data"], json!(1));
    assert_eq!(left["payload"]["version"], json!(2));
}

every_feed!(#[tokio::test] a_ten_thousand_row_insert_leaves_every_subscriber_with_the_exact_count => bulk_insert);

async fn bulk_insert(feed: ChangeFeed) {
    let app = TestApp::spawn_feed(feed).await;
    let posts: Vec<i64> = sqlx::query_scalar(
        "insert into posts (title, author_id) select 'p' || i, 'a' from generate_series(1, 100) i returning id",
    )
    .fetch_all(&app.db)
    .await
    .expect("posts");
    let mut sockets = Vec::new();
    for (n, post) in posts.iter().enumerate() {
        let user = format!("u{}", n % 7);
        let (signature, ws, received) = app
            .watch(&user, "posts/stats/commentCount", json!({"postId": post}))
            .await;
        assert_eq!(received.value(&signature), Some(&json!(0)));
        sockets.push((*post, signature, ws, received));
    }

    app.insert_uneven_comments(&posts, 10_000).await;

    let mut total = 0;
    for (post, signature, ws, received) in &mut sockets {
        let expected = app.comment_count(*post).await;
        total += expected;
        converge_to(ws, received, signature, json!(expected)).await;
    }
    assert_eq!(total, 10_000);
}

every_feed!(#[tokio::test] soft_deleting_and_restoring_comments_updates_post_and_author_counts => soft_delete);

async fn soft_delete(feed: ChangeFeed) {
    let app = TestApp::spawn_feed(feed).await;
    let post = app.new_post().await;
    for _ in 0..3 {
        app.add_comment(post).await;
    }
    let author: String =
        sqlx::query_scalar("select author_id from comments where post_id = $1 limit 1")
            .bind(post)
            .fetch_one(&app.db)
            .await
            .expect("author");
    let written: i64 =
        sqlx::query_scalar("select count(*) from comments where author_id = $1 and not deleted")
            .bind(&author)
            .fetch_one(&app.db)
            .await
            .expect("written");
    let (post_sig, mut post_ws, mut post_seen) = app
        .watch("u1", "posts/stats/commentCount", json!({"postId": post}))
        .await;
    let (author_sig, mut author_ws, mut author_seen) = app
        .watch(
            &author,
            "users/activity/commentsWritten",
            json!({"userId": author}),
        )
        .await;
    assert_eq!(post_seen.value(&post_sig), Some(&json!(3)));
    assert_eq!(author_seen.value(&author_sig), Some(&json!(written)));

    sqlx::query("update comments set deleted = true where id in (select id from comments where post_id = $1 order by id limit 2)")
        .bind(post)
        .execute(&app.db)
        .await
        .expect("soft delete");
    converge_to(&mut post_ws, &mut post_seen, &post_sig, json!(1)).await;
    converge_to(
        &mut author_ws,
        &mut author_seen,
        &author_sig,
        json!(written - 2),
    )
    .await;

    sqlx::query("update comments set deleted = false where post_id = $1")
        .bind(post)
        .execute(&app.db)
        .await
        .expect("restore");
    converge_to(&mut post_ws, &mut post_seen, &post_sig, json!(3)).await;
    converge_to(
        &mut author_ws,
        &mut author_seen,
        &author_sig,
        json!(written),
    )
    .await;
}

#[tokio::test]
async fn a_range_subscription_sees_measurements_inside_its_window_only() {
    let app = TestApp::spawn().await;
    let window = json!({"userId": "u1", "type": "steps", "from": "2026-01-10", "to": "2026-01-13"});
    let later = json!({"userId": "u1", "type": "steps", "from": "2026-01-13", "to": "2026-02-01"});
    let (token, signature) = app
        .subscribe("u1", "measurements/rollups/dailySum", window)
        .await;
    let (later_token, later_sig) = app
        .subscribe("u1", "measurements/rollups/dailySum", later)
        .await;
    let mut ws = app.connect("u1", Some(&token)).await;
    let mut witness = app.connect("u1", Some(&later_token)).await;
    let snapshot = wait_for(&mut ws, WAIT, update_of(&signature)).await;
    assert_eq!(snapshot["payload"]["data"].as_f64(), Some(0.0));
    wait_for(&mut witness, WAIT, update_of(&later_sig)).await;

    let measure = |day: &'static str, value: f64| {
        sqlx::query(
            "insert into measurements (user_id, type, value, taken_at) values ('u1', 'steps', $1, $2::timestamptz)",
        )
        .bind(value)
        .bind(day)
        .execute(&app.db)
    };
    measure("2026-01-11 08:00:00+00", 1200.0)
        .await
        .expect("inside");
    let inside = wait_for(&mut ws, WAIT, update_of(&signature)).await;
    assert_eq!(inside["payload"]["data"].as_f64(), Some(1200.0));

    // The upper bound is exclusive: the 13th belongs to the later window only.
    measure("2026-01-13 00:00:00+00", 50.0).await.expect("edge");
    let seen = wait_for(&mut witness, WAIT, update_of(&later_sig)).await;
    assert_eq!(seen["payload"]["data"].as_f64(), Some(50.0));
    assert_silent(&mut ws, "a measurement outside the window sends nothing").await;

    measure("2026-01-10 00:00:00+00", 1.0)
        .await
        .expect("lower edge");
    let edge = wait_for(&mut ws, WAIT, update_of(&signature)).await;
    assert_eq!(edge["payload"]["data"].as_f64(), Some(1201.0));
}

#[tokio::test]
async fn an_array_subscription_updates_when_any_listed_post_changes() {
    let app = TestApp::spawn().await;
    let listed = [
        app.new_post().await,
        app.new_post().await,
        app.new_post().await,
    ];
    let unlisted = app.new_post().await;
    let (token, signature) = app
        .subscribe("u1", "posts/stats/counts", json!({"postIds": listed}))
        .await;
    let (witness_token, witness_sig) = app
        .subscribe(
            "u1",
            "posts/stats/commentCount",
            json!({"postId": unlisted}),
        )
        .await;
    let mut ws = app.connect("u1", Some(&token)).await;
    let mut witness = app.connect("u1", Some(&witness_token)).await;
    let snapshot = wait_for(&mut ws, WAIT, update_of(&signature)).await;
    assert_eq!(
        snapshot["payload"]["data"].as_array().map(Vec::len),
        Some(3)
    );
    wait_for(&mut witness, WAIT, update_of(&witness_sig)).await;

    for (n, post) in listed.iter().enumerate() {
        app.add_comment(*post).await;
        let update = wait_for(&mut ws, WAIT, update_of(&signature)).await;
        assert_eq!(update["payload"]["data"][n]["postId"], json!(post));
        assert_eq!(update["payload"]["data"][n]["commentCount"], json!(1));
    }

    app.add_comment(unlisted).await;
    wait_for(&mut witness, WAIT, update_of(&witness_sig)).await;
    assert_silent(&mut ws, "a post outside the list sends nothing").await;
}

/// "No updates?": at debug level the gateway says, per change, which table and columns it
/// carried and how many signatures it matched, and what each recompute gave. Read from the
/// binary's own stderr, as an operator would: a capture inside this test process would share
/// tracing's global state with every other test running beside it.
#[tokio::test]
async fn at_debug_level_each_change_its_matches_and_each_recompute_are_logged() {
    use tokio::io::AsyncReadExt;
    let (url, db) = crate::helpers::fresh_database().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let jwt_secret = "debug-log-test-jwt-secret-0123456789abcdefgh";
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_statgate"))
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("STATGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("STATGATE_QUERIES", crate::helpers::queries_dir())
        .env("STATGATE_JWT_SECRET", jwt_secret)
        .env(
            "STATGATE_TOKEN_SECRET",
            "debug-log-test-token-secret-0123456789abcdef",
        )
        .env("RUST_LOG", "statgate=debug")
        .env_remove("STATGATE_DEMO")
        .env_remove("STATGATE_LOG_FORMAT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("statgate starts");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    crate::helpers::wait_until_ready(&http, &base, WAIT).await;

    let post: i64 =
        sqlx::query_scalar("insert into posts (title, author_id) values ('t', 'a') returning id")
            .fetch_one(&db)
            .await
            .expect("post");
    let mut config = statgate::Config::for_tests(url.clone(), crate::helpers::queries_dir());
    config.auth.jwt_secrets = vec![statgate::config::Secret::new(jwt_secret)];
    let jwt = statgate::auth::Authenticator::new(&config)
        .mint_jwt("u1", Duration::from_secs(600))
        .expect("jwt");
    let reply: Value = http
        .post(format!("{base}/realtime/subscribe"))
        .json(&json!({"queryName": "posts/stats/commentCount", "args": {"postId": post}, "authToken": jwt}))
        .send()
        .await
        .expect("subscribe")
        .json()
        .await
        .expect("json");
    let token = reply["token"].as_str().expect("token");
    let signature = reply["signature"].as_str().expect("signature").to_owned();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://127.0.0.1:{port}/realtime/ws?authToken={jwt}&token={token}"
    ))
    .await
    .expect("connects");
    wait_for(&mut ws, WAIT, |e| {
        e["payload"]["signature"] == signature.as_str()
    })
    .await;
    sqlx::query("insert into comments (post_id, author_id, body) values ($1, 'a', 'hi')")
        .bind(post)
        .execute(&db)
        .await
        .expect("comment");
    wait_for(&mut ws, WAIT, |e| {
        update_of(&signature)(e) && e["payload"]["data"] == json!(1)
    })
    .await;
    // the recompute logs right after it hands the value over: give it a moment, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.start_kill().expect("kill");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .await
        .expect("stderr reads");

    let change = stderr.lines().find(|line| {
        line.contains("change")
            && line.contains("table=public.post_stats")
            && line.contains("matched=1")
    });
    assert!(change.is_some(), "no change line in:\n{stderr}");
    assert!(
        stderr
            .lines()
            .any(|line| line.contains("recomputed") && line.contains("Sent")),
        "no recompute line in:\n{stderr}"
    );
}
