//! statgate on an application's existing database: it owns schema `statgate` and nothing else.

use std::process::{Command, Output};

use sqlx::PgPool;

use crate::helpers::empty_database;

/// An application that was there first: its own `comments` and `posts` (other columns than
/// the example's), a trigger, a function, and its own sqlx migration history.
const APPLICATION: &str = r#"
create table public.posts (id int primary key, headline text not null);
create table public.comments (id bigserial primary key, body text not null);
insert into public.comments (body) values ('first'), ('second');
create function public.touch_comment() returns trigger language plpgsql as $$ begin return new; end $$;
create trigger comments_touch before insert on public.comments
  for each row execute function public.touch_comment();
create table public._sqlx_migrations (
  version bigint primary key,
  description text not null,
  installed_on timestamptz not null default now(),
  success boolean not null,
  checksum bytea not null,
  execution_time bigint not null
);
insert into public._sqlx_migrations (version, description, success, checksum, execution_time)
values (1, 'create posts', true, '\x0102', 5), (20240101000000, 'create comments', true, '\x0304', 7);
"#;

/// Every object outside schema `statgate` that a migration could add, drop or change, one
/// line each, sorted; and the rows of the application's migration history.
const OUTSIDE_STATGATE: &str = r#"
with outside as (
  select oid, nspname from pg_namespace
  where nspname <> 'statgate' and nspname not like 'pg\_%' and nspname <> 'information_schema')
select line from (
  select 'schema ' || nspname as line from outside
  union all
  select 'relation ' || o.nspname || '.' || c.relname || ' ' || c.relkind::text
    from pg_class c join outside o on o.oid = c.relnamespace
  union all
  select 'column ' || o.nspname || '.' || c.relname || '.' || a.attname::text || ' '
         || format_type(a.atttypid, a.atttypmod) || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
    from pg_attribute a join pg_class c on c.oid = a.attrelid join outside o on o.oid = c.relnamespace
    left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
   where a.attnum > 0 and not a.attisdropped
  union all
  select 'function ' || o.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid)
         || ') ' || md5(p.prosrc)
    from pg_proc p join outside o on o.oid = p.pronamespace
  union all
  select 'trigger ' || pg_get_triggerdef(t.oid) from pg_trigger t
    join pg_class c on c.oid = t.tgrelid join outside o on o.oid = c.relnamespace
   where not t.tgisinternal
  union all
  select 'extension ' || extname || ' ' || extversion from pg_extension
  union all
  select 'history ' || version || ' ' || description || ' ' || encode(checksum, 'hex')
    from public._sqlx_migrations
) objects order by line
"#;

async fn outside_statgate(db: &PgPool) -> Vec<String> {
    sqlx::query_scalar(OUTSIDE_STATGATE)
        .fetch_all(db)
        .await
        .expect("catalog snapshot")
}

async fn statgate_history(db: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("select scope, version from statgate.migrations order by scope, version")
        .fetch_all(db)
        .await
        .expect("statgate's history")
}

/// `statgate migrate` in production mode (DATABASE_URL set, no secrets: it needs none).
fn migrate(database_url: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_statgate"))
        .arg("migrate")
        .args(extra)
        .env("DATABASE_URL", database_url)
        .env_remove("STATGATE_DEMO")
        .env_remove("STATGATE_JWT_SECRET")
        .env_remove("STATGATE_TOKEN_SECRET")
        .output()
        .expect("statgate runs")
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn statgate_versions() -> Vec<(String, i64)> {
    statgate::db::migrations::STATGATE
        .iter()
        .map(|m| ("statgate".to_owned(), m.version))
        .collect()
}

#[tokio::test]
async fn migrate_on_an_application_database_changes_nothing_outside_schema_statgate() {
    let (url, db) = empty_database().await;
    sqlx::raw_sql(APPLICATION)
        .execute(&db)
        .await
        .expect("the application's schema");
    let before = outside_statgate(&db).await;
    assert!(before
        .iter()
        .any(|line| line.starts_with("history 20240101000000")));

    let first = migrate(&url, &[]);
    assert_success(&first, "first migrate");
    assert_eq!(outside_statgate(&db).await, before, "after the first run");
    assert_eq!(statgate_history(&db).await, statgate_versions());

    let second = migrate(&url, &[]);
    assert_success(&second, "second migrate");
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("0 new"),
        "{}",
        String::from_utf8_lossy(&second.stdout)
    );
    assert_eq!(outside_statgate(&db).await, before, "after the second run");

    // statgate's own objects work on this database: watch the application's table.
    sqlx::query("select statgate.watch('public.comments', array['id'])")
        .execute(&db)
        .await
        .expect("statgate.watch on the application's table");
}

#[tokio::test]
async fn two_processes_migrating_one_application_database_at_once_both_succeed() {
    let (url, db) = empty_database().await;
    sqlx::raw_sql(APPLICATION)
        .execute(&db)
        .await
        .expect("the application's schema");
    let before = outside_statgate(&db).await;
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| migrate(&url, &[]));
        let b = scope.spawn(|| migrate(&url, &[]));
        (
            a.join().expect("first process"),
            b.join().expect("second process"),
        )
    });
    assert_success(&a, "first process");
    assert_success(&b, "second process");
    assert_eq!(outside_statgate(&db).await, before);
    assert_eq!(statgate_history(&db).await, statgate_versions());
}

#[tokio::test]
async fn migrate_example_on_an_empty_database_gives_the_example_application() {
    let (url, db) = empty_database().await;
    let output = migrate(&url, &["--example"]);
    assert_success(&output, "migrate --example");
    let tables: Vec<String> = sqlx::query_scalar(
        "select table_name::text from information_schema.tables where table_schema = 'public' order by 1",
    )
    .fetch_all(&db)
    .await
    .expect("tables");
    for table in [
        "comments",
        "measurements",
        "post_stats",
        "posts",
        "reactions",
    ] {
        assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
    }
    let history = statgate_history(&db).await;
    assert!(
        history.iter().any(|(scope, _)| scope == "example"),
        "{history:?}"
    );
    let no_sqlx_table: bool =
        sqlx::query_scalar("select to_regclass('public._sqlx_migrations') is null")
            .fetch_one(&db)
            .await
            .expect("query");
    assert!(no_sqlx_table, "statgate keeps no history in public");
}

#[tokio::test]
async fn a_database_migrated_by_an_earlier_statgate_has_its_history_moved_and_nothing_reapplied() {
    let (url, db) = empty_database().await;
    statgate::db::migrate(&db, statgate::db::MigrationSet::WithExample)
        .await
        .expect("migrate");
    let applied = statgate_history(&db).await;
    // What an earlier statgate left: its history (and an application's row) in sqlx's table.
    sqlx::raw_sql(
        "create table public._sqlx_migrations (version bigint primary key, description text not null,
           installed_on timestamptz not null default now(), success boolean not null,
           checksum bytea not null, execution_time bigint not null);
         insert into public._sqlx_migrations (version, description, success, checksum, execution_time)
           select version, description, true, checksum, 1 from statgate.migrations;
         insert into public._sqlx_migrations values (99999999, 'the app', now(), true, '\\x05', 1);
         -- the example's migration 2 as released, before a comment-only edit
         update public._sqlx_migrations set checksum = decode('3dd8978536481ce7ea32f5a7d0a69fe57b54dda040b3dfb6a1be202aacf2380a9e2a7924e9866196c76aa15557ba2b80', 'hex')
          where version = 2;
         delete from statgate.migrations;",
    )
    .execute(&db)
    .await
    .expect("the earlier layout");

    let output = migrate(&url, &[]);
    assert_success(&output, "migrate");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("earlier statgate"), "{log}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("0 new"));
    assert_eq!(statgate_history(&db).await, applied);
    let current: Vec<u8> = sqlx::query_scalar(
        "select checksum from statgate.migrations where scope = 'example' and version = 2",
    )
    .fetch_one(&db)
    .await
    .expect("the example's migration 2");
    assert_eq!(
        current,
        statgate::db::migrations::EXAMPLE
            .iter()
            .find(|m| m.version == 2)
            .map(|m| m.checksum.to_vec())
            .expect("shipped"),
        "a comment-only edit is recorded under its new checksum"
    );
    let left: Vec<i64> = sqlx::query_scalar("select version from public._sqlx_migrations")
        .fetch_all(&db)
        .await
        .expect("query");
    assert_eq!(left, vec![99999999], "only the application's row stays");
}

/// A team's own table and query: nothing of the example application.
const SHOP_QUERIES: &str = r#"
[orderCount]
description = "Orders of one shop."
sql = "SELECT count(*)::int8 AS count FROM shop_orders WHERE shop_id = :shopId"
args = { shopId = "int8" }
returns = "value"
watch = [{ table = "shop_orders", match = { shop_id = ":shopId" } }]
"#;

fn check(database_url: &str, queries: &std::path::Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_statgate"))
        .arg("check")
        .env("DATABASE_URL", database_url)
        .env("STATGATE_QUERIES", queries)
        .env_remove("STATGATE_DEMO")
        .env_remove("STATGATE_JWT_SECRET")
        .env_remove("STATGATE_TOKEN_SECRET")
        .output()
        .expect("statgate runs");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// The statement `check` prints after `fix: `.
fn printed_fix(output: &str) -> String {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix("fix: "))
        .unwrap_or_else(|| panic!("no fix printed in:\n{output}"))
        .to_owned()
}

#[tokio::test]
async fn check_names_the_missing_watch_and_its_fix_then_a_team_s_own_query_pushes_updates() {
    let (url, db) = empty_database().await;
    let migrated = migrate(&url, &[]);
    assert_success(&migrated, "migrate");
    sqlx::raw_sql(
        "create table shop_orders (id bigserial primary key, shop_id bigint not null, total numeric not null);
         insert into shop_orders (shop_id, total) values (7, 10), (7, 12), (8, 3);",
    )
    .execute(&db)
    .await
    .expect("the team's table");
    let registry = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(registry.path().join("shops")).expect("mkdir");
    std::fs::write(registry.path().join("shops/orders.toml"), SHOP_QUERIES).expect("write");

    // No triggers at all: check fails, naming the file, the query, the table and the fix.
    let (ok, output) = check(&url, registry.path());
    assert!(!ok, "{output}");
    for expected in [
        "orders.toml",
        "shops/orders/orderCount",
        "public.shop_orders",
        "no statgate watch triggers",
    ] {
        assert!(output.contains(expected), "{expected} in:\n{output}");
    }
    assert_eq!(
        printed_fix(&output),
        "select statgate.watch('public.shop_orders', array['shop_id'])"
    );

    // Watched, but not on the column the query matches on.
    sqlx::query("select statgate.watch('shop_orders', array['id'])")
        .execute(&db)
        .await
        .expect("watch");
    let (ok, output) = check(&url, registry.path());
    assert!(!ok, "{output}");
    assert!(output.contains("matches column(s) shop_id"), "{output}");
    let fix = printed_fix(&output);
    assert_eq!(
        fix,
        "select statgate.watch('public.shop_orders', array['id', 'shop_id'])"
    );

    // The printed statement fixes it.
    sqlx::query(&fix)
        .execute(&db)
        .await
        .expect("the printed fix runs");
    let (ok, output) = check(&url, registry.path());
    assert!(ok, "{output}");

    // Served: subscribe, insert, the update arrives.
    let dir = registry.path().to_owned();
    let app = crate::helpers::TestApp::spawn_on(url, db, move |config| {
        config.queries = statgate::config::Queries::Directory(dir)
    })
    .await;
    let (signature, mut ws, mut received) = app
        .watch(
            "u1",
            "shops/orders/orderCount",
            serde_json::json!({"shopId": 7}),
        )
        .await;
    assert_eq!(received.value(&signature), Some(&serde_json::json!(2)));
    sqlx::query("insert into shop_orders (shop_id, total) values (7, 99)")
        .execute(&app.db)
        .await
        .expect("insert");
    crate::helpers::converge_to(&mut ws, &mut received, &signature, serde_json::json!(3)).await;
}

#[tokio::test]
async fn check_refuses_a_value_query_with_two_columns_and_serve_refuses_the_registry() {
    let (url, db) = crate::helpers::fresh_database().await;
    let registry = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(registry.path().join("posts")).expect("mkdir");
    std::fs::write(
        registry.path().join("posts/pair.toml"),
        "[pair]\nsql = \"SELECT comment_count, reaction_count FROM post_stats WHERE post_id = :postId\"\nargs = { postId = \"int8\" }\nreturns = \"value\"\nwatch = [{ table = \"post_stats\", match = { post_id = \":postId\" } }]\n",
    )
    .expect("write");
    let (ok, output) = check(&url, registry.path());
    assert!(!ok, "{output}");
    assert!(
        output.contains("yields 2 columns (comment_count, reaction_count)"),
        "{output}"
    );
    let mut config = statgate::Config::for_tests(url, registry.path().to_owned());
    config.migrate = false;
    let refused = statgate::Application::build(config)
        .await
        .err()
        .expect("refused");
    assert!(refused.to_string().contains("posts/pair/pair"), "{refused}");
    drop(db);
}

#[tokio::test]
async fn check_runs_each_query_with_the_gateway_s_own_privileges() {
    let (url, db) = crate::helpers::fresh_database().await;
    let role = format!("reader_{}", std::process::id());
    sqlx::raw_sql(&format!(
        "drop role if exists {role}; create role {role} login;"
    ))
    .execute(&db)
    .await
    .expect("a role without grants");
    let as_reader = url.replacen("postgres@", &format!("{role}@"), 1);
    let registry = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(registry.path().join("posts")).expect("mkdir");
    std::fs::write(
        registry.path().join("posts/list.toml"),
        "[all]\nsql = \"SELECT post_id, comment_count FROM post_stats WHERE post_id = ANY(:ids)\"\nargs = { ids = \"int8[]\" }\nwatch = [{ table = \"post_stats\", match = { post_id = \":ids\" } }]\n",
    )
    .expect("write");
    let (ok, output) = check(&as_reader, registry.path());
    assert!(!ok, "{output}");
    assert!(
        output.contains("posts/list/all") && output.contains("permission denied"),
        "{output}"
    );
    sqlx::query(&format!("grant select on post_stats to {role}"))
        .execute(&db)
        .await
        .expect("grant");
    let (ok, output) = check(&as_reader, registry.path());
    assert!(ok, "{output}");
}
