//! Turning a registry query into the one SQL statement statgate runs.
//!
//! Every query runs in batched form (docs/ARCHITECTURE.md): the arg sets of many signatures arrive as
//! one jsonb array, and the query is evaluated once per element. `:name` placeholders become
//! typed reads of that element, so one prepared statement serves every batch size:
//!
//! ```sql
//! select statgate_args.n, (<the query, shaped by `returns`>)::text
//! from jsonb_array_elements($1::jsonb) with ordinality as statgate_args(args, n)
//! ```

use super::args::ArgSpec;
use super::query::Returns;

/// The alias of the arg set; a query must not use it for its own tables.
pub const ARGS_ALIAS: &str = "statgate_args";

/// Rewrites `:name` placeholders into reads of the current arg set, skipping string literals,
/// quoted identifiers, comments and `::` casts. Returns the names of unknown placeholders as
/// an error.
pub fn bind_placeholders(sql: &str, args: &[ArgSpec]) -> Result<String, String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len() + 64);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\'' | '"' => {
                let end = skip_quoted(&chars, i, c);
                out.extend(&chars[i..end]);
                i = end;
            }
            '-' if next == Some('-') => {
                let end = chars[i..]
                    .iter()
                    .position(|&c| c == '\n')
                    .map_or(chars.len(), |p| i + p);
                out.extend(&chars[i..end]);
                i = end;
            }
            '/' if next == Some('*') => {
                let end = find(&chars, i + 2, &['*', '/']).map_or(chars.len(), |p| p + 2);
                out.extend(&chars[i..end]);
                i = end;
            }
            '$' if next.is_some_and(|n| n == '$' || n.is_alphabetic() || n == '_') => {
                let tag_end = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '$')
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(tag_end)
                        if chars[i + 1..tag_end]
                            .iter()
                            .all(|c| c.is_alphanumeric() || *c == '_') =>
                    {
                        let tag: Vec<char> = chars[i..=tag_end].to_vec();
                        let end =
                            find(&chars, tag_end + 1, &tag).map_or(chars.len(), |p| p + tag.len());
                        out.extend(&chars[i..end]);
                        i = end;
                    }
                    _ => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            ':' if next == Some(':') => {
                out.push_str("::");
                i += 2;
            }
            ':' if next.is_some_and(|n| n.is_alphabetic() || n == '_') => {
                let start = i + 1;
                let end = chars[start..]
                    .iter()
                    .position(|c| !(c.is_alphanumeric() || *c == '_'))
                    .map_or(chars.len(), |p| start + p);
                let name: String = chars[start..end].iter().collect();
                let spec = args
                    .iter()
                    .find(|a| a.name == name)
                    .ok_or_else(|| format!("placeholder :{name} names no declared arg"))?;
                out.push_str(&arg_expression(spec));
                i = end;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

fn skip_quoted(chars: &[char], start: usize, quote: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == quote {
            if chars.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    chars.len()
}

fn find(chars: &[char], from: usize, needle: &[char]) -> Option<usize> {
    (from..chars.len()).find(|&i| chars[i..].starts_with(needle))
}

/// The declared args that `bound_sql` (the output of [`bind_placeholders`]) never reads. The
/// expression reading an arg names [`ARGS_ALIAS`], which queries may not use themselves, so
/// its absence from the bound SQL means no placeholder named the arg.
pub fn unused_args<'a>(bound_sql: &str, args: &'a [ArgSpec]) -> Vec<&'a str> {
    args.iter()
        .filter(|spec| !bound_sql.contains(&arg_expression(spec)))
        .map(|spec| spec.name.as_str())
        .collect()
}

/// The typed SQL expression reading one arg from the current arg set.
fn arg_expression(spec: &ArgSpec) -> String {
    let name = spec.name.replace('\'', "''");
    let ty = spec.ty.base.sql_name();
    if spec.ty.array {
        format!("(array(select jsonb_array_elements_text({ARGS_ALIAS}.args->'{name}'))::{ty}[])")
    } else {
        format!("(({ARGS_ALIAS}.args->>'{name}')::{ty})")
    }
}

/// The WAL position a statement's snapshot has reached: every commit it sees ends at or
/// before it (on a replica, what it has replayed). A value carried by a WAL change of a later
/// commit is newer than the statement's (see `crate::dispatch`).
pub const POSITION: &str = "(case when pg_is_in_recovery() then pg_last_wal_replay_lsn() \
     else pg_current_wal_insert_lsn() end - '0/0'::pg_lsn)::int8";

/// The batched statement for a query (see the module doc); `with_position` adds a third
/// column, [`POSITION`], evaluated after the statement's snapshot was taken.
pub fn batch_statement(bound_sql: &str, returns: Returns, with_position: bool) -> String {
    let shaped = match returns {
        Returns::Value => format!(
            "select statgate_col.value from (select row_to_json(statgate_q) as r from ({bound_sql}\n) statgate_q limit 1) statgate_row, \
             json_each(statgate_row.r) with ordinality as statgate_col(key, value, n) order by statgate_col.n limit 1"
        ),
        Returns::Row => format!("select row_to_json(statgate_q) from ({bound_sql}\n) statgate_q limit 1"),
        Returns::Rows => format!("select coalesce(json_agg(statgate_q), '[]'::json) from ({bound_sql}\n) statgate_q"),
    };
    let position = if with_position {
        format!(", {POSITION}")
    } else {
        String::new()
    };
    format!("select {ARGS_ALIAS}.n, ({shaped})::text{position} from jsonb_array_elements($1::jsonb) with ordinality as {ARGS_ALIAS}(args, n)")
}

/// The query's own rows for one arg set, so its result columns can be described (codegen).
pub fn columns_statement(bound_sql: &str) -> String {
    format!(
        "select statgate_q.* from jsonb_array_elements($1::jsonb) with ordinality as {ARGS_ALIAS}(args, n) \
         cross join lateral ({bound_sql}\n) statgate_q"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::args::{ArgType, DEFAULT_MAX_ITEMS, DEFAULT_MAX_LENGTH};

    fn spec(name: &str, ty: &str) -> ArgSpec {
        ArgSpec {
            name: name.into(),
            ty: ArgType::parse(ty).expect("type"),
            optional: false,
            default: None,
            max_length: DEFAULT_MAX_LENGTH,
            max_items: DEFAULT_MAX_ITEMS,
        }
    }

    #[test]
    fn placeholders_become_typed_reads_and_casts_stay() {
        let sql = "select x::int8 from t where a = :postId and b = any(:ids) and c = ':notThis' and \"d:e\" = 1 -- :nor this\n/* :nor */";
        let bound = bind_placeholders(sql, &[spec("postId", "int8"), spec("ids", "int8[]")])
            .expect("binds");
        assert!(bound.contains("x::int8"));
        assert!(bound.contains("((statgate_args.args->>'postId')::int8)"));
        assert!(bound.contains(
            "(array(select jsonb_array_elements_text(statgate_args.args->'ids'))::int8[])"
        ));
        assert!(bound.contains("':notThis'"));
        assert!(bound.contains("\"d:e\""));
        assert!(bound.contains("-- :nor this"));
        assert!(bound.contains("/* :nor */"));
    }

    #[test]
    fn dollar_quotes_are_left_alone() {
        let bound = bind_placeholders("select $$ :x $$, $tag$ :y $tag$", &[]).expect("binds");
        assert_eq!(bound, "select $$ :x $$, $tag$ :y $tag$");
    }

    #[test]
    fn unknown_placeholders_are_errors() {
        let err = bind_placeholders("select :nope", &[]).unwrap_err();
        assert!(err.contains(":nope"), "{err}");
    }
}
