//! The query registry (docs/REGISTRY.md): named stat queries loaded from `queries/<dir>/<file>.toml`.
//!
//! Loading parses every file, validates arg declarations, defaults, `auth` rules and `watch`
//! specs, and builds each query's batched statement. [`Registry::check`] then prepares every
//! statement against the database, so a typo fails start-up naming the file and query.
//! The registry is immutable once loaded and shared behind an `Arc`.

pub mod args;
pub mod check;
pub mod sql;
pub mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use args::{ArgSpec, ArgType, ArgsError, CanonicalArgs, DEFAULT_MAX_ITEMS, DEFAULT_MAX_LENGTH};
use watch::WatchSpec;

use crate::auth::Claims;
use crate::matcher::WatchEntry;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read the registry directory {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("{path}: query {query}: {message}")]
    Query {
        path: PathBuf,
        query: String,
        message: String,
    },
    #[error("{}", describe_problems(.0))]
    Check(Vec<check::Problem>),
    #[error("cannot check the registry against the database: {0}")]
    Connect(#[source] sqlx::Error),
}

fn describe_problems(problems: &[check::Problem]) -> String {
    let mut text = format!(
        "the registry has {} problem(s) against the database:",
        problems.len()
    );
    for problem in problems {
        text.push_str("\n  ");
        text.push_str(&problem.to_string());
    }
    text
}

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
    /// The batched statement actually executed (see [`sql`]).
    pub statement: String,
    /// The query's own rows, for describing its result columns (see [`sql::columns_statement`]).
    pub columns_statement: String,
    /// Sorted by name, so validation produces canonical key order.
    pub args: Vec<ArgSpec>,
    pub returns: Returns,
    pub auth: Vec<AuthRule>,
    pub watch: Vec<WatchSpec>,
    /// `parity = "<live SQL>"`: the batched statement of a query computing the same value
    /// from source tables, to catch a drifted stats table (see `recompute`).
    pub parity_statement: Option<String>,
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

/// Where the example registry lives in the repository, as its compiled-in files' names say.
const EXAMPLE_QUERIES_DIR: &str = "examples/blog/queries";

/// The example registry's files (paths under [`EXAMPLE_QUERIES_DIR`]); a test keeps the list
/// equal to the directory.
const EXAMPLE_QUERIES: [(&str, &str); 3] = [
    (
        "measurements/rollups.toml",
        include_str!("../../examples/blog/queries/measurements/rollups.toml"),
    ),
    (
        "posts/stats.toml",
        include_str!("../../examples/blog/queries/posts/stats.toml"),
    ),
    (
        "users/activity.toml",
        include_str!("../../examples/blog/queries/users/activity.toml"),
    ),
];

/// The registry a running gateway serves, replaced whole by a reload: readers take the current
/// one (an `Arc`, cheap) and keep it for the rest of their request.
#[derive(Debug)]
pub struct SharedRegistry {
    current: std::sync::RwLock<Arc<Registry>>,
}

impl SharedRegistry {
    pub fn new(registry: Registry) -> Self {
        SharedRegistry {
            current: std::sync::RwLock::new(Arc::new(registry)),
        }
    }

    /// The registry in force now.
    pub fn get(&self) -> Arc<Registry> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Puts `registry` in force and returns the one it replaces.
    pub fn replace(&self, registry: Registry) -> Arc<Registry> {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::replace(&mut *current, Arc::new(registry))
    }
}

#[derive(Debug, Default)]
pub struct Registry {
    queries: BTreeMap<String, Arc<Query>>,
}

impl Registry {
    /// Loads every `*.toml` under `dir` (sub-directories name the queries, docs/REGISTRY.md).
    pub fn load(dir: &Path) -> Result<Self, RegistryError> {
        let mut registry = Registry::default();
        let mut files = Vec::new();
        collect_files(dir, &mut files)?;
        files.sort();
        for file in files {
            registry.load_file(dir, &file)?;
        }
        Ok(registry)
    }

    /// The registry the configuration names.
    pub fn configured(queries: &crate::config::Queries) -> Result<Self, RegistryError> {
        match queries {
            crate::config::Queries::Directory(dir) => Registry::load(dir),
            crate::config::Queries::Example => Registry::example(),
        }
    }

    /// The example application's registry (`examples/blog/queries/`), compiled into the
    /// binary: demo mode serves it when `STATGATE_QUERIES` is unset, from any directory.
    pub fn example() -> Result<Self, RegistryError> {
        let mut registry = Registry::default();
        for (relative, text) in EXAMPLE_QUERIES {
            let file = Path::new(EXAMPLE_QUERIES_DIR).join(relative);
            registry.load_text(Path::new(EXAMPLE_QUERIES_DIR), &file, text)?;
        }
        Ok(registry)
    }

    fn load_file(&mut self, root: &Path, file: &Path) -> Result<(), RegistryError> {
        let text = std::fs::read_to_string(file).map_err(|source| RegistryError::Io {
            path: file.to_owned(),
            source,
        })?;
        self.load_text(root, file, &text)
    }

    /// Loads the queries of one file: `file` under `root` names them, `text` holds them.
    fn load_text(&mut self, root: &Path, file: &Path, text: &str) -> Result<(), RegistryError> {
        let table: toml::Table =
            text.parse()
                .map_err(|err: toml::de::Error| RegistryError::Toml {
                    path: file.to_owned(),
                    message: toml_message(text, &err),
                })?;
        let prefix = file.strip_prefix(root).unwrap_or(file).with_extension("");
        let prefix: Vec<String> = prefix
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        for (function, definition) in table {
            let name = format!("{}/{function}", prefix.join("/"));
            let query =
                parse_query(&name, file, &definition).map_err(|message| RegistryError::Query {
                    path: file.to_owned(),
                    query: name.clone(),
                    message,
                })?;
            self.queries.insert(name, Arc::new(query));
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Query>> {
        self.queries.get(name)
    }

    pub fn queries(&self) -> impl Iterator<Item = &Arc<Query>> {
        self.queries.values()
    }

    pub fn len(&self) -> usize {
        self.queries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }

    /// Checks every query against the database (see [`check`]): statements prepare,
    /// `returns = "value"` has one column, and every watched table carries statgate's watch
    /// triggers for the columns the query matches on. Every problem is reported at once.
    pub async fn check(&self, pool: &PgPool) -> Result<(), RegistryError> {
        let problems = check::problems(self, pool).await?;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RegistryError::Check(problems))
        }
    }

    pub fn describe(&self) -> Vec<QueryDescription> {
        self.queries
            .values()
            .map(|query| QueryDescription {
                name: query.name.clone(),
                args: query
                    .args
                    .iter()
                    .map(|arg| {
                        let description = ArgDescription {
                            ty: arg.ty.to_string(),
                            optional: arg.optional || arg.default.is_some(),
                            default: arg.default.clone(),
                        };
                        (arg.name.clone(), description)
                    })
                    .collect(),
                returns: query.returns,
            })
            .collect()
    }
}

/// A TOML error with the line and column it points at (1-based), when it points anywhere.
fn toml_message(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim_end();
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_owned(),
    }
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), RegistryError> {
    let entries = std::fs::read_dir(dir).map_err(|source| RegistryError::Directory {
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| RegistryError::Directory {
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        // Hidden entries are not queries: a Kubernetes ConfigMap volume holds `..data` and
        // timestamped `..2026_…` folders beside its files, which would load every query again.
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "toml") {
            files.push(path);
        }
    }
    Ok(())
}

fn parse_query(name: &str, file: &Path, definition: &toml::Value) -> Result<Query, String> {
    let table = definition
        .as_table()
        .ok_or("must be a table with `sql`, `args`, `watch`")?;
    if let Some(unknown) = table.keys().find(|key| {
        !matches!(
            key.as_str(),
            "sql" | "args" | "returns" | "watch" | "auth" | "description" | "parity"
        )
    }) {
        return Err(format!("unknown key `{unknown}`"));
    }
    let sql = table
        .get("sql")
        .and_then(toml::Value::as_str)
        .ok_or("missing `sql = \"...\"`")?
        .trim()
        .to_owned();
    let mut args = match table.get("args") {
        Some(toml::Value::Table(args)) => args
            .iter()
            .map(|(name, spec)| parse_arg(name, spec))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("`args` must be a table of name = type".into()),
        None => Vec::new(),
    };
    args.sort_by(|a, b| a.name.cmp(&b.name));
    let returns = match table.get("returns").map(|r| r.as_str()) {
        None | Some(Some("rows")) => Returns::Rows,
        Some(Some("value")) => Returns::Value,
        Some(Some("row")) => Returns::Row,
        Some(other) => {
            return Err(format!(
                "`returns` must be \"value\", \"row\" or \"rows\", got {other:?}"
            ))
        }
    };
    let auth = match table.get("auth") {
        Some(toml::Value::Table(rules)) => rules
            .iter()
            .map(|(arg, claim)| {
                let claim = claim.as_str().ok_or_else(|| {
                    format!("auth rule for {arg} must name a claim, e.g. \"sub\"")
                })?;
                if !args.iter().any(|a| &a.name == arg) {
                    return Err(format!(
                        "auth rule names {arg}, which is not a declared arg"
                    ));
                }
                Ok(AuthRule {
                    arg: arg.clone(),
                    claim: claim.to_owned(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?,
        Some(_) => return Err("`auth` must be a table of arg = claim".into()),
        None => Vec::new(),
    };
    let watch = match table.get("watch") {
        Some(toml::Value::Array(entries)) => entries
            .iter()
            .map(|entry| watch::parse_watch(entry, &args))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("`watch` must be an array of { table, match } entries".into()),
        None => {
            return Err(
                "missing `watch`: statgate must know which tables the value depends on".into(),
            )
        }
    };
    let bound = sql::bind_placeholders(&sql, &args)?;
    let unused = sql::unused_args(&bound, &args);
    if !unused.is_empty() {
        return Err(format!(
            "declared arg(s) {} never used in `sql`: a value that does not depend on an arg \
             would get one signature per arg value for nothing; remove the arg or use it",
            unused.join(", ")
        ));
    }
    let statement = sql::batch_statement(&bound, returns);
    let columns_statement = sql::columns_statement(&bound);
    let parity_statement = match table.get("parity") {
        Some(toml::Value::String(parity)) => {
            let bound = sql::bind_placeholders(parity.trim(), &args)
                .map_err(|message| format!("parity: {message}"))?;
            Some(sql::batch_statement(&bound, returns))
        }
        Some(_) => return Err("`parity` must be the SQL of the live value, as a string".into()),
        None => None,
    };
    Ok(Query {
        name: name.to_owned(),
        file: file.to_owned(),
        sql,
        statement,
        columns_statement,
        args,
        returns,
        auth,
        watch,
        parity_statement,
    })
}

fn parse_arg(name: &str, spec: &toml::Value) -> Result<ArgSpec, String> {
    if !name.chars().all(|c| c.is_alphanumeric() || c == '_') || name.is_empty() {
        return Err(format!(
            "arg name {name:?} must be letters, digits and underscores"
        ));
    }
    let (ty, options) = match spec {
        toml::Value::String(ty) => (ty.as_str(), None),
        toml::Value::Table(options) => (
            options
                .get("type")
                .and_then(toml::Value::as_str)
                .ok_or_else(|| format!("arg {name}: missing `type`"))?,
            Some(options),
        ),
        _ => {
            return Err(format!(
                "arg {name}: expected a type name or a table with `type`"
            ))
        }
    };
    let ty = ArgType::parse(ty).ok_or_else(|| {
        format!("arg {name}: unknown type {ty:?} (use int4, int8, float8, numeric, text, uuid, bool, date, timestamptz, or an array such as int8[])")
    })?;
    let get_usize = |key: &str, default: usize| -> Result<usize, String> {
        match options.and_then(|o| o.get(key)) {
            Some(value) => value
                .as_integer()
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| format!("arg {name}: `{key}` must be a non-negative integer")),
            None => Ok(default),
        }
    };
    let mut arg = ArgSpec {
        name: name.to_owned(),
        ty,
        optional: options
            .and_then(|o| o.get("optional"))
            .and_then(toml::Value::as_bool)
            .unwrap_or(false),
        default: None,
        max_length: get_usize("maxLength", DEFAULT_MAX_LENGTH)?,
        max_items: get_usize("maxItems", DEFAULT_MAX_ITEMS)?,
    };
    if let Some(options) = options {
        if let Some(unknown) = options.keys().find(|k| {
            !matches!(
                k.as_str(),
                "type" | "optional" | "default" | "maxLength" | "maxItems"
            )
        }) {
            return Err(format!("arg {name}: unknown option `{unknown}`"));
        }
        if let Some(default) = options.get("default") {
            let default =
                serde_json::to_value(default).map_err(|err| format!("arg {name}: {err}"))?;
            arg.default = Some(
                args::canonical_value(&arg, &default)
                    .map_err(|reason| format!("arg {name}: default: {reason}"))?,
            );
        }
    }
    Ok(arg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(toml: &str) -> Result<Registry, RegistryError> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("posts")).expect("mkdir");
        std::fs::write(dir.path().join("posts/stats.toml"), toml).expect("write");
        Registry::load(dir.path())
    }

    const COMMENT_COUNT: &str = r#"
[commentCount]
sql = "SELECT comment_count AS count FROM post_stats WHERE post_id = :postId"
args = { postId = "int8" }
returns = "value"
watch = [{ table = "post_stats", match = { post_id = ":postId" } }]
"#;

    #[test]
    fn queries_are_named_by_directory_file_and_function() {
        let registry = load(COMMENT_COUNT).expect("loads");
        let query = registry.get("posts/stats/commentCount").expect("query");
        assert_eq!(query.returns, Returns::Value);
        assert!(registry.get("posts/stats/nothing").is_none());
        let canonical = query.validate(&json!({"postId": "17"})).expect("valid");
        assert_eq!(
            query.signature(&canonical),
            r#"posts/stats/commentCount::{"postId":17}"#
        );
    }

    #[test]
    fn the_compiled_in_example_registry_is_the_example_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(EXAMPLE_QUERIES_DIR);
        let mut files = Vec::new();
        collect_files(&dir, &mut files).expect("the example registry");
        let mut on_disk: Vec<(String, String)> = files
            .iter()
            .map(|file| {
                let relative = file.strip_prefix(&dir).expect("under the directory");
                (
                    relative.to_string_lossy().into_owned(),
                    std::fs::read_to_string(file).expect("read"),
                )
            })
            .collect();
        on_disk.sort();
        let compiled: Vec<(String, String)> = EXAMPLE_QUERIES
            .iter()
            .map(|(path, text)| ((*path).to_owned(), (*text).to_owned()))
            .collect();
        assert_eq!(
            compiled, on_disk,
            "update EXAMPLE_QUERIES in src/registry/mod.rs"
        );
        let loaded = Registry::load(&dir).expect("loads from disk");
        let example = Registry::example().expect("loads from the binary");
        let names = |r: &Registry| r.queries().map(|q| q.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&example), names(&loaded));
    }

    #[test]
    fn hidden_folders_such_as_a_configmap_volume_s_are_not_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        for folder in ["posts", "..data/posts", ".git"] {
            std::fs::create_dir_all(dir.path().join(folder)).expect("mkdir");
            std::fs::write(dir.path().join(folder).join("stats.toml"), COMMENT_COUNT)
                .expect("write");
        }
        let registry = Registry::load(dir.path()).expect("loads");
        let names: Vec<&str> = registry.queries().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["posts/stats/commentCount"]);
    }

    #[test]
    fn bad_definitions_name_the_file_and_query() {
        for (toml, expected) in [
            ("[q]\nargs = {}\nwatch = []", "missing `sql"),
            ("[q]\nsql = \"select 1\"", "missing `watch`"),
            ("[q]\nsql = \"select :x\"\nwatch = []", ":x names no declared arg"),
            ("[q]\nsql = \"select 1\"\nargs = { x = \"int9\" }\nwatch = []", "unknown type \"int9\""),
            ("[q]\nsql = \"select 1\"\nargs = { x = { type = \"int4\", default = \"y\" } }\nwatch = []", "default"),
            ("[q]\nsql = \"select 1\"\nwatch = [{ table = \"t\", match = { c = \":nope\" } }]", ":nope"),
            ("[q]\nsql = \"select 1\"\nreturns = \"many\"\nwatch = []", "returns"),
            ("[q]\nsql = \"select 1\"\nauth = { x = \"sub\" }\nwatch = []", "not a declared arg"),
            ("[q]\nsql = \"select 1\"\nparity = \"select :y\"\nwatch = []", "parity: placeholder :y names no declared arg"),
            ("[q]\nsql = \"select 1\"\nparity = 1\nwatch = []", "`parity` must be the SQL"),
            ("[q\n", "invalid TOML: line 1, column 3"),
            ("[q]\nsql = \"select 1\"\nargs = { x = \"int4\" }\nwatch = []", "declared arg(s) x never used"),
        ] {
            let err = load(toml).expect_err(toml).to_string();
            assert!(err.contains("stats.toml"), "{err}");
            assert!(err.contains(expected), "{toml}: {err}");
        }
    }

    #[test]
    fn auth_rules_compare_args_with_claims() {
        let registry = load(
            r#"
[daily]
sql = "select :userId"
args = { userId = "text" }
auth = { userId = "sub" }
watch = [{ table = "measurement_rollups", match = { user_id = ":userId" } }]
"#,
        )
        .expect("loads");
        let query = registry.get("posts/stats/daily").expect("query");
        let claims = Claims {
            user: "u1".into(),
            exp: 0,
            all: json!({"sub": "u1", "exp": 0})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        };
        let own = query.validate(&json!({"userId": "u1"})).expect("valid");
        let other = query.validate(&json!({"userId": "u2"})).expect("valid");
        assert!(query.authorize(&own, &claims).is_ok());
        assert_eq!(
            query.authorize(&other, &claims).unwrap_err().to_string(),
            "arg userId must equal your sub claim"
        );
    }
}
