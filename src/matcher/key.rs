//! Comparable keys: one representation for a subscription's arg value and a change payload's
//! column value, so that "does this change touch this subscription" is an equality or an
//! order comparison of two keys of the same kind.
//!
//! A payload value that cannot be read as the kind a subscription expects is reported as
//! `None`, and callers treat it as overlapping: over-matching costs a recompute, missing a
//! change costs a wrong number on someone's screen.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use chrono::{DateTime, NaiveDate};
use serde_json::Value;

/// How values of a column are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyKind {
    Int,
    Num,
    Text,
    Uuid,
    Bool,
    Date,
    Time,
}

impl KeyKind {
    /// The kind of a literal written in a registry file.
    pub fn of_literal(value: &Value) -> Option<Self> {
        match value {
            Value::Number(n) if n.is_i64() => Some(Self::Int),
            Value::Number(_) => Some(Self::Num),
            Value::String(_) => Some(Self::Text),
            Value::Bool(_) => Some(Self::Bool),
            _ => None,
        }
    }
}

/// A float that can be hashed and totally ordered (`-0.0` equals `0.0`).
#[derive(Debug, Clone, Copy)]
pub struct Float(f64);

impl Float {
    fn normalised_bits(self) -> u64 {
        if self.0 == 0.0 {
            0
        } else {
            self.0.to_bits()
        }
    }
}

impl PartialEq for Float {
    fn eq(&self, other: &Self) -> bool {
        self.normalised_bits() == other.normalised_bits()
    }
}
impl Eq for Float {}
impl Hash for Float {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.normalised_bits().hash(state);
    }
}
impl PartialOrd for Float {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Float {
    fn cmp(&self, other: &Self) -> Ordering {
        if self == other {
            Ordering::Equal
        } else {
            self.0.total_cmp(&other.0)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Int(i64),
    Num(Float),
    Text(Box<str>),
    Uuid(u128),
    Bool(bool),
    /// Days since 1970-01-01.
    Date(i64),
    /// Microseconds since the Unix epoch.
    Time(i64),
}

/// Reads a JSON value (an arg's canonical value or a payload value) as a key of `kind`.
/// `None` means "cannot tell"; callers check JSON null themselves (`Value::is_null`) before asking.
pub fn key_of(kind: KeyKind, value: &Value) -> Option<Key> {
    match (kind, value) {
        (KeyKind::Int, Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                    .map(|f| f as i64)
            })
            .map(Key::Int),
        (KeyKind::Int, Value::String(s)) => s.trim().parse().ok().map(Key::Int),
        (KeyKind::Num, Value::Number(n)) => n.as_f64().map(|f| Key::Num(Float(f))),
        (KeyKind::Num, Value::String(s)) => s.trim().parse().ok().map(|f| Key::Num(Float(f))),
        (KeyKind::Text, Value::String(s)) => Some(Key::Text(s.as_str().into())),
        (KeyKind::Text, Value::Number(n)) => Some(Key::Text(n.to_string().into())),
        (KeyKind::Text, Value::Bool(b)) => Some(Key::Text(b.to_string().into())),
        (KeyKind::Uuid, Value::String(s)) => uuid::Uuid::parse_str(s)
            .ok()
            .map(|u| Key::Uuid(u.as_u128())),
        (KeyKind::Bool, Value::Bool(b)) => Some(Key::Bool(*b)),
        (KeyKind::Date, Value::String(s)) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .map(|d| Key::Date(i64::from(d.to_epoch_days()))),
        (KeyKind::Time, Value::String(s)) => parse_time(s).map(Key::Time),
        _ => None,
    }
}

/// PostgreSQL renders timestamptz in JSON as RFC 3339 with an offset; accept the space form too.
fn parse_time(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .ok()
        .map(|t| t.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payload_and_arg_values_meet_as_equal_keys() {
        assert_eq!(
            key_of(KeyKind::Int, &json!(17)),
            key_of(KeyKind::Int, &json!("17"))
        );
        assert_eq!(key_of(KeyKind::Int, &json!(3.0)), Some(Key::Int(3)));
        assert_eq!(
            key_of(KeyKind::Num, &json!(1.5)),
            key_of(KeyKind::Num, &json!("1.50"))
        );
        assert_eq!(
            key_of(KeyKind::Num, &json!(0.0)),
            key_of(KeyKind::Num, &json!("-0"))
        );
        assert_eq!(
            key_of(
                KeyKind::Uuid,
                &json!("6F9619FF-8B86-D011-B42D-00CF4FC964FF")
            ),
            key_of(
                KeyKind::Uuid,
                &json!("6f9619ff-8b86-d011-b42d-00cf4fc964ff")
            )
        );
        assert_eq!(
            key_of(KeyKind::Time, &json!("2026-11-22T13:00:00+01:00")),
            key_of(KeyKind::Time, &json!("2026-11-22T12:00:00Z"))
        );
        assert_eq!(key_of(KeyKind::Int, &json!("x")), None);
        assert_eq!(key_of(KeyKind::Int, &Value::Null), None);
    }

    #[test]
    fn dates_and_times_are_ordered() {
        let a = key_of(KeyKind::Date, &json!("2026-11-21")).expect("date");
        let b = key_of(KeyKind::Date, &json!("2026-11-22")).expect("date");
        assert!(a < b);
        let t1 = key_of(KeyKind::Time, &json!("2026-11-22T00:00:00Z")).expect("time");
        let t2 = key_of(KeyKind::Time, &json!("2026-11-22 00:00:00.5+00")).expect("time");
        assert!(t1 < t2);
    }
}
