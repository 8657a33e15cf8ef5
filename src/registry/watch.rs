//! `watch` specs: which tables and rows a query's value depends on.
//!
//! A spec is written once per query in the registry (`match = { post_id = ":postId" }`); for
//! each signature it is instantiated with the signature's canonical args into the concrete
//! [`WatchEntry`] values the matcher indexes.

use serde_json::Value;

use super::args::ArgSpec;
use crate::matcher::{key_of, Bound, ColumnConstraint, Constraint, KeyKind, TableName, WatchEntry};

/// A value in a `match`: an arg reference (`":postId"`) or a literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Arg(String),
    Literal(Value),
}

#[derive(Debug, Clone, PartialEq)]
pub enum MatchSpec {
    Equals(Operand),
    /// Bounds as (operand, inclusive); a missing bound is unbounded.
    Range {
        lower: Option<(Operand, bool)>,
        upper: Option<(Operand, bool)>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct WatchSpec {
    pub table: TableName,
    pub columns: Vec<(String, MatchSpec)>,
}

/// Parses one `watch` entry of a registry file; `args` are the query's declared args.
pub fn parse_watch(value: &toml::Value, args: &[ArgSpec]) -> Result<WatchSpec, String> {
    let table = value
        .get("table")
        .and_then(toml::Value::as_str)
        .ok_or("a watch entry needs `table = \"...\"`")?;
    if let Some(table_def) = value.as_table() {
        if let Some(unknown) = table_def
            .keys()
            .find(|key| !matches!(key.as_str(), "table" | "match"))
        {
            return Err(format!(
                "unknown key `{unknown}` in a watch entry (expected `table` and `match`)"
            ));
        }
    }
    let mut columns = Vec::new();
    if let Some(matches) = value.get("match") {
        let matches = matches
            .as_table()
            .ok_or("`match` must be a table of column = value")?;
        for (column, spec) in matches {
            columns.push((column.clone(), parse_match(column, spec, args)?));
        }
    }
    Ok(WatchSpec {
        table: TableName::parse(table),
        columns,
    })
}

fn parse_match(column: &str, spec: &toml::Value, args: &[ArgSpec]) -> Result<MatchSpec, String> {
    if let Some(bounds) = spec.as_table() {
        let mut range = (None, None, None, None);
        for (name, bound) in bounds {
            let operand = parse_operand(column, bound, args)?;
            if let Operand::Arg(arg) = &operand {
                let spec = args
                    .iter()
                    .find(|a| &a.name == arg)
                    .ok_or_else(|| format!("unknown arg {arg}"))?;
                if spec.ty.array || !spec.ty.base.is_ordered() {
                    return Err(format!("column {column}: range bound :{arg} must be a scalar of an ordered type, not {}", spec.ty));
                }
            }
            match name.as_str() {
                "gte" => range.0 = Some(operand),
                "gt" => range.1 = Some(operand),
                "lte" => range.2 = Some(operand),
                "lt" => range.3 = Some(operand),
                other => {
                    return Err(format!(
                        "column {column}: unknown range bound `{other}` (use gte, gt, lte, lt)"
                    ))
                }
            }
        }
        let (gte, gt, lte, lt) = range;
        if gte.is_some() && gt.is_some() || lte.is_some() && lt.is_some() {
            return Err(format!(
                "column {column}: give at most one lower and one upper bound"
            ));
        }
        let lower = gte.map(|op| (op, true)).or(gt.map(|op| (op, false)));
        let upper = lte.map(|op| (op, true)).or(lt.map(|op| (op, false)));
        return Ok(MatchSpec::Range { lower, upper });
    }
    Ok(MatchSpec::Equals(parse_operand(column, spec, args)?))
}

fn parse_operand(column: &str, value: &toml::Value, args: &[ArgSpec]) -> Result<Operand, String> {
    if let Some(reference) = value.as_str().and_then(|s| s.strip_prefix(':')) {
        if !args.iter().any(|arg| arg.name == reference) {
            return Err(format!(
                "column {column}: `:{reference}` names no declared arg"
            ));
        }
        return Ok(Operand::Arg(reference.to_owned()));
    }
    let literal = serde_json::to_value(value).map_err(|err| format!("column {column}: {err}"))?;
    if KeyKind::of_literal(&literal).is_none() {
        return Err(format!(
            "column {column}: a literal must be a string, number or boolean"
        ));
    }
    Ok(Operand::Literal(literal))
}

impl WatchSpec {
    /// The concrete entry for one signature's canonical args. An optional arg that is absent
    /// constrains nothing (the entry may then watch more rows, never fewer).
    pub fn instantiate(
        &self,
        specs: &[ArgSpec],
        values: &serde_json::Map<String, Value>,
    ) -> WatchEntry {
        let constraints = self
            .columns
            .iter()
            .filter_map(|(column, spec)| instantiate_column(column, spec, specs, values))
            .collect();
        WatchEntry {
            table: self.table.clone(),
            constraints,
        }
    }
}

/// The kind and value(s) of an operand, or `None` when it refers to an absent arg.
fn resolve<'a>(
    operand: &'a Operand,
    specs: &[ArgSpec],
    values: &'a serde_json::Map<String, Value>,
) -> Option<(KeyKind, &'a Value)> {
    match operand {
        Operand::Arg(name) => {
            let spec = specs.iter().find(|s| &s.name == name)?;
            values
                .get(name)
                .map(|value| (spec.ty.base.key_kind(), value))
        }
        Operand::Literal(value) => KeyKind::of_literal(value).map(|kind| (kind, value)),
    }
}

fn instantiate_column(
    column: &str,
    spec: &MatchSpec,
    specs: &[ArgSpec],
    values: &serde_json::Map<String, Value>,
) -> Option<ColumnConstraint> {
    match spec {
        MatchSpec::Equals(operand) => {
            let (kind, value) = resolve(operand, specs, values)?;
            let keys = match value {
                Value::Array(items) => items.iter().filter_map(|item| key_of(kind, item)).collect(),
                scalar => vec![key_of(kind, scalar)?],
            };
            Some(ColumnConstraint {
                column: column.to_owned(),
                kind,
                constraint: Constraint::AnyOf(keys),
            })
        }
        MatchSpec::Range { lower, upper } => {
            let mut kind = None;
            let mut bound = |side: &Option<(Operand, bool)>| {
                let (operand, inclusive) = side.as_ref()?;
                let (k, value) = resolve(operand, specs, values)?;
                kind = Some(k);
                key_of(k, value).map(|key| Bound {
                    key,
                    inclusive: *inclusive,
                })
            };
            let lower = bound(lower);
            let upper = bound(upper);
            Some(ColumnConstraint {
                column: column.to_owned(),
                kind: kind?,
                constraint: Constraint::Range { lower, upper },
            })
        }
    }
}
