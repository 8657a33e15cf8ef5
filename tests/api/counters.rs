//! Declarative counters and rollups (docs/COUNTERS.md): exact under concurrent mixed writes,
//! bulk-cheap, right at bucket edges, and parity catches a drifted stats table.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::postgres::PgListener;
use sqlx::PgPool;

use tokio_util::sync::CancellationToken;

use crate::helpers::{
    converge_to, fresh_database, next_event, read_until, wait_until, TestApp, XorShift,
};

const ITEMS: &str = "create table items (
    id bigserial primary key, grp int, kind text not null, qty int, price numeric(12, 2),
    live boolean not null default true)";

async fn drift(db: &PgPool, counter: &str) -> Vec<(Value, Option<Value>, Option<Value>)> {
    sqlx::query_as("select key, stored, live from statgate.verify_counter($1)")
        .bind(counter)
        .fetch_all(db)
        .await
        .expect("verify_counter runs")
}

/// One random write: inserts, deletes, group moves, filter flips and summed-column changes,
/// each touching a random number of rows, at most `max_rows`.
fn random_write(rng: &mut XorShift, max_rows: usize) -> (&'static str, [i64; 3]) {
    let (a, b, n) = (
        rng.below(9) as i64,
        rng.below(9) as i64,
        1 + rng.below(max_rows) as i64,
    );
    let sql = match rng.below(7) {
        0 | 1 => "insert into items (grp, kind, qty, price, live)
                  select nullif(($1 + g) % 9, 8), 'k' || (($2 * g) % 3), (g * 7 + $1) % 50,
                         ((g * 13 + $2) % 1000) / 10.0, (g + $1) % 4 <> 0
                  from generate_series(1, $3) g",
        2 => "delete from items where id in (select id from items where grp = $1 or $2 = 8 limit $3)",
        3 => "update items set grp = nullif($2, 8) where id in (select id from items where grp = $1 limit $3)",
        4 => "update items set live = not live where id in (select id from items where kind = 'k' || ($1 % 3) limit $3)",
        5 => "update items set qty = qty + $2, price = price * 2 where id in (select id from items where grp = $1 limit $3)",
        _ => "update items set kind = 'k' || ($2 % 3), qty = null where id in (select id from items where grp = $1 limit $3)",
    };
    (sql, [a, b, n])
}

/// Runs `operations` random writes of at most `max_rows` rows each; a statement that loses a
/// deadlock (rows of `items` locked in different orders by two sessions) is retried, as an
/// application would.
async fn write_randomly(db: PgPool, seed: u64, operations: usize, max_rows: usize) -> usize {
    let mut rng = XorShift(seed);
    let mut retried = 0;
    for _ in 0..operations {
        let (sql, [a, b, n]) = random_write(&mut rng, max_rows);
        loop {
            match sqlx::query(sql).bind(a).bind(b).bind(n).execute(&db).await {
                Ok(_) => break,
                Err(err)
                    if err
                        .as_database_error()
                        .and_then(|e| e.code())
                        .is_some_and(|code| code == "40P01") =>
                {
                    retried += 1
                }
                Err(err) => panic!("write failed: {err}\n{sql}"),
            }
        }
    }
    retried
}

#[tokio::test]
async fn counters_with_and_without_filter_and_sums_stay_exact_under_concurrent_mixed_writes() {
    let (_, db) = fresh_database().await;
    sqlx::query(ITEMS).execute(&db).await.expect("items");
    sqlx::query("insert into items (grp, kind, qty, price) select g % 5, 'k' || (g % 3), g, g / 4.0 from generate_series(1, 200) g")
        .execute(&db)
        .await
        .expect("rows before the definition, for the backfill");
    sqlx::query("select statgate.define_counter('item_stats', 'items', array['grp', 'kind'], 'live', array['qty', 'price'])")
        .execute(&db)
        .await
        .expect("counter with filter and sums");
    sqlx::query("select statgate.define_counter('item_groups', 'items', array['grp'])")
        .execute(&db)
        .await
        .expect("plain counter");
    assert!(drift(&db, "item_stats").await.is_empty(), "backfill");

    let writers: Vec<_> = (0..4)
        .map(|i| tokio::spawn(write_randomly(db.clone(), 0x9e37_79b9 + i, 1250, 40)))
        .collect();
    for writer in writers {
        writer.await.expect("writer finished");
    }

    assert_eq!(drift(&db, "item_stats").await, vec![]);
    assert_eq!(drift(&db, "item_groups").await, vec![]);
    let groups: i64 = sqlx::query_scalar("select count(*) from item_stats where count > 0")
        .fetch_one(&db)
        .await
        .expect("groups");
    let empty: i64 = sqlx::query_scalar("select count(*) from item_stats where count = 0")
        .fetch_one(&db)
        .await
        .expect("empty groups");
    assert!(groups > 5, "the writes left live groups ({groups})");
    assert_eq!(empty, 0, "a group whose rows are gone is removed");

    sqlx::query("update item_stats set count = count + 1, sum_qty = 0 where grp = (select min(grp) from item_stats)")
        .execute(&db)
        .await
        .expect("corrupt");
    sqlx::query("delete from item_groups where grp = (select max(grp) from item_groups)")
        .execute(&db)
        .await
        .expect("corrupt");
    assert!(!drift(&db, "item_stats").await.is_empty());
    let missing = drift(&db, "item_groups").await;
    assert_eq!(missing.len(), 1);
    assert!(
        missing[0].1.is_none() && missing[0].2.is_some(),
        "{missing:?}"
    );
    for counter in ["item_stats", "item_groups"] {
        let changed: i64 = sqlx::query_scalar("select statgate.refresh_counter($1)")
            .bind(counter)
            .fetch_one(&db)
            .await
            .expect("refresh");
        assert!(changed >= 1);
        assert_eq!(drift(&db, counter).await, vec![], "{counter} after refresh");
    }
    sqlx::query("truncate items")
        .execute(&db)
        .await
        .expect("truncate");
    let left: i64 = sqlx::query_scalar("select count(*) from item_stats")
        .fetch_one(&db)
        .await
        .expect("count");
    assert_eq!(left, 0, "truncate empties the counter");
}

/// Issue 18: a statement whose counted rows fall in one group (every single-row write) is
/// applied as one update in place, its change sent by the counter itself; moves between groups
/// go group by group in key order. Four writers of single rows keep both counters exact.
#[tokio::test]
async fn counters_stay_exact_under_concurrent_single_row_writes() {
    let (_, db) = fresh_database().await;
    sqlx::query(ITEMS).execute(&db).await.expect("items");
    sqlx::query("insert into items (grp, kind, qty, price) select g % 5, 'k' || (g % 3), g, g / 4.0 from generate_series(1, 200) g")
        .execute(&db)
        .await
        .expect("rows");
    for definition in [
        "select statgate.define_counter('item_stats', 'items', array['grp', 'kind'], 'live', array['qty', 'price'])",
        "select statgate.define_counter('item_groups', 'items', array['grp'])",
    ] {
        sqlx::query(definition).execute(&db).await.expect(definition);
    }
    let writers: Vec<_> = (0..4)
        .map(|i| tokio::spawn(write_randomly(db.clone(), 0x51_7cc1 + i, 600, 1)))
        .collect();
    for writer in writers {
        writer.await.expect("writer finished");
    }
    assert_eq!(drift(&db, "item_stats").await, vec![]);
    assert_eq!(drift(&db, "item_groups").await, vec![]);
    let empty: i64 = sqlx::query_scalar("select count(*) from item_stats where count = 0")
        .fetch_one(&db)
        .await
        .expect("empty groups");
    assert_eq!(empty, 0, "a group whose rows are gone is removed");
}

#[tokio::test]
async fn a_hundred_thousand_row_insert_costs_one_stats_statement_and_one_notification() {
    let (url, db) = fresh_database().await;
    sqlx::query(ITEMS).execute(&db).await.expect("items");
    sqlx::query("select statgate.define_counter('item_groups', 'items', array['grp'])")
        .execute(&db)
        .await
        .expect("counter");
    let mut listener = PgListener::connect(&url).await.expect("listener");
    listener.listen("statgate_changes").await.expect("listen");

    let mut tx = db.begin().await.expect("begin");
    sqlx::query("set local track_functions = 'pl'")
        .execute(&mut *tx)
        .await
        .expect("track functions");
    sqlx::query(
        "insert into items (grp, kind) select g % 100, 'k' from generate_series(1, 100000) g",
    )
    .execute(&mut *tx)
    .await
    .expect("bulk insert");
    let calls: i64 = sqlx::query_scalar(
        "select calls from pg_stat_xact_user_functions where funcname = 'counter_item_groups'",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("trigger function statistics");
    let (inserted, updated): (i64, i64) = sqlx::query_as(
        "select n_tup_ins, n_tup_upd from pg_stat_xact_user_tables where relname = 'item_groups'",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("stats table statistics");
    tx.commit().await.expect("commit");
    assert_eq!(
        calls, 1,
        "one statement-level trigger run for the statement"
    );
    assert_eq!(
        (inserted, updated),
        (100, 0),
        "one row written per group, by one upsert"
    );

    let mut notifications = Vec::new();
    while let Ok(Ok(notification)) =
        tokio::time::timeout(Duration::from_millis(500), listener.recv()).await
    {
        notifications.push(notification.payload().to_owned());
    }
    assert_eq!(notifications.len(), 1, "{notifications:?}");
    let change = statgate::listener::parse_payload(&notifications[0]).expect("payload parses");
    assert_eq!(change.table.table, "item_groups");
    assert_eq!(change.rows["grp"].len(), 100);
    let count: i64 = sqlx::query_scalar("select sum(count)::int8 from item_groups")
        .fetch_one(&db)
        .await
        .expect("sum");
    assert_eq!(count, 100_000);
}

#[tokio::test]
async fn rollup_buckets_split_at_utc_midnight_monday_month_end_and_leap_day() {
    let (_, db) = fresh_database().await;
    sqlx::query("create table readings (id bigserial primary key, sensor text not null, v float8 not null, at timestamptz not null)")
        .execute(&db)
        .await
        .expect("readings");
    sqlx::query("select statgate.define_rollup('reading_rollups', 'readings', array['sensor'], 'at', 'v', array['day', 'week', 'month', 'year'])")
        .execute(&db)
        .await
        .expect("rollup");
    sqlx::query(
        "insert into readings (sensor, v, at) values
           ('s', 1, '2023-12-31 23:59:59.999999+00'),
           ('s', 2, '2024-01-01 00:00:00+00'),
           ('s', 3, '2024-01-31 23:59:59+00'),
           ('s', 4, '2024-02-01 00:00:00+00'),
           ('s', 5, '2024-02-28 23:59:59.999999+00'),
           ('s', 6, '2024-02-29 00:00:00+00'),
           ('s', 7, '2024-03-01 00:30:00+01'),
           ('s', 8, '2024-03-03 23:59:59+00'),
           ('s', 9, '2024-03-04 00:00:00+00')",
    )
    .execute(&db)
    .await
    .expect("readings at the edges");
    let buckets = |granularity: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_as::<_, (String, i64, f64)>(
                "select bucket_start::text, count, sum from reading_rollups where granularity = $1 order by bucket_start",
            )
            .bind(granularity)
            .fetch_all(&db)
            .await
            .expect("buckets")
        }
    };
    let day = |d: &str, n: i64, s: f64| (d.to_owned(), n, s);
    assert_eq!(
        buckets("DAY").await,
        vec![
            day("2023-12-31", 1, 1.0),
            day("2024-01-01", 1, 2.0),
            day("2024-01-31", 1, 3.0),
            day("2024-02-01", 1, 4.0),
            day("2024-02-28", 1, 5.0),
            day("2024-02-29", 2, 13.0), // 2024-03-01 00:30 +01 is still the leap day in UTC
            day("2024-03-03", 1, 8.0),
            day("2024-03-04", 1, 9.0),
        ]
    );
    assert_eq!(
        buckets("WEEK").await,
        vec![
            day("2023-12-25", 1, 1.0),
            day("2024-01-01", 1, 2.0),
            day("2024-01-29", 2, 7.0),
            day("2024-02-26", 4, 26.0), // Monday 26 Feb to Sunday 3 Mar 23:59:59
            day("2024-03-04", 1, 9.0),
        ]
    );
    assert_eq!(
        buckets("MONTH").await,
        vec![
            day("2023-12-01", 1, 1.0),
            day("2024-01-01", 2, 5.0),
            day("2024-02-01", 4, 22.0),
            day("2024-03-01", 2, 17.0),
        ]
    );
    assert_eq!(
        buckets("YEAR").await,
        vec![day("2023-01-01", 1, 1.0), day("2024-01-01", 8, 44.0)]
    );

    let extremes = |granularity: &'static str, start: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_as::<_, (i64, Option<f64>, Option<f64>)>(
                "select count, min, max from reading_rollups where granularity = $1 and bucket_start = $2::date",
            )
            .bind(granularity)
            .bind(start)
            .fetch_optional(&db)
            .await
            .expect("bucket")
        }
    };
    assert_eq!(
        extremes("MONTH", "2024-02-01").await,
        Some((4, Some(4.0), Some(7.0)))
    );
    sqlx::query("delete from readings where v in (4, 7)")
        .execute(&db)
        .await
        .expect("delete the month's min and max");
    assert_eq!(
        extremes("MONTH", "2024-02-01").await,
        Some((2, Some(5.0), Some(6.0))),
        "min and max recomputed after deleting them"
    );
    sqlx::query("update readings set v = 0.5 where v = 6")
        .execute(&db)
        .await
        .expect("lower a value");
    assert_eq!(
        extremes("MONTH", "2024-02-01").await,
        Some((2, Some(0.5), Some(5.0)))
    );
    sqlx::query("update readings set at = '2024-05-01' where v = 9")
        .execute(&db)
        .await
        .expect("move to another bucket");
    assert_eq!(
        extremes("WEEK", "2024-03-04").await,
        None,
        "an emptied bucket is removed"
    );
    assert_eq!(
        extremes("MONTH", "2024-05-01").await,
        Some((1, Some(9.0), Some(9.0)))
    );
    assert_eq!(drift(&db, "reading_rollups").await, vec![]);
}

#[tokio::test]
async fn the_example_rollups_and_counters_are_defined_and_exact() {
    let (_, db) = fresh_database().await;
    sqlx::query("select statgate_demo_seed()")
        .execute(&db)
        .await
        .expect("seed");
    let names: Vec<String> = sqlx::query_scalar("select name from statgate.counters order by name")
        .fetch_all(&db)
        .await
        .expect("counters");
    assert_eq!(
        names,
        [
            "author_comment_counts",
            "measurement_rollups",
            "post_reaction_kinds"
        ]
    );
    sqlx::query("delete from measurements where id in (select id from measurements order by value desc limit 5)")
        .execute(&db)
        .await
        .expect("delete the largest measurements");
    sqlx::query("update comments set deleted = true where id in (select id from comments limit 7)")
        .execute(&db)
        .await
        .expect("soft delete");
    for name in names {
        assert_eq!(drift(&db, &name).await, vec![], "{name}");
    }
}

async fn divergences(app: &TestApp) -> f64 {
    let text = app.metrics_text().await;
    text.lines()
        .find(|line| {
            line.starts_with(
                "statgate_parity_divergences_total{query=\"posts/stats/commentCount\"}",
            )
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

async fn corrupt_comment_count(app: &TestApp, post: i64) {
    sqlx::query("update post_stats set comment_count = comment_count + 1000 where post_id = $1")
        .bind(post)
        .execute(&app.db)
        .await
        .expect("corrupt post_stats");
}

#[tokio::test]
async fn parity_serves_the_live_value_of_a_corrupted_stats_row_on_first_computation() {
    let app = TestApp::spawn().await;
    let post = app.new_post().await;
    app.add_comment(post).await;
    app.add_comment(post).await;
    corrupt_comment_count(&app, post).await;

    let (signature, _ws, received) = app.watch_comments(post).await;
    assert_eq!(received.value(&signature), Some(&json!(2)));
    assert_eq!(divergences(&app).await, 1.0);
}

#[tokio::test]
async fn parity_at_full_sample_rate_never_pushes_a_corrupted_value() {
    let app = TestApp::spawn_with(|config| config.recompute.parity_sample_rate = 1.0).await;
    let post = app.new_post().await;
    app.add_comment(post).await;
    let (signature, mut ws, mut received) = app.watch_comments(post).await;
    assert_eq!(received.value(&signature), Some(&json!(1)));

    corrupt_comment_count(&app, post).await;
    app.add_comment(post).await;
    read_until(&mut ws, &mut received, Duration::from_secs(10), |r| {
        r.value(&signature) != Some(&json!(1))
    })
    .await;
    assert_eq!(
        received.value(&signature),
        Some(&json!(2)),
        "the live count, not the stats row's 1002"
    );
    assert!(divergences(&app).await >= 1.0);
}

#[tokio::test]
async fn a_query_over_a_declared_counter_pushes_its_changes() {
    let app = TestApp::spawn().await;
    let post = app.new_post().await;
    let (signature, mut ws, mut received) = app
        .watch("u1", "posts/stats/reactionsByKind", json!({"postId": post}))
        .await;
    assert_eq!(received.value(&signature), Some(&json!([])));
    sqlx::query("insert into reactions (post_id, user_id, kind) values ($1, 'a', 'like'), ($1, 'b', 'like'), ($1, 'c', 'wow')")
        .bind(post)
        .execute(&app.db)
        .await
        .expect("reactions");
    let expected = json!([{"kind": "like", "count": 2}, {"kind": "wow", "count": 1}]);
    read_until(&mut ws, &mut received, Duration::from_secs(10), |r| {
        r.value(&signature) == Some(&expected)
    })
    .await;
    assert_eq!(received.value(&signature), Some(&expected));
}

/// Issue 15, item 8: the parity statement ran after the computed one, in another snapshot, so
/// a commit between the two counted as a divergence. Two writers for 10 s with every recompute
/// checked: no divergence; a corrupted row is still caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parity_under_two_concurrent_writers_reports_no_false_divergence_and_still_catches_drift() {
    let app = TestApp::spawn_with(|config| config.recompute.parity_sample_rate = 1.0).await;
    let stop = CancellationToken::new();
    let mut posts = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..3 {
        let post = app.new_post().await;
        let (signature, mut ws, mut received) = app.watch_comments(post).await;
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    event = next_event(&mut ws, Duration::from_secs(60)) => {
                        received.record(&event.expect("the socket stays open"));
                    }
                }
            }
            (post, signature, ws, received)
        }));
        posts.push(post);
    }
    let metrics = &app.state.metrics();
    let label = metrics.query("posts/stats/commentCount");
    let checks = || metrics.parity_checks.get_or_create(&label).get();
    let divergences = || metrics.parity_divergences.get_or_create(&label).get();

    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let writers: Vec<_> = (0..2)
        .map(|writer| {
            let (db, posts) = (app.db.clone(), posts.clone());
            tokio::spawn(async move {
                let mut written = 0usize;
                while tokio::time::Instant::now() < until {
                    let post = posts[(written + writer) % posts.len()];
                    let sql = if written % 3 == 2 {
                        "delete from comments where id = (select max(id) from comments where post_id = $1)"
                    } else {
                        "insert into comments (post_id, author_id, body) values ($1, 'w', 'x')"
                    };
                    sqlx::query(sql).bind(post).execute(&db).await.expect("write");
                    written += 1;
                }
                written
            })
        })
        .collect();
    let mut written = 0;
    for writer in writers {
        written += writer.await.expect("writer");
    }
    stop.cancel();
    let mut sockets = Vec::new();
    for reader in readers {
        let (post, signature, mut ws, mut received) = reader.await.expect("reader");
        let expected = json!(app.comment_count(post).await);
        converge_to(&mut ws, &mut received, &signature, expected).await;
        sockets.push(ws);
    }
    let checked = checks();
    println!(
        "{written} writes, {checked} parity checks, {} divergences",
        divergences()
    );
    assert!(checked >= 100, "only {checked} parity checks ran");
    assert_eq!(
        divergences(),
        0,
        "divergences without drift in {checked} checks"
    );

    corrupt_comment_count(&app, posts[0]).await;
    app.add_comment(posts[0]).await;
    wait_until(
        Duration::from_secs(10),
        "the corrupted row was caught",
        || divergences() >= 1,
    )
    .await;
}

/// The source of the partition tests: events of groups (deleting a group cascades), range
/// partitioned by time when `partitioned`, with rows before the counters are defined.
async fn events_source(db: &PgPool, partitioned: bool) {
    let events = if partitioned {
        "create table events (id bigserial, grp int references event_groups (id) on delete cascade,
           v int, at timestamptz not null, primary key (id, at)) partition by range (at)"
    } else {
        "create table events (id bigserial, grp int references event_groups (id) on delete cascade,
           v int, at timestamptz not null, primary key (id, at))"
    };
    let mut statements = vec![
        "create table event_groups (id int primary key)",
        "insert into event_groups select g from generate_series(1, 6) g",
        events,
    ];
    if partitioned {
        statements.extend([
            "create table events_jan partition of events for values from ('2026-01-01') to ('2026-02-01')",
            "create table events_feb partition of events for values from ('2026-02-01') to ('2026-03-01')",
        ]);
    }
    statements.extend([
        "insert into events (grp, v, at) select 1 + g % 5, g % 9, timestamptz '2026-01-01' + g * interval '9 hours' from generate_series(1, 100) g",
        "select statgate.define_counter('event_counts', 'events', array['grp'], filter => 'v > 0', sums => array['v'])",
        "select statgate.define_rollup('event_rollups', 'events', array['grp'], 'at', 'v', array['DAY', 'MONTH', 'YEAR'])",
    ]);
    for statement in statements {
        sqlx::query(statement).execute(db).await.expect(statement);
    }
}

/// Fails naming `step` unless both counters on `events` equal the live aggregate.
async fn assert_exact(db: &PgPool, step: &str) {
    for counter in ["event_counts", "event_rollups"] {
        assert_eq!(drift(db, counter).await, vec![], "{counter} after {step}");
    }
}

/// The writes that must keep a counter exact on any source: bulk statements, COPY, ON CONFLICT,
/// MERGE, cascading deletes, UPDATE … FROM, TRUNCATE.
async fn write_every_way(db: &PgPool) {
    for (step, statement) in [
        ("a bulk insert", "insert into events (grp, v, at) select 1 + g % 6, g % 11, timestamptz '2026-01-03' + g * interval '5 hours' from generate_series(1, 150) g"),
        ("an update moving rows between groups and times", "update events set grp = 1 + (grp + 1) % 6, at = at + interval '20 days' where id % 4 = 0"),
        ("an update of values", "update events set v = v * 3 where grp = 2"),
        ("a bulk delete", "delete from events where id % 7 = 0"),
        ("on conflict do update", "insert into events (id, grp, v, at) select id, grp, v + 100, at from events where id % 5 = 1 on conflict (id, at) do update set v = excluded.v, grp = 3"),
        ("merge", "merge into events t using (select id, at from events where id % 6 = 2 union all select 100000 + g, timestamptz '2026-02-10' + g * interval '1 hour' from generate_series(1, 5) g) s
            on t.id = s.id and t.at = s.at
            when matched and t.v > 3 then delete when matched then update set v = t.v + 1
            when not matched then insert (id, grp, v, at) values (s.id, 4, 7, s.at)"),
        ("update … from", "update events e set v = e.v + g.id from event_groups g where g.id = e.grp and g.id in (1, 5)"),
        ("a cascading delete", "delete from event_groups where id = 6"),
    ] {
        sqlx::query(statement).execute(db).await.expect(step);
        assert_exact(db, step).await;
    }
    let mut connection = db.acquire().await.expect("connection");
    let mut copy = connection
        .copy_in_raw("copy events (grp, v, at) from stdin with (format csv)")
        .await
        .expect("copy");
    copy.send(&b"1,4,2026-01-20 10:00:00+00\n2,0,2026-02-20 10:00:00+00\n3,8,2026-01-21 10:00:00+00\n"[..])
        .await
        .expect("copy rows");
    copy.finish().await.expect("copy done");
    assert_exact(db, "copy").await;
}

#[tokio::test]
async fn a_counter_and_a_rollup_stay_exact_under_copy_on_conflict_merge_cascades_update_from_and_truncate(
) {
    let (_, db) = fresh_database().await;
    events_source(&db, false).await;
    write_every_way(&db).await;
    sqlx::query("truncate events")
        .execute(&db)
        .await
        .expect("truncate");
    assert_exact(&db, "truncate").await;
}

/// Issue 15, item 9: statement-level triggers on a partitioned table fire only for statements
/// naming it, so a delete through a partition (a retention job) left the counter high. Now a
/// partitioned source gets row-level triggers, cloned to every partition, present and future.
#[tokio::test]
async fn a_counter_and_a_rollup_on_a_partitioned_source_stay_exact_through_its_partitions() {
    let (_, db) = fresh_database().await;
    events_source(&db, true).await;
    write_every_way(&db).await;
    for (step, statement) in [
        ("a delete through a partition", "delete from events_jan where id % 3 = 0"),
        ("an insert into a partition", "insert into events_feb (grp, v, at) select 1 + g % 5, g, timestamptz '2026-02-02' + g * interval '3 hours' from generate_series(1, 40) g"),
        ("an update through a partition", "update events_feb set v = v + 1, grp = 1 where id % 2 = 0"),
        ("rows moved between partitions", "update events set at = at + interval '31 days' where at < '2026-01-10'"),
        ("a partition truncated", "truncate events_jan"),
        ("an attached partition written", "create table events_mar (id bigint not null, grp int, v int, at timestamptz not null)"),
        ("an attached partition written", "alter table events attach partition events_mar for values from ('2026-03-01') to ('2026-04-01')"),
        ("an attached partition written", "insert into events_mar (id, grp, v, at) select 500000 + g, 1 + g % 4, g, timestamptz '2026-03-02' + g * interval '7 hours' from generate_series(1, 30) g"),
        ("rows moved into the attached partition", "update events set at = at + interval '28 days' where at >= '2026-02-01' and at < '2026-03-01' and id % 3 = 1"),
        ("a delete through the attached partition", "delete from events_mar where v % 4 = 0"),
        ("a partition created later written", "create table events_apr partition of events for values from ('2026-04-01') to ('2026-05-01')"),
        ("a partition created later written", "insert into events_apr (grp, v, at) values (2, 5, '2026-04-09'), (2, 9, '2026-04-09')"),
        ("a delete through a partition created later", "delete from events_apr where v = 9"),
    ] {
        sqlx::query(statement).execute(&db).await.expect(step);
        assert_exact(&db, step).await;
    }

    // A partition attached after the definition has no truncate trigger of its own yet: its
    // truncation is caught by verify, and exact once the counters are re-installed.
    sqlx::query("truncate events_mar")
        .execute(&db)
        .await
        .expect("truncate");
    assert!(
        !drift(&db, "event_counts").await.is_empty(),
        "verify catches it"
    );
    for counter in ["event_counts", "event_rollups"] {
        sqlx::query("select statgate.refresh_counter($1), statgate.reinstall_counter($1)")
            .bind(counter)
            .execute(&db)
            .await
            .expect("refresh and reinstall");
    }
    for (step, statement) in [
        ("writes after the reinstall", "insert into events (grp, v, at) select 1 + g % 4, g, timestamptz '2026-01-20' + g * interval '13 hours' from generate_series(1, 120) g"),
        ("two partitions truncated at once", "truncate events_feb, events_mar"),
        ("a partition created later truncated", "truncate events_apr"),
        ("the source truncated", "truncate events"),
    ] {
        sqlx::query(statement).execute(&db).await.expect(step);
        assert_exact(&db, step).await;
    }
}

/// A watched partitioned table, and the stats tables of counters on it, push changes written
/// through a partition.
#[tokio::test]
async fn writes_through_a_partition_reach_subscribers_of_the_watched_table_and_of_its_counters() {
    let (url, db) = fresh_database().await;
    events_source(&db, true).await;
    sqlx::query("select statgate.watch('events', array['grp'])")
        .execute(&db)
        .await
        .expect("watch a partitioned table");
    let registry = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(registry.path().join("events")).expect("mkdir");
    std::fs::write(
        registry.path().join("events/stats.toml"),
        r#"[live]
sql = "SELECT count(*)::int8 AS count FROM events WHERE grp = :grp"
args = { grp = "int4" }
returns = "value"
watch = [{ table = "events", match = { grp = ":grp" } }]

[counted]
sql = "SELECT coalesce((SELECT count FROM event_counts WHERE grp = :grp), 0)::int8 AS count"
args = { grp = "int4" }
returns = "value"
watch = [{ table = "event_counts", match = { grp = ":grp" } }]
"#,
    )
    .expect("queries");
    let dir = registry.path().to_owned();
    let app = TestApp::spawn_on(url, db, move |config| {
        config.queries = statgate::config::Queries::Directory(dir)
    })
    .await;
    let (live, mut live_ws, mut live_got) = app
        .watch("u1", "events/stats/live", json!({"grp": 2}))
        .await;
    let (counted, mut counted_ws, mut counted_got) = app
        .watch("u1", "events/stats/counted", json!({"grp": 2}))
        .await;

    for statement in [
        "insert into events_feb (grp, v, at) values (2, 1, '2026-02-03'), (2, 1, '2026-02-04')",
        "delete from events_jan where grp = 2 and id = (select min(id) from events_jan where grp = 2)",
    ] {
        sqlx::query(statement)
            .execute(&app.db)
            .await
            .expect(statement);
        let (all, counted_now): (i64, i64) = sqlx::query_as(
            "select (select count(*) from events where grp = 2), (select count(*) from events where grp = 2 and v > 0)",
        )
        .fetch_one(&app.db)
        .await
        .expect("counts");
        read_until(&mut live_ws, &mut live_got, Duration::from_secs(10), |r| {
            r.value(&live) == Some(&json!(all))
        })
        .await;
        read_until(&mut counted_ws, &mut counted_got, Duration::from_secs(10), |r| {
            r.value(&counted) == Some(&json!(counted_now))
        })
        .await;
    }
}
