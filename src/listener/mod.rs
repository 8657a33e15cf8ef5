//! Change feeds: how statgate learns that watched tables changed.
//!
//! Two feeds deliver the same [`FeedEvent`]s to the dispatcher: [`notify`] (the default:
//! `LISTEN statgate_changes`, fed by the watch triggers' `pg_notify`) and [`table`] (the watch
//! triggers append to `statgate.changes`, which statgate polls). Both run under one
//! [`Supervisor`]: every new session is counted and followed by a resync. [`unrecorded`] watches
//! for changes the triggers could not record at all. The feed knows nothing of subscriptions:
//! matching is the dispatcher's (`crate::dispatch`).

pub mod feed;
pub mod notify;
pub mod payload;
pub mod supervisor;
pub mod table;
pub mod unrecorded;

pub use feed::{FeedEvent, ListenerStatus};
pub use notify::{Canary, NotifyFeed, CHANNEL, LISTENER_APPLICATION_NAME};
pub use payload::{parse_payload, PayloadError};
pub use supervisor::Supervisor;
pub use table::TableFeed;
