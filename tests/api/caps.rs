//! What bounds the gateway's memory per user and per value: the signature limits (per user,
//! in all) and the value limits (rows, bytes), each with the error event a client gets.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::{assert_silent, next_event, send_json, wait_for, TestApp, Ws};

const WAIT: Duration = Duration::from_secs(20);

/// Sends a subscribe frame with `token` and returns the reply (`subscribed` or `error`).
async fn subscribe_frame(ws: &mut Ws, token: &str) -> Value {
    send_json(ws, json!({"type": "subscribe", "token": token})).await;
    wait_for(ws, WAIT, |e| {
        e["event"] == "subscribed" || e["event"] == "error"
    })
    .await
}

fn assert_too_many_signatures(reply: &Value, signature: &str, setting: &str) {
    assert_eq!(reply["event"], "error", "{reply}");
    assert_eq!(reply["payload"]["code"], "too_many_signatures", "{reply}");
    assert_eq!(reply["payload"]["signature"], signature, "{reply}");
    let message = reply["payload"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(setting), "{reply}");
}

#[tokio::test]
async fn a_user_past_1000_signatures_gets_too_many_signatures_and_one_it_already_follows_costs_nothing(
) {
    let app = TestApp::spawn().await;
    let posts: Vec<i64> = sqlx::query_scalar(
        "insert into posts (title, author_id) select 'p' || i, 'a' from generate_series(1, 1001) i returning id",
    )
    .fetch_all(&app.db)
    .await
    .expect("posts");
    let subscriptions: Vec<(String, String)> = futures_util::stream::iter(&posts)
        .map(|post| app.subscribe("u1", "posts/stats/commentCount", json!({"postId": post})))
        .buffered(32)
        .collect()
        .await;

    // 1,000 signatures on one socket (the per-socket limit is 1,000 too).
    let mut first = app.connect("u1", None).await;
    for (token, _) in &subscriptions[..1000] {
        send_json(&mut first, json!({"type": "subscribe", "token": token})).await;
    }
    let mut subscribed = 0;
    while subscribed < 1000 {
        let event = wait_for(&mut first, WAIT, |e| {
            e["event"] == "subscribed" || e["event"] == "error"
        })
        .await;
        assert_eq!(event["event"], "subscribed", "{event}");
        subscribed += 1;
    }

    let mut second = app.connect("u1", None).await;
    let (token, signature) = &subscriptions[1000];
    let refused = subscribe_frame(&mut second, token).await;
    assert_too_many_signatures(&refused, signature, "STATGATE_MAX_SIGNATURES_PER_USER");
    let again = subscribe_frame(&mut second, &subscriptions[0].0).await;
    assert_eq!(
        again["event"], "subscribed",
        "a signature the user already follows costs no place: {again}"
    );

    let (other_token, _) = app
        .subscribe(
            "u2",
            "posts/stats/commentCount",
            json!({"postId": posts[1000]}),
        )
        .await;
    let mut other = app.connect("u2", None).await;
    let theirs = subscribe_frame(&mut other, &other_token).await;
    assert_eq!(
        theirs["event"], "subscribed",
        "other users are not limited: {theirs}"
    );
    assert!(app
        .state
        .metrics()
        .render()
        .contains("statgate_refused_signatures_total{scope=\"user\"} 1"));
}

#[tokio::test]
async fn the_total_signature_limit_counts_only_new_signatures_and_applies_to_the_token_at_upgrade()
{
    let app = TestApp::spawn_with(|config| config.limits.max_signatures = 2).await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let post = app.new_post().await;
        tokens.push(
            app.subscribe("u1", "posts/stats/commentCount", json!({"postId": post}))
                .await,
        );
    }
    let mut u1 = app.connect("u1", None).await;
    assert_eq!(
        subscribe_frame(&mut u1, &tokens[0].0).await["event"],
        "subscribed"
    );
    assert_eq!(
        subscribe_frame(&mut u1, &tokens[1].0).await["event"],
        "subscribed"
    );
    let refused = subscribe_frame(&mut u1, &tokens[2].0).await;
    assert_too_many_signatures(&refused, &tokens[2].1, "STATGATE_MAX_SIGNATURES");

    // Another socket may follow an active signature: it costs no new one.
    let mut second = app.connect("u1", Some(&tokens[0].0)).await;
    wait_for(&mut second, WAIT, |e| e["event"] == "query:update").await;

    // The token given at the upgrade is refused the same way; the socket stays open.
    let mut at_upgrade = app.connect("u1", Some(&tokens[2].0)).await;
    let refused = wait_for(&mut at_upgrade, WAIT, |e| e["event"] == "error").await;
    assert_too_many_signatures(&refused, &tokens[2].1, "STATGATE_MAX_SIGNATURES");
    assert_silent(&mut at_upgrade, "no snapshot of a refused signature").await;

    // A signature that goes away frees its place.
    send_json(
        &mut u1,
        json!({"type": "unsubscribe", "signature": tokens[1].1}),
    )
    .await;
    wait_for(&mut u1, WAIT, |e| e["event"] == "unsubscribed").await;
    assert_eq!(
        subscribe_frame(&mut u1, &tokens[2].0).await["event"],
        "subscribed"
    );
    assert!(app
        .state
        .metrics()
        .render()
        .contains("statgate_refused_signatures_total{scope=\"server\"} 2"));
}

/// Inserts one reaction on `post` for each kind in `kinds` (a SQL expression over `i`).
async fn add_reaction_kinds(app: &TestApp, post: i64, count: i64, kind_sql: &str) {
    sqlx::query(&format!(
        "insert into reactions (post_id, user_id, kind) select $1, 'r', {kind_sql} from generate_series(1, $2) i"
    ))
    .bind(post)
    .bind(count)
    .execute(&app.db)
    .await
    .expect("reactions");
}

/// The next event, which must be a `value_too_large` error naming `setting`.
async fn expect_value_too_large(ws: &mut Ws, signature: &str, setting: &str) {
    let event = next_event(ws, WAIT).await.expect("an event");
    assert_eq!(
        event["event"], "error",
        "no value over the limit is sent: {event}"
    );
    assert_eq!(event["payload"]["code"], "value_too_large", "{event}");
    assert_eq!(event["payload"]["signature"], signature, "{event}");
    let message = event["payload"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(setting), "{event}");
}

#[tokio::test]
async fn a_value_over_1000_rows_or_64_kib_is_not_sent_and_its_followers_get_value_too_large_until_it_fits(
) {
    let app = TestApp::spawn().await;
    let post = app.new_post().await;
    let (signature, mut ws, _) = app
        .watch("u1", "posts/stats/reactionsByKind", json!({"postId": post}))
        .await;

    add_reaction_kinds(&app, post, 1001, "'kind-' || lpad(i::text, 4, '0')").await;
    expect_value_too_large(&mut ws, &signature, "STATGATE_MAX_VALUE_ROWS").await;

    // A new follower gets the error in place of a snapshot.
    let (token, _) = app
        .subscribe("u2", "posts/stats/reactionsByKind", json!({"postId": post}))
        .await;
    let mut late = app.connect("u2", Some(&token)).await;
    expect_value_too_large(&mut late, &signature, "STATGATE_MAX_VALUE_ROWS").await;
    assert_silent(&mut late, "no stale snapshot").await;

    // Back within the limits, the value is sent again, to both.
    sqlx::query("delete from reactions where post_id = $1 and kind > 'kind-0100'")
        .bind(post)
        .execute(&app.db)
        .await
        .expect("delete");
    for socket in [&mut ws, &mut late] {
        let update = wait_for(socket, WAIT, |e| e["event"] == "query:update").await;
        assert_eq!(
            update["payload"]["data"].as_array().map(Vec::len),
            Some(100)
        );
    }

    // 200 more kinds of 400 characters: under 1,000 rows, over 64 KiB.
    add_reaction_kinds(&app, post, 200, "'wide-' || lpad(i::text, 400, 'x')").await;
    expect_value_too_large(&mut ws, &signature, "STATGATE_MAX_VALUE_BYTES").await;
    let metrics = app.state.metrics().render();
    let counted = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(
                "statgate_values_too_large_total{query=\"posts/stats/reactionsByKind\"} ",
            )
        })
        .and_then(|n| n.parse::<u64>().ok());
    assert!(counted >= Some(2), "{metrics}");
}
