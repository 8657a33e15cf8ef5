//! Many sockets, many subscriptions, concurrent writers: no lost final value, versions only grow.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{next_event, send_json, Received, TestApp, XorShift};

const POSTS: usize = 40;
const SOCKETS: usize = 50;
const SUBSCRIPTIONS_PER_SOCKET: usize = 20;
const WRITERS: usize = 4;
const WRITES_PER_WRITER: usize = 500;

struct Subscription {
    post: i64,
    query: &'static str,
    signature: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sockets_with_twenty_subscriptions_each_converge_under_concurrent_writers() {
    let app = Arc::new(TestApp::spawn().await);
    let posts: Vec<i64> = sqlx::query_scalar(
        "insert into posts (title, author_id) select 'p' || i, 'a' from generate_series(1, $1) i returning id",
    )
    .bind(POSTS as i32)
    .fetch_all(&app.db)
    .await
    .expect("posts");

    let mut rng = XorShift(0x5eed_1234_abcd_ef01);
    let mut readers = Vec::new();
    let mut all = Vec::new();
    for socket in 0..SOCKETS {
        let user = format!("u{socket}");
        let query = if socket % 2 == 0 {
            "posts/stats/commentCount"
        } else {
            "posts/stats/summary"
        };
        let mut tokens = Vec::new();
        let mut subscriptions = Vec::new();
        let first = rng.below(POSTS);
        for k in 0..SUBSCRIPTIONS_PER_SOCKET {
            let post = posts[(first + k) % POSTS];
            let (token, signature) = app.subscribe(&user, query, json!({"postId": post})).await;
            tokens.push(token);
            subscriptions.push(Subscription {
                post,
                query,
                signature,
            });
        }
        let mut ws = app.connect(&user, Some(&tokens[0])).await;
        for token in &tokens[1..] {
            send_json(&mut ws, json!({"type": "subscribe", "token": token})).await;
        }
        let received = Arc::new(Mutex::new(Received::default()));
        let sink = received.clone();
        readers.push(tokio::spawn(async move {
            while let Some(event) = next_event(&mut ws, Duration::from_secs(120)).await {
                sink.lock().expect("lock").record(&event);
            }
        }));
        all.push((subscriptions, received));
    }

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let app = app.clone();
        let posts = posts.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ (writer as u64 + 1));
            for _ in 0..WRITES_PER_WRITER {
                let post = posts[rng.below(posts.len())];
                if rng.below(3) == 0 {
                    sqlx::query(
                        "delete from comments where id = (select id from comments where post_id = $1 limit 1)",
                    )
                    .bind(post)
                    .execute(&app.db)
                    .await
                    .expect("delete");
                } else {
                    app.add_comment(post).await;
                }
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut expected = std::collections::HashMap::new();
    for post in &posts {
        let (comments, reactions): (i64, i64) = sqlx::query_as(
            "select comment_count, reaction_count from post_stats where post_id = $1",
        )
        .bind(post)
        .fetch_one(&app.db)
        .await
        .expect("stats");
        assert_eq!(
            comments,
            app.comment_count(*post).await,
            "post_stats is exact"
        );
        expected.insert(*post, (comments, reactions));
    }
    let value_of = |subscription: &Subscription| -> Value {
        let (comments, reactions) = expected[&subscription.post];
        match subscription.query {
            "posts/stats/commentCount" => json!(comments),
            _ => {
                json!({"postId": subscription.post, "commentCount": comments, "reactionCount": reactions})
            }
        }
    };
    for (socket, (subscriptions, received)) in all.iter().enumerate() {
        loop {
            let stale: Vec<String> = {
                let received = received.lock().expect("lock");
                subscriptions
                    .iter()
                    .filter(|s| received.value(&s.signature) != Some(&value_of(s)))
                    .map(|s| {
                        format!(
                            "{} post {} holds {:?}",
                            s.query,
                            s.post,
                            received.value(&s.signature)
                        )
                    })
                    .collect()
            };
            if stale.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "socket {socket} never converged: {stale:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for reader in readers {
        if reader.is_finished() {
            reader.await.expect("a reader saw versions only grow");
            panic!("a socket closed during the run");
        }
        reader.abort();
    }
}
