//! Client frames that break RFC 6455, written as raw bytes after a real upgrade, and control
//! frames in floods: each gets a close frame with the code it calls for, not a dropped TCP
//! connection.

use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{close_of, TestApp, Ws};

const TEXT: u8 = 0x1;
/// A data opcode RFC 6455 reserves (0x3–0x7): no client may send it.
const RESERVED_DATA: u8 = 0x3;

/// A WebSocket upgraded by hand, so the test may write any bytes on it afterwards.
async fn raw_socket(app: &TestApp) -> TcpStream {
    let mut stream = TcpStream::connect(app.address).await.expect("connect");
    let request = format!(
        "GET /realtime/ws?authToken={jwt} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: statgate.realtime.v1\r\n\r\n",
        jwt = app.jwt("u1"),
        host = app.address,
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("handshake");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(Duration::from_secs(10), stream.read_u8())
            .await
            .expect("the upgrade answered in time")
            .expect("a response byte");
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// One final frame with `opcode` and `payload`, masked with a fixed key unless `masked` is
/// false (payloads under 126 bytes).
fn frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    assert!(payload.len() < 126);
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut bytes = vec![
        0x80 | opcode,
        payload.len() as u8 | if masked { 0x80 } else { 0 },
    ];
    if masked {
        bytes.extend_from_slice(&key);
        bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        bytes.extend_from_slice(payload);
    }
    bytes
}

/// Writes `bytes` on a fresh upgraded socket and returns the close code and reason it gets.
async fn close_after(app: &TestApp, bytes: &[u8]) -> (u16, String) {
    let mut stream = raw_socket(app).await;
    stream.write_all(bytes).await.expect("raw frame");
    let mut ws: Ws =
        WebSocketStream::from_raw_socket(MaybeTlsStream::Plain(stream), Role::Client, None).await;
    close_of(&mut ws).await
}

#[tokio::test]
async fn broken_client_frames_get_1007_or_1002_instead_of_a_dropped_connection() {
    let app = TestApp::spawn().await;

    let (code, reason) = close_after(&app, &frame(TEXT, &[b'h', 0xff, 0xfe, b'i'], true)).await;
    assert_eq!(
        (code, reason.as_str()),
        (1007, "invalid UTF-8 in a text frame")
    );

    let (code, reason) = close_after(&app, &frame(TEXT, b"ping", false)).await;
    assert_eq!(
        (code, reason.as_str()),
        (1002, "WebSocket protocol violation"),
        "an unmasked client frame"
    );

    let (code, reason) = close_after(&app, &frame(RESERVED_DATA, b"x", true)).await;
    assert_eq!(
        (code, reason.as_str()),
        (1002, "WebSocket protocol violation"),
        "an unknown opcode"
    );

    let mut ws = app.connect("u1", None).await;
    crate::helpers::assert_pong(&mut ws, "other sockets are unaffected").await;
}

#[tokio::test]
async fn a_burst_of_500_client_pings_is_closed_by_the_message_rate_limit() {
    let app = TestApp::spawn_with(|config| config.limits.max_messages_per_sec = 100).await;
    let mut ws = app.connect("u1", None).await;
    for _ in 0..500 {
        if ws.feed(Message::Ping(Default::default())).await.is_err() {
            break;
        }
    }
    let _ = ws.flush().await;
    // Bounded as a whole: a socket that is not closed keeps receiving the server's heartbeat
    // pings, which `close_of` skips.
    let (code, reason) = tokio::time::timeout(Duration::from_secs(10), close_of(&mut ws))
        .await
        .expect("the socket was closed within 10 s of the burst");
    assert_eq!(
        (code, reason.as_str()),
        (4008, "too many messages per second")
    );
}

/// Several client frames in one TCP segment: the socket task reads the client only when the
/// read side woke it or after a frame (tungstenite may already hold the next one), so frames
/// that arrived together, with one readiness event between them, must each be answered.
#[tokio::test]
async fn frames_that_arrive_in_one_segment_are_each_answered() {
    const FRAMES: usize = 5;
    let app = TestApp::spawn().await;
    let mut stream = raw_socket(&app).await;
    let together: Vec<u8> = (0..FRAMES)
        .flat_map(|_| frame(TEXT, b"ping", true))
        .collect();
    stream.write_all(&together).await.expect("the frames");
    let mut ws: Ws =
        WebSocketStream::from_raw_socket(MaybeTlsStream::Plain(stream), Role::Client, None).await;
    for n in 0..FRAMES {
        let pong = crate::helpers::wait_for(&mut ws, Duration::from_secs(10), |_| true).await;
        assert_eq!(pong, serde_json::json!({"event": "pong"}), "answer {n}");
    }
}
