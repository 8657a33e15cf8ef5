//! `floor`: the `fanout` measurement against the smallest WebSocket server that can fan a
//! value out, so the gateway's figures can be read against what this machine gives at all.
//!
//! The server is this binary again (`statgate-bench floor-server`, a separate process like the
//! gateway) on the same libraries statgate uses: a tokio multi-thread runtime, tungstenite,
//! one task per socket woken through a `Notify`, and one shared frame per change, shaped like a
//! `query:update`. It has no database, no matcher, no recompute, no heartbeat and no limits.
//! The client side is `fanout`'s own readers. A change starts when the parent writes a line to
//! the server's stdin (the stand-in for the gateway's NOTIFY), and ends when the last socket
//! holds the new value.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{ChildStdin, Command};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::clients::Readers;
use super::fanout::{Change, Deliveries, FanoutArgs};
use super::report::{round, Report};
use super::{BenchError, Target};

#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    #[command(flatten)]
    pub fanout: FanoutArgs,
    #[command(flatten)]
    pub server: FloorServerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct FloorServerArgs {
    /// One task writes every socket in turn, instead of one task per socket.
    #[arg(long)]
    pub single_writer: bool,
}

const PROTOCOL: &str = "statgate.realtime.v1";

pub async fn run(target: &Target, args: FloorArgs) -> Result<Report, BenchError> {
    let mut server = Command::new(std::env::current_exe()?)
        .arg("floor-server")
        .args(args.server.single_writer.then_some("--single-writer"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let port = read_port(&mut server).await?;
    let mut changes_in = server
        .stdin
        .take()
        .ok_or_else(|| BenchError::Setup("the floor server has no stdin".into()))?;
    let floor_target = Target {
        url: format!("http://127.0.0.1:{port}"),
        jwt_secret: Some(target.jwt_secret.clone().unwrap_or_else(|| "floor".into())),
        ..target.clone()
    };
    let tokens = vec!["floor"; args.fanout.sockets];
    let (readers, mut arrivals) = Readers::open(&floor_target, &tokens).await?;
    wait_until_registered(&mut arrivals, &mut changes_in, args.fanout.sockets).await?;
    let deliveries = Deliveries::measure(&mut arrivals, &args.fanout, &mut changes_in).await?;
    let closed_early = readers.stop().await;
    drop(changes_in);
    let _ = server.wait().await;

    let mut report = Report::new("floor");
    report
        .add("sockets", args.fanout.sockets)
        .add("changes", args.fanout.changes);
    deliveries.add_to(&mut report);
    report.add("sockets_closed_early", closed_early).add(
        "messages_per_sec_during_run",
        round(
            (args.fanout.sockets * args.fanout.changes) as f64 / deliveries.elapsed.as_secs_f64(),
        ),
    );
    Ok(report)
}

/// The floor's change: a line with the change's number on the server's stdin.
impl Change for ChildStdin {
    async fn make(&mut self, n: usize) -> Result<(), BenchError> {
        Ok(self.write_all(format!("{n}\n").as_bytes()).await?)
    }
}

/// Sends change 0 until every socket has received it. A client holds its socket once the
/// handshake is answered, which can be before the server counts it among those it writes to
/// (the single writer adds a socket after its handshake), so a change sent at once could miss
/// it and count as undelivered for reasons that are not the fan-out's.
async fn wait_until_registered(
    arrivals: &mut tokio::sync::mpsc::UnboundedReceiver<crate::clients::Arrival>,
    changes_in: &mut ChildStdin,
    sockets: usize,
) -> Result<(), BenchError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut seen = vec![false; sockets];
    let mut remaining = sockets;
    while remaining > 0 {
        if tokio::time::Instant::now() >= deadline {
            return Err(BenchError::Setup(format!(
                "{remaining} of {sockets} sockets never received a frame from the floor server"
            )));
        }
        changes_in.make(0).await?;
        let round = tokio::time::Instant::now() + Duration::from_millis(200);
        while let Ok(Some(arrival)) = tokio::time::timeout_at(round, arrivals.recv()).await {
            if arrival.count != 0 {
                continue;
            }
            if let Some(slot) = seen.get_mut(arrival.socket as usize) {
                if !*slot {
                    *slot = true;
                    remaining -= 1;
                }
            }
            if remaining == 0 {
                break;
            }
        }
    }
    Ok(())
}

async fn read_port(server: &mut tokio::process::Child) -> Result<u16, BenchError> {
    let stdout = server
        .stdout
        .take()
        .ok_or_else(|| BenchError::Setup("the floor server has no stdout".into()))?;
    let line = BufReader::new(stdout)
        .lines()
        .next_line()
        .await?
        .unwrap_or_default();
    line.trim()
        .parse()
        .map_err(|_| BenchError::Setup(format!("the floor server printed {line:?}, not a port")))
}

/// One socket's pending frame: the newest value replaces an unsent one, as in statgate.
#[derive(Default)]
struct Slot {
    frame: Mutex<Option<Utf8Bytes>>,
    ready: Notify,
}

impl Slot {
    fn take(&self) -> Option<Utf8Bytes> {
        self.frame
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    fn put(&self, frame: Utf8Bytes) {
        *self
            .frame
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(frame);
        self.ready.notify_one();
    }
}

type Slots = Arc<Mutex<Vec<Arc<Slot>>>>;

/// The server side (`statgate-bench floor-server`): prints its port, then publishes one
/// frame to every socket per line read from stdin, until stdin closes.
pub async fn serve(args: FloorServerArgs) -> Result<(), BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("{}\n", listener.local_addr()?.port()).as_bytes())
        .await?;
    stdout.flush().await?;
    if args.single_writer {
        return serve_single_writer(listener).await;
    }
    let slots: Slots = Arc::default();
    let accepting = tokio::spawn(accept(listener, slots.clone()));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let frame = update_frame(line.trim());
        let slots = slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        for slot in &slots {
            slot.put(frame.clone());
        }
    }
    accepting.abort();
    Ok(())
}

fn update_frame(value: &str) -> Utf8Bytes {
    let value: i64 = value.parse().unwrap_or(-1);
    let frame = json!({
        "event": "query:update",
        "payload": {
            "queryName": "posts/stats/commentCount",
            "signature": "0".repeat(64),
            "data": value,
            "version": value,
        }
    });
    Utf8Bytes::from(frame.to_string())
}

async fn accept(listener: TcpListener, slots: Slots) {
    while let Ok((stream, _)) = listener.accept().await {
        let slot = Arc::new(Slot::default());
        slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(slot.clone());
        tokio::spawn(serve_socket(stream, slot));
    }
}

type Socket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// The server half of the WebSocket handshake, answering with statgate's subprotocol.
// The callback's error type is tungstenite's `ErrorResponse`, fixed by its `Callback` trait.
#[allow(clippy::result_large_err)]
async fn handshake(stream: TcpStream) -> Option<Socket> {
    stream.set_nodelay(true).ok()?;
    let with_protocol = |_: &Request, mut response: Response| {
        if let Ok(value) = PROTOCOL.parse() {
            response
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", value);
        }
        Ok(response)
    };
    tokio_tungstenite::accept_hdr_async(stream, with_protocol)
        .await
        .ok()
}

async fn serve_socket(stream: TcpStream, slot: Arc<Slot>) {
    let Some(mut socket) = handshake(stream).await else {
        return;
    };
    loop {
        slot.ready.notified().await;
        if let Some(frame) = slot.take() {
            if socket.send(Message::Text(frame)).await.is_err() {
                return;
            }
        }
    }
}

/// Every socket, for the single writer.
type Sockets = Arc<tokio::sync::Mutex<Vec<Socket>>>;

async fn serve_single_writer(listener: TcpListener) -> Result<(), BenchError> {
    let sockets: Sockets = Arc::default();
    let accepting = tokio::spawn(accept_into(listener, sockets.clone()));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let frame = update_frame(line.trim());
        for socket in sockets.lock().await.iter_mut() {
            let _ = socket.send(Message::Text(frame.clone())).await;
        }
    }
    accepting.abort();
    Ok(())
}

async fn accept_into(listener: TcpListener, sockets: Sockets) {
    while let Ok((stream, _)) = listener.accept().await {
        let sockets = sockets.clone();
        tokio::spawn(async move {
            if let Some(socket) = handshake(stream).await {
                sockets.lock().await.push(socket);
            }
        });
    }
}
