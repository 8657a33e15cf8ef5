//! What can be wrong with a registry: a file that does not load, a query that does not parse,
//! and the problems the database finds (see `registry::check`).

use std::fmt;
use std::path::PathBuf;

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
    Toml {
        path: PathBuf,
        /// The parser's message with the offending line and column, as an editor shows them.
        message: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{path}: query {query}: {message}")]
    Query {
        path: PathBuf,
        query: String,
        message: String,
    },
    #[error("{}", describe_problems(.0))]
    Check(Vec<Problem>),
    #[error("cannot check the registry against the database: {0}")]
    Connect(#[source] sqlx::Error),
}

fn describe_problems(problems: &[Problem]) -> String {
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

/// One thing wrong with one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub query: String,
    pub message: String,
    /// A statement that fixes it, when there is one.
    pub fix: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: query {}: {}",
            self.file.display(),
            self.query,
            self.message
        )?;
        if let Some(fix) = &self.fix {
            write!(f, "\n    fix: {fix}")?;
        }
        Ok(())
    }
}
