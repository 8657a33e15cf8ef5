//! Change feeds: how statgate learns that watched tables changed.
//!
//! Three feeds deliver the same [`FeedEvent`]s to the dispatcher: [`notify`] (the default:
//! `LISTEN statgate_changes`, fed by the watch triggers' `pg_notify`), [`table`] (the watch
//! triggers append to `statgate.changes`, which statgate polls) and [`wal`] (no trigger: a
//! logical replication slot reads the watched tables' changes from the WAL). All run under one
//! [`Supervisor`]: every new session is counted and followed by a resync, unless it resumes. [`unrecorded`] watches
//! for changes the triggers could not record at all. The feed knows nothing of subscriptions:
//! matching is the dispatcher's (`crate::dispatch`).

pub mod feed;
pub mod notify;
pub mod payload;
pub mod supervisor;
pub mod table;
pub mod unrecorded;
pub mod wal;

pub use feed::{Confirmed, FeedEvent, ListenerStatus};
pub use notify::{Canary, NotifyFeed, CHANNEL, LISTENER_APPLICATION_NAME};
pub use payload::{parse_payload, PayloadError};
pub use supervisor::Supervisor;
pub use table::TableFeed;
pub use wal::WalFeed;
