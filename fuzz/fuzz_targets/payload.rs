//! Change payloads (docs/ARCHITECTURE.md, "The change payload"): any text on the `statgate_changes` channel. `parse_payload` must
//! not panic, and a parsed change must be matched by the index exactly as the overlap rule (docs/REGISTRY.md)
//! evaluated entry by entry matches it (the property test's check, coverage-guided here).
//!
//! The matcher holds the example registry's watch entries for a few signatures, and, on the
//! table `fuzz`, one equality and one range entry per key kind on a column named after the
//! kind (`int`, `num`, `text`, `uuid`, `bool`, `date`, `time`), so every key reader is reached.

#![no_main]

use std::collections::HashSet;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use statgate::listener::parse_payload;
use statgate::matcher::{
    key_of, Bound, ColumnConstraint, Constraint, KeyKind, Matcher, TableName, WatchEntry,
};

struct Fixture {
    matcher: Matcher,
    signatures: Vec<(u64, Vec<WatchEntry>)>,
}

fn sample_args() -> Vec<Value> {
    vec![
        json!({"postId": 3}),
        json!({"postId": "99"}),
        json!({"postIds": [3, 99, 100]}),
        json!({"userId": "alice"}),
        json!({"userId": "alice", "type": "steps", "from": "2026-11-01", "to": "2026-11-08"}),
        json!({"userId": "bob", "type": "steps", "granularity": "WEEK", "from": "2026-01-01", "to": "2027-01-01"}),
    ]
}

/// An equality entry and a range entry on `column` of table `fuzz`.
fn kind_entries(kind: KeyKind, column: &str, low: Value, high: Value) -> Vec<WatchEntry> {
    let key = |v: &Value| key_of(kind, v).expect("a sample key");
    let entry = |constraint| WatchEntry {
        table: TableName::parse("fuzz"),
        constraints: vec![ColumnConstraint {
            column: column.to_owned(),
            kind,
            constraint,
        }],
    };
    vec![
        entry(Constraint::AnyOf(vec![key(&low), key(&high)])),
        entry(Constraint::Range {
            lower: Some(Bound {
                key: key(&low),
                inclusive: true,
            }),
            upper: Some(Bound {
                key: key(&high),
                inclusive: false,
            }),
        }),
    ]
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let registry = statgate_fuzz::registry();
    let mut signatures = Vec::new();
    for query in registry.queries() {
        for args in sample_args() {
            if let Ok(canonical) = query.validate(&args) {
                let id = signatures.len() as u64;
                signatures.push((id, query.watch_entries(&canonical.values)));
            }
        }
    }
    let kinds = [
        (KeyKind::Int, "int", json!(-5), json!(1_000_000)),
        (KeyKind::Num, "num", json!(-0.5), json!("12.25")),
        (KeyKind::Text, "text", json!("alice"), json!("bob")),
        (
            KeyKind::Uuid,
            "uuid",
            json!("00000000-0000-0000-0000-000000000001"),
            json!("6f9619ff-8b86-d011-b42d-00cf4fc964ff"),
        ),
        (KeyKind::Bool, "bool", json!(false), json!(true)),
        (
            KeyKind::Date,
            "date",
            json!("2026-01-01"),
            json!("2026-12-31"),
        ),
        (
            KeyKind::Time,
            "time",
            json!("2026-11-22T12:00:00Z"),
            json!("2026-11-23 12:00:00.5+01"),
        ),
    ];
    for (kind, column, low, high) in kinds {
        for entry in kind_entries(kind, column, low, high) {
            signatures.push((signatures.len() as u64, vec![entry]));
        }
    }
    let matcher = Matcher::new();
    for (id, entries) in &signatures {
        matcher.insert(*id, entries.clone());
    }
    Fixture {
        matcher,
        signatures,
    }
});

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(change) = parse_payload(&text) else {
        return;
    };
    let by_rule: HashSet<u64> = FIXTURE
        .signatures
        .iter()
        .filter(|(_, entries)| entries.iter().any(|entry| entry.overlaps(&change)))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(FIXTURE.matcher.matches(&change), by_rule, "{change:?}");
});
