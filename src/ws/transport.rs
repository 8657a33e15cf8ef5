//! The edges of a socket's life that are about the transport, not the protocol: counting the
//! connection while it lives, and ending it so that the client reads why.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;

use crate::telemetry::Metrics;

/// How long a close frame may take to go out before the socket is simply dropped.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Counts the connection in `statgate_connections` for as long as it lives, however it ends
/// (a panic in the task unwinds through this guard too).
pub(super) struct Counted(Arc<Metrics>);

impl Counted {
    pub(super) fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.connections.inc();
        Counted(metrics.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

/// Reads and discards what the client still sends until it answers our close frame or goes,
/// for at most [`CLOSE_TIMEOUT`]. Closing a TCP connection with unread bytes in its receive
/// buffer resets it, and the reset can destroy the close frame before the client reads it (a
/// client flooding Pings would never learn why it was cut off).
pub(super) async fn drain_until_closed(socket: &mut WebSocket) {
    let drain = async {
        while let Some(Ok(message)) = socket.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
}

/// True for the frame errors a client caused by breaking RFC 6455; false for a connection
/// that was reset or closed, where no close frame can reach anyone.
pub(super) fn is_client_violation(violation: &tungstenite::error::ProtocolError) -> bool {
    use tungstenite::error::ProtocolError as P;
    matches!(
        violation,
        P::NonZeroReservedBits
            | P::UnmaskedFrameFromClient
            | P::FragmentedControlFrame
            | P::ControlFrameTooBig
            | P::UnknownControlFrameType(_)
            | P::UnknownDataFrameType(_)
            | P::UnexpectedContinueFrame
            | P::ExpectedFragment(_)
            | P::InvalidOpcode(_)
            | P::InvalidCloseSequence
    )
}
