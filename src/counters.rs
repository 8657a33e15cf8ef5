//! Declarative counters and rollups, from the gateway's side (docs/COUNTERS.md).
//!
//! The definitions, triggers, refresh and drift check live in the database
//! (`migrations/0005_declarative_counters.sql`), so they work for any client and inside the
//! application's own migrations. This module is what `statgate verify` and `statgate refresh`
//! call: list the definitions, compare each with live SQL, rewrite one.

use serde_json::Value;
use sqlx::PgPool;

#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    #[error("no counter or rollup named {0:?} (statgate.counters lists them)")]
    Unknown(String),
    #[error("{name}: {source}")]
    Database {
        name: String,
        #[source]
        source: sqlx::Error,
    },
}

/// One group whose stored values differ from the source (`None`: the row is missing there).
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    pub counter: String,
    pub key: Value,
    pub stored: Option<Value>,
    pub live: Option<Value>,
}

/// The names of every declared counter and rollup, in name order.
pub async fn names(pool: &PgPool) -> Result<Vec<String>, CountersError> {
    sqlx::query_scalar("select name from statgate.counters order by name")
        .fetch_all(pool)
        .await
        .map_err(|source| CountersError::Database {
            name: "statgate.counters".into(),
            source,
        })
}

/// Runs `statgate.verify_counter` for `only` (or every counter) and collects the drift.
pub async fn verify(pool: &PgPool, only: Option<&str>) -> Result<Vec<Drift>, CountersError> {
    let all = names(pool).await?;
    let chosen: Vec<String> = match only {
        Some(name) if all.iter().any(|known| known == name) => vec![name.to_owned()],
        Some(name) => return Err(CountersError::Unknown(name.to_owned())),
        None => all,
    };
    let mut drift = Vec::new();
    for name in chosen {
        let rows: Vec<(Value, Option<Value>, Option<Value>)> =
            sqlx::query_as("select key, stored, live from statgate.verify_counter($1)")
                .bind(&name)
                .fetch_all(pool)
                .await
                .map_err(|source| CountersError::Database {
                    name: name.clone(),
                    source,
                })?;
        drift.extend(rows.into_iter().map(|(key, stored, live)| Drift {
            counter: name.clone(),
            key,
            stored,
            live,
        }));
    }
    Ok(drift)
}

/// Runs `statgate.refresh_counter(name)`; returns how many stats rows it rewrote or removed.
pub async fn refresh(pool: &PgPool, name: &str) -> Result<i64, CountersError> {
    if !names(pool).await?.iter().any(|known| known == name) {
        return Err(CountersError::Unknown(name.to_owned()));
    }
    sqlx::query_scalar("select statgate.refresh_counter($1)")
        .bind(name)
        .fetch_one(pool)
        .await
        .map_err(|source| CountersError::Database {
            name: name.to_owned(),
            source,
        })
}

/// One line per drifted group, for the CLI.
pub fn describe(drift: &Drift) -> String {
    let show = |value: &Option<Value>| match value {
        Some(value) => value.to_string(),
        None => "(no row)".to_owned(),
    };
    format!(
        "{} {}: stored {}, live {}",
        drift.counter,
        drift.key,
        show(&drift.stored),
        show(&drift.live)
    )
}
