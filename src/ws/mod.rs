//! The WebSocket side: [`upgrade`] checks everything it can before the upgrade, [`connection`]
//! runs one socket, and [`subscription`] checks a subscription token presented on it.

pub mod connection;
pub mod subscription;
mod subscriptions;
mod transport;
pub mod upgrade;

pub use upgrade::upgrade;
