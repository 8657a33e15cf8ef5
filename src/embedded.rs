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

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tracing::{debug, info, warn};

/// Binaries a directory must hold to count as a PostgreSQL server installation.
const SERVER_BINARIES: [&str; 3] = ["postgres", "initdb", "pg_ctl"];
/// Where Debian and Ubuntu install one directory per major version.
const VERSIONED_ROOT: &str = "/usr/lib/postgresql";
/// The bootstrap superuser `initdb` creates; every connection uses it.
const SUPERUSER: &str = "postgres";
const START_TIMEOUT_SECS: &str = "60";
const STOP_TIMEOUT_SECS: &str = "60";
const MAX_CONNECTIONS: u32 = 200;
/// Replication slots and walsenders of the server (the `wal` change feed uses one per gateway).
const WAL_SENDERS: u32 = 20;
/// Ports tried when the server picks its own.
const PORT_TRIES: u32 = 3;
/// Where data directories go that the server user could not reach where they were asked for:
/// one per requested path, so each checkout keeps its own data across restarts.
pub const RELOCATION_ROOT: &str = "/var/lib/statgate";
const LOG_FILE: &str = "postgres.log";
const LOG_TAIL_LINES: usize = 20;
/// A socket path must fit `sun_path` (108 bytes) after `/.s.PGSQL.<port>` is appended; longer
/// data directory paths get no Unix socket (we only connect over TCP anyway).
const MAX_SOCKET_DIR_LEN: usize = 80;
/// PostgreSQL silently truncates longer identifiers (NAMEDATALEN - 1).
const MAX_DATABASE_NAME_LEN: usize = 63;
/// Creates the database named by the psql variable `name` unless it exists; `%I` quotes it.
const CREATE_DATABASE_SQL: &str = "select format('create database %I', :'name')\n\
     where not exists (select from pg_database where datname = :'name') \\gexec\n";

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

fn io_error(context: String) -> impl FnOnce(io::Error) -> EmbeddedError {
    move |source| EmbeddedError::Io { context, source }
}

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

/// The unprivileged account the server runs as when we are root.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerUser {
    name: String,
    uid: u32,
    gid: u32,
}

/// A PostgreSQL server on 127.0.0.1 over a data directory. Stop it with [`Self::stop`]; dropping
/// a running one stops it with `pg_ctl stop -m immediate` (crash-safe, but recovery runs on the
/// next start).
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    user: Option<ServerUser>,
    fast_unsafe: bool,
    settings: Vec<(String, String)>,
    pg_stat_statements: bool,
    running: bool,
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
        let from_pg_config = command_stdout("pg_config", &["--bindir"]).map(PathBuf::from);
        // The same search `Command` does for a bare program name.
        let from_path: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect())
            .unwrap_or_default();
        from_pg_config
            .into_iter()
            .chain(from_path)
            .chain(versioned_bin_dirs(Path::new(VERSIONED_ROOT)))
            .find(|dir| has_server_binaries(dir))
            .map(|dir| fs::canonicalize(&dir).unwrap_or(dir))
            .ok_or(EmbeddedError::NotFound)
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
        let mut pg = Self {
            log_file: data_dir.join(LOG_FILE),
            pg_stat_statements: has_pg_stat_statements(&bin_dir),
            bin_dir,
            data_dir,
            port,
            user,
            fast_unsafe: opts.fast_unsafe,
            settings: opts.settings,
            running: false,
            relocated_from,
            _owner: owner,
        };
        if !pg.data_dir.join("PG_VERSION").exists() {
            pg.initdb().await?;
        }
        pg.clear_stale_pid_file().await?;
        // A port picked free can be taken before the server binds it (by any socket on the
        // machine, an outgoing connection's local port included): pick another and try again.
        let mut tries = if opts.port.is_some() { 1 } else { PORT_TRIES };
        loop {
            match pg.start_server().await {
                Ok(()) => return Ok(pg),
                Err(err) if tries > 1 && port_was_taken(&err) => {
                    tries -= 1;
                    let taken = pg.port;
                    pg.port = free_port()?;
                    warn!(
                        taken,
                        port = pg.port,
                        "the port picked for postgres was taken meanwhile; trying another"
                    );
                }
                Err(err) => return Err(err),
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The canonical data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The data directory that was asked for, when the server user could not enter it and
    /// [`Self::data_dir`] stands in for it.
    pub fn relocated_from(&self) -> Option<&Path> {
        self.relocated_from.as_deref()
    }

    /// Where the server writes its log.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Connection URL for `database` as the superuser (trust authentication, no password).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{}",
            self.port,
            encode_path_segment(database)
        )
    }

    /// Creates `name` unless it already exists, with `psql` over TCP as the superuser.
    pub async fn create_database(&self, name: &str) -> Result<(), EmbeddedError> {
        if name.is_empty() || name.len() > MAX_DATABASE_NAME_LEN {
            return Err(EmbeddedError::InvalidDatabaseName(name.to_owned()));
        }
        self.psql("postgres", CREATE_DATABASE_SQL, &[("name", name)])
            .await?;
        debug!(database = name, port = self.port, "database ready");
        Ok(())
    }

    /// Stops the server with `pg_ctl stop -m fast`; stopping a stopped server does nothing.
    pub async fn stop(&mut self) -> Result<(), EmbeddedError> {
        if !self.running {
            return Ok(());
        }
        match self.pg_ctl_stop("fast").await {
            Ok(()) => {}
            // Someone else stopped it (or it died): nothing is left to stop.
            Err(err) if !self.pid_file().exists() => {
                warn!(error = %err, data_dir = %self.data_dir.display(), "embedded postgres was already stopped");
            }
            Err(err) => return Err(err),
        }
        self.running = false;
        info!(data_dir = %self.data_dir.display(), port = self.port, "embedded postgres stopped");
        Ok(())
    }

    /// Stops the server and starts it again on the same port and data directory.
    pub async fn restart(&mut self) -> Result<(), EmbeddedError> {
        self.stop().await?;
        self.start_server().await
    }

    fn pid_file(&self) -> PathBuf {
        self.data_dir.join("postmaster.pid")
    }

    fn user_name(&self) -> Option<String> {
        self.user.as_ref().map(|user| user.name.clone())
    }

    /// A server binary run as the server user, from inside the data directory (the caller's
    /// working directory may be closed to that user).
    fn server_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(user) = &self.user {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    /// Runs `cmd`; on failure the error carries its output and, with `log`, the log's last lines.
    async fn run(
        &self,
        mut cmd: Command,
        command: &str,
        log: Option<&Path>,
    ) -> Result<(), EmbeddedError> {
        debug!(command, user = ?self.user_name(), "running postgres command");
        let output = cmd
            .output()
            .await
            .map_err(io_error(format!("running {command}")))?;
        if output.status.success() {
            return Ok(());
        }
        let mut text = output_text(&output);
        if let Some(tail) = log.and_then(log_tail) {
            let _ = write!(text, "\nlast lines of the server log:\n{tail}");
        }
        Err(EmbeddedError::CommandFailed {
            command: command.to_owned(),
            user: self.user_name(),
            status: output.status,
            output: text,
            log: log.map(Path::to_path_buf),
        })
    }

    async fn initdb(&self) -> Result<(), EmbeddedError> {
        info!(data_dir = %self.data_dir.display(), user = ?self.user_name(), "initialising postgres data directory");
        let mut cmd = self.server_command("initdb");
        cmd.arg("-D").arg(&self.data_dir).args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        if self.fast_unsafe {
            cmd.arg("--no-sync");
        }
        self.run(cmd, "initdb", None).await
    }

    /// A `postmaster.pid` left by a crashed run either names our server, still running (stop
    /// it), or a dead or unrelated process (remove the file, or PostgreSQL may refuse to start).
    async fn clear_stale_pid_file(&self) -> Result<(), EmbeddedError> {
        let pid_file = self.pid_file();
        let contents = match fs::read_to_string(&pid_file) {
            Ok(contents) => contents,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(io_error(format!("reading {}", pid_file.display()))(err)),
        };
        let pid = contents
            .lines()
            .next()
            .and_then(|line| line.trim().parse::<u32>().ok());
        let state = pid.map_or(Postmaster::Gone, |pid| {
            postmaster_state(pid, &self.data_dir)
        });
        match state {
            Postmaster::Ours => {
                warn!(pid, data_dir = %self.data_dir.display(), "stopping a postgres left running by an earlier run");
                self.pg_ctl_stop("fast").await
            }
            Postmaster::Unknown => Ok(()),
            Postmaster::Gone | Postmaster::Other => {
                warn!(pid, data_dir = %self.data_dir.display(), "removing a stale postmaster.pid");
                fs::remove_file(&pid_file)
                    .map_err(io_error(format!("removing stale {}", pid_file.display())))
            }
        }
    }

    async fn start_server(&mut self) -> Result<(), EmbeddedError> {
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("start")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", START_TIMEOUT_SECS, "-s", "-o"])
            .arg(self.server_options());
        // Set first, so that a cancelled start still gets stopped on drop.
        self.running = true;
        if let Err(err) = self.run(cmd, "pg_ctl start", Some(&self.log_file)).await {
            // pg_ctl may have given up on a server that is still starting.
            if self.pid_file().exists() {
                self.stop_immediately();
            }
            self.running = false;
            return Err(err);
        }
        info!(
            data_dir = %self.data_dir.display(),
            port = self.port,
            user = ?self.user_name(),
            pg_stat_statements = self.pg_stat_statements,
            fast_unsafe = self.fast_unsafe,
            "embedded postgres started"
        );
        Ok(())
    }

    /// The postgres options for `pg_ctl -o`, which passes them through `/bin/sh`.
    fn server_options(&self) -> String {
        let mut opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c max_connections={MAX_CONNECTIONS}",
            self.port
        );
        // Set explicitly: the packaged default (/var/run/postgresql) may not exist or be writable.
        let socket_dir = self
            .data_dir
            .to_str()
            .filter(|dir| dir.len() <= MAX_SOCKET_DIR_LEN && !dir.contains(','));
        let _ = write!(opts, " -k {}", shell_quote(socket_dir.unwrap_or("")));
        if self.pg_stat_statements {
            opts.push_str(" -c shared_preload_libraries=pg_stat_statements");
        }
        if self.fast_unsafe {
            opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        // STATGATE_CHANGE_FEED=wal reads a logical replication slot: one per node, and one
        // walsender each (replication connections do not count against max_connections).
        let _ = write!(
            opts,
            " -c wal_level=logical -c max_replication_slots={WAL_SENDERS} -c max_wal_senders={WAL_SENDERS}"
        );
        for (name, value) in &self.settings {
            let _ = write!(opts, " -c {}", shell_quote(&format!("{name}={value}")));
        }
        opts
    }

    async fn pg_ctl_stop(&self, mode: &str) -> Result<(), EmbeddedError> {
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("stop").arg("-D").arg(&self.data_dir).args([
            "-m",
            mode,
            "-w",
            "-t",
            STOP_TIMEOUT_SECS,
            "-s",
        ]);
        self.run(cmd, "pg_ctl stop", Some(&self.log_file)).await
    }

    /// Best-effort synchronous `pg_ctl stop -m immediate`, for drop and failed starts.
    fn stop_immediately(&self) {
        let mut cmd = std::process::Command::new(self.bin_dir.join("pg_ctl"));
        cmd.arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "-w", "-t", "10", "-s"])
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(user) = &self.user {
            cmd.uid(user.uid).gid(user.gid);
        }
        match cmd.status() {
            Ok(status) if status.success() => {
                info!(data_dir = %self.data_dir.display(), "embedded postgres stopped immediately");
            }
            Ok(status) => {
                warn!(%status, data_dir = %self.data_dir.display(), "pg_ctl stop -m immediate failed");
            }
            Err(err) => {
                warn!(error = %err, data_dir = %self.data_dir.display(), "could not run pg_ctl stop -m immediate");
            }
        }
    }

    /// Runs `script` with `psql` over TCP as the superuser (no psqlrc, stop on the first error,
    /// unaligned tuples only) and returns its trimmed output. `vars` become psql variables.
    async fn psql(
        &self,
        database: &str,
        script: &str,
        vars: &[(&str, &str)],
    ) -> Result<String, EmbeddedError> {
        if !self.running {
            return Err(EmbeddedError::NotRunning);
        }
        let mut cmd = Command::new(self.bin_dir.join("psql"));
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", SUPERUSER, "-p"])
            .arg(self.port.to_string())
            .arg("-d")
            .arg(database)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in vars {
            cmd.arg("-v").arg(format!("{name}={value}"));
        }
        let mut child = cmd.spawn().map_err(io_error("running psql".to_owned()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .await
                .map_err(io_error("writing to psql".to_owned()))?;
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(io_error("running psql".to_owned()))?;
        if !output.status.success() {
            return Err(EmbeddedError::CommandFailed {
                command: "psql".to_owned(),
                user: None,
                status: output.status,
                output: output_text(&output),
                log: None,
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if self.running {
            self.stop_immediately();
        }
    }
}

/// Takes the data directory's owner lock: `<data_dir>.lock` beside it, locked exclusively
/// (the kernel releases it when the process ends, however it ends, so a crash leaves no stale
/// lock).
fn lock_data_dir(data_dir: &Path) -> Result<fs::File, EmbeddedError> {
    let name = data_dir
        .file_name()
        .map(|n| format!("{}.lock", n.to_string_lossy()))
        .unwrap_or_else(|| "pgdata.lock".into());
    let lock = data_dir.with_file_name(name);
    if let Some(parent) = lock.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_error(format!("creating {}", parent.display())))?;
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(io_error(format!("opening {}", lock.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(EmbeddedError::InUse {
            dir: data_dir.to_owned(),
            lock,
        }),
        Err(fs::TryLockError::Error(err)) => {
            Err(io_error(format!("locking {}", lock.display()))(err))
        }
    }
}

/// Creates the data directory, makes it private and, as root, hands it to the server user.
/// Returns its canonical path (what `/proc/<pid>/cwd` of its server shows).
async fn prepare_data_dir(
    data_dir: &Path,
    user: Option<&ServerUser>,
) -> Result<PathBuf, EmbeddedError> {
    fs::create_dir_all(data_dir).map_err(io_error(format!("creating {}", data_dir.display())))?;
    let data_dir = fs::canonicalize(data_dir)
        .map_err(io_error(format!("resolving {}", data_dir.display())))?;
    let metadata =
        fs::metadata(&data_dir).map_err(io_error(format!("reading {}", data_dir.display())))?;
    // PostgreSQL refuses a data directory others can read (0700, or 0750 with group access).
    if metadata.mode() & 0o027 != 0 {
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))
            .map_err(io_error(format!("restricting {}", data_dir.display())))?;
    }
    let Some(user) = user else {
        return Ok(data_dir);
    };
    check_traversable(&data_dir, user)?;
    let (dir, uid, gid) = (data_dir.clone(), user.uid, user.gid);
    tokio::task::spawn_blocking(move || chown_tree(&dir, uid, gid))
        .await
        .map_err(|err| io::Error::other(err.to_string()))
        .and_then(|chowned| chowned)
        .map_err(io_error(format!(
            "handing {} to user `{}`",
            data_dir.display(),
            user.name
        )))?;
    Ok(data_dir)
}

fn absolute(path: &Path) -> Result<PathBuf, EmbeddedError> {
    std::path::absolute(path).map_err(io_error(format!("resolving {}", path.display())))
}

/// Whether `user` can search every existing directory on the way to `data_dir`.
fn reachable(data_dir: &Path, user: &ServerUser) -> bool {
    check_traversable_from(data_dir, user, true).is_ok()
}

/// The stand-in for a data directory the server user cannot reach: under [`RELOCATION_ROOT`],
/// named after the requested path (readable, and unique by its hash).
fn relocated(requested: &Path) -> PathBuf {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(requested.as_os_str().as_encoded_bytes());
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let readable: String = requested
        .iter()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|part| {
            part.to_string_lossy()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        })
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    Path::new(RELOCATION_ROOT)
        .join(format!("{readable}-{hash}"))
        .join("pgdata")
}

/// Every directory above `data_dir` must let `user` search it (its primary group only: dropping
/// privileges clears supplementary groups).
fn check_traversable(data_dir: &Path, user: &ServerUser) -> Result<(), EmbeddedError> {
    check_traversable_from(data_dir, user, false)
}

/// As [`check_traversable`]; with `skip_missing`, directories that do not exist yet (to be
/// created, by root, searchable) are skipped.
fn check_traversable_from(
    data_dir: &Path,
    user: &ServerUser,
    skip_missing: bool,
) -> Result<(), EmbeddedError> {
    for dir in data_dir.ancestors().skip(1) {
        let metadata = match fs::metadata(dir) {
            Ok(metadata) => metadata,
            Err(err) if skip_missing && err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(io_error(format!("reading {}", dir.display()))(err)),
        };
        let search_bit = if metadata.uid() == user.uid {
            0o100
        } else if metadata.gid() == user.gid {
            0o010
        } else {
            0o001
        };
        if metadata.mode() & search_bit == 0 {
            return Err(EmbeddedError::NotTraversable {
                dir: dir.to_path_buf(),
                user: user.name.clone(),
            });
        }
    }
    Ok(())
}

/// `chown -R` without following symlinks, touching only what differs.
fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let with_path =
        |err: io::Error| io::Error::new(err.kind(), format!("{}: {err}", path.display()));
    let metadata = fs::symlink_metadata(path).map_err(with_path)?;
    if metadata.uid() != uid || metadata.gid() != gid {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(with_path)?;
    }
    if metadata.is_dir() {
        for entry in fs::read_dir(path).map_err(with_path)? {
            chown_tree(&entry.map_err(with_path)?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// `None` unless we are root; then the `postgres` user, else `nobody`.
fn server_user() -> Result<Option<ServerUser>, EmbeddedError> {
    if effective_uid() != Some(0) {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").map_err(io_error(
        "reading /etc/passwd to find a user to run PostgreSQL as".to_owned(),
    ))?;
    ["postgres", "nobody"]
        .into_iter()
        .find_map(|name| lookup_user(&passwd, name))
        .map(Some)
        .ok_or(EmbeddedError::NoServerUser)
}

fn lookup_user(passwd: &str, name: &str) -> Option<ServerUser> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        Some(ServerUser {
            name: name.to_owned(),
            uid: fields.next()?.parse().ok()?,
            gid: fields.next()?.parse().ok()?,
        })
    })
}

/// The effective uid, from `/proc/self/status` (`Uid: real effective saved fs`), else `id -u`.
fn effective_uid() -> Option<u32> {
    let from_proc = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))?
                .split_whitespace()
                .nth(2)?
                .parse()
                .ok()
        });
    from_proc.or_else(|| command_stdout("id", &["-u"])?.parse().ok())
}

/// What the pid in a `postmaster.pid` is now.
#[derive(Debug, PartialEq, Eq)]
enum Postmaster {
    /// A live postgres whose working directory is this data directory.
    Ours,
    /// No such process (or a zombie).
    Gone,
    /// The pid was reused by something else.
    Other,
    /// No `/proc` to tell; PostgreSQL's own check will judge.
    Unknown,
}

fn postmaster_state(pid: u32, data_dir: &Path) -> Postmaster {
    if !Path::new("/proc/self").exists() {
        return Postmaster::Unknown;
    }
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = fs::read_to_string(proc_dir.join("stat")) else {
        return Postmaster::Gone;
    };
    // The state follows the parenthesised command name, which may itself contain ") ".
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z" | "X")) {
        return Postmaster::Gone;
    }
    let comm = fs::read_to_string(proc_dir.join("comm")).unwrap_or_default();
    let cwd = fs::read_link(proc_dir.join("cwd")).ok();
    if matches!(comm.trim(), "postgres" | "postmaster") && cwd.as_deref() == Some(data_dir) {
        Postmaster::Ours
    } else {
        Postmaster::Other
    }
}

/// `<root>/<version>/bin`, newest version first (`16` before `15` before `9.6`).
fn versioned_bin_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Option<Vec<u64>>, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|entry| {
            let key = entry.file_name().to_str().and_then(version_key);
            (key, entry.path().join("bin"))
        })
        .collect();
    // Descending; names that are not versions (`None`) go last.
    versions.sort_by(|a, b| b.cmp(a));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

fn version_key(name: &str) -> Option<Vec<u64>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn has_server_binaries(dir: &Path) -> bool {
    SERVER_BINARIES.iter().all(|name| {
        fs::metadata(dir.join(name))
            .map(|meta| meta.is_file() && meta.mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Whether the server can preload `pg_stat_statements`: its library is in this installation's
/// `pkglibdir` (asked of the `pg_config` beside the server, or guessed from the layout).
fn has_pg_stat_statements(bin_dir: &Path) -> bool {
    let pg_config = bin_dir.join("pg_config");
    let asked = pg_config
        .to_str()
        .and_then(|program| command_stdout(program, &["--pkglibdir"]))
        .map(PathBuf::from);
    let guessed = bin_dir
        .parent()
        .map(|prefix| [prefix.join("lib"), prefix.join("lib/postgresql")]);
    asked
        .into_iter()
        .chain(guessed.into_iter().flatten())
        .any(|lib_dir| {
            ["pg_stat_statements.so", "pg_stat_statements.dylib"]
                .iter()
                .any(|file| lib_dir.join(file).is_file())
        })
}

/// A free loopback port: bind port 0 and let go. Another process may take it before the
/// server binds it; the start then fails with the reason in the log.
/// Whether a failed start is the server finding its port in use.
fn port_was_taken(err: &EmbeddedError) -> bool {
    matches!(err, EmbeddedError::CommandFailed { output, .. } if output.contains("could not bind")
        && output.contains("Address already in use"))
}

fn free_port() -> Result<u16, EmbeddedError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(io_error("picking a free port on 127.0.0.1".to_owned()))
}

/// Trimmed stdout of a quick helper command, or `None` if it is missing or fails.
fn command_stdout(program: &str, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (output.status.success() && !text.is_empty()).then_some(text)
}

fn output_text(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    [stderr.trim(), stdout.trim()]
        .into_iter()
        .filter(|text| !text.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn log_tail(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    (!tail.is_empty()).then_some(tail)
}

/// One word for `/bin/sh`: single-quoted, with embedded quotes spliced in.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_path_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    /// World-searchable, so that the unprivileged server user can reach the data directory.
    fn scratch_dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("statgate-embedded-")
            .permissions(fs::Permissions::from_mode(0o755))
            .tempdir()
            .expect("create a scratch directory")
    }

    fn options(dir: &Path) -> EmbeddedOptions {
        EmbeddedOptions {
            data_dir: dir.join("pgdata"),
            port: None,
            bin_dir: None,
            fast_unsafe: true,
            relocate_if_unreachable: true,
            settings: Vec::new(),
        }
    }

    async fn start(dir: &Path) -> EmbeddedPostgres {
        EmbeddedPostgres::start(options(dir))
            .await
            .expect("start embedded postgres")
    }

    async fn query(pg: &EmbeddedPostgres, database: &str, sql: &str) -> String {
        pg.psql(database, sql, &[]).await.expect("run psql")
    }

    fn postmaster_pid(data_dir: &Path) -> u32 {
        fs::read_to_string(data_dir.join("postmaster.pid"))
            .expect("read postmaster.pid")
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .expect("a pid on the first line of postmaster.pid")
    }

    /// Live processes (postmaster and children) working in `data_dir`.
    fn server_processes(data_dir: &Path) -> Vec<u32> {
        fs::read_dir("/proc")
            .expect("list /proc")
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                fs::read_link(format!("/proc/{pid}/cwd")).ok().as_deref() == Some(data_dir)
            })
            .collect()
    }

    fn process_uid(pid: u32) -> u32 {
        fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("read process status")
            .lines()
            .find(|line| line.starts_with("Uid:"))
            .and_then(|line| line.split_whitespace().nth(2)?.parse().ok())
            .expect("a Uid line")
    }

    #[tokio::test]
    async fn starts_creates_a_database_restarts_and_stops() {
        let dir = scratch_dir();
        let mut pg = start(dir.path()).await;

        pg.create_database("statgate_test")
            .await
            .expect("create database");
        pg.create_database("statgate_test")
            .await
            .expect("creating an existing database is a no-op");
        assert_eq!(query(&pg, "statgate_test", "select 1").await, "1");
        assert_eq!(
            pg.url("statgate_test"),
            format!("postgres://postgres@127.0.0.1:{}/statgate_test", pg.port())
        );
        if effective_uid() == Some(0) {
            assert_ne!(
                process_uid(postmaster_pid(pg.data_dir())),
                0,
                "postgres runs unprivileged"
            );
        }
        if pg.pg_stat_statements {
            assert_eq!(
                query(&pg, "postgres", "show shared_preload_libraries").await,
                "pg_stat_statements"
            );
        }

        let port = pg.port();
        pg.restart().await.expect("restart");
        assert_eq!(pg.port(), port, "a restart keeps the port");
        assert_eq!(query(&pg, "statgate_test", "select 1").await, "1");

        let data_dir = pg.data_dir().to_path_buf();
        pg.stop().await.expect("stop");
        pg.stop().await.expect("stopping twice is a no-op");
        assert!(
            server_processes(&data_dir).is_empty(),
            "no postgres left running"
        );
        assert!(matches!(
            pg.create_database("late").await,
            Err(EmbeddedError::NotRunning)
        ));
    }

    #[tokio::test]
    async fn a_second_start_reuses_the_data_directory() {
        let dir = scratch_dir();
        let mut first = start(dir.path()).await;
        first
            .create_database("kept")
            .await
            .expect("create database");
        first.stop().await.expect("stop");
        drop(first);

        let mut second = start(dir.path()).await;
        assert_eq!(
            query(
                &second,
                "postgres",
                "select count(*) from pg_database where datname = 'kept'"
            )
            .await,
            "1"
        );
        second.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn a_stale_pid_file_with_a_dead_pid_is_recovered() {
        let dir = scratch_dir();
        let mut pg = start(dir.path()).await;
        pg.stop().await.expect("stop");
        drop(pg);

        let mut exited = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        exited.wait().expect("wait for true");
        write_pid_file(&dir.path().join("pgdata"), exited.id());

        let mut pg = start(dir.path()).await;
        assert_eq!(query(&pg, "postgres", "select 1").await, "1");
        pg.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn a_pid_file_naming_an_unrelated_live_process_is_removed() {
        let dir = scratch_dir();
        let mut pg = start(dir.path()).await;
        pg.stop().await.expect("stop");
        drop(pg);

        let mut unrelated = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("spawn sleep");
        write_pid_file(&dir.path().join("pgdata"), unrelated.id());
        let started = EmbeddedPostgres::start(options(dir.path())).await;
        unrelated.kill().expect("kill sleep");
        unrelated.wait().expect("reap sleep");

        let mut pg = started.expect("start despite the pid file");
        assert_eq!(query(&pg, "postgres", "select 1").await, "1");
        pg.stop().await.expect("stop");
    }

    #[tokio::test]
    async fn a_server_left_running_by_a_crashed_run_is_replaced() {
        let dir = scratch_dir();
        let mut crashed = start(dir.path()).await;
        let data_dir = crashed.data_dir().to_path_buf();
        let old_pid = postmaster_pid(&data_dir);
        // What a kill -9 of statgate leaves: a running server that nobody will stop (and, the
        // process being gone, no owner lock).
        crashed.running = false;
        drop(crashed);

        let mut pg = start(dir.path()).await;
        assert_ne!(postmaster_pid(&data_dir), old_pid);
        assert_ne!(postmaster_state(old_pid, &data_dir), Postmaster::Ours);
        assert_eq!(query(&pg, "postgres", "select 1").await, "1");
        pg.stop().await.expect("stop");
        assert!(
            server_processes(&data_dir).is_empty(),
            "no postgres left running"
        );
    }

    #[tokio::test]
    async fn a_second_statgate_on_a_data_directory_in_use_is_refused_and_harms_nothing() {
        let dir = scratch_dir();
        let first = start(dir.path()).await;
        let pid = postmaster_pid(first.data_dir());
        match EmbeddedPostgres::start(options(dir.path())).await {
            Err(EmbeddedError::InUse { .. }) => {}
            Err(other) => panic!("expected InUse, got {other}"),
            Ok(_) => panic!("a second owner of one data directory was allowed"),
        }
        assert_eq!(
            postmaster_pid(first.data_dir()),
            pid,
            "the first server still runs"
        );
        assert_eq!(query(&first, "postgres", "select 1").await, "1");
    }

    #[tokio::test]
    async fn dropping_a_running_server_stops_it() {
        let dir = scratch_dir();
        let pg = start(dir.path()).await;
        let data_dir = pg.data_dir().to_path_buf();
        drop(pg);
        assert!(
            server_processes(&data_dir).is_empty(),
            "no postgres left running"
        );
    }

    #[tokio::test]
    async fn a_data_directory_the_server_user_cannot_reach_is_refused_when_relocation_is_off() {
        if effective_uid() != Some(0) {
            return; // only root hands the server to another user
        }
        let private = tempfile::tempdir().expect("create a private directory");
        fs::set_permissions(private.path(), fs::Permissions::from_mode(0o700))
            .expect("make it private");
        let err = EmbeddedPostgres::start(EmbeddedOptions {
            relocate_if_unreachable: false,
            ..options(private.path())
        })
        .await
        .expect_err("the server user cannot enter a 0700 root directory");
        let private_path = fs::canonicalize(private.path()).expect("canonicalize");
        assert!(
            matches!(&err, EmbeddedError::NotTraversable { dir, .. } if *dir == private_path),
            "unexpected error: {err}"
        );
        assert!(err.to_string().contains("user `postgres`"), "{err}");
    }

    #[tokio::test]
    async fn a_data_directory_the_server_user_cannot_reach_is_relocated_and_kept_across_restarts() {
        if effective_uid() != Some(0) {
            return; // only root hands the server to another user
        }
        let private = tempfile::tempdir().expect("create a private directory");
        fs::set_permissions(private.path(), fs::Permissions::from_mode(0o700))
            .expect("make it private");
        let requested = private.path().join("pgdata");
        let mut pg = EmbeddedPostgres::start(options(private.path()))
            .await
            .expect("starts in a directory the server user can own");
        assert_eq!(pg.relocated_from(), Some(requested.as_path()));
        let stand_in = pg.data_dir().to_path_buf();
        assert!(
            stand_in.starts_with(RELOCATION_ROOT),
            "{}",
            stand_in.display()
        );
        query(&pg, "postgres", "create table kept (x int)").await;
        pg.stop().await.expect("stop");
        drop(pg);
        let mut again = EmbeddedPostgres::start(options(private.path()))
            .await
            .expect("starts again");
        assert_eq!(
            again.data_dir(),
            stand_in,
            "the same stand-in, so the data survives"
        );
        assert_eq!(
            query(&again, "postgres", "select count(*) from kept").await,
            "0"
        );
        again.stop().await.expect("stop");
        drop(again);
        let _ = fs::remove_dir_all(stand_in.parent().expect("parent"));
    }

    #[test]
    fn finds_the_installed_binaries() {
        let bin_dir = EmbeddedPostgres::find_bin_dir().expect("find PostgreSQL binaries");
        assert!(has_server_binaries(&bin_dir), "{}", bin_dir.display());
    }

    #[test]
    fn versioned_directories_are_ordered_newest_first() {
        let root = scratch_dir();
        for version in ["9.6", "15", "10", "16", "latest"] {
            fs::create_dir_all(root.path().join(version).join("bin")).expect("create version dir");
        }
        let order: Vec<PathBuf> = versioned_bin_dirs(root.path());
        let names: Vec<&str> = order
            .iter()
            .filter_map(|dir| dir.parent()?.file_name()?.to_str())
            .collect();
        assert_eq!(names, ["16", "15", "10", "9.6", "latest"]);
    }

    #[test]
    fn looks_up_users_in_passwd() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\npostgres:x:101:104::/var/lib/postgresql:/bin/bash\n";
        assert_eq!(
            lookup_user(passwd, "postgres"),
            Some(ServerUser {
                name: "postgres".to_owned(),
                uid: 101,
                gid: 104
            })
        );
        assert_eq!(lookup_user(passwd, "nobody"), None);
    }

    #[test]
    fn quotes_for_the_shell_and_encodes_urls() {
        assert_eq!(shell_quote("/tmp/it's here"), r"'/tmp/it'\''s here'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(encode_path_segment("my db/x"), "my%20db%2Fx");
        assert_eq!(encode_path_segment("statgate_test"), "statgate_test");
    }

    fn write_pid_file(data_dir: &Path, pid: u32) {
        let contents = format!(
            "{pid}\n{}\n0\n5432\n\n127.0.0.1\n0 0\nready   \n",
            data_dir.display()
        );
        fs::write(data_dir.join("postmaster.pid"), contents).expect("write postmaster.pid");
    }
}
