//! The hub: active signatures, who follows them, and fan-out of new values.
//!
//! One [`Signature`] exists per distinct `<query>::<args>` with at least one subscriber. It
//! holds the last frame sent and the outboxes of the sockets following it. A new value is
//! serialised once and the same bytes are queued to every outbox; an unchanged value is not
//! sent at all. Attaching the first subscriber registers the signature in the matcher *before*
//! its first computation is scheduled, so no change can slip between the two (docs/ARCHITECTURE.md).
//!
//! Memory is bounded here ([`HubLimits`]): a signature keeps only the frame it last sent (new
//! subscribers need it as their snapshot) and a SHA-256 of the value's JSON to recognise an
//! unchanged value, not the parsed value as well; a value over the row or byte limit is not
//! stored or sent (its followers get a `value_too_large` error until a change brings it back
//! within the limits); and new signatures are refused past a total and per-user count (a
//! user's count is the distinct signatures it follows over all its sockets; following a
//! signature already active costs no new signature of the total).
//!
//! Locks here are short and synchronous; nothing awaits while holding one. Lock order: a
//! user's entry, then a name's entry, then a signature's state.

mod fanout;
pub mod outbox;
mod reload;
mod signature;

pub use fanout::{Hub, HubLimits, Published, SignatureRefused};
pub use outbox::Outbox;
pub use reload::Reloaded;
pub use signature::Signature;
