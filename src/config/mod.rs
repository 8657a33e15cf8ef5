//! Configuration: the flags and environment variables of the README's "Configuration" table
//! ([`Settings`]), their validation, and the typed [`Config`] the rest of the crate receives.
//!
//! Only this module knows about flags and environment variables; library code takes a
//! `Config` (tests build one through [`Config::for_tests`]). Secrets live in [`Secret`], which
//! never prints its contents. The binary owns the subcommands; this module owns the settings
//! they share.

mod demo_secrets;
mod error;
mod model;
mod parse;
mod settings;
mod validate;

#[cfg(test)]
mod tests;

pub use error::{ConfigError, MIN_SECRET_BYTES};
pub use model::{
    AuthConfig, ChangeFeed, Config, Database, FeedConfig, HttpConfig, JwksConfig, Limits, Queries,
    RecomputeConfig, Secret,
};
pub use parse::parse_duration;
pub use settings::Settings;
