//! A `carried` declaration confirmed against the database (see [`super::carried`]): what the
//! registry file cannot know.
//!
//! * the table and the column exist, and the column's type is one whose WAL text statgate
//!   renders exactly as `row_to_json` does ([`EXACT_TYPES`]);
//! * the key columns are a unique key (a unique index, not partial, on key columns only), so a
//!   key names at most one row;
//! * for up to [`SAMPLE_ROWS`] existing rows, the query's SQL with the args bound from the
//!   row's key gives the row's column: a declaration naming the wrong column, or SQL that
//!   computes something else from the row, is caught before a wrong value is pushed.

use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Row};

use super::carried::{Carried, EXACT_TYPES};
use super::error::Problem;
use super::query::Query;

/// Existing rows compared with the SQL at start-up.
const SAMPLE_ROWS: i64 = 3;

/// The column's type name, and whether a unique index covers only key columns.
const SHAPE: &str = r"
select (select t.typname::text from pg_attribute a join pg_type t on t.oid = a.atttypid
         where a.attrelid = c.oid and a.attname = $2 and a.attnum > 0 and not a.attisdropped),
       exists (select 1 from pg_index i
               where i.indrelid = c.oid and i.indisunique and i.indpred is null and i.indexprs is null
                 and not exists (select 1 from pg_attribute a
                                 where a.attrelid = c.oid and a.attnum = any(i.indkey)
                                   and a.attname <> all($3::text[])))
from pg_class c where c.oid = to_regclass($1)";

/// Every problem of `query`'s `carried` declaration; none without one.
pub async fn carried_problems(conn: &mut PoolConnection<Postgres>, query: &Query) -> Vec<Problem> {
    let Some(carried) = &query.carried else {
        return Vec::new();
    };
    let problem = |message: String| Problem {
        file: query.file.clone(),
        query: query.name.clone(),
        message: format!("carried: {message}"),
        fix: None,
    };
    match shape(conn, carried).await {
        Ok(None) => {}
        Ok(Some(message)) => return vec![problem(message)],
        Err(err) => return vec![problem(format!("cannot inspect the table: {err}"))],
    }
    match sample(conn, query, carried).await {
        Ok(None) => Vec::new(),
        Ok(Some(message)) => vec![problem(message)],
        Err(err) => vec![problem(format!(
            "cannot compare the SQL with the table: {err}"
        ))],
    }
}

fn qualified(carried: &Carried) -> String {
    format!(
        "{}.{}",
        quote(&carried.table.schema),
        quote(&carried.table.table)
    )
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What is wrong with the table, column and key, if anything.
async fn shape(
    conn: &mut PoolConnection<Postgres>,
    carried: &Carried,
) -> Result<Option<String>, sqlx::Error> {
    let keys: Vec<String> = carried.key.iter().map(|k| k.column.clone()).collect();
    let row: Option<(Option<String>, bool)> = sqlx::query_as(SHAPE)
        .bind(qualified(carried))
        .bind(&carried.column)
        .bind(&keys)
        .fetch_optional(&mut **conn)
        .await?;
    let table = qualified(carried);
    Ok(match row {
        None => Some(format!("table {table} does not exist")),
        Some((None, _)) => Some(format!("table {table} has no column {}", carried.column)),
        Some((Some(ty), _)) if !EXACT_TYPES.contains(&ty.as_str()) => Some(format!(
            "column {} is of type {ty}, which statgate does not render from the WAL exactly as \
             row_to_json does (carried columns may be {}); remove `carried`",
            carried.column,
            EXACT_TYPES.join(", ")
        )),
        Some((_, false)) => Some(format!(
            "no unique index of {table} covers only its key columns ({}): a key must name at \
             most one row",
            keys.join(", ")
        )),
        Some((_, true)) => None,
    })
}

/// Runs the query for a few existing rows and compares with their column.
async fn sample(
    conn: &mut PoolConnection<Postgres>,
    query: &Query,
    carried: &Carried,
) -> Result<Option<String>, sqlx::Error> {
    let columns: Vec<String> = carried
        .key
        .iter()
        .map(|k| quote(&k.column))
        .chain(std::iter::once(quote(&carried.column)))
        .collect();
    let rows: Vec<serde_json::Value> = sqlx::query_scalar(&format!(
        "select to_jsonb(statgate_row) from (select {} from {} limit {SAMPLE_ROWS}) statgate_row",
        columns.join(", "),
        qualified(carried)
    ))
    .fetch_all(&mut **conn)
    .await?;
    for row in rows {
        let mut args = serde_json::Map::new();
        for key in &carried.key {
            args.insert(key.arg.clone(), row[&key.column].clone());
        }
        let Ok(canonical) = query.validate(&serde_json::Value::Object(args.clone())) else {
            return Ok(Some(format!(
                "the key of row {row} is not a valid set of args ({})",
                serde_json::Value::Object(args)
            )));
        };
        let result = sqlx::query(&query.statement)
            .bind(format!("[{}]", canonical.json))
            .fetch_optional(&mut **conn)
            .await?;
        let text: Option<String> = match result {
            Some(result) => result.try_get(1)?,
            None => None,
        };
        let computed: serde_json::Value = text
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null);
        let expected = &row[&carried.column];
        if &computed != expected {
            return Ok(Some(format!(
                "for args {} the SQL gives {computed}, but the row's {} is {expected}: the value \
                 is not that column of that row; fix `carried` or remove it",
                canonical.json, carried.column
            )));
        }
    }
    Ok(None)
}
