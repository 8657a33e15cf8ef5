//! Cost of checking a subscriber's args against the registry and producing the canonical
//! signature (`query::canonical-args-json`), once per `POST /realtime/subscribe`.
//!
//! Uses the example registry in `examples/blog/queries/`, loaded as the gateway loads it.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use statgate::registry::Registry;

fn signature(c: &mut Criterion) {
    let registry = Registry::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/blog/queries"
    )))
    .expect("the example registry loads");
    let post_ids: Vec<u64> = (0..50).map(|i| 1_000 + i * 13).collect();
    let cases: [(&str, &str, Value); 3] = [
        ("one_int", "posts/stats/commentCount", json!({"postId": 17})),
        (
            "int_array_50",
            "posts/stats/counts",
            json!({"postIds": post_ids}),
        ),
        (
            "text_and_date_range",
            "measurements/rollups/dailyCount",
            json!({"userId": "alice", "type": "steps", "from": "2026-11-16", "to": "2026-11-23"}),
        ),
    ];

    let mut group = c.benchmark_group("validate_and_sign");
    for (name, query, args) in cases {
        let query = registry
            .get(query)
            .expect("query is in the example registry");
        let canonical = query.validate(&args).expect("args are valid");
        eprintln!("{name}: {}", query.signature(&canonical));
        group.bench_function(name, |b| {
            b.iter(|| {
                let canonical = query.validate(black_box(&args)).expect("valid");
                query.signature(&canonical)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, signature);
criterion_main!(benches);
