//! The realtime path: snapshot, pushes on change, silence for unrelated changes, frames.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{assert_pong, close_of, next_event, send_json, send_text, wait_for, TestApp};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn the_snapshot_equals_the_database_and_inserts_push_the_new_count() {
    let app = TestApp::spawn().await;
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
            .auth
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
    let app =
        TestApp::spawn_with(|config| config.jwt_secrets = vec![Secret::new(new), Secret::new(old)])
            .await;
    let signer = |secret: &str| {
        let mut config = Config::for_tests("postgres://unused/x".into(), "queries".into());
        config.jwt_secrets = vec![Secret::new(secret)];
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
