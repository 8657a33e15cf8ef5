//! The query registry (docs/REGISTRY.md): named stat queries loaded from `<dir>/<file>.toml`
//! files.
//!
//! Loading parses every file, validates arg declarations, defaults, `auth` rules and `watch`
//! specs, and builds each query's batched statement. `Registry::check` then prepares every
//! statement against the database, so a typo fails start-up naming the file and query.
//! The registry is immutable once loaded and shared behind an `Arc`.

pub mod args;
pub mod carried;
mod catalog;
pub mod check;
mod confirm;
mod error;
mod load;
mod query;
pub mod sql;
pub mod watch;

pub use carried::{Carried, KeyColumn};
pub use catalog::{Registry, SharedRegistry};
pub use error::{Problem, RegistryError};
pub use query::{ArgDescription, AuthRule, Forbidden, Query, QueryDescription, Returns};
