//! The SQL statements a server under test ran, from `pg_stat_statements`: every top-level
//! statement in the target database except the load generator's own (its writers' inserts and
//! these readings). Measured in the database rather than asked of the server, so statgate and
//! a hand-written server are counted by the same rule. Needs the extension preloaded
//! (`shared_preload_libraries`); without it every reading is `None`.

use std::collections::HashMap;

use serde_json::{json, Value};
use sqlx::PgPool;

use super::clients::ADD_COMMENT_SQL;

/// Calls per normalised statement in the current database at one moment.
pub struct StatementCalls {
    calls: HashMap<i64, (String, f64)>,
}

/// What ran between two readings.
pub struct ServerStatements {
    pub total: f64,
    /// The statements that ran most, with their calls (text cut to 160 characters).
    pub top: Vec<(String, f64)>,
}

impl ServerStatements {
    pub fn top_json(&self) -> Value {
        self.top
            .iter()
            .map(|(query, calls)| json!({"calls": calls, "query": query}))
            .collect()
    }
}

const TOP_LEVEL: &str = "select coalesce(queryid, 0), sum(calls)::float8, min(left(query, 160))
  from pg_stat_statements
 where dbid = (select oid from pg_database where datname = current_database()) and toplevel
 group by 1";
/// Before PostgreSQL 14 there is no `toplevel` (and nested statements are not tracked unless
/// `pg_stat_statements.track = all`).
const ALL_LEVELS: &str = "select coalesce(queryid, 0), sum(calls)::float8, min(left(query, 160))
  from pg_stat_statements
 where dbid = (select oid from pg_database where datname = current_database())
 group by 1";

impl StatementCalls {
    /// Reads the counters, creating the extension in this database if the server preloads it.
    pub async fn read(db: &PgPool) -> Option<Self> {
        let _ = sqlx::query("create extension if not exists pg_stat_statements")
            .execute(db)
            .await;
        let rows: Vec<(i64, f64, String)> = match sqlx::query_as(TOP_LEVEL).fetch_all(db).await {
            Ok(rows) => rows,
            Err(_) => sqlx::query_as(ALL_LEVELS).fetch_all(db).await.ok()?,
        };
        Some(StatementCalls {
            calls: rows
                .into_iter()
                .map(|(id, calls, query)| (id, (query, calls)))
                .collect(),
        })
    }

    /// The statements other than the load generator's that ran since `before`.
    pub fn server_since(&self, before: &StatementCalls) -> ServerStatements {
        let mut ran: Vec<(String, f64)> = self
            .calls
            .iter()
            .filter(|(_, (query, _))| !is_load_generators(query))
            .map(|(id, (query, calls))| {
                let earlier = before.calls.get(id).map_or(0.0, |(_, calls)| *calls);
                (query.clone(), calls - earlier)
            })
            .filter(|(_, calls)| *calls > 0.0)
            .collect();
        ran.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total = ran.iter().map(|(_, calls)| calls).sum();
        ran.truncate(5);
        ServerStatements { total, top: ran }
    }
}

/// The writers' insert, and the readings of `pg_stat_statements` themselves.
fn is_load_generators(query: &str) -> bool {
    let query = query.trim_start().to_ascii_lowercase();
    let insert = ADD_COMMENT_SQL
        .split(" values")
        .next()
        .unwrap_or(ADD_COMMENT_SQL);
    query.starts_with(insert) || query.contains("pg_stat_statements")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writers_inserts_and_these_readings_are_not_the_servers() {
        // pg_stat_statements stores the normalised text: constants become parameters.
        assert!(is_load_generators(
            "insert into comments (post_id, author_id, body) values ($1, $2 || $1, $3)"
        ));
        assert!(is_load_generators(TOP_LEVEL));
        assert!(!is_load_generators(
            "SELECT comment_count FROM post_stats WHERE post_id = $1"
        ));
        assert!(!is_load_generators("LISTEN baseline_post_stats"));
    }
}
