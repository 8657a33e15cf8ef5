//! Demo mode's page and endpoints: present only in demo mode, strict about their input, and
//! their writes reach the database (and so the subscribers) like any application's writes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{wait_for, TestApp};

async fn demo_app() -> TestApp {
    TestApp::spawn_with(|config| config.demo = true).await
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

impl TestApp {
    async fn demo(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        json_of(
            self.http
                .request(method, self.url(path))
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    async fn traffic(&self, body: Value) -> (u16, Value) {
        json_of(
            self.http
                .post(self.url("/demo/api/traffic"))
                .json(&body)
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    async fn reaction_count(&self, post: i64) -> i64 {
        sqlx::query_scalar("select count(*) from reactions where post_id = $1")
            .bind(post)
            .fetch_one(&self.db)
            .await
            .expect("count")
    }
}

/// Rows written to the example tables so far (a soft delete counts as one more).
async fn example_writes(db: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "select (select count(*) from comments) + (select count(*) from reactions) \
              + (select count(*) from measurements) \
              + (select count(*) from comments where deleted)",
    )
    .fetch_one(db)
    .await
    .expect("count")
}

#[tokio::test]
async fn the_demo_page_is_served_at_the_root_in_demo_mode() {
    let app = demo_app().await;
    let response = app.http.get(app.url("/")).send().await.expect("request");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = response.text().await.expect("body");
    assert!(html.contains(r#"id="posts""#) && html.contains("/demo/assets/app.js"));

    for asset in ["/demo/assets/app.js", "/demo/assets/style.css"] {
        let response = app.http.get(app.url(asset)).send().await.expect("request");
        assert_eq!(response.status(), 200, "{asset}");
    }
}

#[tokio::test]
async fn outside_demo_mode_the_page_and_the_demo_api_do_not_exist() {
    let app = TestApp::spawn().await;
    let post = app.new_post().await;
    for (method, path) in [
        (reqwest::Method::GET, "/".to_owned()),
        (reqwest::Method::GET, "/demo/api/token".to_owned()),
        (reqwest::Method::GET, "/demo/api/posts".to_owned()),
        (reqwest::Method::GET, "/demo/assets/app.js".to_owned()),
        (
            reqwest::Method::POST,
            format!("/demo/api/posts/{post}/comments"),
        ),
        (reqwest::Method::POST, "/demo/api/traffic".to_owned()),
    ] {
        let (status, body) = app.demo(method, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    assert_eq!(app.comment_count(post).await, 0);
}

#[tokio::test]
async fn the_post_list_and_the_token_are_for_the_demo_user() {
    let app = demo_app().await;
    let (status, body) = app.demo(reqwest::Method::GET, "/demo/api/posts").await;
    assert_eq!(status, 200, "{body}");
    let posts = body["posts"].as_array().expect("posts");
    assert!(!posts.is_empty(), "the demo seed made posts");
    assert!(posts[0]["id"].is_i64() && posts[0]["title"].is_string());

    let (status, body) = app.demo(reqwest::Method::GET, "/demo/api/token").await;
    assert_eq!(status, 200, "{body}");
    let jwt = body["authToken"].as_str().expect("authToken");
    let claims = app.state.auth().verify_jwt(jwt).expect("a valid JWT");
    assert_eq!(claims.user, "alice");
}

#[tokio::test]
async fn adding_and_deleting_comments_changes_the_database() {
    let app = demo_app().await;
    let post = app.new_post().await;
    let path = format!("/demo/api/posts/{post}/comments");

    let (status, body) = app.demo(reqwest::Method::POST, &path).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["postId"], post);
    app.demo(reqwest::Method::POST, &path).await;
    assert_eq!(app.comment_count(post).await, 2);

    let (status, body) = app.demo(reqwest::Method::DELETE, &path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.comment_count(post).await, 1);
    app.demo(reqwest::Method::DELETE, &path).await;
    assert_eq!(app.comment_count(post).await, 0);

    let (status, body) = app.demo(reqwest::Method::DELETE, &path).await;
    assert_eq!(status, 404, "nothing left to delete: {body}");
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn adding_and_deleting_reactions_changes_the_database() {
    let app = demo_app().await;
    let post = app.new_post().await;
    let path = format!("/demo/api/posts/{post}/reactions");

    let (status, _) = app.demo(reqwest::Method::POST, &path).await;
    assert_eq!(status, 201);
    assert_eq!(app.reaction_count(post).await, 1);
    let (status, _) = app.demo(reqwest::Method::DELETE, &path).await;
    assert_eq!(status, 200);
    assert_eq!(app.reaction_count(post).await, 0);
    let (status, _) = app.demo(reqwest::Method::DELETE, &path).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn malformed_or_unknown_post_ids_get_a_clear_4xx() {
    let app = demo_app().await;
    for bad in ["abc", "0", "-1", "1.5", "%20", "99999999999999999999"] {
        for method in [reqwest::Method::POST, reqwest::Method::DELETE] {
            let path = format!("/demo/api/posts/{bad}/comments");
            let (status, body) = app.demo(method, &path).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert_eq!(body["error"]["code"], "invalid_request", "{path}");
        }
    }
    for path in [
        "/demo/api/posts/987654321/comments",
        "/demo/api/posts/987654321/reactions",
    ] {
        let (status, body) = app.demo(reqwest::Method::POST, path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["message"], "post 987654321 does not exist");
        let (status, _) = app.demo(reqwest::Method::DELETE, path).await;
        assert_eq!(status, 404, "{path}");
    }
}

#[tokio::test]
async fn a_demo_write_reaches_a_subscriber() {
    let app = demo_app().await;
    let post = app.new_post().await;
    let (token, signature) = app
        .subscribe(
            "alice",
            "posts/stats/commentCount",
            json!({ "postId": post }),
        )
        .await;
    let mut ws = app.connect("alice", Some(&token)).await;
    wait_for(&mut ws, Duration::from_secs(10), |event| {
        event["payload"]["signature"] == signature.as_str() && event["payload"]["data"] == 0
    })
    .await;

    app.demo(
        reqwest::Method::POST,
        &format!("/demo/api/posts/{post}/comments"),
    )
    .await;
    wait_for(&mut ws, Duration::from_secs(10), |event| {
        event["event"] == "query:update" && event["payload"]["data"] == 1
    })
    .await;
}

#[tokio::test]
async fn traffic_writes_at_a_bounded_rate_and_stops_when_switched_off() {
    let app = demo_app().await;
    let (status, body) = app.traffic(json!({ "enabled": true, "rate": 20 })).await;
    let started = Instant::now();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enabled"], true);
    assert_eq!(body["rate"], 20);

    // Writes arrive (bounded wait), and never faster than the rate allows.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut writes = 0;
    while writes < 10 {
        assert!(Instant::now() < deadline, "traffic made no writes");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_, status) = app.demo(reqwest::Method::GET, "/demo/api/traffic").await;
        writes = status["writes"].as_u64().expect("writes");
    }
    let (status, body) = app.traffic(json!({ "enabled": false })).await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(status, 200);
    assert_eq!(body["enabled"], false);
    let total = body["writes"].as_u64().expect("writes");
    assert!(
        total as f64 <= 20.0 * elapsed + 1.0,
        "{total} writes in {elapsed:.2} s exceed 20/s"
    );

    // Once switched off, the database stops changing.
    let before = example_writes(&app.db).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(example_writes(&app.db).await, before);
    let (_, status) = app.demo(reqwest::Method::GET, "/demo/api/traffic").await;
    assert_eq!(status["writes"].as_u64(), Some(total));
}

#[tokio::test]
async fn traffic_refuses_a_rate_out_of_bounds_or_a_malformed_body() {
    let app = demo_app().await;
    for rate in [0, 51, 10_000] {
        let (status, body) = app.traffic(json!({ "enabled": true, "rate": rate })).await;
        assert_eq!(status, 400, "rate {rate}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request");
    }
    for body in [
        json!({ "rate": 5 }),
        json!({ "enabled": "yes" }),
        json!([1]),
    ] {
        let (status, reply) = app.traffic(body.clone()).await;
        assert_eq!(status, 400, "{body}: {reply}");
        assert_eq!(reply["error"]["code"], "invalid_json");
    }
    let (_, status) = app.demo(reqwest::Method::GET, "/demo/api/traffic").await;
    assert_eq!(status["enabled"], false);
}

#[tokio::test]
async fn traffic_stops_at_shutdown() {
    let app = demo_app().await;
    let (status, _) = app.traffic(json!({ "enabled": true, "rate": 50 })).await;
    assert_eq!(status, 200);
    let TestApp {
        shutdown, done, db, ..
    } = app;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), done)
        .await
        .expect("the gateway stops within the grace period")
        .expect("the server task")
        .expect("the server");

    let before = example_writes(&db).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(example_writes(&db).await, before);
}

/// `statgate check` prepares every statement at start-up; the connection it used must still
/// run recomputes (its statement cache once typed the args parameter as binary jsonb, and
/// every recompute on that connection failed). One pool connection makes that deterministic.
#[tokio::test]
async fn the_connection_that_checked_the_registry_still_recomputes() {
    let app = TestApp::spawn_with(|config| {
        config.demo = true;
        config.recompute.pool_size = 1;
    })
    .await;
    let post = app.new_post().await;
    for query in ["posts/stats/commentCount", "posts/stats/reactionCount"] {
        let (token, signature) = app
            .subscribe("alice", query, json!({ "postId": post }))
            .await;
        let mut ws = app.connect("alice", Some(&token)).await;
        wait_for(&mut ws, Duration::from_secs(5), |event| {
            event["event"] == "query:update" && event["payload"]["signature"] == signature.as_str()
        })
        .await;
    }
}
