//! `carried`: a query whose value is one column of one row of a watched table, chosen by key
//! columns bound to its args. In `wal` mode its value is read from the row a change carries,
//! without a statement (docs/REGISTRY.md, "Values carried by the change").
//!
//! The shape is declared, not guessed from the SQL: statgate would need a full SQL parser to
//! recognise "one column of one row" and could still be fooled by a view, a cast or a
//! `coalesce`. The declaration is checked when the registry loads (a `value` query, every arg
//! bound to a key column, a watch on the table) and confirmed against the database at start-up
//! (`crate::registry::check`): the key columns are a unique key, the column's type renders in
//! JSON exactly as `row_to_json` renders it, and for a few existing rows the SQL gives the
//! column's value.

use super::args::ArgSpec;
use super::watch::WatchSpec;
use crate::matcher::{KeyKind, TableName};

/// The declared shape of a carried query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    pub table: TableName,
    /// The column whose value is the query's value.
    pub column: String,
    /// Each key column with the arg bound to it and how its values compare.
    pub key: Vec<KeyColumn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    pub column: String,
    pub arg: String,
    pub kind: KeyKind,
}

/// The column types whose WAL text statgate renders exactly as `row_to_json` does.
pub const EXACT_TYPES: &[&str] = &[
    "int2", "int4", "int8", "numeric", "bool", "text", "varchar", "bpchar", "uuid",
];

/// Parses `carried = { table = "…", column = "…", key = { column = ":arg" } }` of a query with
/// `returns = "value"` (the caller checks that), these args and watches.
pub fn parse_carried(
    value: &toml::Value,
    args: &[ArgSpec],
    watch: &[WatchSpec],
) -> Result<Carried, String> {
    let spec = value
        .as_table()
        .ok_or("`carried` must be { table, column, key }")?;
    if let Some(unknown) = spec
        .keys()
        .find(|key| !matches!(key.as_str(), "table" | "column" | "key"))
    {
        return Err(format!(
            "unknown key `{unknown}` in `carried` (expected table, column, key)"
        ));
    }
    let text = |name: &str| {
        spec.get(name)
            .and_then(toml::Value::as_str)
            .ok_or_else(|| format!("`carried` needs `{name} = \"...\"`"))
    };
    let table = TableName::parse(text("table")?);
    let column = text("column")?.to_owned();
    let key = spec
        .get("key")
        .and_then(toml::Value::as_table)
        .ok_or("`carried` needs `key = { column = \":arg\" }`")?
        .iter()
        .map(|(column, arg)| key_column(column, arg, args))
        .collect::<Result<Vec<_>, _>>()?;
    for arg in args {
        if !key.iter().any(|k| k.arg == arg.name) {
            return Err(format!(
                "`carried`: arg {} is bound to no key column; a carried value may depend on the \
                 row's key only",
                arg.name
            ));
        }
    }
    if key.is_empty() {
        return Err("`carried` needs at least one key column".into());
    }
    if !watch.iter().any(|w| w.table == table) {
        return Err(format!(
            "`carried` reads {}.{}, which `watch` does not name",
            table.schema, table.table
        ));
    }
    Ok(Carried { table, column, key })
}

fn key_column(column: &str, arg: &toml::Value, args: &[ArgSpec]) -> Result<KeyColumn, String> {
    let reference = arg
        .as_str()
        .and_then(|a| a.strip_prefix(':'))
        .ok_or_else(|| {
            format!("`carried`: key column {column} must be bound to an arg, \":name\"")
        })?;
    let spec = args
        .iter()
        .find(|a| a.name == reference)
        .ok_or_else(|| format!("`carried`: key column {column} names unknown arg {reference}"))?;
    if spec.ty.array {
        return Err(format!(
            "`carried`: key column {column} is bound to {reference}, an array: one row needs one value"
        ));
    }
    Ok(KeyColumn {
        column: column.to_owned(),
        arg: reference.to_owned(),
        kind: spec.ty.base.key_kind(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::args::{ArgType, DEFAULT_MAX_ITEMS, DEFAULT_MAX_LENGTH};

    fn arg(name: &str, ty: &str) -> ArgSpec {
        ArgSpec {
            name: name.into(),
            ty: ArgType::parse(ty).expect("type"),
            optional: false,
            default: None,
            max_length: DEFAULT_MAX_LENGTH,
            max_items: DEFAULT_MAX_ITEMS,
        }
    }

    fn watch(table: &str) -> Vec<WatchSpec> {
        vec![WatchSpec {
            table: TableName::parse(table),
            columns: Vec::new(),
        }]
    }

    fn parse(text: &str, args: &[ArgSpec]) -> Result<Carried, String> {
        let value: toml::Value = toml::from_str(&format!("carried = {text}")).expect("toml");
        parse_carried(&value["carried"], args, &watch("post_stats"))
    }

    #[test]
    fn a_stats_row_read_parses() {
        let carried = parse(
            r#"{ table = "post_stats", column = "comment_count", key = { post_id = ":postId" } }"#,
            &[arg("postId", "int8")],
        )
        .expect("parses");
        assert_eq!(carried.table, TableName::parse("post_stats"));
        assert_eq!(carried.key[0].kind, KeyKind::Int);
    }

    #[test]
    fn shapes_that_are_not_one_column_of_one_keyed_row_are_refused() {
        let postid = [arg("postId", "int8")];
        let good_key = r#"key = { post_id = ":postId" }"#;
        for (text, args, needle) in [
            (
                r#"{ table = "post_stats", column = "c", key = { post_id = ":ids" } }"#.to_owned(),
                &[arg("ids", "int8[]")][..],
                "array",
            ),
            (
                r#"{ table = "post_stats", column = "c", key = { post_id = 3 } }"#.to_owned(),
                &postid[..],
                "bound to an arg",
            ),
            (
                format!(r#"{{ table = "other", column = "c", {good_key} }}"#),
                &postid[..],
                "does not name",
            ),
            (
                format!(r#"{{ table = "post_stats", column = "c", {good_key} }}"#),
                &[arg("postId", "int8"), arg("day", "date")][..],
                "arg day",
            ),
            (
                format!(r#"{{ table = "post_stats", {good_key} }}"#),
                &postid[..],
                "column",
            ),
            (
                format!(r#"{{ table = "post_stats", column = "c", {good_key}, extra = 1 }}"#),
                &postid[..],
                "unknown key",
            ),
        ] {
            let err = parse(&text, args).expect_err(&text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
