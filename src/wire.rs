//! The `statgate.realtime.v1` wire format (docs/PROTOCOL.md), in one place: every frame a
//! client may send and its parsing, every event the server sends (replies, errors, the
//! `query:update` the hub fans out), the close codes, and the signature string that names a
//! subscription. It depends on nothing else of the crate, so every layer that speaks to clients
//! (ws, hub, auth, registry) can use it without reaching sideways.

use axum::extract::ws::{CloseFrame, Utf8Bytes};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

pub const PROTOCOL: &str = "statgate.realtime.v1";

/// A frame a client may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// The bare text `ping`, or `{"type":"ping"}`.
    Ping,
    Subscribe {
        token: String,
    },
    Unsubscribe {
        signature: String,
    },
    Auth {
        auth_token: String,
    },
}

/// A frame that could not be understood, with the reason sent back to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFrame {
    pub id: Option<Value>,
    pub message: String,
}

/// A parsed frame and the optional `id` the client wants echoed in the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Option<Value>,
    pub frame: ClientFrame,
}

pub fn parse_frame(text: &str) -> Result<Request, BadFrame> {
    if text.trim() == "ping" {
        return Ok(Request {
            id: None,
            frame: ClientFrame::Ping,
        });
    }
    let bad = |id: Option<Value>, message: &str| BadFrame {
        id,
        message: message.to_owned(),
    };
    let value: Value = serde_json::from_str(text).map_err(|_| {
        bad(
            None,
            "frame is not JSON (expected an object with a `type`, or the text `ping`)",
        )
    })?;
    let Value::Object(object) = value else {
        return Err(bad(None, "frame must be a JSON object with a `type`"));
    };
    let id = object
        .get("id")
        .filter(|id| id.is_string() || id.is_number())
        .cloned();
    let field = |name: &str| object.get(name).and_then(Value::as_str).map(str::to_owned);
    let frame = match object.get("type").and_then(Value::as_str) {
        Some("ping") => ClientFrame::Ping,
        Some("subscribe") => ClientFrame::Subscribe {
            token: field("token")
                .ok_or_else(|| bad(id.clone(), "subscribe needs a string `token`"))?,
        },
        Some("unsubscribe") => ClientFrame::Unsubscribe {
            signature: field("signature")
                .ok_or_else(|| bad(id.clone(), "unsubscribe needs a string `signature`"))?,
        },
        Some("auth") => ClientFrame::Auth {
            auth_token: field("authToken")
                .ok_or_else(|| bad(id.clone(), "auth needs a string `authToken`"))?,
        },
        Some(_) => {
            return Err(bad(
                id,
                "unknown frame type (expected subscribe, unsubscribe, auth or ping)",
            ))
        }
        None => return Err(bad(id, "frame needs a string `type`")),
    };
    Ok(Request { id, frame })
}

fn with_id(mut payload: Value, id: &Option<Value>) -> Value {
    if let (Some(id), Value::Object(map)) = (id, &mut payload) {
        map.insert("id".into(), id.clone());
    }
    payload
}

fn event(name: &str, payload: Value) -> Utf8Bytes {
    Utf8Bytes::from(json!({ "event": name, "payload": payload }).to_string())
}

pub fn pong() -> Utf8Bytes {
    Utf8Bytes::from_static(r#"{"event":"pong"}"#)
}

pub fn subscribed(id: &Option<Value>, query_name: &str, signature: &str) -> Utf8Bytes {
    event(
        "subscribed",
        with_id(
            json!({ "queryName": query_name, "signature": signature }),
            id,
        ),
    )
}

pub fn unsubscribed(id: &Option<Value>, signature: &str) -> Utf8Bytes {
    event(
        "unsubscribed",
        with_id(json!({ "signature": signature }), id),
    )
}

pub fn authenticated(id: &Option<Value>, expires_at: u64) -> Utf8Bytes {
    event(
        "authenticated",
        with_id(json!({ "expiresAt": expires_at }), id),
    )
}

pub fn error(id: &Option<Value>, code: &str, message: &str) -> Utf8Bytes {
    event(
        "error",
        with_id(json!({ "code": code, "message": message }), id),
    )
}

/// An error about one subscription: like [`error`], naming its signature.
pub fn signature_error(
    id: &Option<Value>,
    code: &str,
    signature: &str,
    message: &str,
) -> Utf8Bytes {
    event(
        "error",
        with_id(
            json!({ "code": code, "signature": signature, "message": message }),
            id,
        ),
    )
}

/// The signature of a subscription: `<queryName>::<canonical args JSON>`. One signature, one
/// value computed once for every socket that follows it.
pub fn signature(query_name: &str, canonical_args: &str) -> String {
    format!("{query_name}::{canonical_args}")
}

#[derive(Serialize)]
struct UpdateFrame<'a> {
    event: &'static str,
    payload: UpdatePayload<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UpdatePayload<'a> {
    query_name: &'a str,
    signature: &'a str,
    data: &'a RawValue,
    version: u64,
}

/// The `query:update` event of a new value: serialised once, the same bytes go to every socket.
pub fn update(query_name: &str, signature: &str, data: &RawValue, version: u64) -> Utf8Bytes {
    let frame = UpdateFrame {
        event: "query:update",
        payload: UpdatePayload {
            query_name,
            signature,
            data,
            version,
        },
    };
    // Strings, a raw JSON value and a number always serialise.
    Utf8Bytes::from(serde_json::to_string(&frame).unwrap_or_default())
}

/// Why the server closes a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    ShuttingDown,
    HeartbeatTimeout,
    AuthExpired,
    FrameTooLarge,
    TooManySubscriptions,
    RateLimited,
    TooManyReplies,
    SlowConsumer,
    Idle,
    /// A text frame (or a close reason) that is not UTF-8.
    InvalidUtf8,
    /// A frame RFC 6455 forbids from a client: unmasked, an unknown opcode, reserved bits
    /// set, a fragmented or oversized control frame, a stray continuation.
    ProtocolViolation,
}

/// The close code and reason of each [`CloseReason`], in one place (docs/PROTOCOL.md).
pub fn close_frame(reason: CloseReason) -> CloseFrame {
    let (code, text) = match reason {
        CloseReason::ShuttingDown => (1001, "server shutting down, reconnect"),
        CloseReason::HeartbeatTimeout => (4000, "no sign of life for two heartbeat intervals"),
        CloseReason::AuthExpired => (4001, "authToken expired"),
        CloseReason::FrameTooLarge => (4008, "frame too large"),
        CloseReason::TooManySubscriptions => (4008, "too many subscriptions on this socket"),
        CloseReason::RateLimited => (4008, "too many messages per second"),
        CloseReason::TooManyReplies => (4008, "too many unread replies"),
        CloseReason::SlowConsumer => (4009, "slow consumer: the socket could not drain its outbox"),
        CloseReason::Idle => (4008, "idle: no subscription within the idle timeout"),
        CloseReason::InvalidUtf8 => (1007, "invalid UTF-8 in a text frame"),
        CloseReason::ProtocolViolation => (1002, "WebSocket protocol violation"),
    };
    CloseFrame {
        code,
        reason: Utf8Bytes::from_static(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse() {
        assert_eq!(parse_frame("ping").expect("ping").frame, ClientFrame::Ping);
        assert_eq!(
            parse_frame(r#"{"type":"subscribe","token":"t","id":1}"#).expect("sub"),
            Request {
                id: Some(json!(1)),
                frame: ClientFrame::Subscribe { token: "t".into() }
            }
        );
        assert_eq!(
            parse_frame(r#"{"type":"unsubscribe","signature":"s"}"#)
                .expect("unsub")
                .frame,
            ClientFrame::Unsubscribe {
                signature: "s".into()
            }
        );
        assert_eq!(
            parse_frame(r#"{"type":"auth","authToken":"j"}"#)
                .expect("auth")
                .frame,
            ClientFrame::Auth {
                auth_token: "j".into()
            }
        );
    }

    #[test]
    fn bad_frames_say_why() {
        for (text, expected) in [
            ("{", "not JSON"),
            ("[1]", "JSON object"),
            (r#"{"token":"t"}"#, "needs a string `type`"),
            (r#"{"type":"nope"}"#, "unknown frame type"),
            (r#"{"type":"subscribe"}"#, "needs a string `token`"),
            (
                r#"{"type":"subscribe","token":5}"#,
                "needs a string `token`",
            ),
        ] {
            let err = parse_frame(text).expect_err(text);
            assert!(err.message.contains(expected), "{text}: {}", err.message);
        }
        assert_eq!(
            parse_frame(r#"{"type":"nope","id":"x"}"#)
                .expect_err("bad")
                .id,
            Some(json!("x"))
        );
    }
}
