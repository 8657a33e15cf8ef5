//! The realtime path: snapshot, pushes on change, silence for unrelated changes, frames.

use std::time::Duration;

use serde_json::json;

use statgate::config::ChangeFeed;

use crate::helpers::{
    assert_pong, close_of, every_feed, next_event, send_json, send_text, wait_for, TestApp,
};

const WAIT: Duration = Duration::from_secs(10);

every_feed!(#[tokio::test] the_snapshot_equals_the_database_and_inserts_push_the_new_count => snapshot_and_inserts);

async fn snapshot_and_inserts(feed: ChangeFeed) {
    let app = TestApp::spawn_feed(feed).await;
    let post = app.new_post().await;
    let other = app.new_post().await;
    app.add_comment(post).await;
    let (token, signature) = app
        .subscribe("u1", "posts/stats/commentCount", json!({"postId": post}))
        .await;
    let (other_token, _) = app
        .subscribe("u1", "posts/stats/commentCount", json!({"postId": other}))
        .await;
    let mut ws = app.connect("u1", Some(&token)).await;
    let mut witness = app.connect("u1", Some(&other_token)).await;

    let snapshot = wait_for(&mut ws, WAIT, |e| e["event"] == "query:update").await;
    assert_eq!(snapshot["payload"]["signature"], signature);
    assert_eq!(
        snapshot["payload"]["data"],
        json!(app.comment_count(post).await)
    );
    assert_eq!(snapshot["payload"]["version"], 1);
    wait_for(&mut witness, WAIT, |e| e["event"] == "query:update").await;

    app.add_comment(post).await;
    let update = wait_for(&mut ws, WAIT, |e| e["event"] == "query:update").await;
    assert_eq!(update["payload"]["data"], json!(2));
    assert_eq!(update["payload"]["version"], 2);

    // A comment on another post: the witness socket sees it, ours stays silent.
    app.add_comment(other).await;
    let seen = wait_for(&mut witness, WAIT, |e| e["event"] == "query:update").await;
    assert_eq!(seen["payload"]["data"], json!(1));
    send_text(&mut ws, "ping").await;
    let next = next_event(&mut ws, WAIT).await.expect("pong");
    assert_eq!(
        next,
        json!({"event": "pong"}),
        "nothing but the pong arrives on the unrelated socket"
    );
}

#[tokio::test]
async fn one_socket_carries_many_subscriptions_and_bad_frames_get_errors() {
    let app = TestApp::spawn().await;
    let a = app.new_post().await;
    let b = app.new_post().await;
    let (token_a, sig_a) = app
        .subscribe("u1", "posts/stats/summary", json!({"postId": a}))
        .await;
    let (token_b, sig_b) = app
        .subscribe("u1", "posts/stats/counts", json!({"postIds": [a, b]}))
        .await;
    let mut ws = app.connect("u1", None).await;
    send_json(
        &mut ws,
        json!({"type": "subscribe", "token": token_a, "id": 1}),
    )
    .await;
    let reply = wait_for(&mut ws, WAIT, |e| e["event"] == "subscribed").await;
    assert_eq!(
        reply["payload"],
        json!({"queryName": "posts/stats/summary", "signature": sig_a, "id": 1})
    );
    send_json(&mut ws, json!({"type": "subscribe", "token": token_b})).await;
    wait_for(&mut ws, WAIT, |e| {
        e["payload"]["signature"] == sig_b && e["event"] == "query:update"
    })
    .await;

    app.add_comment(b).await;
    let rows = wait_for(&mut ws, WAIT, |e| {
        e["payload"]["signature"] == sig_b && e["payload"]["version"] == 2
    })
    .await;
    assert_eq!(rows["payload"]["data"][1]["commentCount"], json!(1));

    for bad in [
        "{",
        r#"{"type":"nope"}"#,
        r#"{"type":"subscribe"}"#,
        r#"{"type":"subscribe","token":"forged.token"}"#,
    ] {
        send_text(&mut ws, bad).await;
        let error = wait_for(&mut ws, WAIT, |e| e["event"] == "error").await;
        assert!(error["payload"]["code"].is_string(), "{bad}: {error}");
    }
    futures_util::SinkExt::send(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::binary(vec![1, 2, 3]),
    )
    .await
    .expect("send");
    let error = wait_for(&mut ws, WAIT, |e| e["event"] == "error").await;
    assert_eq!(error["payload"]["code"], "bad_frame");

    send_json(&mut ws, json!({"type": "unsubscribe", "signature": sig_a})).await;
    wait_for(&mut ws, WAIT, |e| e["event"] == "unsubscribed").await;
    assert_pong(&mut ws, "the socket still answers").await;
}

#[tokio::test]
async fn another_users_token_is_refused_before_the_upgrade() {
    let app = TestApp::spawn().await;
    let (token, _) = app
        .subscribe("u1", "posts/stats/commentCount", json!({"postId": 1}))
        .await;
    let url = format!(
        "ws://{}/realtime/ws?authToken={}&token={token}",
        app.address,
        app.jwt("u2")
    );
    let err = tokio_tungstenite::connect_async(url)
        .await
        .expect_err("refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(response) => assert_eq!(response.status(), 403),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
    let url = format!("ws://{}/realtime/ws?token={token}", app.address);
    match tokio_tungstenite::connect_async(url)
        .await
        .expect_err("refused")
    {
        tokio_tungstenite::tungstenite::Error::Http(response) => assert_eq!(response.status(), 401),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let app = TestApp::spawn().await;
    let (token, _) = app
        .subscribe("u1", "posts/stats/commentCount", json!({"postId": 1}))
        .await;
    let mut ws = app.connect("u1", Some(&token)).await;
    wait_for(&mut ws, WAIT, |e| e["event"] == "query:update").await;
    app.shutdown.cancel();
    assert_eq!(close_of(&mut ws).await.0, 1001);
    tokio::time::timeout(WAIT, app.done)
        .await
        .expect("stops in time")
        .expect("joined")
        .expect("served");
}

#[tokio::test]
async fn metrics_count_the_pipeline_and_the_commit_to_push_lag() {
    let app = TestApp::spawn().await;
    let post = app.new_post().await;
    let (token, signature) = app
        .subscribe("u1", "posts/stats/commentCount", json!({"postId": post}))
        .await;
    let mut ws = app.connect("u1", Some(&token)).await;
    wait_for(&mut ws, WAIT, |e| e["payload"]["signature"] == signature).await;
    app.add_comment(post).await;
    wait_for(&mut ws, WAIT, |e| e["payload"]["version"] == 2).await;

    let metrics = app.metrics_text().await;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{metrics}"))
    };
    assert_eq!(value("statgate_connections"), 1.0);
    assert_eq!(value("statgate_subscriptions"), 1.0);
    assert!(value("statgate_notifications_total") >= 1.0);
    assert!(value("statgate_pushes_total") >= 2.0);
    assert!(
        value("statgate_push_lag_seconds_count") >= 1.0,
        "the update carried a commit time"
    );
    for series in [
        "statgate_recomputes_total",
        "statgate_recompute_duration_seconds",
        "statgate_listener_reconnects_total",
        "statgate_coalesced_updates_total",
        "statgate_slow_consumer_closes_total",
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn sockets_over_the_per_user_limit_are_refused_before_the_upgrade_and_places_come_back() {
    let app = TestApp::spawn_with(|config| config.limits.max_sockets_per_user = 2).await;
    let (token, _) = app
        .subscribe("u1", "posts/stats/commentCount", json!({"postId": 1}))
        .await;
    let first = app.connect("u1", Some(&token)).await;
    let _second = app.connect("u1", Some(&token)).await;
    let url = format!(
        "ws://{}/realtime/ws?authToken={}&token={token}",
        app.address,
        app.jwt("u1")
    );
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            assert!(body.contains("too_many_sockets"), "{body}");
        }
        other => panic!("expected a 429 refusal, got {other:?}"),
    }
    // Another user is not affected, and a closed socket gives its place back.
    let (other_token, _) = app
        .subscribe("u2", "posts/stats/commentCount", json!({"postId": 1}))
        .await;
    let _other = app.connect("u2", Some(&other_token)).await;
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if tokio_tungstenite::connect_async(url.as_str()).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed socket's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn each_socket_limit_closes_with_4008_and_a_reason() {
    let app = TestApp::spawn_with(|config| {
        config.limits.max_frame_bytes = 1024;
        config.limits.max_subscriptions_per_socket = 2;
        config.limits.max_messages_per_sec = 5;
    })
    .await;
    let mut tokens = Vec::new();
    for post in 1..=3 {
        let (token, _) = app
            .subscribe("u1", "posts/stats/commentCount", json!({"postId": post}))
            .await;
        tokens.push(token);
    }

    let mut big = app.connect("u1", None).await;
    send_text(&mut big, &"x".repeat(2000)).await;
    let (code, reason) = close_of(&mut big).await;
    assert_eq!((code, reason.as_str()), (4008, "frame too large"));

    let mut many = app.connect("u1", Some(&tokens[0])).await;
    for token in &tokens[1..] {
        send_json(&mut many, json!({"type": "subscribe", "token": token})).await;
    }
    let (code, reason) = close_of(&mut many).await;
    assert_eq!(code, 4008);
    assert!(reason.contains("subscriptions"), "{reason}");

    let mut chatty = app.connect("u1", None).await;
    for _ in 0..10 {
        send_text(&mut chatty, "ping").await;
    }
    let (code, reason) = close_of(&mut chatty).await;
    assert_eq!(code, 4008);
    assert!(reason.contains("messages per second"), "{reason}");
}

#[tokio::test]
async fn an_expiring_jwt_closes_with_4001_unless_refreshed_by_the_same_user() {
    let app = TestApp::spawn().await;
    let short = |user: &str| {
        app.state
            .auth()
            .mint_jwt(user, Duration::from_secs(2))
            .expect("jwt")
    };
    let mut lapsing = app.connect_with_jwt(&short("u1"), None).await;
    let mut refreshed = app.connect_with_jwt(&short("u1"), None).await;
    send_json(
        &mut refreshed,
        json!({"type": "auth", "authToken": app.jwt("u1")}),
    )
    .await;
    wait_for(&mut refreshed, WAIT, |e| e["event"] == "authenticated").await;
    // Another user's JWT is no refresh.
    send_json(
        &mut refreshed,
        json!({"type": "auth", "authToken": app.jwt("u2"), "id": 9}),
    )
    .await;
    let refused = wait_for(&mut refreshed, WAIT, |e| e["event"] == "error").await;
    assert_eq!(refused["payload"]["id"], 9);

    let expired = wait_for(&mut lapsing, WAIT, |e| e["event"] == "error").await;
    assert_eq!(expired["payload"]["code"], "auth_expired");
    assert_eq!(close_of(&mut lapsing).await.0, 4001);

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_pong(
        &mut refreshed,
        "the refreshed socket outlived its first JWT",
    )
    .await;
}

#[tokio::test]
async fn a_socket_without_subscriptions_closes_with_4008_after_the_idle_timeout() {
    let app =
        TestApp::spawn_with(|config| config.limits.idle_timeout = Duration::from_secs(1)).await;
    let (token, signature) = app
        .subscribe("u1", "posts/stats/commentCount", json!({"postId": 1}))
        .await;
    let mut bare = app.connect("u1", None).await;
    let mut busy = app.connect("u1", Some(&token)).await;
    let mut emptied = app.connect("u1", Some(&token)).await;
    send_json(
        &mut emptied,
        json!({"type": "unsubscribe", "signature": signature}),
    )
    .await;

    let (code, reason) = close_of(&mut bare).await;
    assert_eq!(code, 4008);
    assert!(reason.starts_with("idle"), "{reason}");
    let (code, _) = close_of(&mut emptied).await;
    assert_eq!(
        code, 4008,
        "a socket whose last subscription went is idle too"
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_pong(&mut busy, "a socket holding a subscription is not idle").await;
}

#[tokio::test]
async fn a_rotated_jwt_secret_list_accepts_tokens_of_every_listed_secret_on_an_open_socket() {
    use statgate::auth::Authenticator;
    use statgate::config::{Config, Secret};
    let old = "old-jwt-secret-0123456789abcdefghijklmnop";
    let new = "new-jwt-secret-0123456789abcdefghijklmnop";
    // Mid-rotation the gateway lists the new secret first and still accepts the old one.
    let app = TestApp::spawn_with(|config| {
        config.auth.jwt_secrets = vec![Secret::new(new), Secret::new(old)]
    })
    .await;
    let signer = |secret: &str| {
        let mut config = Config::for_tests("postgres://unused/x".into(), "queries".into());
        config.auth.jwt_secrets = vec![Secret::new(secret)];
        Authenticator::new(&config)
    };
    let jwt = |secret: &str| {
        signer(secret)
            .mint_jwt("u1", Duration::from_secs(3600))
            .expect("jwt")
    };
    let (token, _) = app
        .subscribe("u1", "posts/stats/commentCount", json!({"postId": 1}))
        .await;
    let url = format!(
        "ws://{}/realtime/ws?authToken={}&token={token}",
        app.address,
        jwt(old)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("a JWT of the old secret still opens a socket");
    send_json(
        &mut ws,
        json!({"type": "auth", "authToken": jwt(new), "id": 1}),
    )
    .await;
    let refreshed = wait_for(&mut ws, WAIT, |e| {
        e["event"] == "authenticated" || e["event"] == "error"
    })
    .await;
    assert_eq!(refreshed["event"], "authenticated", "{refreshed}");
    send_json(&mut ws, json!({"type": "auth", "authToken": jwt("retired-jwt-secret-0123456789abcdefghijk"), "id": 2}))
    .await;
    let refused = wait_for(&mut ws, WAIT, |e| e["event"] == "error").await;
    assert_eq!(refused["payload"]["code"], "unauthorized", "{refused}");
    assert_eq!(refused["payload"]["id"], 2);
}

#[tokio::test]
async fn a_jwt_that_expires_in_the_far_future_neither_panics_nor_closes_the_socket() {
    let app = TestApp::spawn().await;
    let far = app.sign_jwt(json!({"sub": "u1", "exp": u64::MAX}));
    let mut ws = app.connect_with_jwt(&far, None).await;
    assert_pong(&mut ws, "a socket opened with a far-future JWT").await;

    let mut refreshed = app.connect("u1", None).await;
    send_json(&mut refreshed, json!({"type": "auth", "authToken": far})).await;
    wait_for(&mut refreshed, WAIT, |e| e["event"] == "authenticated").await;
    assert_pong(&mut refreshed, "a socket refreshed with a far-future JWT").await;
}

/// Steps of alice in one week: `measurements/rollups/dailyCount` has `auth = { userId = "sub" }`.
const ALICE_STEPS: &str =
    r#"{"from":"2026-11-16","to":"2026-11-23","type":"steps","userId":"alice"}"#;
const DAILY_COUNT: &str = "measurements/rollups/dailyCount";

/// Keys anyone could read in a source file or guess.
const CONSTANT_KEYS: [&str; 4] = [
    "statgate-demo-secret-do-not-use-in-production",
    "",
    "secret",
    "statgate",
];

/// The configuration demo mode derives from these flags, with its data directory in `dir`.
fn demo_config(dir: &tempfile::TempDir, flags: &[&str]) -> statgate::Config {
    use clap::Parser;
    /// The flags the binary shares with every subcommand.
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        settings: statgate::config::Settings,
    }
    let data_dir = dir.path().join("pgdata");
    let mut argv = vec![
        "statgate",
        "--demo",
        "--data-dir",
        data_dir.to_str().expect("utf-8"),
    ];
    argv.extend_from_slice(flags);
    Flags::try_parse_from(argv)
        .expect("flags parse")
        .settings
        .into_config()
        .expect("a demo configuration")
}

fn forger(key: &str) -> statgate::auth::Authenticator {
    let key = statgate::config::Secret::new(key);
    statgate::auth::Authenticator::from_parts(
        std::slice::from_ref(&key),
        std::slice::from_ref(&key),
        None,
        None,
        Duration::from_secs(600),
    )
}

#[tokio::test]
async fn demo_mode_with_one_secret_set_refuses_tokens_forged_with_a_constant_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Only the JWT secret is set: mallory holds a genuine JWT and forges a subscription token
    // for alice's steps.
    let only_jwt = demo_config(
        &dir,
        &["--jwt-secret", "configured-jwt-secret-0123456789abcdefghij"],
    );
    let app = TestApp::spawn_with(|config| {
        config.demo = true;
        config.auth.jwt_secrets = only_jwt.auth.jwt_secrets.clone();
        config.auth.token_secrets = only_jwt.auth.token_secrets.clone();
    })
    .await;
    let mallory = app.jwt("mallory");
    for key in CONSTANT_KEYS {
        let (forged, _) = forger(key).sign_token("mallory", DAILY_COUNT, ALICE_STEPS);
        assert_eq!(
            app.upgrade(&mallory, Some(&forged)).await,
            (401, Some("unauthorized".to_owned())),
            "a subscription token signed with {key:?}"
        );
        let mut ws = app.connect("mallory", None).await;
        send_json(
            &mut ws,
            json!({"type": "subscribe", "token": forged, "id": 1}),
        )
        .await;
        let reply = wait_for(&mut ws, WAIT, |e| {
            e["event"] == "error" || e["event"] == "subscribed"
        })
        .await;
        assert_eq!(reply["payload"]["code"], "unauthorized", "{key:?}: {reply}");
    }

    // Only the token secret is set: a JWT forged with a constant key is refused.
    let dir = tempfile::tempdir().expect("tempdir");
    let only_token = demo_config(
        &dir,
        &[
            "--token-secret",
            "configured-token-secret-0123456789abcdefgh",
        ],
    );
    let app = TestApp::spawn_with(|config| {
        config.demo = true;
        config.auth.jwt_secrets = only_token.auth.jwt_secrets.clone();
        config.auth.token_secrets = only_token.auth.token_secrets.clone();
    })
    .await;
    for key in CONSTANT_KEYS {
        let forged = forger(key)
            .mint_jwt("alice", Duration::from_secs(600))
            .expect("jwt");
        let response = app
            .post_subscribe(json!({"queryName": DAILY_COUNT, "args": serde_json::from_str::<serde_json::Value>(ALICE_STEPS).expect("args"), "authToken": forged}))
            .await;
        assert_eq!(response.status(), 401, "a JWT signed with {key:?}");
        assert_eq!(app.upgrade(&forged, None).await.0, 401, "{key:?}");
    }
    assert_eq!(app.upgrade(&app.jwt("alice"), None).await.0, 101);
}

#[tokio::test]
async fn a_subscription_whose_auth_rule_the_sockets_jwt_fails_is_forbidden() {
    let app = TestApp::spawn().await;
    // A token for mallory over alice's data, signed with the gateway's own key (as a leaked
    // key, or a token signed before the rule existed, would be): the socket checks the rule.
    let (token, _) = app
        .state
        .auth()
        .sign_token("mallory", DAILY_COUNT, ALICE_STEPS);
    assert_eq!(
        app.upgrade(&app.jwt("mallory"), Some(&token)).await,
        (403, Some("forbidden".to_owned()))
    );
    let mut ws = app.connect("mallory", None).await;
    send_json(
        &mut ws,
        json!({"type": "subscribe", "token": token, "id": 7}),
    )
    .await;
    let reply = wait_for(&mut ws, WAIT, |e| {
        e["event"] == "error" || e["event"] == "subscribed"
    })
    .await;
    assert_eq!(reply["event"], "error", "{reply}");
    assert_eq!(reply["payload"]["code"], "forbidden", "{reply}");
    assert_eq!(reply["payload"]["id"], 7);
    assert!(app.state.hub().is_empty(), "nothing was attached");

    // Alice herself subscribes as before.
    let args: serde_json::Value = serde_json::from_str(ALICE_STEPS).expect("args");
    let (signature, _ws, received) = app.watch("alice", DAILY_COUNT, args).await;
    assert_eq!(received.value(&signature), Some(&json!(0)));
}

#[tokio::test]
async fn an_auth_frame_whose_claims_fail_a_rule_drops_that_subscription_with_forbidden() {
    // A rule on a claim other than the user's, which an auth frame may change.
    let queries = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(queries.path().join("orgs")).expect("mkdir");
    std::fs::write(
        queries.path().join("orgs/stats.toml"),
        "[posts]\nsql = \"SELECT count(*)::int8 AS n FROM post_stats WHERE :org <> ''\"\nargs = { org = \"text\" }\nreturns = \"value\"\nauth = { org = \"org\" }\nwatch = [{ table = \"post_stats\" }]\n\n[open]\nsql = \"SELECT :org AS org\"\nargs = { org = \"text\" }\nreturns = \"value\"\nwatch = [{ table = \"post_stats\" }]\n",
    )
    .expect("query file");
    let app = TestApp::spawn_with(|config| {
        config.queries = statgate::config::Queries::Directory(queries.path().to_owned())
    })
    .await;
    let exp = statgate::auth::now_secs() + 3600;
    let jwt = |org: &str| app.sign_jwt(json!({"sub": "u1", "org": org, "exp": exp}));
    let app = &app;
    let subscribe = |query: &'static str| {
        let jwt = jwt("acme");
        async move {
            let response = app
                .post_subscribe(
                    json!({"queryName": query, "args": {"org": "acme"}, "authToken": jwt}),
                )
                .await;
            assert_eq!(response.status(), 200);
            let body: serde_json::Value = response.json().await.expect("json");
            (
                body["token"].as_str().expect("token").to_owned(),
                body["signature"].as_str().expect("signature").to_owned(),
            )
        }
    };
    let (guarded, guarded_signature) = subscribe("orgs/stats/posts").await;
    let (open, open_signature) = subscribe("orgs/stats/open").await;
    let mut ws = app.connect_with_jwt(&jwt("acme"), Some(&guarded)).await;
    send_json(&mut ws, json!({"type": "subscribe", "token": open})).await;
    let mut received = crate::helpers::Received::default();
    crate::helpers::read_until(&mut ws, &mut received, WAIT, |r| {
        r.value(&guarded_signature).is_some() && r.value(&open_signature).is_some()
    })
    .await;

    // The same claims again: nothing changes.
    send_json(
        &mut ws,
        json!({"type": "auth", "authToken": jwt("acme"), "id": 1}),
    )
    .await;
    let same = wait_for(&mut ws, WAIT, |e| {
        e["event"] == "authenticated" || e["event"] == "error"
    })
    .await;
    assert_eq!(same["event"], "authenticated", "{same}");

    // Another org: the guarded subscription goes, with a forbidden error naming it.
    send_json(
        &mut ws,
        json!({"type": "auth", "authToken": jwt("globex"), "id": 2}),
    )
    .await;
    let dropped = wait_for(&mut ws, WAIT, |e| e["event"] == "error").await;
    assert_eq!(dropped["payload"]["code"], "forbidden", "{dropped}");
    assert_eq!(dropped["payload"]["signature"], guarded_signature.as_str());
    let refreshed = wait_for(&mut ws, WAIT, |e| e["event"] == "authenticated").await;
    assert_eq!(refreshed["payload"]["id"], 2);
    crate::helpers::wait_until(WAIT, "the guarded signature left the hub", || {
        app.state.metrics().subscriptions.get() == 1
    })
    .await;
    send_json(
        &mut ws,
        json!({"type": "unsubscribe", "signature": guarded_signature}),
    )
    .await;
    let gone = wait_for(&mut ws, WAIT, |e| e["event"] == "error").await;
    assert_eq!(gone["payload"]["code"], "not_subscribed", "{gone}");
    send_json(
        &mut ws,
        json!({"type": "unsubscribe", "signature": open_signature}),
    )
    .await;
    wait_for(&mut ws, WAIT, |e| e["event"] == "unsubscribed").await;
}
