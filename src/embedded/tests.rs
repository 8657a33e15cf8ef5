use super::binaries::versioned_bin_dirs;
use super::process::{postmaster_state, shell_quote, Postmaster};
use super::user::{effective_uid, lookup_user, ServerUser};
use super::*;
use std::os::unix::fs::PermissionsExt;

/// World-searchable, so that the unprivileged server user can reach the data directory.
fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("statgate-embedded-")
        .permissions(fs::Permissions::from_mode(0o755))
        .tempdir()
        .expect("create a scratch directory")
}

fn options(dir: &Path) -> EmbeddedOptions {
    EmbeddedOptions {
        data_dir: dir.join("pgdata"),
        port: None,
        bin_dir: None,
        fast_unsafe: true,
        relocate_if_unreachable: true,
        settings: Vec::new(),
    }
}

async fn start(dir: &Path) -> EmbeddedPostgres {
    EmbeddedPostgres::start(options(dir))
        .await
        .expect("start embedded postgres")
}

async fn query(pg: &EmbeddedPostgres, database: &str, sql: &str) -> String {
    pg.server.psql(database, sql, &[]).await.expect("run psql")
}

fn postmaster_pid(data_dir: &Path) -> u32 {
    fs::read_to_string(data_dir.join("postmaster.pid"))
        .expect("read postmaster.pid")
        .lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
        .expect("a pid on the first line of postmaster.pid")
}

/// Live processes (postmaster and children) working in `data_dir`.
fn server_processes(data_dir: &Path) -> Vec<u32> {
    fs::read_dir("/proc")
        .expect("list /proc")
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::read_link(format!("/proc/{pid}/cwd")).ok().as_deref() == Some(data_dir))
        .collect()
}

/// Waits (at most 5 s) until no process runs in `data_dir`: `pg_ctl stop -w` returns once the
/// postmaster has removed its pid file, a moment before the process itself is gone.
async fn no_server_left(data_dir: &Path) -> bool {
    for _ in 0..50 {
        if server_processes(data_dir).is_empty() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    server_processes(data_dir).is_empty()
}

fn process_uid(pid: u32) -> u32 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read process status")
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .and_then(|line| line.split_whitespace().nth(2)?.parse().ok())
        .expect("a Uid line")
}

#[tokio::test]
async fn starts_creates_a_database_restarts_and_stops() {
    let dir = scratch_dir();
    let mut pg = start(dir.path()).await;

    pg.create_database("statgate_test")
        .await
        .expect("create database");
    pg.create_database("statgate_test")
        .await
        .expect("creating an existing database is a no-op");
    assert_eq!(query(&pg, "statgate_test", "select 1").await, "1");
    assert_eq!(
        pg.url("statgate_test"),
        format!("postgres://postgres@127.0.0.1:{}/statgate_test", pg.port())
    );
    if effective_uid() == Some(0) {
        assert_ne!(
            process_uid(postmaster_pid(pg.data_dir())),
            0,
            "postgres runs unprivileged"
        );
    }
    if pg.server.pg_stat_statements {
        assert_eq!(
            query(&pg, "postgres", "show shared_preload_libraries").await,
            "pg_stat_statements"
        );
    }

    let port = pg.port();
    pg.restart().await.expect("restart");
    assert_eq!(pg.port(), port, "a restart keeps the port");
    assert_eq!(query(&pg, "statgate_test", "select 1").await, "1");

    let data_dir = pg.data_dir().to_path_buf();
    pg.stop().await.expect("stop");
    pg.stop().await.expect("stopping twice is a no-op");
    assert!(no_server_left(&data_dir).await, "no postgres left running");
    assert!(matches!(
        pg.create_database("late").await,
        Err(EmbeddedError::NotRunning)
    ));
}

#[tokio::test]
async fn a_second_start_reuses_the_data_directory() {
    let dir = scratch_dir();
    let mut first = start(dir.path()).await;
    first
        .create_database("kept")
        .await
        .expect("create database");
    first.stop().await.expect("stop");
    drop(first);

    let mut second = start(dir.path()).await;
    assert_eq!(
        query(
            &second,
            "postgres",
            "select count(*) from pg_database where datname = 'kept'"
        )
        .await,
        "1"
    );
    second.stop().await.expect("stop");
}

#[tokio::test]
async fn a_stale_pid_file_with_a_dead_pid_is_recovered() {
    let dir = scratch_dir();
    let mut pg = start(dir.path()).await;
    pg.stop().await.expect("stop");
    drop(pg);

    let mut exited = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    exited.wait().expect("wait for true");
    write_pid_file(&dir.path().join("pgdata"), exited.id());

    let mut pg = start(dir.path()).await;
    assert_eq!(query(&pg, "postgres", "select 1").await, "1");
    pg.stop().await.expect("stop");
}

#[tokio::test]
async fn a_pid_file_naming_an_unrelated_live_process_is_removed() {
    let dir = scratch_dir();
    let mut pg = start(dir.path()).await;
    pg.stop().await.expect("stop");
    drop(pg);

    let mut unrelated = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    write_pid_file(&dir.path().join("pgdata"), unrelated.id());
    let started = EmbeddedPostgres::start(options(dir.path())).await;
    unrelated.kill().expect("kill sleep");
    unrelated.wait().expect("reap sleep");

    let mut pg = started.expect("start despite the pid file");
    assert_eq!(query(&pg, "postgres", "select 1").await, "1");
    pg.stop().await.expect("stop");
}

#[tokio::test]
async fn a_server_left_running_by_a_crashed_run_is_replaced() {
    let dir = scratch_dir();
    let mut crashed = start(dir.path()).await;
    let data_dir = crashed.data_dir().to_path_buf();
    let old_pid = postmaster_pid(&data_dir);
    // What a kill -9 of statgate leaves: a running server that nobody will stop (and, the
    // process being gone, no owner lock).
    crashed.server.running = false;
    drop(crashed);

    let mut pg = start(dir.path()).await;
    assert_ne!(postmaster_pid(&data_dir), old_pid);
    assert_ne!(postmaster_state(old_pid, &data_dir), Postmaster::Ours);
    assert_eq!(query(&pg, "postgres", "select 1").await, "1");
    pg.stop().await.expect("stop");
    assert!(no_server_left(&data_dir).await, "no postgres left running");
}

#[tokio::test]
async fn a_second_statgate_on_a_data_directory_in_use_is_refused_and_harms_nothing() {
    let dir = scratch_dir();
    let first = start(dir.path()).await;
    let pid = postmaster_pid(first.data_dir());
    match EmbeddedPostgres::start(options(dir.path())).await {
        Err(EmbeddedError::InUse { .. }) => {}
        Err(other) => panic!("expected InUse, got {other}"),
        Ok(_) => panic!("a second owner of one data directory was allowed"),
    }
    assert_eq!(
        postmaster_pid(first.data_dir()),
        pid,
        "the first server still runs"
    );
    assert_eq!(query(&first, "postgres", "select 1").await, "1");
}

#[tokio::test]
async fn dropping_a_running_server_stops_it() {
    let dir = scratch_dir();
    let pg = start(dir.path()).await;
    let data_dir = pg.data_dir().to_path_buf();
    drop(pg);
    assert!(no_server_left(&data_dir).await, "no postgres left running");
}

#[tokio::test]
async fn a_data_directory_the_server_user_cannot_reach_is_refused_when_relocation_is_off() {
    if effective_uid() != Some(0) {
        return; // only root hands the server to another user
    }
    let private = tempfile::tempdir().expect("create a private directory");
    fs::set_permissions(private.path(), fs::Permissions::from_mode(0o700))
        .expect("make it private");
    let err = EmbeddedPostgres::start(EmbeddedOptions {
        relocate_if_unreachable: false,
        ..options(private.path())
    })
    .await
    .expect_err("the server user cannot enter a 0700 root directory");
    let private_path = fs::canonicalize(private.path()).expect("canonicalize");
    assert!(
        matches!(&err, EmbeddedError::NotTraversable { dir, .. } if *dir == private_path),
        "unexpected error: {err}"
    );
    assert!(err.to_string().contains("user `postgres`"), "{err}");
}

#[tokio::test]
async fn a_data_directory_the_server_user_cannot_reach_is_relocated_and_kept_across_restarts() {
    if effective_uid() != Some(0) {
        return; // only root hands the server to another user
    }
    let private = tempfile::tempdir().expect("create a private directory");
    fs::set_permissions(private.path(), fs::Permissions::from_mode(0o700))
        .expect("make it private");
    let requested = private.path().join("pgdata");
    let mut pg = EmbeddedPostgres::start(options(private.path()))
        .await
        .expect("starts in a directory the server user can own");
    assert_eq!(pg.relocated_from(), Some(requested.as_path()));
    let stand_in = pg.data_dir().to_path_buf();
    assert!(
        stand_in.starts_with(RELOCATION_ROOT),
        "{}",
        stand_in.display()
    );
    query(&pg, "postgres", "create table kept (x int)").await;
    pg.stop().await.expect("stop");
    drop(pg);
    let mut again = EmbeddedPostgres::start(options(private.path()))
        .await
        .expect("starts again");
    assert_eq!(
        again.data_dir(),
        stand_in,
        "the same stand-in, so the data survives"
    );
    assert_eq!(
        query(&again, "postgres", "select count(*) from kept").await,
        "0"
    );
    again.stop().await.expect("stop");
    drop(again);
    let _ = fs::remove_dir_all(stand_in.parent().expect("parent"));
}

#[test]
fn finds_the_installed_binaries() {
    let bin_dir = EmbeddedPostgres::find_bin_dir().expect("find PostgreSQL binaries");
    assert!(has_server_binaries(&bin_dir), "{}", bin_dir.display());
}

#[test]
fn versioned_directories_are_ordered_newest_first() {
    let root = scratch_dir();
    for version in ["9.6", "15", "10", "16", "latest"] {
        fs::create_dir_all(root.path().join(version).join("bin")).expect("create version dir");
    }
    let order: Vec<PathBuf> = versioned_bin_dirs(root.path());
    let names: Vec<&str> = order
        .iter()
        .filter_map(|dir| dir.parent()?.file_name()?.to_str())
        .collect();
    assert_eq!(names, ["16", "15", "10", "9.6", "latest"]);
}

#[test]
fn looks_up_users_in_passwd() {
    let passwd =
        "root:x:0:0:root:/root:/bin/bash\npostgres:x:101:104::/var/lib/postgresql:/bin/bash\n";
    assert_eq!(
        lookup_user(passwd, "postgres"),
        Some(ServerUser {
            name: "postgres".to_owned(),
            uid: 101,
            gid: 104
        })
    );
    assert_eq!(lookup_user(passwd, "nobody"), None);
}

#[test]
fn quotes_for_the_shell_and_encodes_urls() {
    assert_eq!(shell_quote("/tmp/it's here"), r"'/tmp/it'\''s here'");
    assert_eq!(shell_quote(""), "''");
    assert_eq!(encode_path_segment("my db/x"), "my%20db%2Fx");
    assert_eq!(encode_path_segment("statgate_test"), "statgate_test");
}

fn write_pid_file(data_dir: &Path, pid: u32) {
    let contents = format!(
        "{pid}\n{}\n0\n5432\n\n127.0.0.1\n0 0\nready   \n",
        data_dir.display()
    );
    fs::write(data_dir.join("postmaster.pid"), contents).expect("write postmaster.pid");
}
