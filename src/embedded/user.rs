//! The unprivileged account PostgreSQL runs as when statgate runs as root (PostgreSQL refuses
//! root): `postgres`, else `nobody`, read from `/etc/passwd`.

use std::fs;

use super::command::command_stdout;
use super::error::{io_error, EmbeddedError};

/// The unprivileged account the server runs as when we are root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServerUser {
    pub(super) name: String,
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// `None` unless we are root; then the `postgres` user, else `nobody`.
pub(super) fn server_user() -> Result<Option<ServerUser>, EmbeddedError> {
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

pub(super) fn lookup_user(passwd: &str, name: &str) -> Option<ServerUser> {
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
pub(super) fn effective_uid() -> Option<u32> {
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
