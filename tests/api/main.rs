//! Black-box tests: the real gateway against a real PostgreSQL, over real HTTP and WebSockets.

mod adoption;
mod caps;
mod cli;
mod counters;
mod demo;
mod edge;
mod feed;
mod frames;
mod golden;
mod helpers;
mod identity;
mod load;
mod matching;
mod realtime;
mod reload;
mod replica;
mod resilience;
mod soak;
mod subscribe;
mod tls;
mod triggers;
mod wal;
mod watches;
