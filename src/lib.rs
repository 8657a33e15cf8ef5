//! statgate: a realtime subscription gateway between PostgreSQL and browsers.
//!
//! PostgreSQL triggers keep aggregate tables exact and report each change; statgate matches
//! each change to the subscriptions it affects, recomputes each affected value once, and pushes
//! it over WebSockets. docs/ARCHITECTURE.md draws the modules and both flows.
//!
//! The crate in pipeline order. Data flows one way along each path, and no module imports one
//! that imports it back (`tests/architecture.rs` checks this).
//!
//! **Start-up**: [`config`] (settings → a typed [`Config`]) → [`db`] (the pool, statgate's
//! migrations, or the [`embedded`] server) → [`registry`] (the named queries, checked against
//! the database) → `app` (builds the shared `state` and every task).
//!
//! **A subscribe** (request → token → socket):
//! - `edge`: the TCP accept loop, with connection limits and timeouts;
//! - `http`: `POST /realtime/subscribe` checks the JWT ([`auth`]), the query and its args
//!   ([`registry`]) and the `limits`, and signs a subscription token;
//! - `ws`: the upgrade, then one task per socket that attaches its subscriptions to the
//!   `hub` and writes the frames of [`wire`].
//!
//! **A change** (change → match → recompute → push):
//! - [`listener`]: reads changes from the feed (NOTIFY or the change table), reconnects and
//!   resyncs through one supervisor;
//! - `dispatch`: matches each change to the signatures it affects ([`matcher`]) and hands
//!   them to the `scheduler`, which keeps each signature due at most once;
//! - `recompute`: runs each due signature's query once, in batches;
//! - `hub`: publishes the new value to every socket that follows it (their outboxes keep
//!   the latest value per subscription, so a slow socket never queues a backlog).
//!
//! Beside the pipeline: `error` maps every module's errors to HTTP in one place;
//! [`telemetry`] holds logging and the Prometheus metrics; [`reload`] swaps the registry on
//! SIGHUP; [`counters`], [`codegen`] and [`healthcheck`] back the binary's subcommands;
//! `demo` is the example app's page and routes.

pub mod config;
pub mod db;
pub mod embedded;
pub mod registry;

mod app;
mod state;

mod edge;
mod http;
mod limits;
mod ws;

pub mod auth;
pub mod wire;

pub mod listener;
pub mod matcher;

mod dispatch;
mod hub;
mod recompute;
mod scheduler;

mod error;
pub mod telemetry;

pub mod codegen;
pub mod counters;
mod demo;
pub mod healthcheck;
pub mod reload;

pub use app::Application;
pub use config::Config;
pub use state::AppState;
