//! The edges of a socket's life that are about the transport, not the protocol: counting the
//! connection while it lives, reading the client only when it sent something, and ending it so
//! that the client reads why.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::task::AtomicWaker;
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

/// Reads the client's frames only when there may be one.
///
/// A socket task wakes for every value it sends, and each pass of its select polled the read
/// side too, which in tungstenite zeroes the free read buffer and checks readiness before it
/// finds nothing: a fifth of the task's own CPU in a 10,000-socket fan-out (perf, docs/
/// BENCHMARKS.md, "`fanout` at the floor"). The gate polls the socket only after a waker of its
/// own was woken by the read side (or after a frame, since tungstenite may hold more), and
/// otherwise answers `Pending` at once.
pub(super) struct ReadGate {
    signal: Arc<ReadSignal>,
    waker: Waker,
}

struct ReadSignal {
    /// True when the read side may make progress: at first, after a wake, after a frame.
    woken: AtomicBool,
    /// The task polling the gate.
    task: AtomicWaker,
}

impl Wake for ReadSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl ReadGate {
    pub(super) fn new() -> Self {
        let signal = Arc::new(ReadSignal {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(signal.clone());
        ReadGate { signal, waker }
    }

    /// The socket's next frame, as `socket.next()`.
    pub(super) fn next<'a>(
        &'a self,
        socket: &'a mut WebSocket,
    ) -> impl Future<Output = Option<Result<Message, axum::Error>>> + 'a {
        std::future::poll_fn(move |cx| self.poll_next(socket, cx))
    }

    fn poll_next(
        &self,
        socket: &mut WebSocket,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, axum::Error>>> {
        // Registered before the flag is read: a wake after the read below reaches the task.
        self.signal.task.register(cx.waker());
        if !self.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let polled = socket.poll_next_unpin(&mut Context::from_waker(&self.waker));
        if polled.is_ready() {
            self.signal.woken.store(true, Ordering::Release);
        }
        polled
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
