//! The change payload every feed carries (docs/ARCHITECTURE.md, "The change payload"): its
//! parsing into a [`Change`], and what happens to one that does not parse.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use crate::matcher::{Change, TableName};
use crate::telemetry::Metrics;

/// How often, at most, dropped payloads are logged.
const UNREADABLE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("payload is not JSON: {0}")]
    Json(String),
    #[error("unsupported payload version {0}")]
    Version(u64),
}

#[derive(Deserialize)]
struct Payload {
    v: u64,
    #[serde(default = "public")]
    schema: String,
    table: String,
    #[serde(default)]
    op: String,
    #[serde(default)]
    rows: HashMap<String, Value>,
    #[serde(default)]
    overflow: bool,
    at: Option<i64>,
}

fn public() -> String {
    "public".to_owned()
}

/// Parses a `statgate_changes` payload (docs/ARCHITECTURE.md, "The change payload"). A column whose value is not a list is
/// treated as a list of one.
pub fn parse_payload(payload: &str) -> Result<Change, PayloadError> {
    let parsed: Payload =
        serde_json::from_str(payload).map_err(|err| PayloadError::Json(err.to_string()))?;
    if parsed.v != 1 {
        return Err(PayloadError::Version(parsed.v));
    }
    let rows = parsed
        .rows
        .into_iter()
        .map(|(column, values)| match values {
            Value::Array(values) => (column, values),
            single => (column, vec![single]),
        })
        .collect();
    Ok(Change {
        table: TableName {
            schema: parsed.schema,
            table: parsed.table,
        },
        op: parsed.op,
        rows,
        overflow: parsed.overflow,
        at_micros: parsed.at,
        row: None,
    })
}

/// Unreadable payloads. statgate's triggers never write one, so whoever sent it is not telling
/// statgate about a change: it is dropped (resyncing for it would let any role that can NOTIFY
/// make the gateway recompute everything), counted in `statgate_notification_errors_total` and
/// logged at most once per [`UNREADABLE_LOG_EVERY`], with how many were dropped since.
#[derive(Debug, Default)]
pub(crate) struct UnreadablePayloads {
    last_logged: Option<tokio::time::Instant>,
    since_logged: u64,
}

impl UnreadablePayloads {
    pub(crate) fn drop_one(&mut self, err: &PayloadError, metrics: &Metrics) {
        metrics.notification_errors.inc();
        self.since_logged += 1;
        let now = tokio::time::Instant::now();
        if self
            .last_logged
            .is_some_and(|at| now.duration_since(at) < UNREADABLE_LOG_EVERY)
        {
            return;
        }
        tracing::warn!(error = %err, dropped = self.since_logged,
            "unreadable change payloads dropped (statgate's triggers never send them)");
        self.last_logged = Some(now);
        self.since_logged = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_parse_into_changes() {
        let change = parse_payload(r#"{"v":1,"schema":"public","table":"post_stats","op":"UPDATE","rows":{"post_id":[3,99]},"at":1700000000000000}"#)
            .expect("parses");
        assert_eq!(change.table, TableName::parse("post_stats"));
        assert_eq!(change.rows["post_id"], vec![json!(3), json!(99)]);
        assert_eq!(change.at_micros, Some(1_700_000_000_000_000));
        assert!(!change.overflow);
    }

    #[test]
    fn overflow_payloads_have_no_rows() {
        let change = parse_payload(r#"{"v":1,"table":"post_stats","op":"INSERT","overflow":true}"#)
            .expect("parses");
        assert!(change.overflow);
        assert_eq!(change.table.schema, "public");
    }

    #[test]
    fn bad_payloads_are_errors_not_panics() {
        for bad in [
            "",
            "{",
            "[]",
            "null",
            r#"{"v":2,"table":"t"}"#,
            r#"{"v":1}"#,
            r#"{"v":1,"table":5}"#,
            r#"{"v":1,"table":"t","rows":[1]}"#,
        ] {
            assert!(parse_payload(bad).is_err(), "{bad}");
        }
    }
}
