//! Cost of the subscription token (HMAC-SHA256 over base64url claims) and of the caller's JWT
//! (HS256), as `POST /realtime/subscribe` and the WebSocket `subscribe` frame pay them.
//!
//! The `Authenticator` is built from `Config::for_tests`, which needs no database.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use statgate::auth::Authenticator;
use statgate::Config;

/// Canonical args of a typical signature (`measurements/rollups/dailyCount`).
const ARGS: &str = r#"{"from":"2026-11-16","to":"2026-11-23","type":"steps","userId":"alice"}"#;
const QUERY: &str = "measurements/rollups/dailyCount";

fn authenticator() -> Authenticator {
    let config = Config::for_tests(
        "postgres://unused@127.0.0.1/unused".into(),
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/blog/queries"
        )),
    );
    Authenticator::new(&config)
}

fn tokens(c: &mut Criterion) {
    let auth = authenticator();
    let (token, _) = auth.sign_token("alice", QUERY, ARGS);
    let mut forged = token.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    let jwt = auth
        .mint_jwt("alice", Duration::from_secs(3600))
        .expect("mints a jwt");
    eprintln!(
        "subscription token: {} bytes, jwt: {} bytes",
        token.len(),
        jwt.len()
    );

    let mut group = c.benchmark_group("tokens");
    group.bench_function("sign_token", |b| {
        b.iter(|| auth.sign_token(black_box("alice"), black_box(QUERY), black_box(ARGS)))
    });
    group.bench_function("verify_token", |b| {
        b.iter(|| auth.verify_token(black_box(&token)).expect("valid token"))
    });
    group.bench_function("verify_token_forged", |b| {
        b.iter(|| {
            auth.verify_token(black_box(&forged))
                .expect_err("forged token")
        })
    });
    group.bench_function("verify_jwt", |b| {
        b.iter(|| auth.verify_jwt(black_box(&jwt)).expect("valid jwt"))
    });
    group.finish();
}

criterion_group!(benches, tokens);
criterion_main!(benches);
