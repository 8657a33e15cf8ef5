//! statgate: a realtime subscription gateway between PostgreSQL and browsers.
//!
//! PostgreSQL triggers keep aggregate tables exact and NOTIFY when they change; statgate
//! matches each change to the subscriptions it affects, recomputes each affected value once,
//! and pushes it over WebSockets. docs/ARCHITECTURE.md maps the crate; the module names below
//! follow its moving parts.

pub mod app;
pub mod auth;
pub mod codegen;
pub mod config;
pub mod counters;
pub mod db;
pub mod demo;
pub mod dispatch;
pub mod edge;
pub mod embedded;
pub mod error;
pub mod healthcheck;
pub mod http;
pub mod hub;
pub mod limits;
pub mod listener;
pub mod matcher;
pub mod recompute;
pub mod registry;
pub mod reload;
pub mod scheduler;
pub mod state;
pub mod telemetry;
pub mod wire;
pub mod ws;

pub use app::Application;
pub use config::Config;
pub use state::AppState;
