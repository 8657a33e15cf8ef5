//! The TCP edge: accepts connections, holds each to the connection limits, and serves HTTP/1.1
//! on it with timeouts, so that no client can hold a descriptor for longer than the settings
//! say (docs/RELIABILITY.md).
//!
//! `axum::serve` has none of these knobs, hence this accept loop over hyper's HTTP/1 server:
//! - **connection limits** ([`ConnectionLimits`], in all and per peer address): checked at
//!   accept. Over a limit the connection is accepted, sent a `503 too_many_connections` in one
//!   non-blocking write, and closed at once. Accepting and closing (rather than pausing the
//!   accept loop) keeps the kernel's accept queue empty: a health check or a legitimate
//!   client never waits behind a backlog of half-open connections, and the descriptors held
//!   stay at the limit plus one.
//! - **header read timeout** (hyper's, on tokio's timer): a request head must arrive within
//!   `STATGATE_HEADER_READ_TIMEOUT_SECS` of accept or of the previous response;
//! - **keep-alive timeout**: a connection idle between requests for
//!   `STATGATE_KEEP_ALIVE_TIMEOUT_SECS` is shut down;
//! - the **request timeout** (body included) is a layer of the router (`crate::http`).
//!
//! The connection's place in the limits travels with its I/O ([`Held`]), so an upgraded
//! WebSocket keeps it until the socket closes. Accept errors such as EMFILE back off briefly
//! instead of spinning. On shutdown the listener closes, idle connections close, and busy ones
//! finish their request; upgraded sockets are closed (1001) by their own tasks.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::HttpConfig;
use crate::error::{refusal, ApiError};
use crate::limits::{ConnectionLimits, ConnectionSlot};
use crate::telemetry::{Metrics, ScopeLabel};

/// Pause after an accept error that is not about one connection (EMFILE, ENFILE, ENOBUFS):
/// retrying at once would spin on the same error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Largest request head hyper buffers (its default is ~400 KiB). A WebSocket URL carries a
/// JWT and a subscription token of up to 16 KiB each; a client dribbling headers should not
/// make each of its connections hold more.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The edge's settings and shared state.
pub struct Edge {
    pub limits: Arc<ConnectionLimits>,
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

impl Edge {
    pub fn new(http: &HttpConfig, metrics: Arc<Metrics>) -> Self {
        Edge {
            limits: Arc::new(ConnectionLimits::new(
                http.max_connections,
                http.max_connections_per_ip,
            )),
            header_read_timeout: http.header_read_timeout,
            keep_alive_timeout: http.keep_alive_timeout,
            metrics,
        }
    }

    /// Accepts and serves until `shutdown`, then waits until `grace` after it for the HTTP
    /// connections in progress (upgraded sockets are not waited for here). Returns the
    /// shutdown's deadline, which the caller's own draining shares.
    pub async fn serve(
        self,
        tcp: TcpListener,
        router: Router,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> Instant {
        let connections = TaskTracker::new();
        let mut failing = false;
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = tcp.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    failing = false;
                    accepted
                }
                Err(err) => {
                    self.on_accept_error(&err, &mut failing).await;
                    continue;
                }
            };
            let slot = match self.limits.acquire(peer.ip()) {
                Ok(slot) => slot,
                Err(scope) => {
                    self.refuse(&stream, scope);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let held = Held {
                stream,
                _slot: slot,
                _open: OpenConnection::new(&self.metrics),
            };
            connections.spawn(self.connection(held, peer, router.clone(), shutdown.clone()));
        }
        let deadline = Instant::now() + grace;
        drop(tcp);
        connections.close();
        if tokio::time::timeout_at(deadline, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("some http connections did not finish before the deadline");
        }
        deadline
    }

    /// Counts an accept error; backs off unless it concerned one connection only.
    async fn on_accept_error(&self, err: &io::Error, failing: &mut bool) {
        self.metrics.accept_errors.inc();
        let one_connection = matches!(
            err.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionRefused
        );
        if one_connection {
            return;
        }
        if !*failing {
            tracing::warn!(error = %err, "accept failed, backing off");
            *failing = true;
        }
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }

    /// Tells a connection over a limit why, in one write that never waits, and closes it.
    fn refuse(&self, stream: &TcpStream, scope: &'static str) {
        self.metrics
            .refused_connections
            .get_or_create(&ScopeLabel { scope })
            .inc();
        let _ = stream.try_write(&refusal(&ApiError::TooManyConnections { scope }));
    }

    /// Serves HTTP/1.1 on one connection until it closes, is upgraded, times out, or the
    /// gateway shuts down.
    fn connection(
        &self,
        held: Held,
        peer: SocketAddr,
        router: Router,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (activity, mut idle) = watch::channel(Activity::default());
        let activity = Arc::new(activity);
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            let busy = Busy::begin(&activity);
            let response = router.clone().oneshot(request);
            async move {
                let response = response.await;
                drop(busy);
                response
            }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .keep_alive(!self.keep_alive_timeout.is_zero())
            .max_buf_size(MAX_HEAD_BYTES);
        let keep_alive = self.keep_alive_timeout;
        async move {
            let connection = builder
                .serve_connection(TokioIo::new(held), service)
                .with_upgrades();
            tokio::pin!(connection);
            let mut closing = false;
            loop {
                tokio::select! {
                    _ = connection.as_mut() => break,
                    _ = shutdown.cancelled(), if !closing => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    _ = idle_for(&mut idle, keep_alive), if !closing && !keep_alive.is_zero() => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
    }
}

/// What a connection is doing, for the keep-alive timeout.
#[derive(Debug, Clone, Copy, Default)]
struct Activity {
    in_flight: usize,
    /// Since when no request is in flight, once one was answered.
    idle_since: Option<Instant>,
}

/// Marks one request in flight on its connection while it lives.
struct Busy(Arc<watch::Sender<Activity>>);

impl Busy {
    fn begin(activity: &Arc<watch::Sender<Activity>>) -> Self {
        activity.send_modify(|now| {
            now.in_flight += 1;
            now.idle_since = None;
        });
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|now| {
            now.in_flight = now.in_flight.saturating_sub(1);
            if now.in_flight == 0 {
                now.idle_since = Some(Instant::now());
            }
        });
    }
}

/// Resolves once the connection has been idle between requests for `keep_alive`. Before its
/// first request, the header read timeout governs.
async fn idle_for(activity: &mut watch::Receiver<Activity>, keep_alive: Duration) {
    loop {
        let idle_since = activity.borrow_and_update().idle_since;
        match idle_since {
            Some(since) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(since + keep_alive) => return,
                    changed = activity.changed() => if changed.is_err() { std::future::pending::<()>().await },
                }
            }
            None => {
                if activity.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// Counts a TCP connection in `statgate_tcp_connections` while it lives.
struct OpenConnection(Arc<Metrics>);

impl OpenConnection {
    fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.tcp_connections.inc();
        OpenConnection(metrics.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.tcp_connections.dec();
    }
}

/// A TCP stream with its place in the connection limits: whoever ends up owning the I/O (the
/// HTTP connection, or the WebSocket it is upgraded to) gives the place back by dropping it.
struct Held {
    stream: TcpStream,
    _slot: ConnectionSlot,
    _open: OpenConnection,
}

impl AsyncRead for Held {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
