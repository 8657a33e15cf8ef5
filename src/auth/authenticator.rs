//! [`Authenticator`]: verifies authTokens (through `auth::jwt`) and signs and verifies the
//! subscription tokens statgate issues (see the `auth` module doc).

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use super::claims::{now_secs, AuthError, Claims, MAX_TOKEN_BYTES};
use super::jwks::KeySet;
use super::jwt::JwtVerifier;
use crate::config::{Config, Secret};

type HmacSha256 = Hmac<Sha256>;

/// What a subscription token binds: the user, the query, its canonical args, an expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    #[serde(rename = "u")]
    pub user: String,
    #[serde(rename = "q")]
    pub query: String,
    /// Canonical JSON of the validated args (the part after `::` in the signature).
    #[serde(rename = "a")]
    pub args: String,
    /// Expiry, seconds since the Unix epoch.
    #[serde(rename = "e")]
    pub expires: u64,
}

impl TokenClaims {
    pub fn signature(&self) -> String {
        crate::wire::signature(&self.query, &self.args)
    }
}

/// Verifies authTokens and signs/verifies subscription tokens.
pub struct Authenticator {
    jwt: JwtVerifier,
    /// The first HS256 secret, for `statgate token` and the demo page.
    jwt_signing_key: Option<EncodingKey>,
    token_keys: Vec<HmacSha256>,
    token_ttl: Duration,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// The authenticator of a gateway. Its key set, if any, starts empty: the caller loads it
    /// and keeps it fresh with [`KeySet::start`].
    pub fn new(config: &Config) -> Self {
        let key_set = config
            .auth
            .jwks
            .as_ref()
            .map(|jwks| Arc::new(KeySet::new(jwks)));
        Self::build(
            JwtVerifier::new(
                &config.auth.jwt_secrets,
                key_set,
                config.auth.jwt_audience.as_deref(),
                config.auth.jwt_issuer.as_deref(),
                &config.auth.jwt_user_claim,
            ),
            &config.auth.jwt_secrets,
            &config.auth.token_secrets,
            config.auth.token_ttl,
        )
    }

    /// An authenticator with HS256 secrets only and `sub` as the user claim (tests, fuzzing).
    pub fn from_parts(
        jwt_secrets: &[Secret],
        token_secrets: &[Secret],
        audience: Option<&str>,
        issuer: Option<&str>,
        token_ttl: Duration,
    ) -> Self {
        Self::build(
            JwtVerifier::new(jwt_secrets, None, audience, issuer, "sub"),
            jwt_secrets,
            token_secrets,
            token_ttl,
        )
    }

    fn build(
        jwt: JwtVerifier,
        jwt_secrets: &[Secret],
        token_secrets: &[Secret],
        token_ttl: Duration,
    ) -> Self {
        let token_keys = token_secrets
            .iter()
            .filter_map(|secret| HmacSha256::new_from_slice(secret.expose().as_bytes()).ok())
            .collect();
        Authenticator {
            jwt,
            jwt_signing_key: jwt_secrets
                .first()
                .map(|secret| EncodingKey::from_secret(secret.expose().as_bytes())),
            token_keys,
            token_ttl,
        }
    }

    /// The identity provider's key set, when one is configured.
    pub fn key_set(&self) -> Option<&Arc<KeySet>> {
        self.jwt.key_set()
    }

    /// Verifies an authToken with the keys at hand (no network): HS256 against every
    /// configured secret, or the identity provider's key it names.
    pub fn verify_jwt(&self, jwt: &str) -> Result<Claims, AuthError> {
        self.jwt.verify(jwt)
    }

    /// [`verify_jwt`](Self::verify_jwt), but a token naming a key the cached key set lacks
    /// (the provider rotated its keys) makes the key set be fetched again first, at most once
    /// per `STATGATE_JWKS_MIN_REFETCH_SECS` however many such tokens arrive.
    pub async fn verify_jwt_refreshing(&self, jwt: &str) -> Result<Claims, AuthError> {
        let seen = self.key_set().map(|set| set.generation());
        match self.verify_jwt(jwt) {
            Err(err @ (AuthError::UnknownKey | AuthError::KeysUnavailable)) => {
                match (self.key_set(), seen) {
                    (Some(set), Some(seen)) if set.refetch_after(seen).await => {
                        self.verify_jwt(jwt)
                    }
                    _ => Err(err),
                }
            }
            verified => verified,
        }
    }

    /// Mints an HS256 JWT with the first JWT secret (the `token` subcommand and demo mode).
    /// The user goes in the configured user claim, and in `sub` too, which `auth` rules
    /// commonly name.
    pub fn mint_jwt(&self, user: &str, ttl: Duration) -> Result<String, AuthError> {
        let key = self
            .jwt_signing_key
            .as_ref()
            .ok_or(AuthError::NoSigningSecret)?;
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), Value::from(user));
        claims.insert(self.jwt.user_claim().into(), Value::from(user));
        claims.insert(
            "exp".into(),
            Value::from(now_secs().saturating_add(ttl.as_secs())),
        );
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(|err| AuthError::InvalidJwt(err.to_string()))
    }

    /// Signs a subscription token for `user`, valid for the configured lifetime.
    pub fn sign_token(
        &self,
        user: &str,
        query: &str,
        canonical_args: &str,
    ) -> (String, TokenClaims) {
        let claims = TokenClaims {
            user: user.to_owned(),
            query: query.to_owned(),
            args: canonical_args.to_owned(),
            expires: now_secs().saturating_add(self.token_ttl.as_secs()),
        };
        (self.encode_token(&claims), claims)
    }

    fn encode_token(&self, claims: &TokenClaims) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let mac = match self.token_keys.first() {
            Some(key) => {
                let mut key = key.clone();
                key.update(body.as_bytes());
                key.finalize().into_bytes().to_vec()
            }
            None => Vec::new(),
        };
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// Verifies a subscription token's MAC (constant time, every key) and expiry.
    pub fn verify_token(&self, token: &str) -> Result<TokenClaims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::InvalidToken);
        }
        let (body, mac) = token.split_once('.').ok_or(AuthError::InvalidToken)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| AuthError::InvalidToken)?;
        let verified = self.token_keys.iter().any(|key| {
            let mut key = key.clone();
            key.update(body.as_bytes());
            key.verify_slice(&mac).is_ok()
        });
        if !verified {
            return Err(AuthError::InvalidToken);
        }
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| AuthError::InvalidToken)?;
        let claims: TokenClaims =
            serde_json::from_slice(&json).map_err(|_| AuthError::InvalidToken)?;
        if claims.expires <= now_secs() {
            return Err(AuthError::ExpiredToken);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(token_keys: &[&str]) -> Authenticator {
        let keys: Vec<Secret> = token_keys.iter().map(|k| Secret::new(*k)).collect();
        Authenticator::from_parts(
            &[Secret::new("jwt-secret-0123456789abcdefghijklmnopqrstuv")],
            &keys,
            None,
            None,
            Duration::from_secs(60),
        )
    }

    #[test]
    fn a_token_verifies_and_names_its_signature() {
        let auth = authenticator(&["key-one-0123456789abcdefghijklmnopqr"]);
        let (token, claims) = auth.sign_token("u1", "posts/stats/commentCount", r#"{"postId":17}"#);
        let verified = auth.verify_token(&token).expect("valid token");
        assert_eq!(verified, claims);
        assert_eq!(
            verified.signature(),
            r#"posts/stats/commentCount::{"postId":17}"#
        );
    }

    #[test]
    fn a_token_signed_with_a_rotated_out_key_still_verifies_while_listed() {
        let old = authenticator(&["old-key-0123456789abcdefghijklmnopqr"]);
        let (token, _) = old.sign_token("u1", "q/f/g", "{}");
        let rotated = authenticator(&[
            "new-key-0123456789abcdefghijklmnopqr",
            "old-key-0123456789abcdefghijklmnopqr",
        ]);
        assert!(rotated.verify_token(&token).is_ok());
        let dropped = authenticator(&["new-key-0123456789abcdefghijklmnopqr"]);
        assert_eq!(dropped.verify_token(&token), Err(AuthError::InvalidToken));
    }

    #[test]
    fn tampering_with_any_byte_breaks_the_token() {
        let auth = authenticator(&["key-one-0123456789abcdefghijklmnopqr"]);
        let (token, _) = auth.sign_token("u1", "posts/stats/commentCount", r#"{"postId":17}"#);
        let bytes = token.as_bytes();
        for index in 0..bytes.len() {
            let mut tampered = bytes.to_vec();
            tampered[index] = if tampered[index] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8_lossy(&tampered).into_owned();
            if tampered == token {
                continue;
            }
            assert!(
                auth.verify_token(&tampered).is_err(),
                "byte {index} tampered still verifies"
            );
        }
    }

    #[test]
    fn garbage_tokens_are_rejected_without_panicking() {
        let auth = authenticator(&["key-one-0123456789abcdefghijklmnopqr"]);
        for garbage in ["", ".", "a.b", "!!!.???", "x".repeat(20_000).as_str()] {
            assert_eq!(auth.verify_token(garbage), Err(AuthError::InvalidToken));
        }
    }

    #[test]
    fn jwts_expire_and_are_checked_against_every_secret() {
        let auth = authenticator(&["key-one-0123456789abcdefghijklmnopqr"]);
        let jwt = auth
            .mint_jwt("alice", Duration::from_secs(60))
            .expect("mint");
        assert_eq!(auth.verify_jwt(&jwt).expect("valid").user, "alice");
        let claims = serde_json::json!({"sub": "alice", "exp": now_secs() - 10});
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"jwt-secret-0123456789abcdefghijklmnopqrstuv"),
        )
        .expect("encode");
        assert_eq!(auth.verify_jwt(&expired), Err(AuthError::ExpiredJwt));
        assert!(matches!(
            auth.verify_jwt("not.a.jwt"),
            Err(AuthError::InvalidJwt(_))
        ));
        assert_eq!(auth.verify_jwt(""), Err(AuthError::MissingJwt));
    }
}
