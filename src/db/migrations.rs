//! statgate's migrations, and where it keeps their history.
//!
//! statgate joins an application's database; it must not change anything it does not own. Its
//! own migrations (`migrations/`) create and change objects in schema `statgate` only, and
//! their history lives in `statgate.migrations`, never in the application's
//! `public._sqlx_migrations` (an application migrating with sqlx would otherwise find versions
//! it does not know, and statgate would find the application's). The example application of
//! the demo, the tests and the benchmarks (`examples/blog/migrations/`) is a second set,
//! applied only in demo mode or by `statgate migrate --example`, with its history in the same
//! table under its own scope.
//!
//! Several gateways may start on one database at once: a session advisory lock serialises
//! them, and each migration runs in its own transaction with its history row, so a crash
//! leaves either both or neither. sqlx's `Migrator` keeps its history in a table named by the
//! connection's search path and cannot be told otherwise, so statgate reads sqlx's embedded
//! migrations (files, versions, checksums) and applies them itself.
//!
//! Databases migrated by earlier statgate versions kept statgate's history in
//! `public._sqlx_migrations`. On first contact the rows that are exactly statgate's (same
//! version and checksum as a migration statgate ships) move to `statgate.migrations`, with a
//! log line; rows of anyone else stay where they are.

use sqlx::migrate::{Migration, Migrator};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, PgPool};

/// statgate's own schema: the watch helper, the change table feed, declarative counters.
pub static STATGATE: Migrator = sqlx::migrate!("./migrations");
/// The example application (posts, comments, reactions, measurements, their stats and the
/// demo seed).
pub static EXAMPLE: Migrator = sqlx::migrate!("./examples/blog/migrations");

/// Key of the session advisory lock held while migrating (any fixed number would do; this
/// one spells "statgate" in ASCII, so it is recognisable in `pg_locks`).
const LOCK_KEY: i64 = 0x7374_6174_6761_7465;

const CREATE_HISTORY: &str = "create schema if not exists statgate;
create table if not exists statgate.migrations (
  scope text not null,
  version bigint not null,
  description text not null,
  checksum bytea not null,
  applied_at timestamptz not null default now(),
  primary key (scope, version)
)";

/// Earlier checksums of migrations whose comments (never their statements) were edited after
/// release: a database that applied the earlier text is up to date, and its history row is
/// brought to the new checksum. An edit of anything but comments needs a new migration instead.
const COMMENT_ONLY_EDITS: &[(&str, i64, &str)] = &[(
    "example",
    2,
    // The first line named a file outside the repository.
    "3dd8978536481ce7ea32f5a7d0a69fe57b54dda040b3dfb6a1be202aacf2380a9e2a7924e9866196c76aa15557ba2b80",
)];

/// Whether `checksum` is one an earlier text of this migration had (see [`COMMENT_ONLY_EDITS`]).
fn superseded(scope: &str, version: i64, checksum: &[u8]) -> bool {
    let hex: String = checksum.iter().map(|b| format!("{b:02x}")).collect();
    COMMENT_ONLY_EDITS
        .iter()
        .any(|(s, v, old)| *s == scope && *v == version && *old == hex)
}

/// Which migrations to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationSet {
    /// statgate's own schema only: production.
    Statgate,
    /// statgate's schema, then the example application: demo mode, `migrate --example`.
    WithExample,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("cannot migrate: {0}")]
    Database(#[from] sqlx::Error),
    #[error(
        "{scope} migration {version} ({description}) was applied with different contents: \
         an applied migration must never be edited; restore the file or the database"
    )]
    ChecksumMismatch {
        scope: &'static str,
        version: i64,
        description: String,
    },
    #[error("{scope} migration {version} ({description}) failed: {source}")]
    Failed {
        scope: &'static str,
        version: i64,
        description: String,
        #[source]
        source: sqlx::Error,
    },
}

/// What one run did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// `(scope, version)` of each migration applied now, in order.
    pub applied: Vec<(&'static str, i64)>,
    /// History rows of an earlier statgate moved out of `public._sqlx_migrations`.
    pub adopted: usize,
}

/// One set of migrations and the name its history rows carry.
struct Scope {
    name: &'static str,
    migrator: &'static Migrator,
}

const STATGATE_SCOPE: Scope = Scope {
    name: "statgate",
    migrator: &STATGATE,
};
const EXAMPLE_SCOPE: Scope = Scope {
    name: "example",
    migrator: &EXAMPLE,
};

impl MigrationSet {
    /// The example application comes with demo mode, and otherwise only when asked for.
    pub fn for_mode(demo: bool, example: bool) -> Self {
        if demo || example {
            MigrationSet::WithExample
        } else {
            MigrationSet::Statgate
        }
    }

    fn scopes(self) -> &'static [Scope] {
        match self {
            MigrationSet::Statgate => &[STATGATE_SCOPE],
            MigrationSet::WithExample => &[STATGATE_SCOPE, EXAMPLE_SCOPE],
        }
    }
}

/// Applies the migrations of `set` that the database has not seen yet.
pub async fn migrate(pool: &PgPool, set: MigrationSet) -> Result<MigrationReport, MigrationError> {
    let mut connection = pool.acquire().await?;
    sqlx::query("select pg_advisory_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *connection)
        .await?;
    let result = migrate_locked(&mut connection, set).await;
    let unlocked = sqlx::query("select pg_advisory_unlock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *connection)
        .await;
    if let Err(err) = unlocked {
        // The lock is the session's: closing the connection releases it.
        tracing::warn!(error = %err, "cannot release the migration lock; closing its connection");
        connection.detach().close().await.ok();
    }
    let report = result?;
    if !report.applied.is_empty() || report.adopted > 0 {
        tracing::info!(
            applied = report.applied.len(),
            adopted = report.adopted,
            "migrations done"
        );
    }
    Ok(report)
}

async fn migrate_locked(
    connection: &mut PgConnection,
    set: MigrationSet,
) -> Result<MigrationReport, MigrationError> {
    sqlx::raw_sql(CREATE_HISTORY)
        .execute(&mut *connection)
        .await?;
    let mut report = MigrationReport {
        adopted: adopt_legacy_history(connection).await?,
        ..MigrationReport::default()
    };
    for scope in set.scopes() {
        let applied = applied_checksums(connection, scope.name).await?;
        warn_about_unknown_versions(scope, &applied);
        for migration in scope.migrator.iter() {
            match applied
                .iter()
                .find(|(version, _)| *version == migration.version)
            {
                Some((_, checksum)) if checksum.as_slice() == &*migration.checksum => {}
                Some((_, checksum)) if superseded(scope.name, migration.version, checksum) => {
                    record_new_checksum(connection, scope.name, migration).await?;
                }
                Some(_) => {
                    return Err(MigrationError::ChecksumMismatch {
                        scope: scope.name,
                        version: migration.version,
                        description: migration.description.to_string(),
                    })
                }
                None => {
                    apply(connection, scope.name, migration).await?;
                    report.applied.push((scope.name, migration.version));
                }
            }
        }
    }
    Ok(report)
}

/// Runs one migration and records it, in one transaction.
async fn apply(
    connection: &mut PgConnection,
    scope: &'static str,
    migration: &Migration,
) -> Result<(), MigrationError> {
    let failed = |source| MigrationError::Failed {
        scope,
        version: migration.version,
        description: migration.description.to_string(),
        source,
    };
    tracing::info!(
        scope,
        version = migration.version,
        description = %migration.description,
        "applying migration"
    );
    let mut transaction = connection.begin().await?;
    sqlx::raw_sql(&migration.sql)
        .execute(&mut *transaction)
        .await
        .map_err(failed)?;
    sqlx::query(
        "insert into statgate.migrations (scope, version, description, checksum) \
         values ($1, $2, $3, $4)",
    )
    .bind(scope)
    .bind(migration.version)
    .bind(&*migration.description)
    .bind(&*migration.checksum)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(())
}

async fn record_new_checksum(
    connection: &mut PgConnection,
    scope: &str,
    migration: &Migration,
) -> Result<(), sqlx::Error> {
    sqlx::query("update statgate.migrations set checksum = $3 where scope = $1 and version = $2")
        .bind(scope)
        .bind(migration.version)
        .bind(&*migration.checksum)
        .execute(connection)
        .await?;
    Ok(())
}

async fn applied_checksums(
    connection: &mut PgConnection,
    scope: &str,
) -> Result<Vec<(i64, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as("select version, checksum from statgate.migrations where scope = $1")
        .bind(scope)
        .fetch_all(connection)
        .await
}

/// A newer statgate may have applied migrations this one does not ship (a rolling upgrade
/// with both versions running): they are kept, and said once.
fn warn_about_unknown_versions(scope: &Scope, applied: &[(i64, Vec<u8>)]) {
    let unknown: Vec<i64> = applied
        .iter()
        .map(|(version, _)| *version)
        .filter(|version| !scope.migrator.version_exists(*version))
        .collect();
    if !unknown.is_empty() {
        tracing::warn!(scope = scope.name, versions = ?unknown, "the database has migrations this statgate does not know (applied by a newer version?); continuing");
    }
}

/// Moves the history rows an earlier statgate wrote to `public._sqlx_migrations` (exactly
/// those whose version and checksum match a migration statgate ships) to
/// `statgate.migrations`; returns how many moved.
async fn adopt_legacy_history(connection: &mut PgConnection) -> Result<usize, sqlx::Error> {
    let legacy: bool = sqlx::query_scalar(
        "select to_regclass('public._sqlx_migrations') is not null \
         and not exists (select from statgate.migrations)",
    )
    .fetch_one(&mut *connection)
    .await?;
    if !legacy {
        return Ok(0);
    }
    let rows: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("select version, checksum from public._sqlx_migrations where success")
            .fetch_all(&mut *connection)
            .await?;
    let ours: Vec<(&Scope, &Migration)> = [&STATGATE_SCOPE, &EXAMPLE_SCOPE]
        .into_iter()
        .flat_map(|scope| scope.migrator.iter().map(move |m| (scope, m)))
        .filter(|(scope, m)| {
            rows.iter().any(|(version, checksum)| {
                *version == m.version
                    && (**checksum == *m.checksum || superseded(scope.name, m.version, checksum))
            })
        })
        .collect();
    if ours.is_empty() {
        return Ok(0);
    }
    let mut transaction = connection.begin().await?;
    for (scope, migration) in &ours {
        sqlx::query(
            "insert into statgate.migrations (scope, version, description, checksum) \
             values ($1, $2, $3, $4) on conflict do nothing",
        )
        .bind(scope.name)
        .bind(migration.version)
        .bind(&*migration.description)
        .bind(&*migration.checksum)
        .execute(&mut *transaction)
        .await?;
        sqlx::query(
            "delete from public._sqlx_migrations where version = $1 \
             and (checksum = $2 or encode(checksum, 'hex') = any($3))",
        )
        .bind(migration.version)
        .bind(&*migration.checksum)
        .bind(
            COMMENT_ONLY_EDITS
                .iter()
                .filter(|(s, v, _)| *s == scope.name && *v == migration.version)
                .map(|(_, _, old)| *old)
                .collect::<Vec<_>>(),
        )
        .execute(&mut *transaction)
        .await?;
    }
    transaction.commit().await?;
    tracing::info!(
        moved = ours.len(),
        "this database was migrated by an earlier statgate: its history moved from \
         public._sqlx_migrations to statgate.migrations"
    );
    Ok(ours.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_comment_only_edit_names_a_shipped_migration_whose_checksum_moved_on() {
        for (scope, version, old) in COMMENT_ONLY_EDITS {
            let set = if *scope == "example" {
                &EXAMPLE
            } else {
                &STATGATE
            };
            let migration = set
                .iter()
                .find(|m| m.version == *version)
                .expect("a shipped migration");
            let now: String = migration
                .checksum
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_ne!(now, *old);
        }
    }

    #[test]
    fn the_two_sets_do_not_share_a_version_so_legacy_rows_map_to_one_scope() {
        for migration in STATGATE.iter() {
            assert!(
                !EXAMPLE.version_exists(migration.version),
                "version {} is in both sets",
                migration.version
            );
        }
    }
}
