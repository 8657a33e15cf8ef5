//! The server's processes: `initdb`, `pg_ctl start/stop`, `psql`, run as the server user from
//! inside the data directory, with a clear error and the log's tail when one fails.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tracing::{debug, info, warn};

use super::error::{io_error, EmbeddedError};
use super::user::ServerUser;

/// The bootstrap superuser `initdb` creates; every connection uses it.
pub(super) const SUPERUSER: &str = "postgres";
const START_TIMEOUT_SECS: &str = "60";
const STOP_TIMEOUT_SECS: &str = "60";
const MAX_CONNECTIONS: u32 = 200;
/// Replication slots and walsenders of the server (the `wal` change feed uses one per gateway).
const WAL_SENDERS: u32 = 20;
pub(super) const LOG_FILE: &str = "postgres.log";
const LOG_TAIL_LINES: usize = 20;
/// A socket path must fit `sun_path` (108 bytes) after `/.s.PGSQL.<port>` is appended; longer
/// data directory paths get no Unix socket (we only connect over TCP anyway).
const MAX_SOCKET_DIR_LEN: usize = 80;

/// One PostgreSQL server process over a data directory, driven with `pg_ctl`. Knows nothing of
/// how the directory was chosen or locked; [`super::EmbeddedPostgres`] does.
#[derive(Debug)]
pub(super) struct Server {
    pub(super) bin_dir: PathBuf,
    pub(super) data_dir: PathBuf,
    pub(super) log_file: PathBuf,
    pub(super) port: u16,
    pub(super) user: Option<ServerUser>,
    pub(super) fast_unsafe: bool,
    /// Settings after statgate's own (see `EmbeddedOptions::settings`).
    pub(super) settings: Vec<(String, String)>,
    pub(super) pg_stat_statements: bool,
    pub(super) running: bool,
}

impl Server {
    /// Stops the server with `pg_ctl stop -m fast`; stopping a stopped server does nothing.
    pub(super) async fn stop(&mut self) -> Result<(), EmbeddedError> {
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
    pub(super) async fn restart(&mut self) -> Result<(), EmbeddedError> {
        self.stop().await?;
        self.start_server().await
    }

    pub(super) fn pid_file(&self) -> PathBuf {
        self.data_dir.join("postmaster.pid")
    }

    pub(super) fn user_name(&self) -> Option<String> {
        self.user.as_ref().map(|user| user.name.clone())
    }

    /// A server binary run as the server user, from inside the data directory (the caller's
    /// working directory may be closed to that user).
    pub(super) fn server_command(&self, program: &str) -> Command {
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
    pub(super) async fn run(
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

    pub(super) async fn initdb(&self) -> Result<(), EmbeddedError> {
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
    pub(super) async fn clear_stale_pid_file(&self) -> Result<(), EmbeddedError> {
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

    pub(super) async fn start_server(&mut self) -> Result<(), EmbeddedError> {
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
    pub(super) fn server_options(&self) -> String {
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

    pub(super) async fn pg_ctl_stop(&self, mode: &str) -> Result<(), EmbeddedError> {
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
    pub(super) fn stop_immediately(&self) {
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
    pub(super) async fn psql(
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

impl Drop for Server {
    fn drop(&mut self) {
        if self.running {
            self.stop_immediately();
        }
    }
}

/// What the pid in a `postmaster.pid` is now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Postmaster {
    /// A live postgres whose working directory is this data directory.
    Ours,
    /// No such process (or a zombie).
    Gone,
    /// The pid was reused by something else.
    Other,
    /// No `/proc` to tell; PostgreSQL's own check will judge.
    Unknown,
}

pub(super) fn postmaster_state(pid: u32, data_dir: &Path) -> Postmaster {
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

/// Whether a failed start is the server finding its port in use.
pub(super) fn port_was_taken(err: &EmbeddedError) -> bool {
    matches!(err, EmbeddedError::CommandFailed { output, .. } if output.contains("could not bind")
        && output.contains("Address already in use"))
}

/// A free loopback port: bind port 0 and let go. Another process may take it before the
/// server binds it; the start then fails with the reason in the log (and `start` tries another).
pub(super) fn free_port() -> Result<u16, EmbeddedError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(io_error("picking a free port on 127.0.0.1".to_owned()))
}

pub(super) fn output_text(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    [stderr.trim(), stdout.trim()]
        .into_iter()
        .filter(|text| !text.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) fn log_tail(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    (!tail.is_empty()).then_some(tail)
}

/// One word for `/bin/sh`: single-quoted, with embedded quotes spliced in.
pub(super) fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(super) fn encode_path_segment(segment: &str) -> String {
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
