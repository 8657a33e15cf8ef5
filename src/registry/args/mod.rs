//! Argument types, validation and canonical form (docs/REGISTRY.md).
//!
//! Validation coerces what a browser plausibly sends (`"17"` for an int8) into one canonical
//! JSON value per type, so equivalent requests share one signature: integers are numbers,
//! numerics are normalised decimal strings, uuids lower-case, timestamps RFC 3339 UTC with at
//! most microseconds (PostgreSQL's precision). Every rejection names the arg and the reason.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Utc};
use serde_json::{Map, Number, Value};

use crate::matcher::KeyKind;

/// Default maximum length of a text arg, in characters.
pub const DEFAULT_MAX_LENGTH: usize = 1024;
/// Default maximum number of elements of an array arg.
pub const DEFAULT_MAX_ITEMS: usize = 1000;
/// Digits allowed in a numeric arg.
const MAX_NUMERIC_DIGITS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BaseType {
    Int4,
    Int8,
    Float8,
    Numeric,
    Text,
    Uuid,
    Bool,
    Date,
    Timestamptz,
}

impl BaseType {
    /// How the matcher compares values of this type (it knows keys, not SQL types).
    pub fn key_kind(self) -> KeyKind {
        match self {
            BaseType::Int4 | BaseType::Int8 => KeyKind::Int,
            BaseType::Float8 | BaseType::Numeric => KeyKind::Num,
            BaseType::Text => KeyKind::Text,
            BaseType::Uuid => KeyKind::Uuid,
            BaseType::Bool => KeyKind::Bool,
            BaseType::Date => KeyKind::Date,
            BaseType::Timestamptz => KeyKind::Time,
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "int4" => Self::Int4,
            "int8" => Self::Int8,
            "float8" => Self::Float8,
            "numeric" => Self::Numeric,
            "text" => Self::Text,
            "uuid" => Self::Uuid,
            "bool" => Self::Bool,
            "date" => Self::Date,
            "timestamptz" => Self::Timestamptz,
            _ => return None,
        })
    }

    pub fn sql_name(self) -> &'static str {
        match self {
            Self::Int4 => "int4",
            Self::Int8 => "int8",
            Self::Float8 => "float8",
            Self::Numeric => "numeric",
            Self::Text => "text",
            Self::Uuid => "uuid",
            Self::Bool => "bool",
            Self::Date => "date",
            Self::Timestamptz => "timestamptz",
        }
    }

    /// Whether values of this type have an order, so a `watch` range can use them.
    pub fn is_ordered(self) -> bool {
        !matches!(self, Self::Bool | Self::Uuid)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArgType {
    pub base: BaseType,
    pub array: bool,
}

impl ArgType {
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.trim();
        match name.strip_suffix("[]") {
            Some(base) => Some(ArgType {
                base: BaseType::parse(base)?,
                array: true,
            }),
            None => Some(ArgType {
                base: BaseType::parse(name)?,
                array: false,
            }),
        }
    }
}

impl fmt::Display for ArgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base.sql_name())?;
        if self.array {
            f.write_str("[]")?;
        }
        Ok(())
    }
}

/// One declared argument of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct ArgSpec {
    pub name: String,
    pub ty: ArgType,
    pub optional: bool,
    /// Already canonical (validated when the registry loads).
    pub default: Option<Value>,
    pub max_length: usize,
    pub max_items: usize,
}

/// One problem with one arg: the arg's name and a sentence saying what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArgProblem {
    pub arg: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid args: {}", .problems.iter().map(|p| format!("{}: {}", p.arg, p.reason)).collect::<Vec<_>>().join("; "))]
pub struct ArgsError {
    pub problems: Vec<ArgProblem>,
}

impl ArgsError {
    fn one(arg: &str, reason: impl Into<String>) -> Self {
        ArgsError {
            problems: vec![ArgProblem {
                arg: arg.to_owned(),
                reason: reason.into(),
            }],
        }
    }
}

/// Validated args in canonical form: keys sorted, values normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct CanonicalArgs {
    pub values: Map<String, Value>,
    pub json: String,
}

/// Validates `args` (a JSON object, or null for none) against `specs` (sorted by name).
pub fn validate(specs: &[ArgSpec], args: &Value) -> Result<CanonicalArgs, ArgsError> {
    let empty = Map::new();
    let given = match args {
        Value::Object(map) => map,
        Value::Null => &empty,
        other => {
            return Err(ArgsError::one(
                "args",
                format!("must be a JSON object, got {}", kind(other)),
            ))
        }
    };
    let mut problems = Vec::new();
    for name in given.keys() {
        if !specs.iter().any(|spec| &spec.name == name) {
            problems.push(ArgProblem {
                arg: name.clone(),
                reason: "unknown arg".into(),
            });
        }
    }
    let mut values = Map::new();
    for spec in specs {
        match given.get(&spec.name) {
            Some(value) if !value.is_null() => match canonical_value(spec, value) {
                Ok(value) => {
                    values.insert(spec.name.clone(), value);
                }
                Err(reason) => problems.push(ArgProblem {
                    arg: spec.name.clone(),
                    reason,
                }),
            },
            _ => {
                if let Some(default) = &spec.default {
                    values.insert(spec.name.clone(), default.clone());
                } else if !spec.optional {
                    problems.push(ArgProblem {
                        arg: spec.name.clone(),
                        reason: format!("missing required arg of type {}", spec.ty),
                    });
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(ArgsError { problems });
    }
    let json = Value::Object(values.clone()).to_string();
    Ok(CanonicalArgs { values, json })
}

/// The canonical value of one arg, or the reason it is not acceptable.
pub fn canonical_value(spec: &ArgSpec, value: &Value) -> Result<Value, String> {
    if !spec.ty.array {
        return canonical_scalar(spec.ty.base, value, spec.max_length);
    }
    let Value::Array(items) = value else {
        return Err(format!(
            "expected an array of {}, got {}",
            spec.ty.base.sql_name(),
            kind(value)
        ));
    };
    if items.len() > spec.max_items {
        return Err(format!(
            "array has {} elements, the limit is {}",
            items.len(),
            spec.max_items
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            if item.is_null() {
                return Err(format!("element {index} is null"));
            }
            canonical_scalar(spec.ty.base, item, spec.max_length)
                .map_err(|reason| format!("element {index}: {reason}"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

fn canonical_scalar(base: BaseType, value: &Value, max_length: usize) -> Result<Value, String> {
    match base {
        BaseType::Int4 => integer(value, i64::from(i32::MIN), i64::from(i32::MAX), "int4"),
        BaseType::Int8 => integer(value, i64::MIN, i64::MAX, "int8"),
        BaseType::Float8 => float(value),
        BaseType::Numeric => numeric(value),
        BaseType::Text => text(value, max_length),
        BaseType::Uuid => uuid(value),
        BaseType::Bool => boolean(value),
        BaseType::Date => date(value),
        BaseType::Timestamptz => timestamp(value),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn integer(value: &Value, min: i64, max: i64, ty: &str) -> Result<Value, String> {
    let parsed: Option<i128> = match value {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e20)
                    .map(|f| f as i128)
            }),
        Value::String(s) => s.trim().parse::<i128>().ok(),
        other => return Err(format!("expected an integer ({ty}), got {}", kind(other))),
    };
    let Some(parsed) = parsed else {
        return Err(format!("expected an integer ({ty}), got {value}"));
    };
    if parsed < i128::from(min) || parsed > i128::from(max) {
        return Err(format!("{parsed} is out of range for {ty} ({min}..={max})"));
    }
    Ok(Value::Number(Number::from(parsed as i64)))
}

fn float(value: &Value) -> Result<Value, String> {
    let parsed = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        other => return Err(format!("expected a number (float8), got {}", kind(other))),
    };
    match parsed {
        Some(f) if f.is_finite() => Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| "not a finite number".to_owned()),
        Some(_) => Err("expected a finite number (float8)".to_owned()),
        None => Err(format!("expected a number (float8), got {value}")),
    }
}

/// Normalises a decimal string: no leading zeros, no trailing fractional zeros, no `+`.
fn numeric(value: &Value) -> Result<Value, String> {
    let raw = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        other => {
            return Err(format!(
                "expected a decimal number (numeric), got {}",
                kind(other)
            ))
        }
    };
    normalise_decimal(&raw)
        .map(Value::String)
        .ok_or_else(|| format!("expected a decimal number (numeric) of at most {MAX_NUMERIC_DIGITS} digits, got {value}"))
}

fn normalise_decimal(raw: &str) -> Option<String> {
    if raw.contains(['e', 'E']) {
        let f: f64 = raw.parse().ok()?;
        return f
            .is_finite()
            .then(|| normalise_decimal(&format!("{f}")))
            .flatten();
    }
    let (negative, digits) = match raw.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, raw.strip_prefix('+').unwrap_or(raw)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let valid = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if !valid(int_part) || !valid(frac_part) || (int_part.is_empty() && frac_part.is_empty()) {
        return None;
    }
    if int_part.len() + frac_part.len() > MAX_NUMERIC_DIGITS {
        return None;
    }
    let int_part = int_part.trim_start_matches('0');
    let frac_part = frac_part.trim_end_matches('0');
    let int_part = if int_part.is_empty() { "0" } else { int_part };
    let zero = int_part == "0" && frac_part.is_empty();
    let sign = if negative && !zero { "-" } else { "" };
    Some(if frac_part.is_empty() {
        format!("{sign}{int_part}")
    } else {
        format!("{sign}{int_part}.{frac_part}")
    })
}

fn text(value: &Value, max_length: usize) -> Result<Value, String> {
    let Value::String(s) = value else {
        return Err(format!("expected a string (text), got {}", kind(value)));
    };
    let length = s.chars().count();
    if length > max_length {
        return Err(format!(
            "string of {length} characters exceeds the limit of {max_length}"
        ));
    }
    if s.contains('\0') {
        return Err("string contains a NUL character".to_owned());
    }
    Ok(Value::String(s.clone()))
}

fn uuid(value: &Value) -> Result<Value, String> {
    let Value::String(s) = value else {
        return Err(format!("expected a uuid string, got {}", kind(value)));
    };
    uuid::Uuid::parse_str(s.trim())
        .map(|u| Value::String(u.hyphenated().to_string()))
        .map_err(|_| format!("expected a uuid, got {s:?}"))
}

fn boolean(value: &Value) -> Result<Value, String> {
    match value {
        Value::Bool(b) => Ok(Value::Bool(*b)),
        Value::String(s) if s == "true" => Ok(Value::Bool(true)),
        Value::String(s) if s == "false" => Ok(Value::Bool(false)),
        other => Err(format!("expected true or false (bool), got {other}")),
    }
}

fn date(value: &Value) -> Result<Value, String> {
    let Value::String(s) = value else {
        return Err(format!(
            "expected a date string YYYY-MM-DD, got {}",
            kind(value)
        ));
    };
    let parsed = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| format!("expected a date YYYY-MM-DD, got {s:?}"))?;
    if !(1..=9999).contains(&parsed.year()) {
        return Err(format!("date {s:?} is out of range (years 1 to 9999)"));
    }
    Ok(Value::String(parsed.format("%Y-%m-%d").to_string()))
}

fn timestamp(value: &Value) -> Result<Value, String> {
    let Value::String(s) = value else {
        return Err(format!(
            "expected an RFC 3339 timestamp string, got {}",
            kind(value)
        ));
    };
    let parsed = DateTime::parse_from_rfc3339(s.trim())
        .map_err(|_| format!("expected an RFC 3339 timestamp with offset, got {s:?}"))?;
    let micros = parsed.with_timezone(&Utc).timestamp_micros();
    let truncated = DateTime::<Utc>::from_timestamp_micros(micros)
        .ok_or_else(|| format!("timestamp {s:?} is out of range"))?;
    // Checked after the conversion: a leap second (`23:59:60`) becomes the next second, and
    // on 9999-12-31 that is year 10000, which the canonical form must not hold.
    if !(1..=9999).contains(&truncated.year()) {
        return Err(format!("timestamp {s:?} is out of range (years 1 to 9999)"));
    }
    Ok(Value::String(
        truncated.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    ))
}

#[cfg(test)]
mod tests;
