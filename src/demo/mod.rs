//! Demo mode's own surface (README.md, "The demo page"): the page at `/` and the `/demo/api/...`
//! endpoints it calls to write example data, plus the "traffic" generator.
//!
//! Why a module of its own: none of this is part of the gateway's contract. It exists so a
//! newcomer sees counters move within a minute of `cargo run`, and so a browser test can
//! drive the real page. It is mounted **only** when `config.demo` is true; outside demo mode
//! `/` and `/demo/...` fall through to the normal JSON 404, so a production gateway never
//! exposes a write endpoint or a token mint. The page talks to statgate exactly as any
//! browser app would (POST /realtime/subscribe, then one WebSocket); this module never
//! pushes values itself, and never reaches into the hub, matcher or recompute pipeline.

mod assets;
mod error;
mod routes;
mod traffic;
mod writes;

pub use routes::router;
