//! The embedded PostgreSQL that statgate runs when `DATABASE_URL` is unset (README.md, "Configuration"), and that
//! the tests start: it finds the installed server binaries, creates the data directory with
//! `initdb` on first use (and reuses it afterwards), and starts, restarts and stops one server
//! with `pg_ctl`. It owns that server process and its data directory. It must never download
//! anything, listen beyond 127.0.0.1, or run PostgreSQL as root.
//!
//! Why not a crate: `postgresql_embedded` downloads PostgreSQL builds (at run or build time),
//! which cannot work offline. `pgtemp` looks for the binaries on `PATH` unless told (Debian
//! keeps `initdb` off it), keeps its data in a temporary directory deleted on drop (ours must
//! survive restarts), panics on failure, and as root runs the server through `sudo -u postgres`,
//! which slim containers do not have.
//!
//! PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user (or
//! `nobody`): the data directory is chowned to it and every directory above must let it in.
//! Authentication is `trust` on loopback, so any local user can connect as superuser: right for a
//! demo or a test, and the reason production sets `DATABASE_URL`.
//!
//! The parts: `binaries` finds the installation, `data_dir` owns the directory (its lock,
//! its owner, relocation as root), `process` runs `initdb`, `pg_ctl` and `psql`.

mod binaries;
mod command;
mod data_dir;
mod error;
mod process;
mod user;

#[cfg(test)]
mod tests;

use std::fs;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

pub use data_dir::RELOCATION_ROOT;
pub use error::EmbeddedError;

use binaries::{has_pg_stat_statements, has_server_binaries};
use data_dir::{absolute, lock_data_dir, prepare_data_dir, reachable, relocated};
use process::{encode_path_segment, free_port, port_was_taken, Server, LOG_FILE, SUPERUSER};
use user::server_user;

/// PostgreSQL silently truncates longer identifiers (NAMEDATALEN - 1).
const MAX_DATABASE_NAME_LEN: usize = 63;
/// Ports tried when the server picks its own.
const PORT_TRIES: u32 = 3;
/// Creates the database named by the psql variable `name` unless it exists; `%I` quotes it.
const CREATE_DATABASE_SQL: &str = "select format('create database %I', :'name')\n\
     where not exists (select from pg_database where datname = :'name') \\gexec\n";

/// How to run the embedded server.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The cluster's directory: created with its parents and initialised on first use, reused
    /// afterwards.
    pub data_dir: PathBuf,
    /// Loopback port; `None` picks a free one (kept across [`EmbeddedPostgres::restart`]).
    pub port: Option<u16>,
    /// Directory holding `postgres`, `initdb` and `pg_ctl`; `None` searches with
    /// [`EmbeddedPostgres::find_bin_dir`].
    pub bin_dir: Option<PathBuf>,
    /// Trade durability for speed: `fsync`, `synchronous_commit` and `full_page_writes` off and
    /// `initdb --no-sync`. A machine crash can then corrupt the cluster; meant for tests.
    pub fast_unsafe: bool,
    /// As root, when the server user cannot enter `data_dir` (a clone under `/root`, a
    /// `mktemp -d`), use a directory of its own under [`RELOCATION_ROOT`] instead of refusing.
    pub relocate_if_unreachable: bool,
    /// Server settings passed after statgate's own (`-c name=value`), so they win: a test
    /// may run the server with another `wal_level`, say.
    pub settings: Vec<(String, String)>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".statgate/pgdata"),
            port: None,
            bin_dir: None,
            fast_unsafe: false,
            relocate_if_unreachable: true,
            settings: Vec::new(),
        }
    }
}

/// A PostgreSQL server on 127.0.0.1 over a data directory. Stop it with [`Self::stop`]; dropping
/// a running one stops it with `pg_ctl stop -m immediate` (crash-safe, but recovery runs on the
/// next start).
#[derive(Debug)]
pub struct EmbeddedPostgres {
    server: Server,
    /// The data directory asked for, when the server user could not reach it and `data_dir` is
    /// its stand-in under [`RELOCATION_ROOT`].
    relocated_from: Option<PathBuf>,
    /// Held for this value's life: a second statgate on the same data directory would
    /// otherwise take a running server for a crashed run's leftover and stop it.
    _owner: fs::File,
}

impl EmbeddedPostgres {
    /// Finds the server binaries: `pg_config --bindir`, then `PATH`, then
    /// `/usr/lib/postgresql/*/bin` newest major version first. A directory counts only if it
    /// holds `postgres`, `initdb` and `pg_ctl`.
    pub fn find_bin_dir() -> Result<PathBuf, EmbeddedError> {
        binaries::find()
    }

    /// Starts the server, running `initdb` first if the data directory holds no cluster, and
    /// stopping a server an earlier (crashed) run left on the same directory.
    pub async fn start(opts: EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let bin_dir = match opts.bin_dir {
            Some(dir) if has_server_binaries(&dir) => dir,
            Some(dir) => return Err(EmbeddedError::BinariesMissing(dir)),
            None => Self::find_bin_dir()?,
        };
        let user = server_user()?;
        let requested = absolute(&opts.data_dir)?;
        let (wanted, relocated_from) = match user.as_ref() {
            Some(user) if opts.relocate_if_unreachable && !reachable(&requested, user) => {
                let stand_in = relocated(&requested);
                warn!(
                    requested = %requested.display(),
                    using = %stand_in.display(),
                    user = %user.name,
                    "the data directory cannot be entered by the user that runs postgres; using one it can"
                );
                (stand_in, Some(requested))
            }
            _ => (requested, None),
        };
        let owner = lock_data_dir(&wanted)?;
        let data_dir = prepare_data_dir(&wanted, user.as_ref()).await?;
        let port = match opts.port {
            Some(port) => port,
            None => free_port()?,
        };
        let mut server = Server {
            log_file: data_dir.join(LOG_FILE),
            pg_stat_statements: has_pg_stat_statements(&bin_dir),
            bin_dir,
            data_dir,
            port,
            user,
            fast_unsafe: opts.fast_unsafe,
            settings: opts.settings,
            running: false,
        };
        if !server.data_dir.join("PG_VERSION").exists() {
            server.initdb().await?;
        }
        server.clear_stale_pid_file().await?;
        // A port picked free can be taken before the server binds it (by any socket on the
        // machine, an outgoing connection's local port included): pick another and try again.
        let mut tries = if opts.port.is_some() { 1 } else { PORT_TRIES };
        loop {
            match server.start_server().await {
                Ok(()) => break,
                Err(err) if tries > 1 && port_was_taken(&err) => {
                    tries -= 1;
                    let taken = server.port;
                    server.port = free_port()?;
                    warn!(
                        taken,
                        port = server.port,
                        "the port picked for postgres was taken meanwhile; trying another"
                    );
                }
                Err(err) => return Err(err),
            }
        }
        let pg = Self {
            server,
            relocated_from,
            _owner: owner,
        };
        Ok(pg)
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// The canonical data directory.
    pub fn data_dir(&self) -> &Path {
        &self.server.data_dir
    }

    /// The data directory that was asked for, when the server user could not enter it and
    /// [`Self::data_dir`] stands in for it.
    pub fn relocated_from(&self) -> Option<&Path> {
        self.relocated_from.as_deref()
    }

    /// Where the server writes its log.
    pub fn log_file(&self) -> &Path {
        &self.server.log_file
    }

    /// Connection URL for `database` as the superuser (trust authentication, no password).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{}",
            self.server.port,
            encode_path_segment(database)
        )
    }

    /// Creates `name` unless it already exists, with `psql` over TCP as the superuser.
    pub async fn create_database(&self, name: &str) -> Result<(), EmbeddedError> {
        if name.is_empty() || name.len() > MAX_DATABASE_NAME_LEN {
            return Err(EmbeddedError::InvalidDatabaseName(name.to_owned()));
        }
        self.server
            .psql("postgres", CREATE_DATABASE_SQL, &[("name", name)])
            .await?;
        debug!(database = name, port = self.server.port, "database ready");
        Ok(())
    }

    /// Stops the server with `pg_ctl stop -m fast`; stopping a stopped server does nothing.
    pub async fn stop(&mut self) -> Result<(), EmbeddedError> {
        self.server.stop().await
    }

    /// Stops the server and starts it again on the same port and data directory.
    pub async fn restart(&mut self) -> Result<(), EmbeddedError> {
        self.server.restart().await
    }
}
