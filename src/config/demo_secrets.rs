//! Demo mode's secrets when none is configured: random, never a constant written in the source.
//!
//! A constant is public: anyone could sign authTokens or subscription tokens with it, and a
//! demo left running on a reachable address would take them. So a secret left unset is drawn
//! at random. With the embedded database it is kept in `<data dir>.demo-secrets` beside the
//! data directory (created with mode 0600, one `NAME=value` line per setting), so demo JWTs and
//! subscription tokens survive a restart of the same demo, as its data does. Against
//! `DATABASE_URL` statgate has no directory of its own, and each process draws its own.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::error::ConfigError;
use super::model::Secret;

/// Where demo mode's secrets come from.
pub(super) enum DemoSecrets {
    /// Drawn afresh by this process (demo mode against `DATABASE_URL`).
    PerProcess,
    /// Kept in this file, beside the embedded data directory.
    File(PathBuf),
}

impl DemoSecrets {
    pub(super) fn per_process() -> Self {
        DemoSecrets::PerProcess
    }

    /// The secrets file of an embedded data directory: `<data dir>.demo-secrets`.
    pub(super) fn beside(data_dir: &Path) -> Self {
        let name = data_dir
            .file_name()
            .map(|name| format!("{}.demo-secrets", name.to_string_lossy()))
            .unwrap_or_else(|| "pgdata.demo-secrets".into());
        DemoSecrets::File(data_dir.with_file_name(name))
    }

    /// The secret of setting `name`: the kept one, or a new random one (kept, if there is a
    /// file).
    pub(super) fn secret(&self, name: &str) -> Result<Secret, ConfigError> {
        match self {
            DemoSecrets::PerProcess => Ok(Secret::new(random_secret())),
            DemoSecrets::File(path) => {
                load_or_create(path, name).map_err(|source| ConfigError::DemoSecrets {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
}

/// 256 random bits, base64url: 43 characters, past the 32-byte minimum of real secrets.
fn random_secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn load_or_create(path: &Path, name: &str) -> io::Result<Secret> {
    let mut entries = read_entries(path)?;
    if let Some((_, value)) = entries.iter().find(|(key, _)| key == name) {
        return Ok(Secret::new(value.clone()));
    }
    let value = random_secret();
    entries.push((name.to_owned(), value.clone()));
    write_entries(path, &entries)?;
    Ok(Secret::new(value))
}

/// The `NAME=value` lines of the file; none when it does not exist yet. A file others may read
/// is made private again.
fn read_entries(path: &Path) -> io::Result<Vec<(String, String)>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    if fs::metadata(path)?.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .filter(|(key, value)| !key.is_empty() && !value.is_empty())
        .collect())
}

/// Writes the file whole, readable by its owner only: a private temporary file renamed over it,
/// so a crash never leaves half a secret.
fn write_entries(path: &Path, entries: &[(String, String)]) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    // Unique per write, not only per process: two threads of one process (tests, a reload
    // beside a start) would otherwise truncate and rename each other's temporary file.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let write = WRITES.fetch_add(1, Ordering::Relaxed);
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.{write}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(
        b"# statgate demo mode's secrets (random, kept across restarts); delete to renew\n",
    )?;
    for (key, value) in entries {
        writeln!(file, "{key}={value}")?;
    }
    file.sync_all()?;
    fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_secret_is_random_private_and_the_same_on_the_next_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DemoSecrets::beside(&dir.path().join("pgdata"));
        let jwt = store.secret("STATGATE_JWT_SECRET").expect("secret");
        let token = store.secret("STATGATE_TOKEN_SECRET").expect("secret");
        assert_ne!(jwt, token, "each setting has its own secret");
        assert!(jwt.expose().len() >= super::super::error::MIN_SECRET_BYTES);
        let file = dir.path().join("pgdata.demo-secrets");
        let mode = fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        assert_eq!(store.secret("STATGATE_JWT_SECRET").expect("again"), jwt);

        let elsewhere = tempfile::tempdir().expect("tempdir");
        let other = DemoSecrets::beside(&elsewhere.path().join("pgdata"));
        assert_ne!(other.secret("STATGATE_JWT_SECRET").expect("secret"), jwt);
        let per_process = DemoSecrets::per_process();
        assert_ne!(
            per_process.secret("STATGATE_JWT_SECRET").expect("secret"),
            per_process.secret("STATGATE_JWT_SECRET").expect("secret")
        );
    }

    #[test]
    fn a_secrets_file_others_can_read_is_made_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pgdata.demo-secrets");
        fs::write(
            &file,
            "STATGATE_JWT_SECRET=kept-secret-0123456789abcdefghijklmnop\n",
        )
        .expect("write");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
        let store = DemoSecrets::beside(&dir.path().join("pgdata"));
        let secret = store.secret("STATGATE_JWT_SECRET").expect("secret");
        assert_eq!(secret.expose(), "kept-secret-0123456789abcdefghijklmnop");
        let mode = fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    #[test]
    fn threads_writing_one_secrets_file_at_once_all_get_their_secret() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().expect("tempdir");
            let data_dir = dir.path().join("pgdata");
            std::thread::scope(|scope| {
                for thread in 0..4 {
                    let store = DemoSecrets::beside(&data_dir);
                    scope.spawn(move || {
                        store
                            .secret(&format!("SECRET_{thread}"))
                            .expect("every writer gets its secret")
                    });
                }
            });
        }
    }
}
