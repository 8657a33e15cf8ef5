//! Cost of matching one change notification against 1,000,000 indexed subscriptions, and of
//! adding or removing one subscription at that size.
//!
//! The index holds one signature per subscription, built the way the gateway builds them
//! (registry `validate` + `watch_entries` from the example registry in `examples/blog/queries/`):
//!
//! | signatures | query | watch entry |
//! | --- | --- | --- |
//! | 400,000 | `posts/stats/commentCount` | `post_stats.post_id = :postId` (10,000 on one hot post) |
//! | 200,000 | `posts/stats/counts` | `post_stats.post_id = any(:postIds)`, 5 ids each |
//! | 200,000 | `measurements/rollups/dailyCount` | `user_id`, `type` equal, `bucket_start` in `[from, to)` |
//! | 200,000 | (built directly) | `reaction_stats.kind` and `.post_id` equal |
//!
//! The last kind has no example query; its entry is built with its columns in the order a
//! registry file would give them (sorted by name). Changes are parsed from payloads with
//! `parse_payload`, as the listener does.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use statgate::listener::parse_payload;
use statgate::matcher::{
    key_of, Change, ColumnConstraint, Constraint, KeyKind, Matcher, TableName, WatchEntry,
};
use statgate::registry::{Query, Registry};

const SIGNATURES: u64 = 1_000_000;
const HOT_POST: u64 = 0;
const HOT_SUBSCRIBERS: u64 = 10_000;
const POSTS: u64 = 200_000;
const USERS: u64 = 50_000;
const TYPES: [&str; 4] = ["steps", "heart_rate", "sleep", "weight"];
const KINDS: [&str; 6] = ["like", "love", "laugh", "wow", "sad", "angry"];
/// 2026-01-01 as days since the Unix epoch.
const FIRST_DAY: i64 = 20_454;

/// A small deterministic generator (SplitMix64), so every run indexes the same subscriptions.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

fn date(days_since_epoch: i64) -> String {
    chrono::DateTime::from_timestamp(days_since_epoch * 86_400, 0)
        .expect("a valid date")
        .format("%Y-%m-%d")
        .to_string()
}

fn entries(query: &Query, args: Value) -> Vec<WatchEntry> {
    let canonical = query.validate(&args).expect("bench args are valid");
    query.watch_entries(&canonical.values)
}

fn reaction_entry(kind: &str, post: u64) -> WatchEntry {
    let eq = |column: &str, kind: KeyKind, value: Value| ColumnConstraint {
        column: column.into(),
        kind,
        constraint: Constraint::AnyOf(vec![key_of(kind, &value).expect("a key")]),
    };
    WatchEntry {
        table: TableName::parse("reaction_stats"),
        constraints: vec![
            eq("kind", KeyKind::Text, json!(kind)),
            eq("post_id", KeyKind::Int, json!(post)),
        ],
    }
}

/// What the fixture remembers to aim changes at.
struct Fixture {
    matcher: Matcher,
    rollup: (String, String, String),
    reaction: (String, u64),
    comment_count: std::sync::Arc<Query>,
}

fn fixture() -> Fixture {
    let started = Instant::now();
    let registry = Registry::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/blog/queries"
    )))
    .expect("the example registry loads");
    let query = |name: &str| registry.get(name).expect("query in registry").clone();
    let (comment_count, counts, daily) = (
        query("posts/stats/commentCount"),
        query("posts/stats/counts"),
        query("measurements/rollups/dailyCount"),
    );
    let matcher = Matcher::new();
    let mut rng = Rng(42);
    let mut rollup = None;
    let mut reaction = None;
    for signature in 0..SIGNATURES {
        let watch = match signature {
            s if s < HOT_SUBSCRIBERS => entries(&comment_count, json!({"postId": HOT_POST})),
            s if s < 400_000 => entries(&comment_count, json!({"postId": 1 + rng.below(POSTS)})),
            s if s < 600_000 => {
                let ids: Vec<u64> = (0..5).map(|_| 1 + rng.below(POSTS)).collect();
                entries(&counts, json!({"postIds": ids}))
            }
            s if s < 800_000 => {
                let user = format!("user-{}", rng.below(USERS));
                let ty = TYPES[rng.below(TYPES.len() as u64) as usize];
                let from = FIRST_DAY + rng.below(330) as i64;
                let to = from + [1, 7, 30][rng.below(3) as usize];
                rollup.get_or_insert((user.clone(), ty.to_owned(), date(from)));
                entries(
                    &daily,
                    json!({"userId": user, "type": ty, "from": date(from), "to": date(to)}),
                )
            }
            _ => {
                let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
                let post = 1 + rng.below(POSTS);
                reaction.get_or_insert((kind.to_owned(), post));
                vec![reaction_entry(kind, post)]
            }
        };
        matcher.insert(signature, watch);
    }
    assert_eq!(matcher.len() as u64, SIGNATURES);
    eprintln!(
        "indexed {} signatures in {:.1} s",
        matcher.len(),
        started.elapsed().as_secs_f64()
    );
    Fixture {
        matcher,
        rollup: rollup.expect("rollup signatures exist"),
        reaction: reaction.expect("reaction signatures exist"),
        comment_count,
    }
}

fn change(table: &str, rows: Value) -> Change {
    let payload = json!({"v": 1, "schema": "public", "table": table, "op": "UPDATE",
                         "rows": rows, "at": 1_764_400_000_000_000_i64});
    parse_payload(&payload.to_string()).expect("bench payloads parse")
}

fn matching(c: &mut Criterion) {
    let fixture = fixture();
    let matcher = &fixture.matcher;

    // A post with a handful of subscribers (its own commentCount ones and a few `counts`).
    let few_post = (1..=POSTS)
        .find(|post| {
            let n = matcher
                .matches(&change("post_stats", json!({"post_id": [post]})))
                .len();
            (3..=10).contains(&n)
        })
        .expect("some post has 3 to 10 subscribers");
    let hundred_posts: Vec<u64> = (0..100).map(|i| 1 + i * 1_999).collect();
    let (user, ty, day) = &fixture.rollup;
    let (kind, post) = &fixture.reaction;
    let cases = [
        (
            "post_few",
            change("post_stats", json!({"post_id": [few_post]})),
        ),
        (
            "post_hot_10k",
            change("post_stats", json!({"post_id": [HOT_POST]})),
        ),
        (
            "post_100_values",
            change("post_stats", json!({"post_id": hundred_posts})),
        ),
        (
            "post_unwatched",
            change("post_stats", json!({"post_id": [POSTS + 1_000]})),
        ),
        (
            "rollup_few",
            change(
                "measurement_rollups",
                json!({"user_id": [user], "type": [ty], "bucket_start": [day]}),
            ),
        ),
        (
            "reaction_few",
            change("reaction_stats", json!({"kind": [kind], "post_id": [post]})),
        ),
    ];

    let mut group = c.benchmark_group("matcher_1m/matches");
    group.sample_size(50);
    for (name, change) in &cases {
        let matched = matcher.matches(change).len();
        eprintln!("{name}: {matched} signatures matched");
        assert!(matched > 0 || *name == "post_unwatched");
        group.bench_function(*name, |b| b.iter(|| matcher.matches(black_box(change))));
    }
    group.finish();

    // One more subscription on top of the million: insert it, then remove it, timing only the
    // operation under test so the index stays at 1,000,000 between iterations.
    let extra = SIGNATURES + 1;
    let watch = entries(&fixture.comment_count, json!({"postId": few_post}));
    let mut group = c.benchmark_group("matcher_1m/update");
    group.bench_function("insert_one", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let watch = watch.clone();
                let started = Instant::now();
                matcher.insert(black_box(extra), watch);
                spent += started.elapsed();
                matcher.remove(extra);
            }
            spent
        })
    });
    group.bench_function("remove_one", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                matcher.insert(extra, watch.clone());
                let started = Instant::now();
                matcher.remove(black_box(extra));
                spent += started.elapsed();
            }
            spent
        })
    });
    group.finish();
}

criterion_group!(benches, matching);
criterion_main!(benches);
