//! Reloading the registry of a running gateway: checked first, then put in force without
//! dropping sockets; changed queries recompute, removed ones end with an error event.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::helpers::{converge_to, fresh_database, send_json, wait_for, Received, TestApp};

const WAIT: Duration = Duration::from_secs(20);

fn write(dir: &Path, text: &str) {
    std::fs::create_dir_all(dir.join("posts")).expect("mkdir");
    std::fs::write(dir.join("posts/live.toml"), text).expect("write registry");
}

const COUNT: &str = r#"
[count]
sql = "SELECT comment_count AS n FROM post_stats WHERE post_id = :postId"
args = { postId = "int8" }
returns = "value"
watch = [{ table = "post_stats", match = { post_id = ":postId" } }]
"#;

const REACTIONS: &str = r#"
[reactions]
sql = "SELECT reaction_count AS n FROM post_stats WHERE post_id = :postId"
args = { postId = "int8" }
returns = "value"
watch = [{ table = "post_stats", match = { post_id = ":postId" } }]
"#;

/// `count` now says ten times as much; `reactions` is gone; `title` is new.
const RELOADED: &str = r#"
[count]
sql = "SELECT comment_count * 10 AS n FROM post_stats WHERE post_id = :postId"
args = { postId = "int8" }
returns = "value"
watch = [{ table = "post_stats", match = { post_id = ":postId" } }]

[title]
sql = "SELECT title FROM posts WHERE id = :postId"
args = { postId = "int8" }
returns = "value"
watch = []
"#;

#[tokio::test]
async fn a_reload_recomputes_changed_queries_ends_removed_ones_and_keeps_the_socket() {
    let registry = tempfile::tempdir().expect("tempdir");
    write(registry.path(), &format!("{COUNT}{REACTIONS}"));
    let dir = registry.path().to_owned();
    let app = TestApp::spawn_with(move |config| {
        config.queries = statgate::config::Queries::Directory(dir)
    })
    .await;
    let post = app.new_post().await;
    app.add_comment(post).await;
    let (count, mut ws, mut received) = app
        .watch("u1", "posts/live/count", json!({"postId": post}))
        .await;
    assert_eq!(received.value(&count), Some(&json!(1)));
    let (token, reactions) = app
        .subscribe("u1", "posts/live/reactions", json!({"postId": post}))
        .await;
    send_json(&mut ws, json!({"type": "subscribe", "token": token})).await;
    let mut reactions_seen = Received::default();
    crate::helpers::read_until(&mut ws, &mut reactions_seen, WAIT, |r| {
        r.value(&reactions).is_some()
    })
    .await;

    // A broken registry is refused and changes nothing.
    write(registry.path(), "[count\nsql = ");
    let refused = statgate::reload::reload_registry(&app.state)
        .await
        .expect_err("a broken file is refused");
    assert!(refused.to_string().contains("live.toml"), "{refused}");
    assert_eq!(app.state.metrics().signatures.get(), 2);
    let still = app
        .post_subscribe(json!({"queryName": "posts/live/reactions", "args": {"postId": post}, "authToken": app.jwt("u1")}))
        .await;
    assert_eq!(still.status(), 200, "the old registry stays in force");

    // A valid one is put in force: `count` recomputes under its new SQL, `reactions` ends.
    write(registry.path(), RELOADED);
    let report = statgate::reload::reload_registry(&app.state)
        .await
        .expect("a valid registry is put in force");
    assert_eq!(
        (report.added, report.changed, report.removed),
        (1, 1, 1),
        "{report:?}"
    );
    assert_eq!(report.signatures.resynced, 1);
    assert_eq!(report.signatures.retired, 1);
    let ended = wait_for(&mut ws, WAIT, |event| {
        received.record(event);
        event["event"] == "error" && event["payload"]["signature"] == json!(reactions)
    })
    .await;
    assert_eq!(ended["payload"]["code"], "query_removed", "{ended}");
    converge_to(&mut ws, &mut received, &count, json!(10)).await;

    // The socket lives on: the changed query still pushes, the new one can be subscribed.
    app.add_comment(post).await;
    converge_to(&mut ws, &mut received, &count, json!(20)).await;
    let (token, title) = app
        .subscribe("u1", "posts/live/title", json!({"postId": post}))
        .await;
    send_json(&mut ws, json!({"type": "subscribe", "token": token})).await;
    converge_to(&mut ws, &mut received, &title, json!("t")).await;
    let gone = app
        .post_subscribe(json!({"queryName": "posts/live/reactions", "args": {"postId": post}, "authToken": app.jwt("u1")}))
        .await;
    assert_eq!(gone.status(), 404);
    assert_eq!(app.state.metrics().signatures.get(), 2, "count and title");
    assert_eq!(app.state.metrics().subscriptions.get(), 2);
}

#[tokio::test]
async fn a_changed_auth_rule_ends_the_subscriptions_it_governs() {
    let registry = tempfile::tempdir().expect("tempdir");
    let open = "[mine]\nsql = \"SELECT :userId AS u\"\nargs = { userId = \"text\" }\nreturns = \"value\"\nwatch = []\n";
    write(registry.path(), open);
    let dir = registry.path().to_owned();
    let app = TestApp::spawn_with(move |config| {
        config.queries = statgate::config::Queries::Directory(dir)
    })
    .await;
    let (mine, mut ws, received) = app
        .watch("u1", "posts/live/mine", json!({"userId": "someone-else"}))
        .await;
    assert_eq!(received.value(&mine), Some(&json!("someone-else")));
    write(
        registry.path(),
        &open.replace("watch = []", "auth = { userId = \"sub\" }\nwatch = []"),
    );
    let report = statgate::reload::reload_registry(&app.state)
        .await
        .expect("reload");
    assert_eq!(report.signatures.retired, 1);
    let ended = wait_for(&mut ws, WAIT, |event| event["event"] == "error").await;
    assert_eq!(ended["payload"]["code"], "query_changed", "{ended}");
    assert_eq!(app.state.metrics().subscriptions.get(), 0);
}

/// The binary itself: SIGHUP reloads (a new query appears), a broken file is refused and the
/// process lives on.
#[tokio::test]
async fn sighup_reloads_the_registry_of_the_running_binary_and_never_ends_it() {
    let (url, _db) = fresh_database().await;
    let registry = tempfile::tempdir().expect("tempdir");
    write(registry.path(), COUNT);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_statgate"))
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("STATGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("STATGATE_QUERIES", registry.path())
        .env(
            "STATGATE_JWT_SECRET",
            "reload-test-jwt-secret-0123456789abcdefgh",
        )
        .env(
            "STATGATE_TOKEN_SECRET",
            "reload-test-token-secret-0123456789abcdef",
        )
        .env_remove("STATGATE_DEMO")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("statgate starts");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    crate::helpers::wait_until_ready(&http, &base, WAIT).await;
    let pid = child.id().expect("pid").to_string();
    let hangup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill runs")
    };
    let names = || async {
        http.get(format!("{base}/realtime/queries"))
            .send()
            .await
            .expect("queries")
            .text()
            .await
            .expect("body")
    };

    write(registry.path(), &format!("{COUNT}{REACTIONS}"));
    hangup();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !names().await.contains("posts/live/reactions") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new query never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    write(registry.path(), "[broken\n");
    hangup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.try_wait().expect("wait").is_none(),
        "SIGHUP ended the process"
    );
    let listed = names().await;
    assert!(
        listed.contains("posts/live/reactions") && listed.contains("posts/live/count"),
        "the old registry stays: {listed}"
    );
    let status = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz")
        .status();
    assert_eq!(status, 200);
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    let exited = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("status");
    assert!(exited.success(), "{exited}");
}
