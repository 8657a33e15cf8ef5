//! One query of the registry: its SQL and batched statements, its args, how rows become the
//! pushed value, its `auth` rules and its watch specs (docs/REGISTRY.md).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use super::args::{self, ArgSpec, ArgsError, CanonicalArgs};
use super::carried::Carried;
use super::watch::WatchSpec;
use crate::auth::Claims;
use crate::matcher::WatchEntry;

/// How a query's rows become the pushed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Returns {
    /// First column of the first row, or null.
    Value,
    /// The first row as an object, or null.
    Row,
    /// Every row as an array of objects.
    Rows,
}

/// `auth = { userId = "sub" }`: the arg must equal the caller's JWT claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRule {
    pub arg: String,
    pub claim: String,
}

#[derive(Debug, PartialEq)]
pub struct Query {
    pub name: String,
    pub file: PathBuf,
    pub sql: String,
    /// The batched statement actually executed (see [`super::sql`]).
    pub statement: String,
    /// The query's own rows, for describing its result columns (see [`super::sql::columns_statement`]).
    pub columns_statement: String,
    /// Sorted by name, so validation produces canonical key order.
    pub args: Vec<ArgSpec>,
    pub returns: Returns,
    pub auth: Vec<AuthRule>,
    pub watch: Vec<WatchSpec>,
    /// `parity = "<live SQL>"`: the batched statement of a query computing the same value
    /// from source tables, to catch a drifted stats table (see `recompute`).
    pub parity_statement: Option<String>,
    /// `carried = { … }`: the value is one column of one row of a watched table, read from
    /// the row a WAL change carries (see [`Carried`]). Its `statement` then also returns the
    /// WAL position its snapshot had reached (see `sql::batch_statement`).
    pub carried: Option<Carried>,
}

/// Why a caller may not subscribe to these args.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("arg {arg} must equal your {claim} claim")]
pub struct Forbidden {
    pub arg: String,
    pub claim: String,
}

impl Query {
    pub fn validate(&self, args: &Value) -> Result<CanonicalArgs, ArgsError> {
        args::validate(&self.args, args)
    }

    pub fn signature(&self, canonical: &CanonicalArgs) -> String {
        crate::wire::signature(&self.name, &canonical.json)
    }

    /// Checks the `auth` rules against the caller's claims.
    pub fn authorize(&self, canonical: &CanonicalArgs, claims: &Claims) -> Result<(), Forbidden> {
        for rule in &self.auth {
            let allowed = match (canonical.values.get(&rule.arg), claims.claim(&rule.claim)) {
                (Some(Value::String(arg)), Some(claim)) => *arg == claim,
                (Some(Value::Array(items)), Some(claim)) => {
                    !items.is_empty()
                        && items.iter().all(|item| {
                            item.as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| item.to_string())
                                == claim
                        })
                }
                (Some(other), Some(claim)) => {
                    let rendered = other.to_string();
                    rendered == claim
                }
                _ => false,
            };
            if !allowed {
                return Err(Forbidden {
                    arg: rule.arg.clone(),
                    claim: rule.claim.clone(),
                });
            }
        }
        Ok(())
    }

    /// The concrete watch entries of one signature.
    pub fn watch_entries(&self, canonical: &serde_json::Map<String, Value>) -> Vec<WatchEntry> {
        self.watch
            .iter()
            .map(|spec| spec.instantiate(&self.args, canonical))
            .collect()
    }
}

/// The arg schema of one query, as listed by `GET /realtime/queries`.
#[derive(Debug, Serialize)]
pub struct QueryDescription {
    pub name: String,
    pub args: BTreeMap<String, ArgDescription>,
    pub returns: Returns,
}

#[derive(Debug, Serialize)]
pub struct ArgDescription {
    #[serde(rename = "type")]
    pub ty: String,
    pub optional: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
}
