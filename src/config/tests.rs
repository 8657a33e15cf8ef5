//! The settings as a user gives them, through clap, into a `Config`.

use std::time::Duration;

use clap::Parser;

use super::*;

/// Settings as the binary reads them (its subcommands are its own).
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
}

fn settings(args: &[&str]) -> Settings {
    let mut argv = vec!["statgate"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("arguments parse").settings
}

/// Demo-mode settings whose embedded data directory (and so the demo secrets file) lives in
/// `dir`.
fn demo_settings(dir: &tempfile::TempDir, args: &[&str]) -> Settings {
    let data_dir = dir.path().join("pgdata");
    let mut argv = vec!["--demo", "--data-dir", data_dir.to_str().expect("utf-8")];
    argv.extend_from_slice(args);
    settings(&argv)
}

#[test]
fn a_missing_secret_is_refused_outside_demo_mode() {
    let err = settings(&["--database-url", "postgres://x/y"])
        .into_config()
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("neither STATGATE_JWT_SECRET nor STATGATE_JWKS_URL is set"),
        "{message}"
    );
    let long = "x".repeat(40);
    let err = settings(&["--database-url", "postgres://x/y", "--jwt-secret", &long])
        .into_config()
        .unwrap_err();
    assert!(
        err.to_string().contains("STATGATE_TOKEN_SECRET is not set"),
        "{err}"
    );
}

#[test]
fn a_key_set_url_alone_verifies_jwts_and_must_be_http_or_https() {
    let long = "x".repeat(40);
    let config = settings(&[
        "--database-url",
        "postgres://x/y",
        "--token-secret",
        &long,
        "--jwks-url",
        "https://idp.example/.well-known/jwks.json",
    ])
    .into_config()
    .expect("config");
    assert!(config.auth.jwt_secrets.is_empty());
    let jwks = config.auth.jwks.expect("a key set");
    assert_eq!(
        jwks.url.as_str(),
        "https://idp.example/.well-known/jwks.json"
    );
    assert_eq!(jwks.refresh, Duration::from_secs(600));
    assert_eq!(jwks.min_refetch, Duration::from_secs(30));
    assert_eq!(config.auth.jwt_user_claim, "sub");
    for bad in [
        "ftp://idp.example/jwks",
        "not a url",
        "file:///etc/jwks.json",
    ] {
        let err = settings(&[
            "--database-url",
            "postgres://x/y",
            "--token-secret",
            &long,
            "--jwks-url",
            bad,
        ])
        .into_config()
        .unwrap_err();
        assert!(err.to_string().contains("STATGATE_JWKS_URL"), "{err}");
    }
    let err = settings(&["--jwt-user-claim", " "])
        .into_config()
        .unwrap_err();
    assert!(err.to_string().contains("STATGATE_JWT_USER_CLAIM"), "{err}");
}

#[test]
fn demo_mode_refuses_a_non_loopback_address_unless_told_explicitly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = demo_settings(&dir, &["--listen", "0.0.0.0:8080"])
        .into_config()
        .unwrap_err();
    assert!(
        err.to_string().contains("STATGATE_DEMO_ALLOW_REMOTE=on"),
        "{err}"
    );
    assert!(
        !dir.path().join("pgdata.demo-secrets").exists(),
        "a refused configuration writes nothing"
    );
    let config = demo_settings(
        &dir,
        &["--listen", "0.0.0.0:8080", "--demo-allow-remote", "on"],
    )
    .into_config()
    .expect("allowed explicitly");
    assert!(config.demo);
    assert!(
        demo_settings(&dir, &["--listen", "0.0.0.0:8080", "--demo-allow-remote"])
            .into_config()
            .is_ok(),
        "the bare flag means on"
    );
    for loopback in ["127.0.0.1:8080", "[::1]:8080"] {
        assert!(demo_settings(&dir, &["--listen", loopback])
            .into_config()
            .is_ok());
    }
}

#[test]
fn demo_mode_draws_a_random_secret_for_the_one_left_unset_and_keeps_it_per_data_directory() {
    let jwt = "configured-jwt-secret-0123456789abcdefghij";
    let dir = tempfile::tempdir().expect("tempdir");
    let first = demo_settings(&dir, &["--jwt-secret", jwt])
        .into_config()
        .expect("config");
    assert_eq!(first.auth.jwt_secrets, vec![Secret::new(jwt)]);
    assert_eq!(first.auth.token_secrets.len(), 1);
    assert!(first.auth.token_secrets[0].expose().len() >= MIN_SECRET_BYTES);
    let again = demo_settings(&dir, &["--jwt-secret", jwt])
        .into_config()
        .expect("config");
    assert_eq!(
        again.auth.token_secrets, first.auth.token_secrets,
        "kept across restarts"
    );
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let other = demo_settings(&elsewhere, &["--jwt-secret", jwt])
        .into_config()
        .expect("config");
    assert_ne!(other.auth.token_secrets, first.auth.token_secrets);
    // Against DATABASE_URL there is no data directory of statgate's: one per process.
    let external = |_: ()| {
        settings(&["--demo", "--database-url", "postgres://x/y"])
            .into_config()
            .expect("config")
    };
    assert_ne!(external(()).auth.jwt_secrets, external(()).auth.jwt_secrets);
}

#[test]
fn a_short_secret_is_refused_outside_demo_mode() {
    let long = "x".repeat(40);
    let err = settings(&[
        "--database-url",
        "postgres://x/y",
        "--jwt-secret",
        "short",
        "--token-secret",
        &long,
    ])
    .into_config()
    .unwrap_err();
    assert!(err.to_string().contains("5 bytes"), "{err}");
}

#[test]
fn a_batch_size_of_zero_is_refused_and_the_default_is_one_hundred() {
    let err = settings(&["--max-batch-subscriptions", "0"])
        .into_config()
        .unwrap_err();
    assert!(
        err.to_string().contains("STATGATE_MAX_BATCH_SUBSCRIPTIONS"),
        "{err}"
    );
    let config = settings(&[]).into_config().expect("demo defaults");
    assert_eq!(config.limits.max_batch_subscriptions, 100);
}

#[test]
fn a_parity_rate_outside_zero_to_one_and_a_read_url_without_a_primary_are_refused() {
    let err = settings(&["--parity-sample-rate", "1.5"])
        .into_config()
        .unwrap_err();
    assert!(err.to_string().contains("between 0 and 1"), "{err}");
    let err = settings(&["--database-read-url", "postgres://replica/y"])
        .into_config()
        .unwrap_err();
    assert!(err.to_string().contains("without DATABASE_URL"), "{err}");
    let long = "x".repeat(40);
    let config = settings(&[
        "--database-url",
        "postgres://primary/y",
        "--database-read-url",
        "postgres://replica/y",
        "--jwt-secret",
        &long,
        "--token-secret",
        &long,
    ])
    .into_config()
    .expect("config");
    assert_eq!(
        config.read_database.as_ref().map(Secret::expose),
        Some("postgres://replica/y")
    );
    assert!(
        !format!("{config:?}").contains("replica"),
        "the URL is redacted"
    );
}

#[test]
fn demo_mode_supplies_secrets_and_is_the_default_without_a_database_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("pgdata");
    let config = settings(&["--data-dir", data_dir.to_str().expect("utf-8")])
        .into_config()
        .expect("demo config");
    assert!(config.demo);
    assert_eq!(config.auth.jwt_secrets.len(), 1);
    assert!(format!("{:?}", config.auth.jwt_secrets).contains("redacted"));
}

#[test]
fn commands_that_sign_nothing_need_no_secret_but_still_refuse_a_short_one() {
    let config = settings(&["--database-url", "postgres://x/y"])
        .into_config_without_secrets()
        .expect("no secrets needed");
    assert!(config.auth.jwt_secrets.is_empty() && config.auth.token_secrets.is_empty());
    let err = settings(&["--database-url", "postgres://x/y", "--jwt-secret", "short"])
        .into_config_without_secrets()
        .unwrap_err();
    assert!(err.to_string().contains("5 bytes"), "{err}");
}

#[test]
fn cors_origins_are_origins_or_a_star() {
    let config = settings(&[
        "--cors-origins",
        "https://app.example.com/,http://localhost:3000",
    ])
    .into_config()
    .expect("config");
    assert_eq!(
        config.http.cors_origins,
        ["https://app.example.com", "http://localhost:3000"]
    );
    for bad in [
        "app.example.com",
        "https://app.example.com/path",
        "ftp://x.org",
    ] {
        let err = settings(&["--cors-origins", bad])
            .into_config()
            .unwrap_err();
        assert!(err.to_string().contains("not an origin"), "{bad}: {err}");
    }
}

#[test]
fn secrets_are_split_on_commas_for_rotation() {
    let a = "a".repeat(32);
    let b = "b".repeat(32);
    let list = format!("{a},{b}");
    let config = settings(&[
        "--database-url",
        "postgres://x/y",
        "--jwt-secret",
        &list,
        "--token-secret",
        &list,
    ])
    .into_config()
    .expect("config");
    assert_eq!(
        config.auth.token_secrets,
        vec![Secret::new(a), Secret::new(b)]
    );
}

#[test]
fn the_change_feed_is_notify_unless_table_is_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = demo_settings(&dir, &[]).into_config().expect("config");
    assert_eq!(config.feed.mode, ChangeFeed::Notify);
    assert_eq!(config.feed.poll, Duration::from_millis(10));
    let config = demo_settings(&dir, &["--change-feed", "table", "--feed-poll-ms", "25"])
        .into_config()
        .expect("config");
    assert_eq!(config.feed.mode, ChangeFeed::Table);
    assert_eq!(config.feed.poll, Duration::from_millis(25));
    assert!(Cli::try_parse_from(["statgate", "--change-feed", "kafka"]).is_err());
}

#[test]
fn the_wal_feed_takes_an_optional_slot_name_postgresql_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = demo_settings(&dir, &["--change-feed", "wal"])
        .into_config()
        .expect("config");
    assert_eq!(config.feed.mode, ChangeFeed::Wal);
    assert_eq!(config.feed.wal_slot, None);
    let config = demo_settings(&dir, &["--change-feed", "wal", "--wal-slot", "node_1"])
        .into_config()
        .expect("config");
    assert_eq!(config.feed.wal_slot.as_deref(), Some("node_1"));
    for bad in ["", "Node1", "node-1", &"x".repeat(64)] {
        let err = demo_settings(&dir, &["--wal-slot", bad])
            .into_config()
            .expect_err(bad);
        assert!(err.to_string().contains("STATGATE_WAL_SLOT"), "{err}");
    }
}

#[test]
fn the_edge_limits_are_consistent_or_refused() {
    let config = settings(&[]).into_config().expect("defaults");
    assert_eq!(config.http.header_read_timeout, Duration::from_secs(10));
    assert_eq!(config.http.keep_alive_timeout, Duration::from_secs(5));
    assert_eq!(config.http.max_connections_per_ip, 11_000);
    assert!(config.http.max_connections >= 64);
    let err = settings(&["--keep-alive-timeout-secs", "30"])
        .into_config()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("STATGATE_HEADER_READ_TIMEOUT_SECS"),
        "{err}"
    );
    let err = settings(&["--max-connections-per-ip", "500"])
        .into_config()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("STATGATE_MAX_SOCKETS_PER_IP (10000)"),
        "{err}"
    );
    let config = settings(&[
        "--max-connections-per-ip",
        "500",
        "--max-sockets-per-ip",
        "400",
    ])
    .into_config()
    .expect("consistent");
    assert_eq!(config.http.max_connections_per_ip, 500);
    let config = settings(&["--trust-forwarded-for", "--max-connections", "0"])
        .into_config()
        .expect("behind a proxy");
    assert_eq!(
        config.http.max_connections_per_ip, 0,
        "the peer is the proxy"
    );
    assert_eq!(config.http.max_connections, 0, "0 turns the total off");
    assert!(settings(&["--header-read-timeout-secs", "0"])
        .into_config()
        .is_err());
}
