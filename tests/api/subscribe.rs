//! POST /realtime/subscribe and /realtime/subscribe/batch: the reply shapes and every error status.

use serde_json::{json, Value};

use crate::helpers::{read_until, Received, TestApp};

async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("errors are JSON");
    (
        status,
        body["error"]["code"]
            .as_str()
            .expect("error code")
            .to_owned(),
    )
}

#[tokio::test]
async fn a_valid_request_gets_a_token_a_signature_and_the_websocket_details() {
    let app = TestApp::spawn().await;
    let response = app
        .post_subscribe(json!({"queryName": "posts/stats/commentCount", "args": {"postId": "17"}, "authToken": app.jwt("u1")}))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["signature"],
        r#"posts/stats/commentCount::{"postId":17}"#
    );
    assert!(body["token"].as_str().is_some_and(|t| t.contains('.')));
    assert!(body["expiresAt"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        body["websocket"]["url"],
        format!("ws://{}/realtime/ws", app.address)
    );
    assert_eq!(body["websocket"]["protocol"], "statgate.realtime.v1");
    assert_eq!(
        body["websocket"]["params"],
        json!({"tokenParam": "token", "authTokenParam": "authToken"})
    );
}

#[tokio::test]
async fn the_jwt_may_come_in_an_authorization_header() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .post(app.url("/realtime/subscribe"))
        .bearer_auth(app.jwt("u1"))
        .json(&json!({"queryName": "posts/stats/commentCount", "args": {"postId": 1}}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn bad_requests_get_precise_json_errors() {
    let app = TestApp::spawn().await;
    let jwt = app.jwt("u1");
    let post_raw = |body: &'static str, content_type: &'static str| {
        app.http
            .post(app.url("/realtime/subscribe"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_eq!(
        error_of(
            post_raw("{not json", "application/json")
                .await
                .expect("sent")
        )
        .await,
        (400, "invalid_json".into())
    );
    assert_eq!(
        error_of(post_raw("[]", "application/json").await.expect("sent")).await,
        (400, "invalid_json".into())
    );
    assert_eq!(
        error_of(post_raw("{}", "text/plain").await.expect("sent")).await,
        (415, "unsupported_media_type".into())
    );
    let huge = format!(
        r#"{{"queryName":"x","args":{{"pad":"{}"}}}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    let response = app
        .http
        .post(app.url("/realtime/subscribe"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("sent");
    assert_eq!(error_of(response).await, (413, "payload_too_large".into()));

    for (args, arg) in [
        (json!({}), "postId"),
        (json!({"postId": "abc"}), "postId"),
        (json!({"postId": 1, "extra": 2}), "extra"),
        (json!({"postId": 1.5}), "postId"),
        (json!({"postId": "99999999999999999999"}), "postId"),
    ] {
        let response = app
            .post_subscribe(
                json!({"queryName": "posts/stats/commentCount", "args": args, "authToken": jwt}),
            )
            .await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("json");
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_args")),
            "{args}: {body}"
        );
        assert_eq!(body["error"]["details"][0]["arg"], arg, "{body}");
    }
    let response = app
        .post_subscribe(json!({"queryName": "posts/stats/nope", "args": {}, "authToken": jwt}))
        .await;
    assert_eq!(error_of(response).await, (404, "unknown_query".into()));
}

#[tokio::test]
async fn missing_forged_and_expired_jwts_are_unauthorized() {
    let app = TestApp::spawn().await;
    let query = "posts/stats/commentCount";
    let missing = app
        .post_subscribe(json!({"queryName": query, "args": {"postId": 1}}))
        .await;
    assert_eq!(
        missing
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert_eq!(error_of(missing).await, (401, "unauthorized".into()));

    let forged = statgate::auth::Authenticator::from_parts(
        &[statgate::config::Secret::new(
            "another-secret-entirely-0123456789abcdef",
        )],
        &[statgate::config::Secret::new(
            "another-secret-entirely-0123456789abcdef",
        )],
        None,
        None,
        std::time::Duration::from_secs(60),
    )
    .mint_jwt("u1", std::time::Duration::from_secs(60))
    .expect("mint");
    let response = app
        .post_subscribe(json!({"queryName": query, "args": {"postId": 1}, "authToken": forged}))
        .await;
    assert_eq!(error_of(response).await, (401, "unauthorized".into()));

    let response = app
        .post_subscribe(json!({"queryName": query, "args": {"postId": 1}, "authToken": "a.b.c"}))
        .await;
    assert_eq!(error_of(response).await, (401, "unauthorized".into()));

    let expired = app.sign_jwt(json!({"sub": "u1", "exp": statgate::auth::now_secs() - 5}));
    let response = app
        .post_subscribe(json!({"queryName": query, "args": {"postId": 1}, "authToken": expired}))
        .await;
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["message"], "authToken expired");
}

#[tokio::test]
async fn auth_rules_forbid_other_users_data() {
    let app = TestApp::spawn().await;
    let args =
        json!({"userId": "alice", "type": "steps", "from": "2026-11-16", "to": "2026-11-23"});
    let mine = app.post_subscribe(json!({"queryName": "measurements/rollups/dailyCount", "args": args, "authToken": app.jwt("alice")})).await;
    assert_eq!(mine.status(), 200);
    let theirs = app.post_subscribe(json!({"queryName": "measurements/rollups/dailyCount", "args": args, "authToken": app.jwt("bob")})).await;
    assert_eq!(error_of(theirs).await, (403, "forbidden".into()));
}

#[tokio::test]
async fn health_queries_and_unknown_routes() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
    assert_eq!(
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
    let queries: Value = app
        .http
        .get(app.url("/realtime/queries"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = queries["queries"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|q| q["name"].as_str())
        .collect();
    assert!(names.contains(&"posts/stats/counts"), "{names:?}");
    let missing = app.http.get(app.url("/nope")).send().await.expect("sent");
    assert_eq!(error_of(missing).await, (404, "not_found".into()));
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("statgate_listener_connected 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn subscribe_requests_over_the_rate_get_429_with_retry_after_per_user_and_per_address() {
    let app = TestApp::spawn_with(|config| {
        config.limits.subscribe_per_sec_per_user = 5;
        config.limits.subscribe_per_sec_per_ip = 20;
    })
    .await;
    let request = |user: &str| {
        app.post_subscribe(json!({"queryName": "posts/stats/commentCount", "args": {"postId": 1}, "authToken": app.jwt(user)}))
    };
    // A user may burst to twice the rate, then is refused with a precise error and a wait.
    // (Loops rather than fixed counts: on a loaded machine a token may refill meanwhile.)
    let mut accepted = 0;
    let refused = loop {
        let response = request("u1").await;
        if response.status() == 429 {
            break response;
        }
        assert_eq!(response.status(), 200);
        accepted += 1;
        assert!(accepted < 40, "u1 was never limited");
    };
    assert!(accepted >= 10, "the burst of twice the rate ({accepted})");
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("user")));

    // Other users are not held back by u1, until the address's own budget (40) runs out.
    let mut statuses = Vec::new();
    let refused = loop {
        let response = request(&format!("other{}", statuses.len())).await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            break response;
        }
        assert!(
            statuses.len() < 200,
            "the address was never limited: {statuses:?}"
        );
    };
    assert!(statuses.contains(&200), "{statuses:?}");
    let body: serde_json::Value = refused.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("address")),
        "{body}"
    );
}

#[tokio::test]
async fn args_over_the_size_limit_get_400_invalid_args_naming_the_setting() {
    let app = TestApp::spawn_with(|config| config.limits.max_args_bytes = 64).await;
    let subscribe = |ids: Vec<i64>| {
        app.post_subscribe(json!({"queryName": "posts/stats/counts", "args": {"postIds": ids}, "authToken": app.jwt("u1")}))
    };
    assert_eq!(subscribe(vec![1, 2, 3]).await.status(), 200);
    let refused = subscribe((1..=40).collect()).await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_args");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the limit is 64") && message.contains("STATGATE_MAX_ARGS_BYTES"),
        "{message}"
    );
}

#[tokio::test]
async fn the_forwarded_address_counts_for_per_address_limits_only_behind_a_trusted_proxy() {
    for trusted in [true, false] {
        let app = TestApp::spawn_with(|config| {
            config.limits.subscribe_per_sec_per_ip = 1;
            config.limits.trust_forwarded_for = trusted;
        })
        .await;
        let request = |client: &'static str| {
            app.http
                .post(app.url("/realtime/subscribe"))
                .header("x-forwarded-for", format!("198.51.100.1, {client}"))
                .json(&json!({"queryName": "posts/stats/commentCount", "args": {"postId": 1}, "authToken": app.jwt("u1")}))
                .send()
        };
        // Each address may burst to twice its rate (2), then is refused.
        for _ in 0..2 {
            assert_eq!(request("203.0.113.1").await.expect("sent").status(), 200);
        }
        assert_eq!(request("203.0.113.1").await.expect("sent").status(), 429);
        let other_client = request("203.0.113.2").await.expect("sent").status();
        if trusted {
            assert_eq!(
                other_client, 200,
                "another client behind the proxy has its own budget"
            );
        } else {
            assert_eq!(
                other_client, 429,
                "the header is ignored: every request is the peer's"
            );
        }
    }
}

#[tokio::test]
async fn args_whose_token_would_be_refused_by_the_socket_get_400_instead() {
    // A registry whose text arg may be long, and an args limit raised far enough that
    // escaping, not the setting, is what stops these args.
    let queries = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(queries.path().join("notes")).expect("mkdir");
    std::fs::write(
        queries.path().join("notes/echo.toml"),
        "[echo]\nsql = \"SELECT :note AS note\"\nargs = { note = { type = \"text\", maxLength = 10000 } }\nreturns = \"value\"\nwatch = [{ table = \"post_stats\" }]\n",
    )
    .expect("query file");
    let app = TestApp::spawn_with(|config| {
        config.queries = statgate::config::Queries::Directory(queries.path().to_owned());
        config.limits.max_args_bytes = 64 * 1024;
    })
    .await;
    let subscribe = |note: String| {
        app.post_subscribe(json!({"queryName": "notes/echo/echo", "args": {"note": note}, "authToken": app.jwt("u1")}))
    };
    assert_eq!(subscribe("x".repeat(3000)).await.status(), 200);
    // 3,000 control characters: each becomes \u0001 (6 bytes) inside the token's claims.
    let refused = subscribe("\u{1}".repeat(3000)).await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_args");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("subscription token")),
        "{body}"
    );
}

#[tokio::test]
async fn a_jwt_not_valid_yet_or_with_a_critical_header_is_unauthorized() {
    let app = TestApp::spawn().await;
    let now = statgate::auth::now_secs();
    let claims = json!({"sub": "u1", "exp": now + 600});
    let subscribe = |jwt: String| {
        app.post_subscribe(
            json!({"queryName": "posts/stats/commentCount", "args": {"postId": 1}, "authToken": jwt}),
        )
    };
    let due = app.sign_jwt(json!({"sub": "u1", "exp": now + 600, "nbf": now - 5}));
    assert_eq!(
        subscribe(due).await.status(),
        200,
        "nbf in the past is fine"
    );

    let early = app.sign_jwt(json!({"sub": "u1", "exp": now + 600, "nbf": now + 300}));
    let header = jsonwebtoken::Header {
        crit: Some(vec!["exp".to_owned()]),
        ..Default::default()
    };
    let critical = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(
            app.state.config().auth.jwt_secrets[0].expose().as_bytes(),
        ),
    )
    .expect("jwt");
    for (why, jwt) in [("nbf in the future", early), ("crit", critical)] {
        let response = subscribe(jwt.clone()).await;
        assert_eq!(response.status(), 401, "{why}");
        assert_eq!(error_of(response).await, (401, "unauthorized".into()));
        assert_eq!(
            app.upgrade(&jwt, None).await,
            (401, Some("unauthorized".to_owned())),
            "{why}"
        );
    }
}

async fn post_batch(app: &TestApp, body: Value) -> reqwest::Response {
    app.http
        .post(app.url("/realtime/subscribe/batch"))
        .json(&body)
        .send()
        .await
        .expect("request")
}

/// `n` valid entries (distinct posts).
fn batch_of(n: i64) -> Vec<Value> {
    (1..=n)
        .map(|post| json!({"queryName": "posts/stats/commentCount", "args": {"postId": post}}))
        .collect()
}

#[tokio::test]
async fn a_batch_answers_each_subscription_on_its_own_in_request_order() {
    let app = TestApp::spawn().await;
    let post = app.new_post().await;
    let bobs_week =
        json!({"userId": "bob", "type": "steps", "from": "2026-11-16", "to": "2026-11-23"});
    let alices_week =
        json!({"userId": "alice", "type": "steps", "from": "2026-11-16", "to": "2026-11-23"});
    let response = post_batch(
        &app,
        json!({"authToken": app.jwt("bob"), "subscriptions": [
            {"queryName": "posts/stats/commentCount", "args": {"postId": post.to_string()}},
            {"queryName": "posts/stats/nope", "args": {}},
            {"queryName": "posts/stats/commentCount", "args": {"postId": "abc"}},
            {"queryName": "measurements/rollups/dailyCount", "args": alices_week},
            {"queryName": "measurements/rollups/dailyCount", "args": bobs_week},
        ]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 5, "{body}");

    assert_eq!(
        results[0]["signature"],
        format!(r#"posts/stats/commentCount::{{"postId":{post}}}"#)
    );
    assert!(results[0]["expiresAt"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let outcome = |i: usize| {
        (
            results[i]["error"]["status"].as_u64(),
            results[i]["error"]["code"].as_str(),
        )
    };
    assert_eq!(outcome(1), (Some(404), Some("unknown_query")), "{body}");
    assert_eq!(outcome(2), (Some(400), Some("invalid_args")), "{body}");
    assert_eq!(results[2]["error"]["details"][0]["arg"], "postId", "{body}");
    assert_eq!(outcome(3), (Some(403), Some("forbidden")), "{body}");
    assert!(results[4]["token"].is_string(), "{body}");
    assert!(results[1].get("token").is_none(), "{body}");

    // The websocket object is the single endpoint's.
    let single: Value = app
        .post_subscribe(json!({"queryName": "posts/stats/commentCount", "args": {"postId": post}, "authToken": app.jwt("bob")}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["websocket"], single["websocket"]);
    assert_eq!(results[0]["signature"], single["signature"]);

    // A granted token opens the subscription like a single one.
    let token = results[0]["token"].as_str().expect("token");
    let signature = results[0]["signature"].as_str().expect("signature");
    let mut ws = app.connect("bob", Some(token)).await;
    let mut received = Received::default();
    read_until(
        &mut ws,
        &mut received,
        std::time::Duration::from_secs(20),
        |r| r.value(signature).is_some(),
    )
    .await;
    assert_eq!(received.value(signature), Some(&json!(0)));
}

#[tokio::test]
async fn batches_of_the_wrong_size_or_shape_get_clear_4xx() {
    let app = TestApp::spawn().await;
    let jwt = app.jwt("u1");
    let post_raw = |body: String, content_type: &'static str| {
        app.http
            .post(app.url("/realtime/subscribe/batch"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    let empty = post_batch(&app, json!({"authToken": jwt, "subscriptions": []})).await;
    assert_eq!(error_of(empty).await, (400, "invalid_request".into()));
    let too_many = post_batch(
        &app,
        json!({"authToken": jwt, "subscriptions": batch_of(101)}),
    )
    .await;
    assert_eq!(too_many.status(), 400);
    let body: Value = too_many.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_request");
    assert_eq!(body["error"]["details"]["maxSubscriptions"], 100, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("STATGATE_MAX_BATCH_SUBSCRIPTIONS") && m.contains("101")));
    let full = post_batch(
        &app,
        json!({"authToken": jwt, "subscriptions": batch_of(100)}),
    )
    .await;
    assert_eq!(full.status(), 200);

    for (body, why) in [
        (json!({"authToken": jwt}), "no subscriptions"),
        (
            json!({"authToken": jwt, "subscriptions": {"queryName": "x"}}),
            "not an array",
        ),
        (
            json!({"authToken": jwt, "subscriptions": "posts"}),
            "a string",
        ),
        (
            json!({"authToken": 7, "subscriptions": batch_of(1)}),
            "a numeric JWT",
        ),
        (
            json!([{"queryName": "posts/stats/commentCount"}]),
            "a bare array",
        ),
    ] {
        let response = post_batch(&app, body).await;
        assert_eq!(
            error_of(response).await,
            (400, "invalid_json".into()),
            "{why}"
        );
    }
    for (entry, why) in [
        (json!(17), "a number"),
        (json!({"args": {"postId": 1}}), "no queryName"),
        (json!({"queryName": 3, "args": {}}), "a numeric queryName"),
        (json!(null), "null"),
    ] {
        let mut entries = batch_of(1);
        entries.push(entry);
        let response = post_batch(&app, json!({"authToken": jwt, "subscriptions": entries})).await;
        assert_eq!(response.status(), 400, "{why}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "invalid_json", "{why}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("subscriptions[1]")),
            "{why}: {body}"
        );
    }

    // Hostile bodies: nesting past the parser's depth limit, an array of thousands of
    // entries within the body limit, a body over the limit, the wrong content type.
    let deep = format!(
        r#"{{"subscriptions":[{{"queryName":"posts/stats/commentCount","args":{}{}}}]}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let response = post_raw(deep, "application/json").await.expect("sent");
    assert_eq!(error_of(response).await, (400, "invalid_json".into()));
    let zeros = format!(r#"{{"subscriptions":[{}0]}}"#, "0,".repeat(30_000));
    assert!(zeros.len() < 64 * 1024);
    let response = post_raw(zeros, "application/json").await.expect("sent");
    assert_eq!(error_of(response).await, (400, "invalid_request".into()));
    let huge = format!(r#"{{"subscriptions":[{}0]}}"#, "0,".repeat(1_000_000));
    let response = post_raw(huge, "application/json").await.expect("sent");
    assert_eq!(error_of(response).await, (413, "payload_too_large".into()));
    let response = post_raw("{}".into(), "text/plain").await.expect("sent");
    assert_eq!(
        error_of(response).await,
        (415, "unsupported_media_type".into())
    );

    // The JWT: missing is 401; in an Authorization header is fine.
    let response = post_batch(&app, json!({"subscriptions": batch_of(2)})).await;
    assert_eq!(error_of(response).await, (401, "unauthorized".into()));
    let response = app
        .http
        .post(app.url("/realtime/subscribe/batch"))
        .bearer_auth(&jwt)
        .json(&json!({"subscriptions": batch_of(2)}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_batch_costs_its_user_one_subscribe_per_entry_and_its_address_one_request() {
    let app = TestApp::spawn_with(|config| config.limits.subscribe_per_sec_per_user = 1).await;
    let batch = |user: &str, n: i64| {
        post_batch(
            &app,
            json!({"authToken": app.jwt(user), "subscriptions": batch_of(n)}),
        )
    };
    // The burst is 2 (twice the rate): a batch of 2 spends it, and the next subscribe, single
    // or batched, is refused as a whole until the budget refills.
    assert_eq!(batch("u1", 2).await.status(), 200);
    let refused = batch("u1", 1).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().get("retry-after").is_some());
    let single = app
        .post_subscribe(json!({"queryName": "posts/stats/commentCount", "args": {"postId": 1}, "authToken": app.jwt("u1")}))
        .await;
    assert_eq!(error_of(single).await, (429, "rate_limited".into()));
    // A batch larger than the burst could never be covered: it is too large, not "later".
    let too_large = batch("u2", 3).await;
    assert_eq!(too_large.status(), 400);
    let body: Value = too_large.json().await.expect("json");
    assert_eq!(body["error"]["details"]["maxSubscriptions"], 2, "{body}");
    // Other users keep their own budget.
    assert_eq!(batch("u2", 2).await.status(), 200);

    // Per address a batch is one request: with a burst of 2 requests, two batches of 50
    // pass and the third request is refused.
    let app = TestApp::spawn_with(|config| config.limits.subscribe_per_sec_per_ip = 1).await;
    for user in ["a", "b"] {
        let response = post_batch(
            &app,
            json!({"authToken": app.jwt(user), "subscriptions": batch_of(50)}),
        )
        .await;
        assert_eq!(response.status(), 200);
    }
    let refused = post_batch(
        &app,
        json!({"authToken": app.jwt("c"), "subscriptions": batch_of(1)}),
    )
    .await;
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("address")));
}

#[tokio::test]
async fn a_wrong_method_gets_a_json_405() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(app.url("/realtime/subscribe"))
        .send()
        .await
        .expect("request");
    assert_eq!(error_of(response).await, (405, "method_not_allowed".into()));
}

/// A page on another origin may call the subscribe endpoints only when its origin is listed.
#[tokio::test]
async fn listed_origins_get_cors_answers_and_others_get_none() {
    let app = TestApp::spawn_with(|config| {
        config.http.cors_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        app.http
            .request(
                reqwest::Method::OPTIONS,
                app.url("/realtime/subscribe/batch"),
            )
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "content-type,authorization",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com")
        .await
        .expect("preflight");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .expect("ascii");
    assert!(methods.contains("POST"), "{methods}");
    let other = preflight("https://evil.example").await.expect("preflight");
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let response = app
        .http
        .post(app.url("/realtime/subscribe"))
        .header("Origin", "https://app.example.com")
        .json(&json!({"queryName": "posts/stats/commentCount", "args": {"postId": 1}, "authToken": app.jwt("u1")}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    assert!(exposed.contains("retry-after"), "{exposed}");

    let same_origin_only = TestApp::spawn().await;
    let response = same_origin_only
        .http
        .post(same_origin_only.url("/realtime/subscribe"))
        .header("Origin", "https://app.example.com")
        .json(&json!({"queryName": "posts/stats/commentCount", "args": {"postId": 1}, "authToken": same_origin_only.jwt("u1")}))
        .send()
        .await
        .expect("request");
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}
