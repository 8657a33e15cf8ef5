//! The registry against a live database: does every query work, and can its value change?
//!
//! A query can be valid SQL and still never be pushed: if its watched table carries no
//! statgate watch triggers, or the triggers do not carry a column its `match` names, no change
//! ever reaches statgate and subscribers keep their first value forever, silently. So `check`
//! (and `serve`, which refuses such a registry) verifies, for every query:
//!
//! * its statement (and its `parity` statement) prepares, and runs with the gateway's
//!   privileges (it is run once over no arg set, which reads nothing but checks the rights);
//! * `returns = "value"` yields exactly one column;
//! * every watched table exists and has statgate's watch triggers for INSERT, UPDATE and
//!   DELETE, enabled, carrying every column the query's `match` names (in feed mode `wal`,
//!   which drops the triggers: its row in `statgate.watches` names those columns);
//! * a `carried` declaration holds against the table (see `registry::confirm`).
//!
//! Every problem is reported, not only the first, each naming the file, the query, the table,
//! and the statement that fixes it: `statgate.watch` replaces a table's triggers, so the fix
//! lists the columns every query needs on that table plus those already watched.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Column, Executor, PgPool, Postgres};

use super::confirm;
use super::error::{Problem, RegistryError};
use super::query::{Query, Returns};
use crate::matcher::TableName;

/// `pg_trigger.tgtype` bits of the three row-changing events.
const TRIGGER_INSERT: i32 = 1 << 2;
const TRIGGER_DELETE: i32 = 1 << 3;
const TRIGGER_UPDATE: i32 = 1 << 4;

/// statgate's watch triggers on one table: their event bits and trigger arguments (the
/// watched columns). Triggers are statgate's when their function lives in schema `statgate`
/// and their name starts with `statgate_watch`.
const WATCH_TRIGGERS: &str = r"
select tr.tgtype::int4,
       string_to_array(rtrim(encode(tr.tgargs, 'escape'), '\000'), '\000')
from pg_trigger tr
join pg_proc p on p.oid = tr.tgfoid
join pg_namespace n on n.oid = p.pronamespace
where tr.tgrelid = to_regclass(format('%I.%I', $1, $2))
  and n.nspname = 'statgate' and tr.tgname like 'statgate\_watch%' and tr.tgenabled <> 'D'";

/// Every problem of the registry against the database; empty when all is well.
pub async fn problems<'a>(
    queries: impl Iterator<Item = &'a Arc<Query>> + Clone,
    pool: &PgPool,
) -> Result<Vec<Problem>, RegistryError> {
    let mut conn = pool.acquire().await.map_err(RegistryError::Connect)?;
    let mut problems = Vec::new();
    for query in queries.clone() {
        let found = statement_problems(&mut conn, query).await;
        if found.is_empty() {
            problems.extend(confirm::carried_problems(&mut conn, query).await);
        }
        problems.extend(found);
    }
    problems.extend(watch_problems(&mut conn, queries).await?);
    Ok(problems)
}

/// The statements prepare, and a `value` query has one column.
async fn statement_problems(conn: &mut PoolConnection<Postgres>, query: &Query) -> Vec<Problem> {
    let problem = |message: String| Problem {
        file: query.file.clone(),
        query: query.name.clone(),
        message,
        fix: None,
    };
    let args_type = <String as sqlx::Type<Postgres>>::type_info();
    let statements = std::iter::once(("", &query.statement)).chain(
        query
            .parity_statement
            .as_ref()
            .map(|parity| ("parity: ", parity)),
    );
    for (label, statement) in statements {
        // Prepared with the args parameter typed `text`, the type recompute binds (untyped,
        // PostgreSQL would infer jsonb, the connection's statement cache would keep that, and
        // later recomputes on it would fail with "unsupported jsonb version number").
        if let Err(err) = conn
            .prepare_with(statement.as_str(), std::slice::from_ref(&args_type))
            .await
        {
            return vec![problem(format!(
                "{label}the database rejects its SQL: {}",
                database_message(&err)
            ))];
        }
        // Run once over no arg set: nothing is computed, but PostgreSQL checks the gateway's
        // privileges on every table the SQL reads (preparing does not).
        if let Err(err) = sqlx::query(statement.as_str())
            .bind("[]")
            .fetch_all(&mut **conn)
            .await
        {
            return vec![problem(format!(
                "{label}the gateway's role cannot run its SQL: {}",
                database_message(&err)
            ))];
        }
    }
    if query.returns == Returns::Value {
        match conn.describe(query.columns_statement.as_str()).await {
            Ok(described) if described.columns().len() != 1 => {
                let names: Vec<&str> = described.columns().iter().map(|c| c.name()).collect();
                return vec![problem(format!(
                    "returns = \"value\" pushes the first column of the first row, but the SQL \
                     yields {} columns ({}): select one column, or use returns = \"row\"",
                    names.len(),
                    names.join(", ")
                ))];
            }
            Ok(_) => {}
            Err(err) => {
                return vec![problem(format!(
                    "cannot describe its columns: {}",
                    database_message(&err)
                ))]
            }
        }
    }
    Vec::new()
}

/// What the registry needs of one table, and who needs it.
#[derive(Default)]
struct TableNeeds<'a> {
    columns: BTreeSet<&'a str>,
    queries: Vec<(&'a Query, BTreeSet<&'a str>)>,
}

async fn watch_problems<'a>(
    conn: &mut PoolConnection<Postgres>,
    queries: impl Iterator<Item = &'a Arc<Query>>,
) -> Result<Vec<Problem>, RegistryError> {
    let mut tables: BTreeMap<&TableName, TableNeeds<'_>> = BTreeMap::new();
    for query in queries {
        for spec in &query.watch {
            let columns: BTreeSet<&str> = spec.columns.iter().map(|(c, _)| c.as_str()).collect();
            let needs = tables.entry(&spec.table).or_default();
            needs.columns.extend(columns.iter().copied());
            needs.queries.push((query, columns));
        }
    }
    let mut problems = Vec::new();
    for (table, needs) in tables {
        let state = watch_state(conn, table).await?;
        problems.extend(table_problems(table, &needs, &state));
    }
    Ok(problems)
}

/// What the database has of one table's watch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WatchState {
    NoTable,
    /// The columns watched for every one of INSERT, UPDATE and DELETE (`None`: some event
    /// has no watch trigger at all), every column any watch trigger carries, and a column to
    /// watch when no query names one (the primary key's first, else the first column).
    Watched {
        complete: Option<BTreeSet<String>>,
        any: BTreeSet<String>,
        key_column: Option<String>,
    },
}

async fn watch_state(
    conn: &mut PoolConnection<Postgres>,
    table: &TableName,
) -> Result<WatchState, RegistryError> {
    let exists: bool =
        sqlx::query_scalar("select to_regclass(format('%I.%I', $1, $2)) is not null")
            .bind(&table.schema)
            .bind(&table.table)
            .fetch_one(&mut **conn)
            .await
            .map_err(RegistryError::Connect)?;
    if !exists {
        return Ok(WatchState::NoTable);
    }
    let mut triggers: Vec<(i32, Vec<String>)> = sqlx::query_as(WATCH_TRIGGERS)
        .bind(&table.schema)
        .bind(&table.table)
        .fetch_all(&mut **conn)
        .await
        .map_err(RegistryError::Connect)?;
    if triggers.is_empty() {
        // Feed mode 'wal' drops the watch triggers: the watch is its row in statgate.watches,
        // and the WAL feed hears every event of the table.
        if let Some(columns) = wal_watch(conn, table).await? {
            triggers.push((TRIGGER_INSERT | TRIGGER_UPDATE | TRIGGER_DELETE, columns));
        }
    }
    let key_column: Option<String> = sqlx::query_scalar(KEY_COLUMN)
        .bind(&table.schema)
        .bind(&table.table)
        .fetch_optional(&mut **conn)
        .await
        .map_err(RegistryError::Connect)?;
    Ok(watch_state_of(&triggers, key_column))
}

/// The watched columns of `table` when the database is in feed mode 'wal' (migration 0008).
async fn wal_watch(
    conn: &mut PoolConnection<Postgres>,
    table: &TableName,
) -> Result<Option<Vec<String>>, RegistryError> {
    let migrated: bool = sqlx::query_scalar("select to_regclass('statgate.watches') is not null")
        .fetch_one(&mut **conn)
        .await
        .map_err(RegistryError::Connect)?;
    if !migrated {
        return Ok(None);
    }
    sqlx::query_scalar(WAL_WATCH)
        .bind(&table.schema)
        .bind(&table.table)
        .fetch_optional(&mut **conn)
        .await
        .map_err(RegistryError::Connect)
}

const WAL_WATCH: &str = r"
select w.columns from statgate.watches w
where w.tbl = to_regclass(format('%I.%I', $1, $2))
  and (select feed_mode from statgate.settings) = 'wal'";

/// The primary key's first column, else the table's first column.
const KEY_COLUMN: &str = r"
select a.attname::text
from pg_attribute a
left join pg_index i on i.indrelid = a.attrelid and i.indisprimary and i.indkey[0] = a.attnum
where a.attrelid = to_regclass(format('%I.%I', $1, $2)) and a.attnum > 0 and not a.attisdropped
order by i.indrelid is null, a.attnum
limit 1";

fn watch_state_of(triggers: &[(i32, Vec<String>)], key_column: Option<String>) -> WatchState {
    let columns_for = |event: i32| -> Option<BTreeSet<String>> {
        let mut found = None::<BTreeSet<String>>;
        for (_, columns) in triggers.iter().filter(|(tgtype, _)| tgtype & event != 0) {
            found
                .get_or_insert_with(BTreeSet::new)
                .extend(columns.iter().cloned());
        }
        found
    };
    let complete = match (
        columns_for(TRIGGER_INSERT),
        columns_for(TRIGGER_UPDATE),
        columns_for(TRIGGER_DELETE),
    ) {
        (Some(insert), Some(update), Some(delete)) => Some(
            insert
                .intersection(&update)
                .filter(|column| delete.contains(*column))
                .cloned()
                .collect(),
        ),
        _ => None,
    };
    let any = triggers
        .iter()
        .flat_map(|(_, columns)| columns.iter().cloned())
        .collect();
    WatchState::Watched {
        complete,
        any,
        key_column,
    }
}

fn table_problems(table: &TableName, needs: &TableNeeds<'_>, state: &WatchState) -> Vec<Problem> {
    let qualified = format!(
        "{}.{}",
        quote_ident(&table.schema),
        quote_ident(&table.table)
    );
    let (complete, any, key_column) = match state {
        WatchState::NoTable => {
            return needs
                .queries
                .iter()
                .map(|(query, _)| Problem {
                    file: query.file.clone(),
                    query: query.name.clone(),
                    message: format!(
                        "watches table {qualified}, which does not exist (create it first, then \
                         watch it with statgate.watch)"
                    ),
                    fix: None,
                })
                .collect();
        }
        WatchState::Watched {
            complete,
            any,
            key_column,
        } => (complete, any, key_column),
    };
    let mut wanted: BTreeSet<&str> = needs.columns.clone();
    wanted.extend(any.iter().map(String::as_str));
    if wanted.is_empty() {
        // Only whole-table entries: any one column makes the triggers fire.
        wanted.extend(key_column.as_deref());
    }
    let fix = format!(
        "select statgate.watch('{}', array[{}])",
        qualified.replace('\'', "''"),
        wanted
            .iter()
            .map(|c| format!("'{}'", c.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    needs
        .queries
        .iter()
        .filter_map(|(query, columns)| {
            let message = match complete {
                None => format!(
                    "watches {qualified}, which has no statgate watch triggers (for every one of \
                     INSERT, UPDATE and DELETE): its changes never reach statgate, so \
                     subscribers would keep their first value"
                ),
                Some(watched) => {
                    let missing: Vec<&str> = columns
                        .iter()
                        .filter(|column| !watched.contains(**column))
                        .copied()
                        .collect();
                    if missing.is_empty() {
                        return None;
                    }
                    format!(
                        "matches column(s) {} of {qualified}, which its statgate watch does not \
                         carry (watched: {}): changes could not be matched to subscribers",
                        missing.join(", "),
                        if watched.is_empty() {
                            "none".to_owned()
                        } else {
                            watched.iter().cloned().collect::<Vec<_>>().join(", ")
                        }
                    )
                }
            };
            Some(Problem {
                file: query.file.clone(),
                query: query.name.clone(),
                message,
                fix: Some(fix.clone()),
            })
        })
        .collect()
}

/// An identifier as SQL needs it: bare when it is a plain lower-case name, else quoted.
fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

fn database_message(err: &sqlx::Error) -> String {
    match err.as_database_error() {
        Some(db) => db.message().to_owned(),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triggers(list: &[(i32, &[&str])]) -> Vec<(i32, Vec<String>)> {
        list.iter()
            .map(|(t, cols)| (*t, cols.iter().map(|c| (*c).to_owned()).collect()))
            .collect()
    }

    #[test]
    fn a_table_is_fully_watched_only_for_columns_every_event_carries() {
        let state = watch_state_of(
            &triggers(&[
                (TRIGGER_INSERT, &["post_id", "kind"]),
                (TRIGGER_UPDATE, &["post_id", "kind"]),
                (TRIGGER_DELETE, &["post_id"]),
            ]),
            None,
        );
        let WatchState::Watched { complete, any, .. } = state else {
            panic!("watched");
        };
        assert_eq!(complete, Some(BTreeSet::from(["post_id".to_owned()])));
        assert!(any.contains("kind"));
        let missing_delete = watch_state_of(
            &triggers(&[
                (TRIGGER_INSERT, &["post_id"]),
                (TRIGGER_UPDATE, &["post_id"]),
            ]),
            None,
        );
        assert!(matches!(
            missing_delete,
            WatchState::Watched { complete: None, .. }
        ));
    }

    #[test]
    fn identifiers_are_quoted_only_when_they_must_be() {
        assert_eq!(quote_ident("orders"), "orders");
        assert_eq!(quote_ident("Orders"), "\"Orders\"");
        assert_eq!(quote_ident("my\"t"), "\"my\"\"t\"");
    }
}
