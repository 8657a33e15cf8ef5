//! Finding the installed PostgreSQL server binaries, never downloading them.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::command::command_stdout;
use super::error::EmbeddedError;

/// Binaries a directory must hold to count as a PostgreSQL server installation.
const SERVER_BINARIES: [&str; 3] = ["postgres", "initdb", "pg_ctl"];
/// Where Debian and Ubuntu install one directory per major version.
const VERSIONED_ROOT: &str = "/usr/lib/postgresql";

/// See [`EmbeddedPostgres::find_bin_dir`].
pub(super) fn find() -> Result<PathBuf, EmbeddedError> {
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

/// `<root>/<version>/bin`, newest version first (`16` before `15` before `9.6`).
pub(super) fn versioned_bin_dirs(root: &Path) -> Vec<PathBuf> {
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

pub(super) fn version_key(name: &str) -> Option<Vec<u64>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

pub(super) fn has_server_binaries(dir: &Path) -> bool {
    SERVER_BINARIES.iter().all(|name| {
        fs::metadata(dir.join(name))
            .map(|meta| meta.is_file() && meta.mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Whether the server can preload `pg_stat_statements`: its library is in this installation's
/// `pkglibdir` (asked of the `pg_config` beside the server, or guessed from the layout).
pub(super) fn has_pg_stat_statements(bin_dir: &Path) -> bool {
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
