//! The data directory: its owner lock, its creation and ownership, and, as root, whether the
//! server user can reach it (and a stand-in under [`RELOCATION_ROOT`] when it cannot).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::{io_error, EmbeddedError};
use super::user::ServerUser;

/// Where data directories go that the server user could not reach where they were asked for:
/// one per requested path, so each checkout keeps its own data across restarts.
pub const RELOCATION_ROOT: &str = "/var/lib/statgate";

/// Takes the data directory's owner lock: `<data_dir>.lock` beside it, locked exclusively
/// (the kernel releases it when the process ends, however it ends, so a crash leaves no stale
/// lock).
pub(super) fn lock_data_dir(data_dir: &Path) -> Result<fs::File, EmbeddedError> {
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
pub(super) async fn prepare_data_dir(
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

pub(super) fn absolute(path: &Path) -> Result<PathBuf, EmbeddedError> {
    std::path::absolute(path).map_err(io_error(format!("resolving {}", path.display())))
}

/// Whether `user` can search every existing directory on the way to `data_dir`.
pub(super) fn reachable(data_dir: &Path, user: &ServerUser) -> bool {
    check_traversable_from(data_dir, user, true).is_ok()
}

/// The stand-in for a data directory the server user cannot reach: under [`RELOCATION_ROOT`],
/// named after the requested path (readable, and unique by its hash).
pub(super) fn relocated(requested: &Path) -> PathBuf {
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
pub(super) fn check_traversable(data_dir: &Path, user: &ServerUser) -> Result<(), EmbeddedError> {
    check_traversable_from(data_dir, user, false)
}

/// As [`check_traversable`]; with `skip_missing`, directories that do not exist yet (to be
/// created, by root, searchable) are skipped.
pub(super) fn check_traversable_from(
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
pub(super) fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
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
