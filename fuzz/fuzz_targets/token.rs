//! Subscription tokens (docs/PROTOCOL.md) and JWTs: any string a client presents as one.
//!
//! Each input is used three ways:
//! 1. as a token and as a JWT, verbatim: verification must not panic;
//! 2. as the claims body of a token whose MAC is correct for the test key (what another node
//!    holding the key could sign), so the claims parser behind the MAC check is reached too:
//!    it must not panic, and accepted claims must be unexpired;
//! 3. split on newlines into user, query and canonical args: a token minted for them
//!    verifies to exactly those claims, and the same token with one byte changed does not.

#![no_main]

use std::sync::LazyLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use statgate::auth::{now_secs, AuthError, Authenticator};

/// `auth::MAX_TOKEN_BYTES`: longer tokens are refused unread.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

static AUTH: LazyLock<Authenticator> = LazyLock::new(statgate_fuzz::authenticator);

/// `base64url(body) "." base64url(HMAC-SHA256(key, base64url(body)))`, as statgate signs.
fn signed(body: &[u8]) -> String {
    let body = URL_SAFE_NO_PAD.encode(body);
    let mut mac = Hmac::<Sha256>::new_from_slice(statgate_fuzz::TOKEN_SECRET.as_bytes())
        .expect("hmac takes any key length");
    mac.update(body.as_bytes());
    let mac = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{body}.{mac}")
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    // 1. Verbatim.
    let _ = AUTH.verify_token(&text);
    let _ = AUTH.verify_jwt(&text);

    // 2. Arbitrary claims behind a valid MAC.
    if let Ok(claims) = AUTH.verify_token(&signed(data)) {
        assert!(claims.expires > now_secs().saturating_sub(1), "{claims:?}");
    }

    // 3. Mint, verify, tamper.
    let mut parts = text.splitn(3, '\n');
    let user = parts.next().unwrap_or_default();
    let query = parts.next().unwrap_or_default();
    let args = parts.next().unwrap_or_default();
    let (token, claims) = AUTH.sign_token(user, query, args);
    if token.len() > MAX_TOKEN_BYTES {
        // Refused before any decoding; statgate's own args limit keeps real tokens shorter.
        assert_eq!(AUTH.verify_token(&token), Err(AuthError::InvalidToken));
        return;
    }
    assert_eq!(AUTH.verify_token(&token), Ok(claims.clone()));
    assert_eq!(claims.signature(), format!("{query}::{args}"));
    let mut tampered = token.into_bytes();
    let index = data.len() % tampered.len();
    // A non-zero mask below 0x80 keeps an ASCII byte ASCII and always changes it.
    let mask = data.first().map_or(1, |b| (b % 0x7f) + 1);
    tampered[index] ^= mask;
    let tampered = String::from_utf8(tampered).expect("tokens are ASCII");
    assert!(
        AUTH.verify_token(&tampered).is_err(),
        "byte {index} changed by {mask:#x} still verifies"
    );
});
