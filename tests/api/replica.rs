//! `DATABASE_READ_URL`: recompute queries run on the read database, everything else on the
//! primary.

use serde_json::json;

use crate::helpers::{fresh_database, TestApp};

#[tokio::test]
async fn values_are_computed_on_the_read_database_and_changes_come_from_the_primary() {
    let (primary_url, primary) = fresh_database().await;
    // a stand-in for a replica: another database with the same schema, whose post_stats row
    // differs, so the value shows where it was read.
    let (read_url, read) = fresh_database().await;
    for (db, reactions) in [(&primary, 1_i64), (&read, 7)] {
        sqlx::query("insert into posts (id, title, author_id) values (1, 't', 'a')")
            .execute(db)
            .await
            .expect("post");
        sqlx::query("update post_stats set reaction_count = $1 where post_id = 1")
            .bind(reactions)
            .execute(db)
            .await
            .expect("stats");
    }
    let app = TestApp::spawn_on(primary_url, primary, |config| {
        config.read_database = Some(statgate::config::Secret::new(read_url));
    })
    .await;
    // reactionCount has no `parity` SQL, which would replace the stand-in's value.
    let (signature, mut ws, mut received) = app
        .watch("u1", "posts/stats/reactionCount", json!({"postId": 1}))
        .await;
    assert_eq!(received.value(&signature), Some(&json!(7)));

    sqlx::query("update post_stats set reaction_count = 8 where post_id = 1")
        .execute(&read)
        .await
        .expect("the replica catches up");
    sqlx::query("update post_stats set reaction_count = 2 where post_id = 1")
        .execute(&app.db)
        .await
        .expect("a write on the primary notifies");
    crate::helpers::read_until(
        &mut ws,
        &mut received,
        std::time::Duration::from_secs(10),
        |r| r.value(&signature) == Some(&json!(8)),
    )
    .await;
}
