//! Loading a registry: finding its files, parsing each query's TOML into a [`Query`], and the
//! example registry compiled into the binary.

use std::path::{Path, PathBuf};

use super::args::{self, ArgSpec, ArgType, DEFAULT_MAX_ITEMS, DEFAULT_MAX_LENGTH};
use super::error::RegistryError;
use super::query::{AuthRule, Query, Returns};
use super::{carried, sql, watch};

/// Where the example registry lives in the repository, as its compiled-in files' names say.
pub(super) const EXAMPLE_QUERIES_DIR: &str = "examples/blog/queries";

/// The example registry's files (paths under [`EXAMPLE_QUERIES_DIR`]); a test keeps the list
/// equal to the directory.
pub(super) const EXAMPLE_QUERIES: [(&str, &str); 3] = [
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

/// The queries of one file under `root`.
pub(super) fn read_file(root: &Path, file: &Path) -> Result<Vec<(String, Query)>, RegistryError> {
    let text = std::fs::read_to_string(file).map_err(|source| RegistryError::Io {
        path: file.to_owned(),
        source,
    })?;
    parse_file(root, file, &text)
}

/// The queries of one file: `file` under `root` names them, `text` holds them.
pub(super) fn parse_file(
    root: &Path,
    file: &Path,
    text: &str,
) -> Result<Vec<(String, Query)>, RegistryError> {
    let mut queries = Vec::new();
    let table: toml::Table = text
        .parse()
        .map_err(|err: toml::de::Error| RegistryError::Toml {
            path: file.to_owned(),
            message: toml_message(text, &err),
            source: Box::new(err),
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
        queries.push((name, query));
    }
    Ok(queries)
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

pub(super) fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), RegistryError> {
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
            "sql" | "args" | "returns" | "watch" | "auth" | "description" | "parity" | "carried"
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
    let carried = match table.get("carried") {
        Some(_) if returns != Returns::Value => {
            return Err(
                "`carried` needs returns = \"value\": the value is one column of one row".into(),
            )
        }
        Some(spec) => Some(carried::parse_carried(spec, &args, &watch)?),
        None => None,
    };
    let statement = sql::batch_statement(&bound, returns, carried.is_some());
    let columns_statement = sql::columns_statement(&bound);
    let parity_statement = match table.get("parity") {
        Some(toml::Value::String(parity)) => {
            let bound = sql::bind_placeholders(parity.trim(), &args)
                .map_err(|message| format!("parity: {message}"))?;
            Some(sql::batch_statement(&bound, returns, false))
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
        carried,
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
