//! Verifying an authToken (the caller's JWT) and reading the user from it.
//!
//! Which key may verify a token is decided by statgate's configuration and by the key, never
//! by the token: an `HS256` token is checked against the configured secrets only, and any
//! other token against the one provider key its `kid` names, whose own type and `alg` fix the
//! algorithms it verifies. So `alg: none`, an HMAC token "signed" with a provider's public key,
//! and an algorithm statgate does not list are refused before any signature work. The JOSE
//! header is read here, before `jsonwebtoken` sees the token: that crate parses `crit` but does
//! not act on it, and statgate understands no header extension, so a token that marks one
//! critical is refused (RFC 7515 §4.1.11). `exp` is required, `nbf` is honoured, and neither
//! has leeway.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::claims::{AuthError, Claims, MAX_TOKEN_BYTES};
use super::jwks::{KeySet, ProviderKey};
use crate::config::Secret;

/// Every algorithm statgate verifies: HS256 with its own secrets, the rest with provider keys.
const ACCEPTED: [Algorithm; 7] = [
    Algorithm::HS256,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// What the JOSE header says, read before any key is chosen.
struct JoseHeader {
    alg: Algorithm,
    kid: Option<String>,
}

pub(super) struct JwtVerifier {
    hmac_keys: Vec<DecodingKey>,
    key_set: Option<Arc<KeySet>>,
    validations: HashMap<Algorithm, Validation>,
    user_claim: String,
}

impl JwtVerifier {
    pub(super) fn new(
        secrets: &[Secret],
        key_set: Option<Arc<KeySet>>,
        audience: Option<&str>,
        issuer: Option<&str>,
        user_claim: &str,
    ) -> Self {
        JwtVerifier {
            hmac_keys: secrets
                .iter()
                .map(|secret| DecodingKey::from_secret(secret.expose().as_bytes()))
                .collect(),
            key_set,
            validations: ACCEPTED
                .iter()
                .map(|alg| (*alg, validation(*alg, audience, issuer)))
                .collect(),
            user_claim: user_claim.to_owned(),
        }
    }

    pub(super) fn key_set(&self) -> Option<&Arc<KeySet>> {
        self.key_set.as_ref()
    }

    pub(super) fn user_claim(&self) -> &str {
        &self.user_claim
    }

    pub(super) fn verify(&self, jwt: &str) -> Result<Claims, AuthError> {
        if jwt.is_empty() {
            return Err(AuthError::MissingJwt);
        }
        if jwt.len() > MAX_TOKEN_BYTES {
            return Err(invalid("too long"));
        }
        let header = read_header(jwt)?;
        let validation = self
            .validations
            .get(&header.alg)
            .ok_or_else(|| invalid("algorithm not accepted"))?;
        let claims = match header.alg {
            Algorithm::HS256 => self.verify_hmac(jwt, validation)?,
            _ => self.verify_with_provider_key(jwt, &header, validation)?,
        };
        self.claims(claims)
    }

    /// Tries every configured secret; a bad signature under one is no verdict yet.
    fn verify_hmac(
        &self,
        jwt: &str,
        validation: &Validation,
    ) -> Result<Map<String, Value>, AuthError> {
        if self.hmac_keys.is_empty() {
            return Err(invalid(
                "algorithm HS256 is not accepted: no STATGATE_JWT_SECRET is configured",
            ));
        }
        let mut last = invalid("bad signature");
        for key in &self.hmac_keys {
            match jsonwebtoken::decode::<Map<String, Value>>(jwt, key, validation) {
                Ok(data) => return Ok(data.claims),
                Err(err) if *err.kind() == ErrorKind::InvalidSignature => {
                    last = invalid("bad signature");
                }
                Err(err) => return Err(rejection(err.kind())),
            }
        }
        Err(last)
    }

    fn verify_with_provider_key(
        &self,
        jwt: &str,
        header: &JoseHeader,
        validation: &Validation,
    ) -> Result<Map<String, Value>, AuthError> {
        let Some(key_set) = &self.key_set else {
            return Err(invalid(&format!(
                "algorithm {:?} is not accepted: no identity provider key set (STATGATE_JWKS_URL) is configured",
                header.alg
            )));
        };
        let keys = key_set.current();
        if !keys.loaded() {
            return Err(AuthError::KeysUnavailable);
        }
        let candidates: Vec<&ProviderKey> = match &header.kid {
            Some(kid) => vec![keys.get(kid).ok_or(AuthError::UnknownKey)?],
            None => keys.for_algorithm(header.alg).collect(),
        };
        if candidates.is_empty() {
            return Err(invalid(&format!(
                "no kid, and no key of the identity provider verifies {:?}",
                header.alg
            )));
        }
        let mut last = invalid("bad signature");
        for key in candidates {
            if !key.verifies(header.alg) {
                return Err(invalid(&format!(
                    "algorithm {:?} does not match the key it names",
                    header.alg
                )));
            }
            match jsonwebtoken::decode::<Map<String, Value>>(jwt, key.decoding_key(), validation) {
                Ok(data) => return Ok(data.claims),
                Err(err) if *err.kind() == ErrorKind::InvalidSignature => {
                    last = invalid("bad signature");
                }
                Err(err) => return Err(rejection(err.kind())),
            }
        }
        Err(last)
    }

    /// The verified claims, with the user read from the configured claim.
    fn claims(&self, all: Map<String, Value>) -> Result<Claims, AuthError> {
        let exp = all
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| invalid("exp must be a whole number of seconds"))?;
        let user = match all.get(&self.user_claim) {
            Some(Value::String(user)) if !user.is_empty() => user.clone(),
            Some(Value::Number(user)) => user.to_string(),
            _ => {
                return Err(invalid(&format!(
                    "missing claim {} (a non-empty string or a number)",
                    self.user_claim
                )))
            }
        };
        Ok(Claims { user, exp, all })
    }
}

fn invalid(why: &str) -> AuthError {
    AuthError::InvalidJwt(why.to_owned())
}

fn validation(alg: Algorithm, audience: Option<&str>, issuer: Option<&str>) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = 0;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp"]);
    match audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    if let Some(iss) = issuer {
        validation.set_issuer(&[iss]);
    }
    validation
}

/// Reads the JOSE header: a compact JWS of three parts, a JSON object without `crit`, with an
/// accepted `alg`.
fn read_header(jwt: &str) -> Result<JoseHeader, AuthError> {
    let mut parts = jwt.split('.');
    let (Some(encoded), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("malformed: a JWT has three dot-separated parts"));
    };
    let header: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| invalid("malformed header"))?;
    if header.contains_key("crit") {
        return Err(invalid(
            "the header marks an extension critical (crit), and statgate understands none",
        ));
    }
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => accepted_algorithm(alg)?,
        _ => return Err(invalid("the header has no alg")),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(invalid("kid must be a string")),
    };
    Ok(JoseHeader { alg, kid })
}

fn accepted_algorithm(name: &str) -> Result<Algorithm, AuthError> {
    let known = ACCEPTED
        .iter()
        .find(|alg| format!("{alg:?}") == name)
        .copied();
    known.ok_or_else(|| {
        // Name the algorithm only when it is a short word, not whatever a client sent.
        if name.len() <= 16 && name.chars().all(|c| c.is_ascii_alphanumeric()) {
            invalid(&format!("algorithm {name} is not accepted"))
        } else {
            invalid("algorithm not accepted")
        }
    })
}

fn rejection(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::ExpiredJwt,
        ErrorKind::ImmatureSignature => invalid("not valid yet (nbf is in the future)"),
        ErrorKind::InvalidSignature => invalid("bad signature"),
        ErrorKind::InvalidAudience => invalid("wrong audience"),
        ErrorKind::InvalidIssuer => invalid("wrong issuer"),
        ErrorKind::MissingRequiredClaim(claim) => invalid(&format!("missing claim {claim}")),
        ErrorKind::InvalidAlgorithm => invalid("algorithm does not match the key"),
        ErrorKind::InvalidClaimFormat(claim) => invalid(&format!("malformed claim {claim}")),
        _ => invalid("malformed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::now_secs;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "jwt-secret-0123456789abcdefghijklmnopqrstuv";

    fn verifier(user_claim: &str) -> JwtVerifier {
        JwtVerifier::new(&[Secret::new(SECRET)], None, None, None, user_claim)
    }

    fn hs256(claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("encode")
    }

    /// A token with this header JSON and claims, signed HS256 with the secret (the header is
    /// written as given, so it may say anything).
    fn with_header(header: Value, claims: Value) -> String {
        let encode = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
        let message = format!("{}.{}", encode(&header), encode(&claims));
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .expect("sign");
        format!("{message}.{signature}")
    }

    fn later() -> u64 {
        now_secs() + 600
    }

    #[test]
    fn a_token_not_valid_yet_is_refused() {
        let verifier = verifier("sub");
        let early = hs256(json!({"sub": "u1", "exp": later(), "nbf": now_secs() + 300}));
        let err = verifier.verify(&early).unwrap_err();
        assert!(err.to_string().contains("nbf"), "{err}");
        let due = hs256(json!({"sub": "u1", "exp": later(), "nbf": now_secs() - 1}));
        assert_eq!(verifier.verify(&due).expect("valid").user, "u1");
    }

    #[test]
    fn a_token_with_a_critical_extension_is_refused() {
        let verifier = verifier("sub");
        let claims = json!({"sub": "u1", "exp": later()});
        let plain = with_header(json!({"alg": "HS256", "typ": "JWT"}), claims.clone());
        assert!(
            verifier.verify(&plain).is_ok(),
            "the same token without crit passes"
        );
        for crit in [json!(["exp"]), json!(["b64"]), json!([]), json!("x")] {
            let token = with_header(
                json!({"alg": "HS256", "crit": crit, "b64": true}),
                claims.clone(),
            );
            let err = verifier.verify(&token).unwrap_err();
            assert!(err.to_string().contains("crit"), "{err}");
        }
    }

    #[test]
    fn none_and_unlisted_algorithms_are_refused_before_any_key_is_tried() {
        let verifier = verifier("sub");
        let claims = json!({"sub": "u1", "exp": later()});
        let encode = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
        let unsigned = format!("{}.{}.", encode(&json!({"alg": "none"})), encode(&claims));
        let err = verifier.verify(&unsigned).unwrap_err();
        assert!(err.to_string().contains("algorithm none"), "{err}");
        for alg in ["HS384", "HS512", "PS256", "ES512", "none", "", "RS256 "] {
            let token = with_header(json!({"alg": alg}), claims.clone());
            assert!(
                matches!(verifier.verify(&token), Err(AuthError::InvalidJwt(_))),
                "{alg:?}"
            );
        }
        let rs256 = with_header(json!({"alg": "RS256", "kid": "k"}), claims);
        let err = verifier.verify(&rs256).unwrap_err();
        assert!(err.to_string().contains("STATGATE_JWKS_URL"), "{err}");
    }

    #[test]
    fn the_user_is_the_configured_claim_a_string_or_a_number() {
        let token = hs256(json!({"sub": "alice", "user_id": 42, "exp": later()}));
        let claims = verifier("user_id").verify(&token).expect("valid");
        assert_eq!(claims.user, "42");
        assert_eq!(claims.claim("sub").as_deref(), Some("alice"));
        assert_eq!(verifier("sub").verify(&token).expect("valid").user, "alice");
        for missing in [
            json!({"sub": "alice", "exp": later()}),
            json!({"sub": "alice", "user_id": "", "exp": later()}),
            json!({"sub": "alice", "user_id": {"id": 1}, "exp": later()}),
        ] {
            let err = verifier("user_id").verify(&hs256(missing)).unwrap_err();
            assert!(err.to_string().contains("missing claim user_id"), "{err}");
        }
        let err = verifier("sub")
            .verify(&hs256(json!({"sub": "u1"})))
            .unwrap_err();
        assert!(err.to_string().contains("exp"), "{err}");
    }
}
