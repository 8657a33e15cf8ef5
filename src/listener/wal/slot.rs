//! The replication slot of a session: found, created, or found invalidated and created again.
//!
//! Everything here runs on the session's own replication connection before START_REPLICATION:
//! a temporary slot belongs to the connection that created it (PostgreSQL drops it when that
//! connection ends), and the state read describes the server the stream then opens on.
//!
//! A named slot that exists and is usable resumes: PostgreSQL sends every transaction that
//! committed after the slot's confirmed position, so no resync is needed. A named slot
//! PostgreSQL invalidated (`wal_status = 'lost'`: it held back more WAL than
//! `max_slot_wal_keep_size`, so the WAL it needs is gone) cannot resume: it is dropped and
//! created again, counted in `statgate_wal_slot_invalidations_total`, logged, and the session
//! resyncs every signature like a new one.

use pgwire_replication::{QueryRow, ReplicationClient};

use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("replication slot: {0}")]
    Replication(#[from] pgwire_replication::PgWireError),
    #[error(
        "replication slot {slot} exists but is not a pgoutput slot of this database: choose \
         another STATGATE_WAL_SLOT, or drop it (select pg_drop_replication_slot('{slot}'))"
    )]
    ForeignSlot { slot: String },
}

/// How a session's slot came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Created now (temporary, or a named slot seen for the first time): needs a resync.
    Created,
    /// A named slot that survived: the stream resumes at its confirmed position.
    Resumed,
    /// A named slot found invalidated, dropped and created again: needs a resync.
    Recreated,
}

/// Finds or creates the slot `name` (already checked to be a plain identifier).
pub async fn open(
    client: &mut ReplicationClient,
    name: &str,
    temporary: bool,
    metrics: &Metrics,
) -> Result<Opened, SlotError> {
    if temporary {
        create(client, name, true).await?;
        return Ok(Opened::Created);
    }
    let rows = client
        .simple_query(&format!(
            "select wal_status, plugin, database = current_database() \
             from pg_replication_slots where slot_name = '{name}'"
        ))
        .await?;
    let Some(row) = rows.first() else {
        create(client, name, false).await?;
        tracing::info!(slot = name, "replication slot created");
        return Ok(Opened::Created);
    };
    let status = text(row, 0).unwrap_or_default();
    let plugin = text(row, 1).unwrap_or_default();
    if plugin != "pgoutput" || text(row, 2).as_deref() != Some("t") {
        return Err(SlotError::ForeignSlot {
            slot: name.to_owned(),
        });
    }
    if status != "lost" {
        return Ok(Opened::Resumed);
    }
    metrics.wal_slot_invalidations.inc();
    tracing::warn!(
        slot = name,
        "replication slot invalidated by PostgreSQL (wal_status = lost: it held back more WAL \
         than max_slot_wal_keep_size allows, and the WAL it needed is gone); dropping it, \
         creating it again and resyncing every signature"
    );
    client
        .simple_query(&format!("DROP_REPLICATION_SLOT {name}"))
        .await?;
    create(client, name, false).await?;
    Ok(Opened::Recreated)
}

/// CREATE_REPLICATION_SLOT in the syntax every PostgreSQL from 10 on accepts.
async fn create(
    client: &mut ReplicationClient,
    name: &str,
    temporary: bool,
) -> Result<(), SlotError> {
    let temporary = if temporary { " TEMPORARY" } else { "" };
    client
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {name}{temporary} LOGICAL pgoutput NOEXPORT_SNAPSHOT"
        ))
        .await?;
    Ok(())
}

fn text(row: &QueryRow, column: usize) -> Option<String> {
    row.get(column)?
        .as_ref()
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
}
