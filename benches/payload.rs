//! Cost of turning one `statgate_changes` payload into a `Change` (docs/ARCHITECTURE.md, "The change payload").
//!
//! The payloads have the shape `statgate.notify_changes()` builds (migrations/0001): a head,
//! `rows` with the distinct values of each watched column, and `at`. Sizes: one value, 100
//! values, and a payload just under the 7,900-byte limit above which the trigger splits.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use statgate::listener::parse_payload;

const AT: i64 = 1_764_400_000_000_000;

fn small() -> String {
    format!(
        r#"{{"v": 1, "schema": "public", "table": "post_stats", "op": "UPDATE", "rows": {{"post_id": [17]}}, "at": {AT}}}"#
    )
}

/// One statement touching 100 posts: 100 distinct `post_id` values.
fn hundred() -> String {
    let ids: Vec<String> = (0..100).map(|i| (100_000 + i * 37).to_string()).collect();
    format!(
        r#"{{"v": 1, "schema": "public", "table": "post_stats", "op": "UPDATE", "rows": {{"post_id": [{}]}}, "at": {AT}}}"#,
        ids.join(", ")
    )
}

/// A rollup statement over many users, days and types, grown to just under 7,900 bytes.
fn near_limit() -> String {
    let render = |users: &[String]| {
        format!(
            r#"{{"v": 1, "schema": "public", "table": "measurement_rollups", "op": "UPDATE", "rows": {{"type": ["steps", "heart_rate"], "user_id": [{}], "bucket_start": ["2026-11-28", "2026-11-29"]}}, "at": {AT}}}"#,
            users.join(", ")
        )
    };
    let mut users = Vec::new();
    loop {
        users.push(format!(r#""user-{:08}""#, users.len() * 7919));
        if render(&users).len() > 7_900 {
            users.pop();
            return render(&users);
        }
    }
}

fn payloads(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_payload");
    for (name, payload) in [
        ("small", small()),
        ("100_values", hundred()),
        ("near_limit", near_limit()),
    ] {
        let change = parse_payload(&payload).expect("the bench payloads parse");
        assert!(!change.rows.is_empty());
        eprintln!("payload {name}: {} bytes", payload.len());
        group.throughput(Throughput::Bytes(payload.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| parse_payload(black_box(&payload)).expect("parses"))
        });
    }
    group.finish();
}

criterion_group!(benches, payloads);
criterion_main!(benches);
