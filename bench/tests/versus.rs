//! `versus` at a tiny scale against both servers it compares, so the comparison cannot rot:
//! the hand-written baseline (`bench/baseline-node`, a real Node process) and the real gateway
//! (in this process), each on its own database of one throwaway PostgreSQL migrated with the
//! example application. statgate is a dev-dependency for that harness only (its embedded
//! PostgreSQL, its migrations, its gateway); the load generator itself imports nothing of it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use statgate::config::Config;
use statgate::embedded::{EmbeddedOptions, EmbeddedPostgres};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn baseline_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("baseline-node")
}

/// A database of `server` migrated with statgate's and the example application's migrations.
async fn example_database(server: &EmbeddedPostgres, name: &str) -> (String, PgPool) {
    server.create_database(name).await.expect("database");
    let url = server.url(name);
    let db = PgPool::connect(&url).await.expect("pool");
    statgate::db::migrate(&db, statgate::db::MigrationSet::WithExample)
        .await
        .expect("migrations");
    (url, db)
}

/// The baseline's node_modules, installed from its lockfile when missing.
async fn baseline_dependencies() {
    if baseline_dir().join("node_modules").is_dir() {
        return;
    }
    let npm = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(baseline_dir())
        .status();
    let status = tokio::time::timeout(Duration::from_secs(180), npm)
        .await
        .expect("npm ci finishes within 3 minutes")
        .expect("npm runs (Node 20+ is needed: scripts/setup installs it)");
    assert!(status.success(), "npm ci in bench/baseline-node: {status}");
}

/// The baseline server on `database_url` and a free port: the process and its URL.
async fn start_baseline(database_url: &str) -> (Child, String) {
    let mut node = Command::new("node")
        .arg("server.js")
        .current_dir(baseline_dir())
        .env("DATABASE_URL", database_url)
        .env("PORT", "0")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (Node 20+ is needed: scripts/setup installs it)");
    let stdout = node.stdout.take().expect("stdout");
    let line = tokio::time::timeout(
        Duration::from_secs(20),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("the baseline starts within 20 s")
    .expect("its stdout")
    .unwrap_or_default();
    let port = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the baseline printed {line:?}"));
    (node, format!("http://127.0.0.1:{}", port.trim()))
}

/// One tiny `versus` run through the real binary; its report's figures.
async fn versus(target: &str, url: &str, database_url: &str, pid: u32, extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("versus.json");
    let run = Command::new(env!("CARGO_BIN_EXE_statgate-bench"))
        .args(["--url", url, "--database-url", database_url])
        .args(["--gateway-pid", &pid.to_string()])
        .args(["--json", json.to_str().expect("utf-8 path")])
        .args(extra)
        .args(["versus", "--target", target])
        .args([
            "--sockets",
            "12",
            "--posts",
            "4",
            "--rate",
            "40",
            "--seconds",
            "2",
        ])
        .args(["--writers", "2", "--settle-secs", "5"])
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("a tiny run ends within 60 s")
        .expect("statgate-bench runs");
    assert!(output.status.success(), "{output:?}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).expect("report written"))
        .expect("report is JSON");
    report["figures"].clone()
}

/// What every run must show: every insert reached every socket following its post, and the
/// sockets end holding the database's counts.
fn assert_every_update_delivered(figures: &Value) {
    let committed = figures["inserts_committed"].as_u64().expect("inserts");
    assert!(committed >= 40, "{figures}"); // 40/s for 2 s, with room for a slow machine
    assert_eq!(figures["inserts_failed"], 0, "{figures}");
    assert_eq!(figures["snapshots_missing"], 0, "{figures}");
    assert_eq!(figures["updates_undelivered"], 0, "{figures}");
    assert_eq!(figures["lost_final_values"], 0, "{figures}");
    assert_eq!(figures["count_regressions"], 0, "{figures}");
    assert_eq!(figures["sockets_closed_early"], 0, "{figures}");
    assert_eq!(
        figures["posts_where_writers_disagree_with_database"], 0,
        "{figures}"
    );
    // 12 sockets over 4 posts: every insert has 3 followers, each pair timed once.
    assert_eq!(figures["updates_expected"], committed * 3, "{figures}");
    assert_eq!(
        figures["commit_to_client"]["n"], figures["updates_expected"],
        "{figures}"
    );
    assert_eq!(
        figures["writers_commit"]["n"], figures["inserts_committed"],
        "{figures}"
    );
    for cpu in [
        "machine_busy_pct",
        "server_cores",
        "postgres_cores",
        "generator_cores",
        "other_cores",
    ] {
        assert!(figures["cpu"][cpu].is_number(), "{cpu}: {figures}");
    }
}

/// Polls the gateway's `/readyz` until it answers 200 (its database feed is listening).
async fn wait_until_ready(url: &str) {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ready = http.get(format!("{url}/readyz")).send().await;
        if ready.is_ok_and(|response| response.status().is_success()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway is not ready after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versus_measures_the_baseline_and_the_gateway_alike() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = EmbeddedPostgres::start(EmbeddedOptions {
        data_dir: dir.path().join("pgdata"),
        fast_unsafe: true,
        ..EmbeddedOptions::default()
    })
    .await
    .expect("PostgreSQL starts (are its server binaries installed?)");

    // The baseline: its own database, its own triggers instead of statgate's.
    let (baseline_url, baseline_db) = example_database(&server, "baseline_side").await;
    let schema = std::fs::read_to_string(baseline_dir().join("schema.sql")).expect("schema.sql");
    sqlx::raw_sql(&schema)
        .execute(&baseline_db)
        .await
        .expect("the baseline's schema applies");
    baseline_dependencies().await;
    let (node, node_url) = start_baseline(&baseline_url).await;
    let pid = node.id().expect("node's pid");
    let baseline = versus("baseline", &node_url, &baseline_url, pid, &[]).await;
    drop(node);
    assert_every_update_delivered(&baseline);
    assert_eq!(baseline["label"], "baseline", "{baseline}");
    // One SELECT per NOTIFY, nothing else, in the database's own count (one insert at a time
    // per post, 25 ms apart: no NOTIFY is folded into another).
    assert_eq!(
        baseline["statements_source"], "pg_stat_statements",
        "{baseline}"
    );
    assert_eq!(baseline["statements_per_insert"], 1.0, "{baseline}");
    let drift: i64 = sqlx::query_scalar("select count(*) from post_stats_drift()")
        .fetch_one(&baseline_db)
        .await
        .expect("drift check");
    assert_eq!(drift, 0, "the baseline's triggers keep post_stats exact");

    // statgate: the real gateway on the other database.
    let (statgate_url, _statgate_db) = example_database(&server, "statgate_side").await;
    let config = Config::for_tests(
        statgate_url.clone(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/blog/queries"),
    );
    let jwt_secret = config.auth.jwt_secrets[0].expose().to_owned();
    let app = statgate::Application::build(config)
        .await
        .expect("gateway starts");
    let gateway_url = format!("http://{}", app.address());
    let shutdown = app.shutdown_token();
    let running = tokio::spawn(app.run());
    wait_until_ready(&gateway_url).await;
    let statgate = versus(
        "statgate",
        &gateway_url,
        &statgate_url,
        std::process::id(),
        &["--jwt-secret", &jwt_secret],
    )
    .await;
    shutdown.cancel();
    let _ = running.await;
    assert_every_update_delivered(&statgate);
    assert!(statgate["statements_per_insert"].is_number(), "{statgate}");
    assert!(
        statgate["gateway"]["recompute_statements_per_insert"].is_number(),
        "{statgate}"
    );
}
