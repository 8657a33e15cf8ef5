//! Client frames (docs/PROTOCOL.md): any text a WebSocket client sends. `parse_frame` must not panic,
//! an echoed `id` is only ever a string or a number, and a reply carrying it is valid JSON
//! that echoes it unchanged. What the socket does next with a parsed frame (verify the
//! subscription token or the JWT) must not panic either.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use statgate::auth::Authenticator;
use statgate::wire::{self as protocol, parse_frame, ClientFrame};

static AUTH: LazyLock<Authenticator> = LazyLock::new(statgate_fuzz::authenticator);

fn check_id(id: &Option<Value>) {
    let Some(id) = id else { return };
    assert!(id.is_string() || id.is_number(), "echoed id {id:?}");
    let reply = protocol::error(&Some(id.clone()), "bad_frame", "fuzz");
    let reply: Value = serde_json::from_str(reply.as_str()).expect("a reply is JSON");
    assert_eq!(reply["payload"]["id"], *id, "the reply echoes the id");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_frame(&text) {
        Ok(request) => {
            check_id(&request.id);
            if text.trim() == "ping" {
                assert_eq!(request.frame, ClientFrame::Ping);
            }
            match &request.frame {
                ClientFrame::Subscribe { token } => {
                    let _ = AUTH.verify_token(token);
                }
                ClientFrame::Auth { auth_token } => {
                    let _ = AUTH.verify_jwt(auth_token);
                }
                ClientFrame::Ping | ClientFrame::Unsubscribe { .. } => {}
            }
        }
        Err(bad) => {
            check_id(&bad.id);
            assert!(!bad.message.is_empty());
        }
    }
});
