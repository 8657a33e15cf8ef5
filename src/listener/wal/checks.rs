//! What `serve` checks before it runs the WAL feed, each refusal naming the setting to change:
//! a server that cannot decode its WAL, a role that may not replicate, or a watched table the
//! publication does not carry would otherwise fail later, in a reconnect loop, or silently.

use sqlx::PgPool;

#[derive(Debug, thiserror::Error)]
pub enum WalSetupError {
    #[error("cannot check the database for STATGATE_CHANGE_FEED=wal: {0}")]
    Database(#[from] sqlx::Error),
    #[error(
        "STATGATE_CHANGE_FEED=wal needs migration 0010 (statgate.publish_watches is missing): run \
         `statgate migrate`"
    )]
    NotMigrated,
    #[error(
        "STATGATE_CHANGE_FEED=wal needs wal_level = logical, and this server has wal_level = \
         {0}: set `wal_level = logical` in postgresql.conf (or run ALTER SYSTEM SET wal_level = \
         logical) and restart PostgreSQL, or use STATGATE_CHANGE_FEED=notify"
    )]
    WalLevel(String),
    #[error(
        "STATGATE_CHANGE_FEED=wal reads a replication slot, and role {0} may not replicate: run \
         ALTER ROLE {0} REPLICATION (as a superuser), or connect as a role that has it"
    )]
    Role(String),
    #[error(
        "STATGATE_CHANGE_FEED=wal needs {setting} of at least 1 (one per statgate node), and this \
         server has {setting} = 0: set it in postgresql.conf and restart PostgreSQL"
    )]
    NoRoom { setting: &'static str },
    #[error(
        "STATGATE_CHANGE_FEED=wal would not hear of changes to these watched tables: {0}. As the \
         tables' owner run `select statgate.publish_watches()` (it gives a table the replica \
         identity its watched columns need and adds it to publication statgate_watches), or \
         `alter table <table> replica identity full` and `alter publication statgate_watches \
         add table <table>`"
    )]
    Unpublished(String),
}

/// Refuses to serve in `wal` mode unless the server, the role and the publication allow it.
/// Run after `statgate.set_feed_mode('wal')`, which publishes the watched tables.
pub async fn check(pool: &PgPool) -> Result<(), WalSetupError> {
    let wal_level: String = sqlx::query_scalar("select current_setting('wal_level')")
        .fetch_one(pool)
        .await?;
    if wal_level != "logical" {
        return Err(WalSetupError::WalLevel(wal_level));
    }
    let (role, may_replicate): (String, bool) = sqlx::query_as(
        "select quote_ident(current_user), coalesce((select rolreplication or rolsuper from pg_roles \
         where rolname = current_user), false)",
    )
    .fetch_one(pool)
    .await?;
    if !may_replicate {
        return Err(WalSetupError::Role(role));
    }
    for setting in ["max_replication_slots", "max_wal_senders"] {
        let value: i32 = sqlx::query_scalar("select current_setting($1)::int4")
            .bind(setting)
            .fetch_one(pool)
            .await?;
        if value < 1 {
            return Err(WalSetupError::NoRoom { setting });
        }
    }
    let migrated: bool =
        sqlx::query_scalar("select to_regproc('statgate.publish_watches') is not null")
            .fetch_one(pool)
            .await?;
    if !migrated {
        return Err(WalSetupError::NotMigrated);
    }
    let unpublished: Vec<(String, String)> =
        sqlx::query_as("select tbl, reason from statgate.unpublished_watches()")
            .fetch_all(pool)
            .await?;
    if !unpublished.is_empty() {
        let list: Vec<String> = unpublished
            .into_iter()
            .map(|(table, reason)| format!("{table} ({reason})"))
            .collect();
        return Err(WalSetupError::Unpublished(list.join(", ")));
    }
    Ok(())
}
