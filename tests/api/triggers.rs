//! The PostgreSQL side (docs/ARCHITECTURE.md, "The change payload"): exact stats under a random mix of writes, and payloads.

use std::time::Duration;

use sqlx::postgres::PgListener;

use serde_json::json;

use statgate::config::ChangeFeed;

use crate::helpers::{fresh_database, read_until, TestApp};

#[tokio::test]
async fn a_random_mix_of_comment_writes_leaves_no_drift() {
    let (_, db) = fresh_database().await;
    sqlx::query(
        "insert into posts (title, author_id) select 'p' || g, 'a' from generate_series(1, 20) g",
    )
    .execute(&db)
    .await
    .expect("posts");
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..1000 {
        let post = (next(20) + 1) as i64;
        let other = (next(20) + 1) as i64;
        let sql = match next(6) {
            0 => "insert into comments (post_id, author_id, body) select $1, 'a', 'x' from generate_series(1, 3)",
            1 => "delete from comments where id in (select id from comments where post_id = $1 limit 2)",
            2 => "update comments set deleted = true where id in (select id from comments where post_id = $1 and not deleted limit 1)",
            3 => "update comments set deleted = false where id in (select id from comments where post_id = $1 and deleted limit 1)",
            4 => "update comments set post_id = $2 where id in (select id from comments where post_id = $1 limit 2)",
            _ => "insert into reactions (post_id, user_id, kind) values ($1, 'u', 'like'), ($2, 'u', 'like')",
        };
        let mut query = sqlx::query(sql).bind(post);
        if sql.contains("$2") {
            query = query.bind(other);
        }
        query.execute(&db).await.expect("write");
    }
    let drift: i64 = sqlx::query_scalar("select count(*) from post_stats_drift()")
        .fetch_one(&db)
        .await
        .expect("drift");
    assert_eq!(drift, 0);
}

#[tokio::test]
async fn one_big_insert_notifies_a_handful_of_times_and_a_move_names_both_posts() {
    let (url, db) = fresh_database().await;
    sqlx::query(
        "insert into posts (title, author_id) select 'p' || g, 'a' from generate_series(1, 100) g",
    )
    .execute(&db)
    .await
    .expect("posts");
    let mut listener = PgListener::connect(&url).await.expect("listener");
    listener.listen("statgate_changes").await.expect("listen");
    sqlx::query("insert into comments (post_id, author_id, body) select 1 + g % 100, 'a', 'x' from generate_series(1, 10000) g")
        .execute(&db)
        .await
        .expect("bulk insert");
    let mut named = std::collections::BTreeSet::new();
    let mut notifications = 0;
    while let Ok(Ok(notification)) =
        tokio::time::timeout(Duration::from_millis(500), listener.recv()).await
    {
        let change =
            statgate::listener::parse_payload(notification.payload()).expect("payload parses");
        if change.table.table == "author_comment_counts" {
            continue; // the example's other counter on comments (migrations/0006)
        }
        notifications += 1;
        assert_eq!(change.table.table, "post_stats");
        for value in &change.rows["post_id"] {
            named.insert(value.as_i64().expect("post id"));
        }
    }
    assert!(
        (1..=5).contains(&notifications),
        "{notifications} notifications"
    );
    assert_eq!(named, (1..=100).collect());

    sqlx::query("update comments set post_id = 99 where id = (select min(id) from comments where post_id = 3)").execute(&db).await.expect("move");
    let notification = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("in time")
        .expect("received");
    let change = statgate::listener::parse_payload(notification.payload()).expect("payload parses");
    let mut posts: Vec<i64> = change.rows["post_id"]
        .iter()
        .filter_map(|v| v.as_i64())
        .collect();
    posts.sort();
    assert_eq!(posts, vec![3, 99]);
}

#[tokio::test]
async fn writes_with_huge_keys_or_a_hundred_thousand_rows_commit_and_subscribers_converge() {
    let app = crate::helpers::TestApp::spawn().await;
    let (signature, mut ws, mut received) = app
        .watch(
            "u1",
            "measurements/rollups/dailyCount",
            serde_json::json!({"userId": "u1", "type": "steps", "from": "2026-01-01", "to": "2026-02-01"}),
        )
        .await;

    // Ten 10,000-byte keys in one statement: no payload can hold them (split or overflow), and
    // the write commits all the same.
    sqlx::query(
        "insert into measurements (user_id, type, value, taken_at)
         select repeat(chr(97 + g), 10000), 'steps', 1, '2026-01-05 10:00:00+00' from generate_series(0, 9) g",
    )
    .execute(&app.db)
    .await
    .expect("huge keys are written");

    // 100,000 rows over 5,001 users and 31 days in one statement.
    let started = std::time::Instant::now();
    sqlx::query(
        "insert into measurements (user_id, type, value, taken_at)
         select case when g % 10 = 0 then 'u1' else 'user' || (g % 5000) end, 'steps', 1,
                timestamptz '2026-01-01 12:00:00+00' + (g % 31) * interval '1 day'
         from generate_series(1, 100000) g",
    )
    .execute(&app.db)
    .await
    .expect("the 100,000-row statement is written");
    println!(
        "100,000-row insert with rollups and watch: {:?}",
        started.elapsed()
    );

    crate::helpers::read_until(&mut ws, &mut received, Duration::from_secs(30), |r| {
        r.value(&signature) == Some(&serde_json::json!(10_000))
    })
    .await;
}

/// A role of the application's kind: no privilege on schema statgate, on statgate's stats
/// tables or on anything else but the tables it is made owner of.
async fn app_role(db: &sqlx::PgPool, tables: &[&str]) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let role = format!(
        "app_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    sqlx::query(&format!("create role {role} nologin"))
        .execute(db)
        .await
        .expect("role");
    for table in tables {
        sqlx::query(&format!("alter table {table} owner to {role}"))
            .execute(db)
            .await
            .expect("owner");
    }
    role
}

/// One connection acting as `role` (`set role`: privileges are checked as that role).
async fn connection_as(db: &sqlx::PgPool, role: &str) -> sqlx::PgConnection {
    let mut connection = db.acquire().await.expect("connection").detach();
    sqlx::query(&format!("set role {role}"))
        .execute(&mut connection)
        .await
        .expect("set role");
    connection
}

/// Issue 15, item 2: the watch trigger ran as the writing role, which may not use schema
/// statgate: the write committed with a warning to the client, and no subscriber heard of it.
#[tokio::test]
async fn a_role_with_rights_on_its_own_table_only_writes_a_watched_table_and_the_subscriber_hears_it(
) {
    let (url, db) = fresh_database().await;
    sqlx::query("create table notes (id bigserial primary key, topic int8 not null, body text)")
        .execute(&db)
        .await
        .expect("table");
    let role = app_role(&db, &["notes"]).await;
    sqlx::query("select statgate.watch('notes', array['topic'])")
        .execute(&db)
        .await
        .expect("watch");
    let registry = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(registry.path().join("notes")).expect("mkdir");
    std::fs::write(
        registry.path().join("notes/topics.toml"),
        r#"[count]
sql = "SELECT count(*)::int8 AS count FROM notes WHERE topic = :topic"
args = { topic = "int8" }
returns = "value"
watch = [{ table = "notes", match = { topic = ":topic" } }]
"#,
    )
    .expect("query");
    let dir = registry.path().to_owned();
    let app = TestApp::spawn_on(url, db, move |config| {
        config.queries = statgate::config::Queries::Directory(dir)
    })
    .await;
    let (signature, mut ws, mut received) = app
        .watch("u1", "notes/topics/count", json!({"topic": 7}))
        .await;
    assert_eq!(received.value(&signature), Some(&json!(0)));

    let mut writer = connection_as(&app.db, &role).await;
    sqlx::query("insert into notes (topic, body) values (7, 'x'), (7, 'y')")
        .execute(&mut writer)
        .await
        .expect("the role writes its own table");
    read_until(&mut ws, &mut received, Duration::from_secs(2), |r| {
        r.value(&signature) == Some(&json!(2))
    })
    .await;
}

/// Issue 15, item 2: a counter's triggers ran as the writing role, which may not write the stats
/// table (the write failed) nor resolve its name through its own search_path. Now they run with
/// the rights of the role that defined the counter, on schema-qualified names.
#[tokio::test]
async fn a_role_that_may_not_touch_the_stats_tables_writes_their_sources_and_they_stay_exact() {
    let (_, db) = fresh_database().await;
    for ddl in [
        "create table items (id bigserial primary key, grp int, qty int)",
        "create table readings (id bigserial primary key, sensor text, v float8, at timestamptz)",
        "insert into items (grp, qty) select g % 4, g from generate_series(1, 20) g",
        "select statgate.define_counter('item_counts', 'items', array['grp'], filter => 'qty > 2', sums => array['qty'])",
        "select statgate.define_rollup('reading_rollups', 'readings', array['sensor'], 'at', 'v', array['DAY', 'MONTH'])",
    ] {
        sqlx::query(ddl).execute(&db).await.expect(ddl);
    }
    let role = app_role(&db, &["items", "readings"]).await;
    let mut writer = connection_as(&db, &role).await;
    // Nothing the triggers name may depend on the writer's search_path.
    for write in [
        "set search_path = pg_catalog",
        "insert into public.items (grp, qty) select g % 5, g from generate_series(1, 50) g",
        "update public.items set grp = grp + 1 where qty % 3 = 0",
        "update public.items set qty = 0 where grp = 2",
        "delete from public.items where qty > 40",
        "insert into public.readings (sensor, v, at) select 's' || g % 3, g, timestamptz '2026-01-01' + g * interval '7 hours' from generate_series(1, 100) g",
        "delete from public.readings where v > 90 or v < 5",
        "update public.readings set v = v * 2 where sensor = 's1'",
    ] {
        sqlx::query(write)
            .execute(&mut writer)
            .await
            .unwrap_or_else(|err| panic!("{write}: {err}"));
    }
    for counter in ["item_counts", "reading_rollups"] {
        let drift: i64 = sqlx::query_scalar("select count(*) from statgate.verify_counter($1)")
            .bind(counter)
            .fetch_one(&db)
            .await
            .expect("verify");
        assert_eq!(drift, 0, "{counter} drifted");
    }
    sqlx::query("truncate public.items")
        .execute(&mut writer)
        .await
        .expect("the owner truncates");
    let left: i64 = sqlx::query_scalar("select count(*) from item_counts")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(left, 0);
}

/// The watch and counter functions run with their owner's rights: no other role may call them,
/// or hang a trigger of its own on them (which would run with those rights).
#[tokio::test]
async fn no_other_role_may_call_statgates_definer_functions_or_hang_its_triggers_on_them() {
    let (_, db) = fresh_database().await;
    sqlx::query("create table mine (id int, grp int)")
        .execute(&db)
        .await
        .expect("table");
    let role = app_role(&db, &["mine"]).await;
    sqlx::query(&format!("grant usage on schema statgate to {role}"))
        .execute(&db)
        .await
        .expect("usage, so only execute is in the way");
    let mut other = connection_as(&db, &role).await;
    for attempt in [
        "select statgate.emit_change('{\"v\":1,\"table\":\"post_stats\",\"overflow\":true}')",
        "select statgate.change_lost('public', 'post_stats', 'forged')",
        "create trigger t after insert on mine referencing new table as new_rows for each statement execute function statgate.counter_post_reaction_kinds()",
        "create trigger t after insert on mine referencing new table as new_rows for each statement execute function statgate.notify_changes('grp')",
    ] {
        let err = sqlx::query(attempt)
            .execute(&mut other)
            .await
            .expect_err(attempt);
        assert!(
            err.to_string().contains("permission denied"),
            "{attempt}: {err}"
        );
    }
}

/// The grants docs/RELIABILITY.md ("Privileges") lists for a gateway that does not run the
/// migrations are enough, in both feed modes: it starts, reads the change feed and the count of
/// unrecorded changes, and pushes a change written by an application role.
#[tokio::test]
async fn a_gateway_role_with_the_documented_grants_serves_without_owning_statgate() {
    for feed in [ChangeFeed::Notify, ChangeFeed::Table] {
        let (url, db) = fresh_database().await;
        let gateway = app_role(&db, &[]).await;
        let writer = app_role(&db, &["comments", "posts", "post_stats"]).await;
        for grant in [
            format!("alter role {gateway} login"),
            format!("grant usage on schema statgate to {gateway}"),
            format!("grant select, insert, update on statgate.settings to {gateway}"),
            format!("grant select, delete on statgate.changes to {gateway}"),
            format!("grant select on statgate.unrecorded_changes to {gateway}"),
            format!("grant select on all tables in schema public to {gateway}"),
        ] {
            sqlx::query(&grant).execute(&db).await.expect("grant");
        }
        let (scheme, rest) = url.split_once("://").expect("url");
        let (_, host) = rest.split_once('@').expect("user in url");
        let as_gateway = format!("{scheme}://{gateway}@{host}");
        let app = TestApp::spawn_on(as_gateway, db, |config| {
            config.migrate = false;
            config.feed.mode = feed;
            config.feed.unrecorded_check = Duration::from_millis(200);
        })
        .await;
        let post = app.new_post().await;
        let (signature, mut ws, mut received) = app.watch_comments(post).await;
        let mut writes = connection_as(&app.db, &writer).await;
        sqlx::query("insert into comments (post_id, author_id, body) values ($1, 'w', 'x')")
            .bind(post)
            .execute(&mut writes)
            .await
            .expect("the application role writes");
        read_until(&mut ws, &mut received, Duration::from_secs(10), |r| {
            r.value(&signature) == Some(&json!(1))
        })
        .await;
        // What its polls run, on its own pool (connected as the gateway role).
        for poll in [
            "select coalesce(sum(count), 0)::int8 from statgate.unrecorded_changes",
            "with d as (delete from statgate.changes where false returning 1) select count(*) from d",
        ] {
            sqlx::query(poll)
                .fetch_one(app.state.pool())
                .await
                .unwrap_or_else(|err| panic!("{feed:?}: {poll}: {err}"));
        }
    }
}

/// A table-feed gateway whose role may not read `statgate.changes` (a missing grant) waits with
/// back-off and says it is not ready, instead of reconnecting and resyncing in a hot loop
/// while `/readyz` answers 200.
#[tokio::test]
async fn a_poller_that_may_not_read_the_change_table_backs_off_and_is_not_ready() {
    let (url, db) = fresh_database().await;
    let gateway = app_role(&db, &[]).await;
    for grant in [
        format!("alter role {gateway} login"),
        format!("grant usage on schema statgate to {gateway}"),
        format!("grant select, insert, update on statgate.settings to {gateway}"),
        format!("grant select on statgate.unrecorded_changes to {gateway}"),
        format!("grant select on all tables in schema public to {gateway}"),
    ] {
        sqlx::query(&grant).execute(&db).await.expect("grant");
    }
    let (scheme, rest) = url.split_once("://").expect("url");
    let (_, host) = rest.split_once('@').expect("user in url");
    let mut config = statgate::Config::for_tests(
        format!("{scheme}://{gateway}@{host}"),
        crate::helpers::queries_dir(),
    );
    config.migrate = false;
    config.feed.mode = ChangeFeed::Table;
    let app = statgate::Application::build(config)
        .await
        .expect("the gateway starts");
    let address = app.address();
    let state = app.state().clone();
    let shutdown = app.shutdown_token();
    let running = tokio::spawn(app.run());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reconnects = state.metrics().listener_reconnects.get();
    let resyncs = state.metrics().resyncs.get();
    assert!(
        reconnects == 0 && resyncs <= 1,
        "{reconnects} reconnects, {resyncs} resyncs in 3 s"
    );
    let ready = reqwest::get(format!("http://{address}/readyz"))
        .await
        .expect("readyz")
        .status();
    assert_eq!(ready, 503);
    shutdown.cancel();
    let _ = running.await;
}
