//! The `statgate` binary's commands, run as a user would.

use std::process::Command;

use crate::helpers::{fresh_database, queries_dir, TestApp};

fn statgate(database_url: &str, queries: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_statgate"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("STATGATE_QUERIES", queries)
        .env(
            "STATGATE_JWT_SECRET",
            "cli-test-jwt-secret-0123456789abcdefghij",
        )
        .env(
            "STATGATE_TOKEN_SECRET",
            "cli-test-token-secret-0123456789abcdefgh",
        )
        .env_remove("STATGATE_DEMO")
        .output()
        .expect("statgate runs")
}

#[tokio::test]
async fn check_accepts_the_example_registry_and_names_a_file_with_a_sql_typo() {
    let (url, _db) = fresh_database().await;
    let ok = statgate(&url, &queries_dir(), &["check"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("posts")).expect("mkdir");
    std::fs::write(
        dir.path().join("posts/broken.toml"),
        "[typo]\nsql = \"SELEC comment_count FROM post_stats WHERE post_id = :postId\"\nargs = { postId = \"int8\" }\nwatch = [{ table = \"post_stats\" }]\n",
    )
    .expect("write");
    let failed = statgate(&url, dir.path(), &["check"]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success());
    assert!(
        stderr.contains("broken.toml") && stderr.contains("posts/broken/typo"),
        "{stderr}"
    );
}

#[tokio::test]
async fn start_up_refuses_a_missing_or_short_secret_outside_demo_mode() {
    let output = Command::new(env!("CARGO_BIN_EXE_statgate"))
        .args(["serve"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("STATGATE_JWT_SECRET", "short")
        .env(
            "STATGATE_TOKEN_SECRET",
            "cli-test-token-secret-0123456789abcdefgh",
        )
        .env_remove("STATGATE_DEMO")
        .output()
        .expect("statgate runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("STATGATE_JWT_SECRET holds a secret of 5 bytes"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_committed_typescript_types_match_the_example_registry() {
    let (url, _db) = fresh_database().await;
    let generated = statgate(&url, &queries_dir(), &["codegen", "ts"]);
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let committed_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("client-ts/generated/example-queries.d.ts");
    let committed = std::fs::read_to_string(&committed_path).expect("the committed types");
    assert_eq!(
        String::from_utf8_lossy(&generated.stdout),
        committed,
        "client-ts/generated/example-queries.d.ts is stale: run \
         `statgate codegen ts --out client-ts/generated/example-queries.d.ts`"
    );
}

#[tokio::test]
async fn verify_exits_non_zero_on_drift_and_refresh_repairs_it() {
    let (url, db) = fresh_database().await;
    sqlx::query("select statgate_demo_seed()")
        .execute(&db)
        .await
        .expect("seed");
    let stdout =
        |output: &std::process::Output| String::from_utf8_lossy(&output.stdout).into_owned();

    let clean = statgate(&url, &queries_dir(), &["verify"]);
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    assert!(stdout(&clean).contains("no drift"));

    sqlx::query("update author_comment_counts set count = count + 5 where author_id = 'bob'")
        .execute(&db)
        .await
        .expect("corrupt a counter");
    let drifted = statgate(&url, &queries_dir(), &["verify"]);
    assert!(!drifted.status.success());
    assert!(
        stdout(&drifted).contains(r#"author_comment_counts {"author_id":"bob"}"#),
        "{}",
        stdout(&drifted)
    );

    let unknown = statgate(&url, &queries_dir(), &["verify", "--counter", "nope"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no counter or rollup named \"nope\"")
    );

    let refreshed = statgate(&url, &queries_dir(), &["refresh", "author_comment_counts"]);
    assert!(
        refreshed.status.success(),
        "{}",
        String::from_utf8_lossy(&refreshed.stderr)
    );
    assert!(stdout(&refreshed).contains("author_comment_counts: 1 row(s) rewritten"));
    let again = statgate(
        &url,
        &queries_dir(),
        &["verify", "--counter", "author_comment_counts"],
    );
    assert!(again.status.success(), "{}", stdout(&again));
}

/// `cargo run --release` from a fresh clone: demo mode, the embedded PostgreSQL, the compiled-in
/// example registry, from a directory of mode 0700 (as root, the user that runs PostgreSQL
/// cannot enter it, so the data directory moves to one it can own, and the banner says so).
#[tokio::test]
async fn the_demo_runs_from_a_private_directory_with_nothing_but_the_binary() {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::AsyncBufReadExt;
    let clone = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(clone.path(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod 0700");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_statgate"))
        .current_dir(clone.path())
        .env("STATGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("DATABASE_URL")
        .env_remove("STATGATE_DEMO")
        .env_remove("STATGATE_QUERIES")
        .env_remove("STATGATE_DATA_DIR")
        .env_remove("STATGATE_JWT_SECRET")
        .env_remove("STATGATE_TOKEN_SECRET")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("statgate starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut banner = String::new();
    let read_banner = async {
        while let Ok(Some(line)) = lines.next_line().await {
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("Ctrl-C to stop") {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), read_banner)
        .await
        .expect("the banner within two minutes");
    assert!(
        banner.contains(&format!("open http://127.0.0.1:{port}/")),
        "{banner}"
    );
    assert!(
        banner.contains("psql postgres://postgres@127.0.0.1:"),
        "{banner}"
    );
    let data_dir = banner
        .lines()
        .find_map(|line| line.trim().strip_prefix("data directory: "))
        .map(std::path::PathBuf::from)
        .expect("the banner names the data directory");
    if banner.contains("cannot enter") {
        assert!(
            data_dir.starts_with(statgate::embedded::RELOCATION_ROOT),
            "{banner}"
        );
    }

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    crate::helpers::wait_until_ready(&http, &base, std::time::Duration::from_secs(30)).await;
    let page = http.get(format!("{base}/")).send().await.expect("the page");
    assert_eq!(page.status(), 200);
    let queries = http
        .get(format!("{base}/realtime/queries"))
        .send()
        .await
        .expect("queries")
        .text()
        .await
        .expect("body");
    assert!(queries.contains("posts/stats/commentCount"), "{queries}");

    let pid = child.id().expect("pid").to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    let status = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("status");
    assert!(status.success(), "{status}");
    if data_dir.starts_with(statgate::embedded::RELOCATION_ROOT) {
        let _ = std::fs::remove_dir_all(data_dir.parent().expect("parent"));
    }
}

/// `statgate healthcheck [PATH]` as a container HEALTHCHECK runs it: the gateway's address from
/// STATGATE_LISTEN, no secrets needed, exit 0 only on a 2xx answer.
#[tokio::test]
async fn healthcheck_exits_zero_only_while_the_gateway_answers_2xx() {
    let app = TestApp::spawn().await;
    let healthcheck = |listen: String, path: Option<&'static str>| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_statgate"))
            .arg("healthcheck")
            .args(path)
            .env("STATGATE_LISTEN", listen)
            // The other commands would refuse these settings (no secrets outside demo mode).
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .env_remove("STATGATE_JWT_SECRET")
            .env_remove("STATGATE_TOKEN_SECRET")
            .env_remove("STATGATE_DEMO")
            .output()
            .await
            .expect("statgate runs")
    };
    let listen = app.address.to_string();
    let wildcard = format!("0.0.0.0:{}", app.address.port());

    for (listen, path) in [
        (&listen, None),
        (&listen, Some("/readyz")),
        (&wildcard, Some("/healthz")),
    ] {
        let output = healthcheck(listen.clone(), path).await;
        assert!(output.status.success(), "{path:?}: {output:?}");
    }

    let missing = healthcheck(listen.clone(), Some("/nope")).await;
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("/nope answered \"HTTP/1.1 404"),
        "{missing:?}"
    );

    app.shutdown.cancel();
    app.done.await.expect("joined").expect("clean shutdown");
    let down = healthcheck(listen, None).await;
    assert!(!down.status.success());
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("cannot connect"),
        "{down:?}"
    );
}
