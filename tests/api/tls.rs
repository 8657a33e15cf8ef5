//! TLS to PostgreSQL (sqlx with rustls): with `sslmode=verify-full` statgate checks
//! the server's certificate, for the pool and for the LISTEN connection alike.

use std::process::Command;

use crate::helpers::{PrivateServer, TestApp};

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

/// A certificate authority (`ca.crt`) and a server certificate for 127.0.0.1 it signed, made
/// with the openssl CLI in `dir`; returns the server's (key, certificate) PEM.
fn certificates(dir: &std::path::Path) -> (String, String) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=statgate test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect("read pem");
    (read("server.key"), read("server.crt"))
}

/// Writes `pem` into the server's data directory through the server itself, so the file
/// belongs to the server's user (as root, the test's server runs as `postgres`), then makes it
/// private to that user, as PostgreSQL requires of a key.
async fn write_in_data_directory(db: &sqlx::PgPool, name: &str, pem: &str) {
    let data: String = sqlx::query_scalar("show data_directory")
        .fetch_one(db)
        .await
        .expect("data directory");
    assert!(pem
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-+/= \n".contains(c)));
    let copy = format!(
        "copy (select unnest(string_to_array(rtrim('{pem}', E'\\n'), E'\\n'))) to '{data}/{name}'"
    );
    sqlx::query(&copy).execute(db).await.expect("file written");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        format!("{data}/{name}"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod 600");
}

#[tokio::test]
async fn verify_full_tls_serves_the_pool_and_the_listener_and_refuses_an_untrusted_certificate() {
    let (server, db) = PrivateServer::start("tls").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, cert) = certificates(dir.path());
    write_in_data_directory(&db, "server.key", &key).await;
    write_in_data_directory(&db, "server.crt", &cert).await;
    sqlx::query("alter system set ssl = on")
        .execute(&db)
        .await
        .expect("ssl on");
    sqlx::query("select pg_reload_conf()")
        .execute(&db)
        .await
        .expect("reload");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let ssl: String = sqlx::query_scalar("show ssl")
        .fetch_one(&db)
        .await
        .expect("show ssl");
    assert_eq!(ssl, "on");

    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        server.url,
        dir.path().join("ca.crt").display()
    );
    let app = TestApp::spawn_on(url, db.clone(), |_| {}).await;
    let pool_on_tls: bool =
        sqlx::query_scalar("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
            .fetch_one(app.state.pool())
            .await
            .expect("pool connection");
    assert!(pool_on_tls, "the recompute pool talks TLS");
    let listener_on_tls: bool = sqlx::query_scalar(
        "select bool_and(s.ssl) from pg_stat_ssl s join pg_stat_activity a using (pid) where a.application_name = $1",
    )
    .bind(statgate::listener::LISTENER_APPLICATION_NAME)
    .fetch_one(&db)
    .await
    .expect("listener connection");
    assert!(listener_on_tls, "the LISTEN connection talks TLS");

    // A server certificate from another authority is refused under verify-full.
    let other = tempfile::tempdir().expect("tempdir");
    certificates(other.path());
    let untrusted = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        server.url,
        other.path().join("ca.crt").display()
    );
    let config = statgate::Config::for_tests(untrusted.clone(), crate::helpers::queries_dir());
    assert!(
        statgate::db::connect_pool(&untrusted, &config)
            .await
            .is_err(),
        "an untrusted server certificate is refused"
    );
}
