//! A loaded registry: every query by name, and the shared handle a running gateway replaces
//! whole on a reload.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use sqlx::PgPool;

use super::error::RegistryError;
use super::query::{ArgDescription, Query, QueryDescription};
use super::{check, load};

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
        load::collect_files(dir, &mut files)?;
        files.sort();
        for file in files {
            registry.add(load::read_file(dir, &file)?);
        }
        Ok(registry)
    }

    fn add(&mut self, queries: Vec<(String, Query)>) {
        for (name, query) in queries {
            self.queries.insert(name, Arc::new(query));
        }
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
        for (relative, text) in load::EXAMPLE_QUERIES {
            let root = Path::new(load::EXAMPLE_QUERIES_DIR);
            registry.add(load::parse_file(root, &root.join(relative), text)?);
        }
        Ok(registry)
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

    /// Checks every query against the database (see `registry::check`): statements prepare,
    /// `returns = "value"` has one column, and every watched table carries statgate's watch
    /// triggers for the columns the query matches on. Every problem is reported at once.
    pub async fn check(&self, pool: &PgPool) -> Result<(), RegistryError> {
        let problems = check::problems(self.queries.values(), pool).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Claims;
    use crate::registry::Returns;
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
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(load::EXAMPLE_QUERIES_DIR);
        let mut files = Vec::new();
        load::collect_files(&dir, &mut files).expect("the example registry");
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
        let compiled: Vec<(String, String)> = load::EXAMPLE_QUERIES
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
