//! The example application's writes that the demo performs: the page's buttons name a post,
//! the traffic generator lets the database pick one at random (`post: None`). Both go through
//! these functions, so they write exactly what an application would. Each returns the id of
//! the row it touched, or `None` when nothing matched (no such post, nothing to delete).

use sqlx::PgPool;

/// The given post if it exists, else (with `None`) a random one.
const TARGET_POST: &str =
    "(select id from posts where id = coalesce($1, (select id from posts order by random() limit 1)))";

pub async fn add_comment(
    pool: &PgPool,
    post: Option<i64>,
    user: &str,
    body: &str,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(&format!(
        "insert into comments (post_id, author_id, body) \
         select id, $2, $3 from posts where id = {TARGET_POST} returning id"
    ))
    .bind(post)
    .bind(user)
    .bind(body)
    .fetch_optional(pool)
    .await
}

/// Soft-deletes the post's newest live comment (the example app's own way of deleting).
pub async fn delete_comment(pool: &PgPool, post: Option<i64>) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(&format!(
        "update comments set deleted = true where id = \
         (select id from comments where post_id = {TARGET_POST} and not deleted \
          order by id desc limit 1) \
         returning id"
    ))
    .bind(post)
    .fetch_optional(pool)
    .await
}

pub async fn add_reaction(
    pool: &PgPool,
    post: Option<i64>,
    user: &str,
    kind: &str,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(&format!(
        "insert into reactions (post_id, user_id, kind) \
         select id, $2, $3 from posts where id = {TARGET_POST} returning id"
    ))
    .bind(post)
    .bind(user)
    .bind(kind)
    .fetch_optional(pool)
    .await
}

/// Deletes the post's newest reaction.
pub async fn delete_reaction(pool: &PgPool, post: Option<i64>) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(&format!(
        "delete from reactions where id = \
         (select id from reactions where post_id = {TARGET_POST} order by id desc limit 1) \
         returning id"
    ))
    .bind(post)
    .fetch_optional(pool)
    .await
}

/// A steps reading for `user`, taken now.
pub async fn add_steps(pool: &PgPool, user: &str, value: f64) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into measurements (user_id, type, value, taken_at) \
         values ($1, 'steps', $2, now()) returning id",
    )
    .bind(user)
    .bind(value)
    .fetch_one(pool)
    .await
}
