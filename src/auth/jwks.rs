//! An identity provider's JSON Web Key Set (`STATGATE_JWKS_URL`): fetched, cached, kept fresh.
//!
//! Why a module of its own: verifying a token must never wait on the network, except when the
//! token names a key the cache lacks, which is how a provider's key rotation shows. So the set
//! is fetched at start-up and every `STATGATE_JWKS_REFRESH_SECS` in the background, and a token
//! with an unknown `kid` makes it be fetched once more, at most once per
//! `STATGATE_JWKS_MIN_REFETCH_SECS` (a flood of made-up key ids costs the provider one request
//! per interval) and one fetch at a time (concurrent callers wait for the fetch under way).
//! A failed fetch keeps the keys loaded before; a provider down at start-up leaves the set
//! empty, and tokens it signs are refused with a clear 401 until a retry (backing off from one
//! second up to the refresh interval) succeeds. HS256 tokens do not depend on any of this.
//!
//! Each key verifies only the algorithms its own type allows (RSA: RS256/384/512; EC P-256:
//! ES256; EC P-384: ES384; OKP Ed25519: EdDSA), narrowed to its `alg` when it states one.
//! Symmetric keys, encryption keys and other types are ignored. Fetches are bounded in time
//! and in body size, and at most [`MAX_KEYS`] keys are kept.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::JwksConfig;

/// A fetch (connect, request, whole body) that takes longer fails.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Key sets are a few kilobytes; a larger body is refused unread.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Keys kept from one set; the rest are ignored (with a warning).
pub const MAX_KEYS: usize = 100;
/// First retry delay after a failed fetch; it doubles up to the refresh interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("the provider answered HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error("the key set is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("not a JSON Web Key Set: {0}")]
    NotAKeySet(#[from] serde_json::Error),
    #[error("the key set holds no key statgate can verify with (RSA, EC P-256/P-384, Ed25519)")]
    NoUsableKey,
    #[error("on-demand fetches are limited to one per {0:?}")]
    RateLimited(Duration),
}

/// One key of the provider, with the algorithms it may verify.
pub struct ProviderKey {
    kid: Option<String>,
    algorithms: &'static [Algorithm],
    key: DecodingKey,
}

impl ProviderKey {
    pub fn verifies(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }

    pub fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

/// The keys of one successful fetch (or none yet).
#[derive(Default)]
pub struct Keys {
    /// Successful fetches so far; 0: nothing loaded yet.
    generation: u64,
    keys: Vec<ProviderKey>,
}

impl Keys {
    pub fn loaded(&self) -> bool {
        self.generation > 0
    }

    pub fn get(&self, kid: &str) -> Option<&ProviderKey> {
        self.keys.iter().find(|key| key.kid.as_deref() == Some(kid))
    }

    /// The keys that may verify `alg` (for a token without `kid`).
    pub fn for_algorithm(&self, alg: Algorithm) -> impl Iterator<Item = &ProviderKey> {
        self.keys.iter().filter(move |key| key.verifies(alg))
    }
}

/// The cached key set of one provider.
pub struct KeySet {
    url: reqwest::Url,
    client: Result<reqwest::Client, String>,
    refresh: Duration,
    min_refetch: Duration,
    keys: RwLock<Arc<Keys>>,
    /// Held for the length of a fetch: one at a time.
    fetching: tokio::sync::Mutex<()>,
    /// When the last fetch caused by an unknown key started.
    last_on_demand: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// An empty key set; [`start`](Self::start) loads it.
    pub fn new(config: &JwksConfig) -> Self {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("statgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| err.to_string());
        KeySet {
            url: config.url.clone(),
            client,
            refresh: config.refresh,
            min_refetch: config.min_refetch,
            keys: RwLock::new(Arc::new(Keys::default())),
            fetching: tokio::sync::Mutex::new(()),
            last_on_demand: Mutex::new(None),
        }
    }

    /// The keys at hand.
    pub fn current(&self) -> Arc<Keys> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Successful fetches so far (0: nothing loaded yet).
    pub fn generation(&self) -> u64 {
        self.current().generation
    }

    /// Fetches the set once (waiting for the first load, so a provider that is up serves its
    /// tokens from the first request), then keeps it fresh in a background task until
    /// `shutdown`. A failure is logged, never fatal.
    pub async fn start(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let loaded = self.refresh().await.is_ok();
        tokio::spawn(self.clone().keep_fresh(loaded, shutdown))
    }

    async fn keep_fresh(self: Arc<Self>, mut healthy: bool, shutdown: CancellationToken) {
        let mut retry = FIRST_RETRY;
        loop {
            let wait = if healthy {
                self.refresh
            } else {
                retry.min(self.refresh)
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            healthy = self.refresh().await.is_ok();
            retry = if healthy {
                FIRST_RETRY
            } else {
                retry.saturating_mul(2)
            };
        }
    }

    /// Fetches the set and, if it holds a usable key, replaces the cached one; on failure the
    /// cached keys stay. Logs the outcome.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let _one_at_a_time = self.fetching.lock().await;
        self.fetch_and_store().await
    }

    /// Called when a token names a key that the set, as of `seen_generation`, lacks: fetches
    /// the set again unless another caller just did or the on-demand limit says no. Returns
    /// whether the set changed, i.e. whether verifying again may succeed.
    pub async fn refetch_after(&self, seen_generation: u64) -> bool {
        let _one_at_a_time = self.fetching.lock().await;
        if self.generation() != seen_generation {
            return true;
        }
        if !self.may_refetch_now() {
            tracing::debug!(
                min_interval_secs = self.min_refetch.as_secs(),
                "unknown key id: key set fetched recently, not again yet"
            );
            return false;
        }
        self.fetch_and_store().await.is_ok()
    }

    /// [`refetch_after`](Self::refetch_after) for callers that cannot wait: the fetch runs in
    /// a task of its own, started only when the on-demand limit allows one, so at most one
    /// such task exists per interval.
    pub fn refetch_in_background(self: &Arc<Self>, seen_generation: u64) {
        if self.generation() != seen_generation || !self.may_refetch_now() {
            return;
        }
        let set = self.clone();
        tokio::spawn(async move {
            let _one_at_a_time = set.fetching.lock().await;
            if set.generation() == seen_generation {
                let _ = set.fetch_and_store().await;
            }
        });
    }

    fn may_refetch_now(&self) -> bool {
        let mut last = self
            .last_on_demand
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match *last {
            Some(at) if now.duration_since(at) < self.min_refetch => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }

    async fn fetch_and_store(&self) -> Result<usize, JwksError> {
        match self.fetch().await {
            Ok(keys) => {
                let count = keys.len();
                let mut slot = self.keys.write().unwrap_or_else(PoisonError::into_inner);
                let generation = slot.generation + 1;
                *slot = Arc::new(Keys { generation, keys });
                tracing::info!(keys = count, url = %self.url, "identity provider key set loaded");
                Ok(count)
            }
            Err(err) => {
                if self.current().loaded() {
                    tracing::error!(error = %err, url = %self.url, "identity provider key set could not be fetched; keeping the keys loaded before");
                } else {
                    tracing::error!(error = %err, url = %self.url, "identity provider key set could not be fetched; tokens it signs are refused until a retry succeeds");
                }
                Err(err)
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<ProviderKey>, JwksError> {
        let client = self
            .client
            .as_ref()
            .map_err(|err| JwksError::Client(err.clone()))?;
        let mut response = client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(JwksError::Status(response.status()));
        }
        if response
            .content_length()
            .is_some_and(|length| length > MAX_BODY_BYTES as u64)
        {
            return Err(JwksError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(JwksError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        parse(&body)
    }
}

#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

/// The usable keys of a key set document; a key that does not parse, or that statgate would
/// not verify with, is skipped rather than failing the whole set.
fn parse(body: &[u8]) -> Result<Vec<ProviderKey>, JwksError> {
    let raw: RawKeySet = serde_json::from_slice(body)?;
    if raw.keys.len() > MAX_KEYS {
        tracing::warn!(
            keys = raw.keys.len(),
            kept = MAX_KEYS,
            "identity provider key set is unusually large; only the first keys are kept"
        );
    }
    let keys: Vec<ProviderKey> = raw
        .keys
        .into_iter()
        .take(MAX_KEYS)
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| provider_key(&jwk))
        .collect();
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey);
    }
    Ok(keys)
}

/// The key and the algorithms it verifies, decided by the key's type and curve (and its `alg`,
/// which may only narrow them); `None` for keys statgate does not verify with.
fn provider_key(jwk: &Jwk) -> Option<ProviderKey> {
    if matches!(&jwk.common.public_key_use, Some(usage) if *usage != PublicKeyUse::Signature) {
        return None;
    }
    let by_type: &'static [Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(params) => match params.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => return None,
        },
        _ => return None,
    };
    let algorithms = match jwk.common.key_algorithm {
        None => by_type,
        Some(stated) => {
            let stated = Algorithm::try_from(stated).ok()?;
            let at = by_type.iter().position(|alg| *alg == stated)?;
            &by_type[at..=at]
        }
    };
    Some(ProviderKey {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key: DecodingKey::from_jwk(jwk).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A made-up 2048-bit modulus: parsing never checks that it is a real key.
    fn modulus() -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xab_u8; 256])
    }

    fn set(keys: serde_json::Value) -> Result<Vec<ProviderKey>, JwksError> {
        parse(json!({ "keys": keys }).to_string().as_bytes())
    }

    #[test]
    fn a_key_verifies_what_its_type_allows_narrowed_by_its_alg() {
        let n = modulus();
        let keys = set(json!([
            {"kty": "RSA", "kid": "any-rsa", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "rs384", "alg": "RS384", "use": "sig", "n": n, "e": "AQAB"},
        ]))
        .expect("usable");
        assert_eq!(
            keys[0].algorithms,
            &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512]
        );
        assert_eq!(keys[1].algorithms, &[Algorithm::RS384]);
    }

    #[test]
    fn keys_statgate_would_not_verify_with_are_skipped_and_a_set_of_none_is_an_error() {
        let n = modulus();
        let unusable = json!([
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "mismatch", "alg": "ES256", "n": n, "e": "AQAB"},
            {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "XYZ", "kid": "odd"},
            "not even an object",
        ]);
        assert!(matches!(set(unusable.clone()), Err(JwksError::NoUsableKey)));
        let mut mixed = unusable.as_array().expect("array").clone();
        mixed.push(json!({"kty": "RSA", "kid": "good", "n": n, "e": "AQAB"}));
        let keys = set(json!(mixed)).expect("one usable key");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("good"));
        assert!(matches!(
            parse(b"{\"nokeys\": []}"),
            Err(JwksError::NotAKeySet(_))
        ));
        assert!(matches!(parse(b"<html>"), Err(JwksError::NotAKeySet(_))));
    }

    #[test]
    fn at_most_max_keys_are_kept() {
        let n = modulus();
        let many: Vec<_> = (0..MAX_KEYS + 5)
            .map(|i| json!({"kty": "RSA", "kid": format!("k{i}"), "n": n, "e": "AQAB"}))
            .collect();
        assert_eq!(set(json!(many)).expect("usable").len(), MAX_KEYS);
    }
}
