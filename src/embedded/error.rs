//! What can go wrong running the embedded server, with the command, user and log to look at.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries found (looked in pg_config --bindir, PATH, \
         /usr/lib/postgresql/*/bin): install them with `apt-get install postgresql` \
         or set DATABASE_URL"
    )]
    NotFound,
    #[error("{} does not contain the PostgreSQL server binaries (postgres, initdb, pg_ctl)", .0.display())]
    BinariesMissing(PathBuf),
    #[error(
        "running as root, and neither a `postgres` nor a `nobody` user exists in /etc/passwd \
         to run PostgreSQL as"
    )]
    NoServerUser,
    #[error(
        "directory {} cannot be entered by user `{user}`, who runs PostgreSQL: \
         allow it (chmod o+x) or choose another data directory",
        .dir.display()
    )]
    NotTraversable { dir: PathBuf, user: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{command} failed{} ({status}): {output}{}", as_user(.user), see_log(.log))]
    CommandFailed {
        command: String,
        user: Option<String>,
        status: ExitStatus,
        output: String,
        log: Option<PathBuf>,
    },
    #[error("invalid database name {0:?}: it must be 1 to 63 bytes")]
    InvalidDatabaseName(String),
    #[error("the embedded PostgreSQL server is not running")]
    NotRunning,
    #[error(
        "data directory {} is in use by another running statgate (lock {}): stop it, or choose \
         another STATGATE_DATA_DIR",
        .dir.display(),
        .lock.display()
    )]
    InUse { dir: PathBuf, lock: PathBuf },
}

fn as_user(user: &Option<String>) -> String {
    user.as_ref()
        .map(|name| format!(" as user `{name}`"))
        .unwrap_or_default()
}

fn see_log(log: &Option<PathBuf>) -> String {
    log.as_ref()
        .map(|path| format!("\n(server log: {})", path.display()))
        .unwrap_or_default()
}

pub(super) fn io_error(context: String) -> impl FnOnce(io::Error) -> EmbeddedError {
    move |source| EmbeddedError::Io { context, source }
}
