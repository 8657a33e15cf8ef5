//! The table change feed (`STATGATE_CHANGE_FEED=table`): the watch triggers append to
//! `statgate.changes`, the gateway polls it, and subscribers see the same values as with NOTIFY.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;
use statgate::config::ChangeFeed;
use statgate::listener::table::POLLER_APPLICATION_NAME;

use crate::helpers::{converge_to, metric, read_until, wait_for, wait_until, TestApp};

const WAIT: Duration = Duration::from_secs(30);

async fn spawn_table_mode() -> TestApp {
    TestApp::spawn_with(|config| config.feed.mode = ChangeFeed::Table).await
}

/// Rows of `statgate.changes` about `post_stats` (a comment also changes the example's
/// `author_comment_counts`).
async fn rows_in_change_table(db: &PgPool) -> i64 {
    sqlx::query_scalar(
        "select count(*) from statgate.changes where payload::jsonb ->> 'table' = 'post_stats'",
    )
    .fetch_one(db)
    .await
    .expect("count changes")
}

#[tokio::test]
async fn in_table_mode_a_new_comment_reaches_the_subscriber_through_the_change_table() {
    let app = spawn_table_mode().await;
    let mode: String = sqlx::query_scalar("select feed_mode from statgate.settings")
        .fetch_one(&app.db)
        .await
        .expect("settings");
    assert_eq!(
        mode, "table",
        "the gateway told the triggers which feed it reads"
    );
    let post = app.new_post().await;
    app.add_comment(post).await;
    let (signature, mut ws, mut received) = app.watch_comments(post).await;
    assert_eq!(received.value(&signature), Some(&json!(1)));

    app.add_comment(post).await;
    let update = wait_for(&mut ws, WAIT, |e| e["event"] == "query:update").await;
    received.record(&update);
    assert_eq!(update["payload"]["data"], json!(2));
    assert_eq!(update["payload"]["version"], json!(2));
    assert!(
        rows_in_change_table(&app.db).await >= 2,
        "the comments went through statgate.changes"
    );
    let listeners: i64 = sqlx::query_scalar(
        "select count(*) from pg_stat_activity where application_name = $1 and datname = current_database()",
    )
    .bind(statgate::listener::LISTENER_APPLICATION_NAME)
    .fetch_one(&app.db)
    .await
    .expect("pg_stat_activity");
    assert_eq!(listeners, 0, "no LISTEN connection in table mode");
}

#[tokio::test]
async fn in_table_mode_a_ten_thousand_row_insert_converges() {
    let app = spawn_table_mode().await;
    let posts: Vec<i64> = sqlx::query_scalar(
        "insert into posts (title, author_id) select 'p' || i, 'a' from generate_series(1, 20) i returning id",
    )
    .fetch_all(&app.db)
    .await
    .expect("posts");
    let mut sockets = Vec::new();
    for post in &posts {
        sockets.push((*post, app.watch_comments(*post).await));
    }
    app.insert_uneven_comments(&posts, 10_000).await;
    let mut total = 0;
    for (post, (signature, ws, received)) in &mut sockets {
        let expected = app.comment_count(*post).await;
        total += expected;
        converge_to(ws, received, signature, json!(expected)).await;
    }
    assert_eq!(total, 10_000);
}

#[tokio::test]
async fn changes_made_while_no_gateway_runs_are_read_when_one_starts() {
    let first = spawn_table_mode().await;
    let url = first.state.config().database.clone();
    let post = first.new_post().await;
    let db = first.db.clone();
    first.shutdown.cancel();
    let _ = tokio::time::timeout(WAIT, first.done).await;

    let before = rows_in_change_table(&db).await;
    for _ in 0..3 {
        sqlx::query("insert into comments (post_id, author_id, body) values ($1, 'a', 'offline')")
            .bind(post)
            .execute(&db)
            .await
            .expect("writes need no gateway");
    }
    assert_eq!(
        rows_in_change_table(&db).await,
        before + 3,
        "each offline write left its change in the table"
    );

    let statgate::config::Database::External(url) = url else {
        panic!("tests use an external database");
    };
    let second = TestApp::spawn_on(url.expose().to_owned(), db, |config| {
        config.feed.mode = ChangeFeed::Table
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while second.state.metrics().notifications.get() < before as u64 + 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new gateway read the changes it missed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (signature, mut ws, mut received) = second.watch_comments(post).await;
    assert_eq!(received.value(&signature), Some(&json!(3)));
    second.add_comment(post).await;
    converge_to(&mut ws, &mut received, &signature, json!(4)).await;
}

#[tokio::test]
async fn two_table_mode_gateways_on_one_database_both_see_every_change() {
    let one = spawn_table_mode().await;
    let statgate::config::Database::External(url) = one.state.config().database.clone() else {
        panic!("tests use an external database");
    };
    let two = TestApp::spawn_on(url.expose().to_owned(), one.db.clone(), |config| {
        config.feed.mode = ChangeFeed::Table
    })
    .await;
    let post = one.new_post().await;
    let (sig_one, mut ws_one, mut got_one) = one.watch_comments(post).await;
    let (sig_two, mut ws_two, mut got_two) = two.watch_comments(post).await;
    for n in 1..=5 {
        one.add_comment(post).await;
        converge_to(&mut ws_one, &mut got_one, &sig_one, json!(n)).await;
        converge_to(&mut ws_two, &mut got_two, &sig_two, json!(n)).await;
    }
}

#[tokio::test]
async fn a_killed_poller_connection_reconnects_and_loses_no_value() {
    let app = spawn_table_mode().await;
    let post = app.new_post().await;
    let (signature, mut ws, mut received) = app.watch_comments(post).await;
    let killed: i64 = sqlx::query_scalar(
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
          where application_name = $1 and datname = current_database()) k",
    )
    .bind(POLLER_APPLICATION_NAME)
    .fetch_one(&app.db)
    .await
    .expect("terminate");
    assert_eq!(killed, 1, "one polling connection per gateway");
    for _ in 0..5 {
        app.add_comment(post).await;
    }
    converge_to(&mut ws, &mut received, &signature, json!(5)).await;
    wait_until(WAIT, "the poller reconnected", || {
        app.state.metrics().listener_reconnects.get() >= 1
    })
    .await;
}

#[tokio::test]
async fn a_write_never_fails_because_of_the_change_table() {
    let app = spawn_table_mode().await;
    let (signature, mut ws, mut received) = app
        .watch(
            "u1",
            "measurements/rollups/dailySum",
            json!({"userId": "u1", "type": "steps", "from": "2026-01-01", "to": "2026-02-01"}),
        )
        .await;

    // A key too large for any payload: the change is recorded as an overflow row.
    sqlx::query(
        "insert into measurements (user_id, type, value, taken_at)
         values (repeat('x', 20000), 'steps', 1, '2026-01-05 10:00:00+00')",
    )
    .execute(&app.db)
    .await
    .expect("a huge key is written");
    let overflow: i64 = sqlx::query_scalar(
        "select count(*) from statgate.changes where payload::jsonb @> '{\"overflow\": true}'",
    )
    .fetch_one(&app.db)
    .await
    .expect("overflow rows");
    assert_eq!(overflow, 1);

    // The change table unusable: the write still commits (the trigger only warns).
    sqlx::query("alter table statgate.changes rename to changes_away")
        .execute(&app.db)
        .await
        .expect("rename");
    let written = sqlx::query(
        "insert into measurements (user_id, type, value, taken_at)
         values ('u1', 'steps', 40, '2026-01-06 10:00:00+00')",
    )
    .execute(&app.db)
    .await;
    sqlx::query("alter table statgate.changes_away rename to changes")
        .execute(&app.db)
        .await
        .expect("rename back");
    written.expect("the write commits without its change row");

    sqlx::query(
        "insert into measurements (user_id, type, value, taken_at)
         values ('u1', 'steps', 2, '2026-01-07 10:00:00+00')",
    )
    .execute(&app.db)
    .await
    .expect("write");
    read_until(&mut ws, &mut received, WAIT, |r| {
        r.value(&signature).and_then(Value::as_f64) == Some(42.0)
    })
    .await;
}

#[tokio::test]
async fn a_slow_transaction_committing_after_a_later_one_is_not_skipped() {
    let app = spawn_table_mode().await;
    let slow_post = app.new_post().await;
    let fast_post = app.new_post().await;
    let (slow_sig, mut slow_ws, mut slow_got) = app.watch_comments(slow_post).await;
    let (fast_sig, mut fast_ws, mut fast_got) = app.watch_comments(fast_post).await;

    // The slow transaction takes the lower change id, the fast one commits first and is read.
    // Another author than add_comment's: the slow transaction holds its author's row of
    // author_comment_counts until it commits, and the fast one must not wait for it.
    let mut slow = app.db.begin().await.expect("begin");
    sqlx::query("insert into comments (post_id, author_id, body) values ($1, 'slow', 'slow')")
        .bind(slow_post)
        .execute(&mut *slow)
        .await
        .expect("slow write");
    app.add_comment(fast_post).await;
    converge_to(&mut fast_ws, &mut fast_got, &fast_sig, json!(1)).await;
    slow.commit().await.expect("commit");
    converge_to(&mut slow_ws, &mut slow_got, &slow_sig, json!(1)).await;
}

/// Issue 15, item 2: a change the triggers cannot record even as an overflow used to be lost
/// with only a warning to the writing client. It is now counted in `statgate.unrecorded_changes`,
/// which the gateway reads into `statgate_unrecorded_changes`, and its growth resyncs.
#[tokio::test]
async fn a_change_that_cannot_be_recorded_is_counted_where_operators_see_it_and_resynced() {
    let app = TestApp::spawn_with(|config| {
        config.feed.mode = ChangeFeed::Table;
        config.feed.unrecorded_check = Duration::from_millis(200);
    })
    .await;
    let post = app.new_post().await;
    let (signature, mut ws, mut received) = app.watch_comments(post).await;
    let resyncs = app.state.metrics().resyncs.get();

    // The change table unusable for one transaction (the poller's reads just wait for it): its
    // comment commits, and its change reaches no gateway.
    let mut tx = app.db.begin().await.expect("begin");
    for statement in [
        "alter table statgate.changes rename to changes_away",
        "insert into comments (post_id, author_id, body) values ($1, 'a', 'lost')",
        "alter table statgate.changes_away rename to changes",
    ] {
        let query = sqlx::query(statement);
        let query = if statement.contains("$1") {
            query.bind(post)
        } else {
            query
        };
        query.execute(&mut *tx).await.expect(statement);
    }
    tx.commit().await.expect("the write commits");

    // What the operator sees, and the resync it causes. The value alone proves nothing: an
    // earlier change still on its way (the post's own) may be recomputed after this commit.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let unrecorded = metric(&app.metrics_text().await, "statgate_unrecorded_changes");
        if unrecorded >= 2.0 && app.state.metrics().resyncs.get() > resyncs {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "post_stats and author_comment_counts each lost a change, counted and resynced: \
             {unrecorded}, resyncs {} (before {resyncs})",
            app.state.metrics().resyncs.get()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    read_until(&mut ws, &mut received, WAIT, |r| {
        r.value(&signature) == Some(&json!(1))
    })
    .await;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select table_name, sum(count)::int8 from statgate.unrecorded_changes group by 1 order by 1",
    )
    .fetch_all(&app.db)
    .await
    .expect("unrecorded changes");
    assert_eq!(
        rows,
        vec![
            ("author_comment_counts".to_owned(), 1),
            ("post_stats".to_owned(), 1)
        ]
    );
}
