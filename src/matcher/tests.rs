use super::*;
use serde_json::json;

fn eq(column: &str, keys: Vec<i64>) -> ColumnConstraint {
    ColumnConstraint {
        column: column.into(),
        kind: KeyKind::Int,
        constraint: Constraint::AnyOf(keys.into_iter().map(Key::Int).collect()),
    }
}

fn entry(table: &str, constraints: Vec<ColumnConstraint>) -> WatchEntry {
    WatchEntry {
        table: TableName::parse(table),
        constraints,
    }
}

fn change(table: &str, rows: Value) -> Change {
    let rows = rows
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_array().cloned().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    Change {
        table: TableName::parse(table),
        op: "UPDATE".into(),
        rows,
        overflow: false,
        at_micros: None,
        row: None,
    }
}

fn date_range(column: &str, from: &str, to: &str) -> ColumnConstraint {
    ColumnConstraint {
        column: column.into(),
        kind: KeyKind::Date,
        constraint: Constraint::Range {
            lower: key_of(KeyKind::Date, &json!(from)).map(|key| Bound {
                key,
                inclusive: true,
            }),
            upper: key_of(KeyKind::Date, &json!(to)).map(|key| Bound {
                key,
                inclusive: false,
            }),
        },
    }
}

#[test]
fn equality_matches_only_the_named_values() {
    let m = Matcher::new();
    m.insert(1, vec![entry("post_stats", vec![eq("post_id", vec![17])])]);
    m.insert(2, vec![entry("post_stats", vec![eq("post_id", vec![18])])]);
    assert_eq!(
        m.matches(&change("post_stats", json!({"post_id": [17, 99]}))),
        HashSet::from([1])
    );
    assert!(m
        .matches(&change("post_stats", json!({"post_id": [5]})))
        .is_empty());
    assert!(m
        .matches(&change("comments", json!({"post_id": [17]})))
        .is_empty());
}

#[test]
fn arrays_match_any_element() {
    let m = Matcher::new();
    m.insert(
        1,
        vec![entry("post_stats", vec![eq("post_id", vec![1, 2, 3])])],
    );
    assert_eq!(
        m.matches(&change("post_stats", json!({"post_id": [3]}))),
        HashSet::from([1])
    );
}

#[test]
fn every_carried_column_must_overlap_and_missing_columns_constrain_nothing() {
    let m = Matcher::new();
    let text = |v: &str| ColumnConstraint {
        column: "user_id".into(),
        kind: KeyKind::Text,
        constraint: Constraint::AnyOf(vec![Key::Text(v.into())]),
    };
    m.insert(
        1,
        vec![entry(
            "measurement_rollups",
            vec![
                text("u1"),
                date_range("bucket_start", "2026-11-16", "2026-11-23"),
            ],
        )],
    );
    let inside = change(
        "measurement_rollups",
        json!({"user_id": ["u1"], "bucket_start": ["2026-11-20"]}),
    );
    let outside = change(
        "measurement_rollups",
        json!({"user_id": ["u1"], "bucket_start": ["2026-11-23"]}),
    );
    let other_user = change(
        "measurement_rollups",
        json!({"user_id": ["u2"], "bucket_start": ["2026-11-20"]}),
    );
    let no_dates = change("measurement_rollups", json!({"user_id": ["u1"]}));
    let no_users = change(
        "measurement_rollups",
        json!({"bucket_start": ["2026-11-20"]}),
    );
    assert_eq!(m.matches(&inside), HashSet::from([1]));
    assert!(m.matches(&outside).is_empty());
    assert!(m.matches(&other_user).is_empty());
    assert_eq!(m.matches(&no_dates), HashSet::from([1]));
    assert_eq!(m.matches(&no_users), HashSet::from([1]));
}

#[test]
fn range_only_and_unconstrained_entries_are_checked_on_every_change() {
    let m = Matcher::new();
    m.insert(
        1,
        vec![entry(
            "measurement_rollups",
            vec![date_range("bucket_start", "2026-01-01", "2026-02-01")],
        )],
    );
    m.insert(2, vec![entry("measurement_rollups", vec![])]);
    assert_eq!(
        m.matches(&change(
            "measurement_rollups",
            json!({"bucket_start": ["2026-01-31"]})
        )),
        HashSet::from([1, 2])
    );
    assert_eq!(
        m.matches(&change(
            "measurement_rollups",
            json!({"bucket_start": ["2026-02-01"]})
        )),
        HashSet::from([2])
    );
}

#[test]
fn overflow_matches_every_entry_of_the_table() {
    let m = Matcher::new();
    m.insert(1, vec![entry("post_stats", vec![eq("post_id", vec![1])])]);
    m.insert(2, vec![entry("other", vec![])]);
    let mut overflow = change("post_stats", json!({}));
    overflow.overflow = true;
    assert_eq!(m.matches(&overflow), HashSet::from([1]));
}

#[test]
fn nulls_match_nothing_and_unreadable_values_match_everything() {
    let m = Matcher::new();
    m.insert(1, vec![entry("post_stats", vec![eq("post_id", vec![1])])]);
    assert!(m
        .matches(&change("post_stats", json!({"post_id": [null]})))
        .is_empty());
    assert_eq!(
        m.matches(&change("post_stats", json!({"post_id": [{"odd": true}]}))),
        HashSet::from([1])
    );
}

#[test]
fn removing_a_signature_forgets_all_its_entries() {
    let m = Matcher::new();
    m.insert(
        1,
        vec![
            entry("post_stats", vec![eq("post_id", vec![1])]),
            entry("posts", vec![]),
        ],
    );
    assert_eq!(m.len(), 2);
    m.remove(1);
    assert!(m.is_empty());
    assert!(m
        .matches(&change("post_stats", json!({"post_id": [1]})))
        .is_empty());
    assert!(m.matches(&change("posts", json!({}))).is_empty());
}
