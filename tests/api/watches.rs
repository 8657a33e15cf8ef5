//! The generated watch functions and the in-place counter writes of migration 0008 (issue 18):
//! the payloads are the ones statgate sent before, byte for byte; the registry of watches
//! follows `watch` and `unwatch`; the feed mode 'wal' removes the watch triggers and the other
//! modes bring them back; and a database migrated before 0008 gets the new functions.

use sqlx::postgres::PgListener;
use sqlx::PgPool;

use crate::helpers::{empty_database, fresh_database};

/// The notifications on `statgate_changes` up to `marker`, which the caller sends after its
/// writes (NOTIFY delivers in commit order, so the marker comes after everything they sent).
async fn notifications_until(listener: &mut PgListener, marker: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let notification =
            tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
                .await
                .expect("the marker arrives")
                .expect("a notification");
        if notification.payload() == marker {
            return seen;
        }
        seen.push(notification.payload().to_owned());
    }
}

/// Runs `writes` and returns what they notified, with the time ("at") and, if given, the
/// schema name blanked out so that two identical runs compare equal.
async fn notified_by(
    db: &PgPool,
    listener: &mut PgListener,
    writes: &[String],
    blank_schema: &str,
) -> Vec<String> {
    for write in writes {
        sqlx::query(write).execute(db).await.expect(write);
    }
    sqlx::query("select pg_notify('statgate_changes', 'marker')")
        .execute(db)
        .await
        .expect("marker");
    notifications_until(listener, "marker")
        .await
        .into_iter()
        .map(|payload| {
            let blanked = regex_free_blank_at(&payload);
            blanked.replace(
                &format!("\"schema\": \"{blank_schema}\""),
                "\"schema\": \"_\"",
            )
        })
        .collect()
}

/// `"at": 123` → `"at": 0`, without a regex dependency.
fn regex_free_blank_at(payload: &str) -> String {
    match payload.find("\"at\": ") {
        Some(start) => {
            let digits = start + "\"at\": ".len();
            let end = payload[digits..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(payload.len(), |n| digits + n);
            format!("{}0{}", &payload[..digits], &payload[end..])
        }
        None => payload.to_owned(),
    }
}

/// The writes of the payload comparisons: single rows, nulls, moves, empty statements, edits of
/// unwatched columns, a 3,000-value statement that is split in parts, values too large for any
/// payload (overflow), and a huge key in a single row.
fn writes_on(table: &str) -> Vec<String> {
    [
        "insert into T (grp, kind) values (1, 'x')",
        "insert into T (grp, kind) values (null, null)",
        "insert into T (grp, kind) select g % 7, 'k' || (g % 3) from generate_series(1, 50) g",
        "update T set grp = grp + 1 where id < 10",
        "update T set body = 'z' where id = 3",
        "update T set grp = 5 where false",
        "delete from T where id in (1, 2)",
        "delete from T where false",
        "insert into T (grp, kind) select g, 'k' from generate_series(1, 3000) g",
        "insert into T (grp, kind) select g, repeat('y', 100) || g from generate_series(1, 3000) g",
        "insert into T (grp, kind) select g, repeat('y', 10000) from generate_series(1, 3) g",
        "update T set kind = kind || '!' where id > 100",
        "delete from T",
    ]
    .iter()
    .map(|write| write.replace('T', table))
    .collect()
}

#[tokio::test]
async fn a_generated_watch_sends_the_payloads_notify_changes_sent_byte_for_byte() {
    let (url, db) = fresh_database().await;
    for ddl in [
        "create schema old_way",
        "create schema new_way",
        "create table old_way.t (id serial primary key, grp int, kind text, body text)",
        "create table new_way.t (id serial primary key, grp int, kind text, body text)",
        // the triggers statgate.watch installed before migration 0008
        "create trigger statgate_watch_ins after insert on old_way.t referencing new table as new_rows for each statement execute function statgate.notify_changes('grp', 'kind')",
        "create trigger statgate_watch_upd after update on old_way.t referencing old table as old_rows new table as new_rows for each statement execute function statgate.notify_changes('grp', 'kind')",
        "create trigger statgate_watch_del after delete on old_way.t referencing old table as old_rows for each statement execute function statgate.notify_changes('grp', 'kind')",
        "select statgate.watch('new_way.t', array['grp', 'kind'])",
    ] {
        sqlx::query(ddl).execute(&db).await.expect(ddl);
    }
    let mut listener = PgListener::connect(&url).await.expect("listener");
    listener.listen("statgate_changes").await.expect("listen");

    let before = notified_by(&db, &mut listener, &writes_on("old_way.t"), "old_way").await;
    let now = notified_by(&db, &mut listener, &writes_on("new_way.t"), "new_way").await;
    assert_eq!(now, before);
    assert!(before.len() >= 12, "{before:?}");
    assert!(
        before.iter().any(|p| p.contains("\"overflow\": true")),
        "an overflow"
    );
    assert!(
        before
            .windows(2)
            .any(|w| w[0].contains("\"grp\": [1, 2") && w[1].contains("\"grp\": [")),
        "a statement split in parts"
    );
}

#[tokio::test]
async fn a_generated_row_watch_of_a_partitioned_table_sends_what_notify_row_changes_sent() {
    let (url, db) = fresh_database().await;
    for ddl in [
        "create schema old_way",
        "create schema new_way",
        "create table old_way.p (id int, grp int, kind text) partition by range (id)",
        "create table old_way.p1 partition of old_way.p for values from (0) to (10000)",
        "create table new_way.p (id int, grp int, kind text) partition by range (id)",
        "create table new_way.p1 partition of new_way.p for values from (0) to (10000)",
        "create trigger statgate_watch_row after insert or update or delete on old_way.p for each row execute function statgate.notify_row_changes('old_way', 'p', 'grp', 'kind')",
        "select statgate.watch('new_way.p', array['grp', 'kind'])",
    ] {
        sqlx::query(ddl).execute(&db).await.expect(ddl);
    }
    let mut listener = PgListener::connect(&url).await.expect("listener");
    listener.listen("statgate_changes").await.expect("listen");
    let writes = |schema: &str| -> Vec<String> {
        [
            "insert into S.p (id, grp, kind) values (1, 1, 'x'), (2, null, null)",
            "insert into S.p (id, grp, kind) select g, g % 7, 'k' || (g % 3) from generate_series(3, 20) g",
            "update S.p set grp = grp + 1 where id < 10",
            "update S.p1 set kind = null where id = 3",
            "delete from S.p1 where id in (1, 2)",
            "insert into S.p (id, grp, kind) values (30, 5, repeat('z', 9000))",
            "delete from S.p",
        ]
        .iter()
        .map(|w| w.replace("S.", &format!("{schema}.")))
        .collect()
    };
    let before = notified_by(&db, &mut listener, &writes("old_way"), "old_way").await;
    let now = notified_by(&db, &mut listener, &writes("new_way"), "new_way").await;
    assert_eq!(now, before);
    assert!(before.len() >= 40, "{}", before.len());
}

/// A counter's trigger sends the change of an update it made in place itself, and its stats
/// table's watch skips that statement: what subscribers receive is what the watch sent before.
#[tokio::test]
async fn a_counter_sends_for_its_in_place_updates_what_its_watch_would_have_sent() {
    let (url, db) = fresh_database().await;
    for ddl in [
        "create table src_a (id bigserial primary key, grp int, kind text, qty int, live boolean not null default true)",
        "create table src_b (id bigserial primary key, grp int, kind text, qty int, live boolean not null default true)",
        "select statgate.define_counter('counts_a', 'src_a', array['grp', 'kind'], 'live', array['qty'])",
        // counts_b is watched the old way (notify_changes, not statgate.watch): its counter
        // does not know of a watch, so it leaves every change to the triggers.
        "select statgate.define_counter('counts_b', 'src_b', array['grp', 'kind'], 'live', array['qty'])",
        "select statgate.unwatch('counts_b')",
        "create trigger statgate_watch_ins after insert on counts_b referencing new table as new_rows for each statement execute function statgate.notify_changes('grp', 'kind')",
        "create trigger statgate_watch_upd after update on counts_b referencing old table as old_rows new table as new_rows for each statement execute function statgate.notify_changes('grp', 'kind')",
        "create trigger statgate_watch_del after delete on counts_b referencing old table as old_rows for each statement execute function statgate.notify_changes('grp', 'kind')",
    ] {
        sqlx::query(ddl).execute(&db).await.expect(ddl);
    }
    let sends_itself = |name: &str| {
        let db = db.clone();
        let name = name.to_owned();
        async move {
            sqlx::query_scalar::<_, bool>(
                "select prosrc like '%statgate.claim%' from pg_proc where proname = 'counter_' || $1",
            )
            .bind(name)
            .fetch_one(&db)
            .await
            .expect("counter function")
        }
    };
    assert!(sends_itself("counts_a").await);
    assert!(!sends_itself("counts_b").await);

    let mut listener = PgListener::connect(&url).await.expect("listener");
    listener.listen("statgate_changes").await.expect("listen");
    let writes = |source: &str| -> Vec<String> {
        [
            "insert into S (grp, kind, qty) values (1, 'k1', 5)",
            "insert into S (grp, kind, qty) values (1, 'k1', null)",
            "insert into S (grp, kind, qty, live) values (1, 'k1', 3, false)",
            "insert into S (grp, kind, qty) values (2, 'k0', 1), (2, 'k0', 2)",
            "insert into S (grp, kind, qty) values (2, 'k0', 1), (3, 'k0', 2)",
            "delete from S where id = 1",
            "update S set live = not live where id = 2",
            "update S set grp = 4 where id = 4",
            "update S set qty = qty where id = 5",
            "insert into S (grp, kind, qty) values (null, 'k1', 1)",
            "insert into S (grp, kind, qty) values (1, repeat('z', 9000), 1)",
            "insert into S (grp, kind, qty) values (1, repeat('z', 9000), 1)",
            "delete from S where grp = 2",
        ]
        .iter()
        .map(|w| w.replace('S', source))
        .collect()
    };
    let by_triggers: Vec<String> = notified_by(&db, &mut listener, &writes("src_b"), "public")
        .await
        .into_iter()
        .map(|p| p.replace("counts_b", "counts_x"))
        .collect();
    let by_counter: Vec<String> = notified_by(&db, &mut listener, &writes("src_a"), "public")
        .await
        .into_iter()
        .map(|p| p.replace("counts_a", "counts_x"))
        .collect();
    assert_eq!(by_counter, by_triggers);
    assert!(by_triggers.len() >= 10, "{by_triggers:?}");
    for counter in ["counts_a", "counts_b"] {
        let drift: i64 = sqlx::query_scalar("select count(*) from statgate.verify_counter($1)")
            .bind(counter)
            .fetch_one(&db)
            .await
            .expect("verify");
        assert_eq!(drift, 0, "{counter}");
    }
}

/// The claim a counter leaves for its stats table's watch covers its own update only: a later
/// write of the stats table in the same transaction is watched.
#[tokio::test]
async fn a_direct_write_of_a_stats_table_after_a_counted_one_in_the_same_transaction_is_notified() {
    let (url, db) = fresh_database().await;
    sqlx::query("insert into posts (id, title, author_id) values (1, 'p', 'a')")
        .execute(&db)
        .await
        .expect("post");
    sqlx::query("insert into comments (post_id, author_id, body) values (1, 'ann', 'first')")
        .execute(&db)
        .await
        .expect("the author's group exists");
    let mut listener = PgListener::connect(&url).await.expect("listener");
    listener.listen("statgate_changes").await.expect("listen");
    let mut tx = db.begin().await.expect("begin");
    sqlx::query("insert into comments (post_id, author_id, body) values (1, 'ann', 'x')")
        .execute(&mut *tx)
        .await
        .expect("a counted write, in place");
    sqlx::query("update author_comment_counts set count = count + 1 where author_id = 'ann'")
        .execute(&mut *tx)
        .await
        .expect("a direct write");
    sqlx::query("select pg_notify('statgate_changes', 'marker')")
        .execute(&mut *tx)
        .await
        .expect("marker");
    tx.commit().await.expect("commit");
    let author_changes: Vec<String> = notifications_until(&mut listener, "marker")
        .await
        .into_iter()
        .filter(|p| p.contains("\"table\": \"author_comment_counts\""))
        .map(|p| regex_free_blank_at(&p))
        .collect();
    // one from the counter, one from the watch: the same text but for "at" (identical payloads
    // of a transaction are folded into one notification, so "at" tells them apart).
    assert_eq!(author_changes.len(), 2, "{author_changes:?}");
    assert_eq!(author_changes[0], author_changes[1]);
}

async fn watch_triggers(db: &PgPool, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select tgname::text from pg_trigger where tgrelid = to_regclass($1) and tgname like 'statgate\\_watch%' order by 1",
    )
    .bind(table)
    .fetch_all(db)
    .await
    .expect("triggers")
}

#[tokio::test]
async fn the_registry_of_watches_follows_watch_and_unwatch() {
    let (_, db) = fresh_database().await;
    let watches: Vec<(String, Vec<String>)> =
        sqlx::query_as("select tbl::text, columns from statgate.watches order by 1")
            .fetch_all(&db)
            .await
            .expect("watches");
    assert_eq!(
        watches,
        vec![
            (
                "author_comment_counts".to_owned(),
                vec!["author_id".to_owned()]
            ),
            (
                "measurement_rollups".to_owned(),
                vec![
                    "user_id".to_owned(),
                    "type".to_owned(),
                    "bucket_start".to_owned()
                ]
            ),
            (
                "post_reaction_kinds".to_owned(),
                vec!["post_id".to_owned(), "kind".to_owned()]
            ),
            ("post_stats".to_owned(), vec!["post_id".to_owned()]),
        ]
    );
    // every watch trigger runs its table's generated function
    let foreign: i64 = sqlx::query_scalar(
        "select count(*) from pg_trigger t join statgate.watches w on w.tbl = t.tgrelid
         where t.tgname like 'statgate\\_watch%' and t.tgfoid <> w.fn",
    )
    .fetch_one(&db)
    .await
    .expect("triggers");
    assert_eq!(foreign, 0);

    sqlx::query("create table notes (id serial primary key, topic int, author text)")
        .execute(&db)
        .await
        .expect("table");
    sqlx::query("select statgate.watch('notes', array['topic'])")
        .execute(&db)
        .await
        .expect("watch");
    sqlx::query("select statgate.watch('notes', array['topic', 'author'])")
        .execute(&db)
        .await
        .expect("watch again, other columns");
    let (columns, function): (Vec<String>, String) = sqlx::query_as(
        "select columns, fn::text from statgate.watches where tbl = 'notes'::regclass",
    )
    .fetch_one(&db)
    .await
    .expect("the row of notes");
    assert_eq!(columns, vec!["topic".to_owned(), "author".to_owned()]);
    assert_eq!(
        watch_triggers(&db, "notes").await,
        vec![
            "statgate_watch_del",
            "statgate_watch_ins",
            "statgate_watch_upd"
        ]
    );

    sqlx::query("select statgate.unwatch('notes')")
        .execute(&db)
        .await
        .expect("unwatch");
    let left: i64 =
        sqlx::query_scalar("select count(*) from statgate.watches where tbl = 'notes'::regclass")
            .fetch_one(&db)
            .await
            .expect("rows");
    assert_eq!(left, 0);
    assert!(watch_triggers(&db, "notes").await.is_empty());
    let function_left: Option<String> = sqlx::query_scalar("select to_regprocedure($1)::text")
        .bind(&function)
        .fetch_one(&db)
        .await
        .expect("function");
    assert_eq!(function_left, None, "{function} dropped");
}

/// Feed mode 'wal' (a feed that reads the write-ahead log needs no trigger): no watch trigger is
/// installed and writes send nothing, while the counters stay exact; 'notify' and 'table'
/// bring the triggers back with their functions regenerated for the mode.
#[tokio::test]
async fn feed_mode_wal_removes_the_watch_triggers_and_the_other_modes_bring_them_back() {
    let (url, db) = fresh_database().await;
    sqlx::query("insert into posts (id, title, author_id) values (1, 'p', 'a')")
        .execute(&db)
        .await
        .expect("post");
    let mut listener = PgListener::connect(&url).await.expect("listener");
    listener.listen("statgate_changes").await.expect("listen");
    let set_mode = |mode: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, String>("select statgate.set_feed_mode($1)")
                .bind(mode)
                .fetch_one(&db)
                .await
                .expect("set_feed_mode")
        }
    };
    let comment_and_listen = |marker: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query("insert into comments (post_id, author_id, body) values (1, 'ann', 'x')")
                .execute(&db)
                .await
                .expect("comment");
            sqlx::query("select pg_notify('statgate_changes', $1)")
                .bind(marker)
                .execute(&db)
                .await
                .expect("marker");
        }
    };
    let changes_rows = || {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from statgate.changes")
                .fetch_one(&db)
                .await
                .expect("changes")
        }
    };

    assert_eq!(set_mode("wal").await, "notify");
    for table in [
        "post_stats",
        "author_comment_counts",
        "post_reaction_kinds",
        "measurement_rollups",
    ] {
        assert!(
            watch_triggers(&db, table).await.is_empty(),
            "{table} in wal mode"
        );
    }
    comment_and_listen("after wal").await;
    comment_and_listen("after wal, again").await;
    assert_eq!(
        notifications_until(&mut listener, "after wal").await,
        Vec::<String>::new()
    );
    assert_eq!(
        notifications_until(&mut listener, "after wal, again").await,
        Vec::<String>::new()
    );
    assert_eq!(changes_rows().await, 0);
    let drift: i64 = sqlx::query_scalar(
        "select (select count(*) from post_stats_drift()) + (select count(*) from statgate.verify_counter('author_comment_counts'))",
    )
    .fetch_one(&db)
    .await
    .expect("drift");
    assert_eq!(drift, 0, "the counters count in wal mode");

    assert_eq!(set_mode("notify").await, "wal");
    assert_eq!(
        watch_triggers(&db, "post_stats").await,
        vec![
            "statgate_watch_del",
            "statgate_watch_ins",
            "statgate_watch_upd"
        ]
    );
    comment_and_listen("after notify").await;
    let sent = notifications_until(&mut listener, "after notify").await;
    assert!(
        sent.iter().any(|p| p.contains("\"table\": \"post_stats\""))
            && sent
                .iter()
                .any(|p| p.contains("\"table\": \"author_comment_counts\"")),
        "{sent:?}"
    );

    assert_eq!(set_mode("table").await, "notify");
    comment_and_listen("after table").await;
    assert_eq!(
        notifications_until(&mut listener, "after table").await,
        Vec::<String>::new()
    );
    assert_eq!(
        changes_rows().await,
        2,
        "post_stats and author_comment_counts"
    );

    let generated_for: Vec<String> =
        sqlx::query_scalar("select distinct generated_for from statgate.watches")
            .fetch_all(&db)
            .await
            .expect("modes");
    assert_eq!(generated_for, vec!["table".to_owned()]);
    let refused = sqlx::query("select statgate.set_feed_mode('logical')")
        .execute(&db)
        .await
        .expect_err("an unknown mode");
    assert!(refused.to_string().contains("mode must be"), "{refused}");
}

/// A database migrated before 0008 (watches on plain and partitioned tables, a counter with
/// sums) gets the registry, the generated functions and the in-place counter writes when it
/// migrates, and stays exact.
#[tokio::test]
async fn a_database_migrated_before_0008_gets_the_generated_functions_when_it_migrates() {
    let (_, db) = empty_database().await;
    sqlx::raw_sql(
        "create schema if not exists statgate;
         create table if not exists statgate.migrations (
           scope text not null, version bigint not null, description text not null,
           checksum bytea not null, applied_at timestamptz not null default now(),
           primary key (scope, version))",
    )
    .execute(&db)
    .await
    .expect("history");
    let scopes = [
        ("statgate", &statgate::db::migrations::STATGATE),
        ("example", &statgate::db::migrations::EXAMPLE),
    ];
    for (scope, migrator) in scopes {
        for migration in migrator.iter().filter(|m| m.version < 8) {
            sqlx::raw_sql(&migration.sql)
                .execute(&db)
                .await
                .unwrap_or_else(|err| panic!("{scope} {}: {err}", migration.version));
            sqlx::query("insert into statgate.migrations (scope, version, description, checksum) values ($1, $2, $3, $4)")
                .bind(scope)
                .bind(migration.version)
                .bind(&*migration.description)
                .bind(&*migration.checksum)
                .execute(&db)
                .await
                .expect("history row");
        }
    }
    for ddl in [
        "create table events (id int, grp int, v int) partition by range (id)",
        "create table events_1 partition of events for values from (0) to (1000)",
        "select statgate.watch('events', array['grp'])",
        "create table items (id bigserial primary key, grp int, qty int)",
        "select statgate.define_counter('item_counts', 'items', array['grp'], sums => array['qty'])",
        "insert into posts (id, title, author_id) values (1, 'p', 'a')",
        "insert into comments (post_id, author_id, body) values (1, 'ann', 'x')",
    ] {
        sqlx::query(ddl).execute(&db).await.expect(ddl);
    }

    let report = statgate::db::migrate(&db, statgate::db::MigrationSet::WithExample)
        .await
        .expect("migrate");
    assert_eq!(
        report.applied,
        vec![
            ("statgate", 8),
            ("statgate", 9),
            ("statgate", 10),
            ("example", 11),
            ("example", 12)
        ]
    );

    let watched: Vec<(String, Vec<String>, String)> =
        sqlx::query_as("select tbl::text, columns, generated_for from statgate.watches order by 1")
            .fetch_all(&db)
            .await
            .expect("watches");
    let tables: Vec<&str> = watched.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(
        tables,
        vec![
            "author_comment_counts",
            "events",
            "item_counts",
            "measurement_rollups",
            "post_reaction_kinds",
            "post_stats"
        ]
    );
    assert!(watched.iter().all(|(_, _, mode)| mode == "notify"));
    assert_eq!(
        watched[1].1,
        vec!["grp".to_owned()],
        "the partitioned table's columns"
    );
    let old_functions: i64 = sqlx::query_scalar(
        "select count(*) from pg_trigger where tgfoid in ('statgate.notify_changes()'::regprocedure, 'statgate.notify_row_changes()'::regprocedure)",
    )
    .fetch_one(&db)
    .await
    .expect("triggers");
    assert_eq!(
        old_functions, 0,
        "every watch trigger runs a generated function"
    );
    let in_place: Vec<String> = sqlx::query_scalar(
        "select c.name from statgate.counters c
         join pg_proc p on p.oid = to_regprocedure(statgate.counter_function(c.name) || '()')
         where p.prosrc like '%statgate.claim%' order by 1",
    )
    .fetch_all(&db)
    .await
    .expect("counter functions");
    assert_eq!(
        in_place,
        vec![
            "author_comment_counts",
            "item_counts",
            "post_reaction_kinds"
        ]
    );
    let dynamic: i64 = sqlx::query_scalar(
        "select count(*) from pg_proc where proname in ('comments_stats', 'reactions_stats') and prosrc like '%post_stats_apply%'",
    )
    .fetch_one(&db)
    .await
    .expect("example functions");
    assert_eq!(
        dynamic, 0,
        "the example's post_stats triggers are static sql"
    );

    for write in [
        "insert into items (grp, qty) values (1, 5)",
        "insert into items (grp, qty) select g % 3, g from generate_series(1, 30) g",
        "delete from items where id = 1",
        "update items set grp = 7 where id = 2",
        "insert into comments (post_id, author_id, body) values (1, 'ann', 'y')",
        "update comments set deleted = true where id = (select min(id) from comments)",
        "insert into events (id, grp, v) values (1, 1, 1)",
    ] {
        sqlx::query(write).execute(&db).await.expect(write);
    }
    let drift: i64 = sqlx::query_scalar(
        "select (select count(*) from post_stats_drift()) + (select count(*) from statgate.verify_counter('item_counts'))
              + (select count(*) from statgate.verify_counter('author_comment_counts'))",
    )
    .fetch_one(&db)
    .await
    .expect("drift");
    assert_eq!(drift, 0);
}

/// In notify mode a watch function runs as the writer, with the writer's search_path (issue 18:
/// no pinned search_path, which cost every write a guc save and restore). A function of the
/// same name in a schema on that path, with parameters that match the call better than
/// pg_catalog's (a classic hijack: pg_catalog's `format` is variadic "any", `to_json` and
/// `jsonb_agg` polymorphic), must never be called: every function is qualified. The traps
/// return a marker instead of failing, so a call would show in the payloads.
#[tokio::test]
async fn a_notify_mode_watch_calls_no_function_a_writer_could_shadow() {
    let (url, db) = fresh_database().await;
    for ddl in [
        "create table t (id serial primary key, grp bigint not null, kind text)",
        "select statgate.watch('t', array['grp', 'kind'])",
        "insert into posts (id, title, author_id) values (1, 'p', 'a')",
        // better matches than pg_catalog's for the arguments the watches pass
        "create function public.format(text, bigint, bigint, json, json) returns text language sql as $$ select 'TRAPPED' $$",
        "create function public.format(text, bigint, bigint, text, json, json) returns text language sql as $$ select 'TRAPPED' $$",
        "create function public.format(text, bigint, jsonb, json, json) returns text language sql as $$ select 'TRAPPED' $$",
        "create function public.format(text, bigint, json, jsonb, jsonb, json, json) returns text language sql as $$ select 'TRAPPED' $$",
        "create function public.to_json(name) returns json language sql as $$ select '\"TRAPPED\"'::json $$",
        "create function public.to_json(text) returns json language sql as $$ select '\"TRAPPED\"'::json $$",
        "create function public.to_jsonb(text) returns jsonb language sql as $$ select '\"TRAPPED\"'::jsonb $$",
        "create function public.to_jsonb(bigint) returns jsonb language sql as $$ select '\"TRAPPED\"'::jsonb $$",
        "create function public.trap_agg(jsonb, jsonb) returns jsonb language sql as $$ select '[\"TRAPPED\"]'::jsonb $$",
        "create aggregate public.jsonb_agg(jsonb) (sfunc = public.trap_agg, stype = jsonb)",
        "create function public.jsonb_build_object(text, int, text, name, text, name, text, text, text, jsonb, text, jsonb) returns jsonb language sql as $$ select '{\"TRAPPED\": 1}'::jsonb $$",
        "create function public.jsonb_build_object(text, int, text, name, text, name, text, text, text, boolean, text, bigint) returns jsonb language sql as $$ select '{\"TRAPPED\": 1}'::jsonb $$",
        "create function public.current_setting(text, boolean) returns text language sql as $$ select 'TRAPPED' $$",
    ] {
        sqlx::query(ddl).execute(&db).await.expect(ddl);
    }
    let mut listener = PgListener::connect(&url).await.expect("listener");
    listener.listen("statgate_changes").await.expect("listen");
    let writes: Vec<String> = [
        "insert into t (grp, kind) values (1, 'x')",
        "update t set kind = 'y' where grp = 1",
        "update t set grp = 2 where grp = 1",
        "delete from t where grp = 2",
        "insert into t (grp, kind) select g, 'k' || g from generate_series(1, 50) g",
        "insert into t (grp, kind) select g, repeat('v', 30) || g from generate_series(1, 3000) g",
        "insert into comments (post_id, author_id, body) values (1, 'ann', 'x')",
        "insert into comments (post_id, author_id, body) values (1, 'ann', 'y')",
    ]
    .iter()
    .map(|w| (*w).to_owned())
    .collect();
    let sent = notified_by(&db, &mut listener, &writes, "public").await;
    assert!(sent.len() >= 12, "{sent:?}");
    assert!(
        sent.iter()
            .all(|p| !p.contains("TRAPPED") && p.starts_with('{')),
        "{sent:?}"
    );
    assert!(
        !sent.iter().any(|p| p.contains("\"overflow\": true")),
        "every statement fits in one payload or in parts: {sent:?}"
    );
}
