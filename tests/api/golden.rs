//! Golden files of the SQL statgate generates (issue 17, item 6): the trigger functions that
//! `define_counter`, `define_rollup` and `watch` generate for the example application, as
//! `pg_get_functiondef` prints them from a freshly migrated database, are kept in
//! `tests/golden/*.sql`. A change to a generator then shows up in review as a diff of the real
//! SQL a writer runs. Object ids, which differ between databases, are written as `<oid>`.
//!
//! After an intended change, regenerate the files with
//! `UPDATE_GOLDEN=1 cargo test --test api golden::` and review the diff.

use std::path::{Path, PathBuf};

use sqlx::PgPool;

use crate::helpers::fresh_database;

/// Each golden file and the query that prints its function.
const GENERATED: &[(&str, &str)] = &[
    (
        "counter_author_comment_counts",
        "select pg_get_functiondef('statgate.counter_author_comment_counts()'::regprocedure)",
    ),
    (
        "counter_post_reaction_kinds",
        "select pg_get_functiondef('statgate.counter_post_reaction_kinds()'::regprocedure)",
    ),
    (
        "rollup_measurement_rollups",
        "select pg_get_functiondef('statgate.counter_measurement_rollups()'::regprocedure)",
    ),
    (
        "watch_post_stats",
        "select pg_get_functiondef(fn) from statgate.watches where tbl = 'post_stats'::regclass",
    ),
    (
        "watch_author_comment_counts",
        "select pg_get_functiondef(fn) from statgate.watches where tbl = 'author_comment_counts'::regclass",
    ),
    (
        "watch_measurement_rollups",
        "select pg_get_functiondef(fn) from statgate.watches where tbl = 'measurement_rollups'::regclass",
    ),
];

/// The functions of feed mode 'table', whose watches differ (security definer, an insert into
/// statgate.changes).
const GENERATED_IN_TABLE_MODE: &[(&str, &str)] = &[(
    "watch_post_stats.table_mode",
    "select pg_get_functiondef(fn) from statgate.watches where tbl = 'post_stats'::regclass",
)];

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.sql"))
}

/// `watch_16538` → `watch_<oid>`, `'16650:{post_id}'` → `'<oid>:{post_id}'`: the ids a database
/// gives its objects.
fn without_oids(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        let (before, from) = rest.split_at(start);
        let len = from.bytes().take_while(u8::is_ascii_digit).count();
        let (number, after) = from.split_at(len);
        let function_name = before.ends_with("watch_");
        let claim = before.ends_with('\'') && after.starts_with(":{");
        out.push_str(before);
        out.push_str(if function_name || claim {
            "<oid>"
        } else {
            number
        });
        rest = after;
    }
    out.push_str(rest);
    out
}

async fn check(db: &PgPool, files: &[(&str, &str)]) -> Vec<String> {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (name, query) in files {
        let generated: String = sqlx::query_scalar(query)
            .fetch_one(db)
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        let generated = without_oids(&generated);
        let path = golden_path(name);
        if update {
            std::fs::create_dir_all(path.parent().expect("tests/golden")).expect("golden dir");
            std::fs::write(&path, &generated).expect("write golden file");
            continue;
        }
        let kept = std::fs::read_to_string(&path).unwrap_or_default();
        if kept != generated {
            stale.push(format!(
                "{} differs from what is generated now (UPDATE_GOLDEN=1 rewrites it):\n{generated}",
                path.display()
            ));
        }
    }
    stale
}

#[test]
fn oids_are_written_as_placeholders_and_other_numbers_kept() {
    assert_eq!(
        without_oids("function statgate.watch_16538() when '16650:{post_id}' <= 7900 and x = '2'"),
        "function statgate.watch_<oid>() when '<oid>:{post_id}' <= 7900 and x = '2'"
    );
}

#[tokio::test]
async fn the_sql_generated_for_the_example_matches_the_golden_files() {
    let (_, db) = fresh_database().await;
    let mut stale = check(&db, GENERATED).await;
    sqlx::query("select statgate.set_feed_mode('table')")
        .execute(&db)
        .await
        .expect("table mode");
    stale.extend(check(&db, GENERATED_IN_TABLE_MODE).await);
    assert!(stale.is_empty(), "{}", stale.join("\n\n"));
}
