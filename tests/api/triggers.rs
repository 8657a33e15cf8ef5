//! The PostgreSQL side (SPEC §2): exact stats under a random mix of writes, and payloads.

use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::helpers::fresh_database;

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
