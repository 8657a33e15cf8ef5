//! Identity providers: authTokens signed by the keys of a JSON Web Key Set (`STATGATE_JWKS_URL`),
//! served by a local HTTP server that each test changes and stops, and the user claim
//! (`STATGATE_JWT_USER_CLAIM`). The keys are test-only fixtures (`tests/fixtures/jwt/`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use statgate::auth::now_secs;
use statgate::config::JwksConfig;

use crate::helpers::{wait_until, TestApp};

const WAIT: Duration = Duration::from_secs(20);
const QUERY: &str = "posts/stats/commentCount";

/// A private key of the fixtures, with the public JWK a provider would publish for it.
struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name);
    let pem = std::fs::read_to_string(&path).expect("fixture key");
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    STANDARD.decode(body).expect("PEM body is base64")
}

/// `file` is a PKCS#1 RSA key, or a PKCS#8 EC or Ed25519 key.
fn key(file: &str, kid: &str, alg: Algorithm) -> TestKey {
    let der = fixture(file);
    let encoding = match alg {
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 => {
            EncodingKey::from_rsa_der(&der)
        }
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_der(&der),
        _ => EncodingKey::from_ed_der(&der),
    };
    let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("public JWK");
    jwk.common.key_id = Some(kid.to_owned());
    TestKey {
        kid: kid.to_owned(),
        alg,
        encoding,
        jwk: serde_json::to_value(jwk).expect("JWK JSON"),
    }
}

fn rsa_a() -> TestKey {
    key("rsa-a.pem", "rsa-a", Algorithm::RS256)
}

fn rsa_b() -> TestKey {
    key("rsa-b.pem", "rsa-b", Algorithm::RS256)
}

/// Published without `alg`: its type and curve decide what it verifies.
fn ec() -> TestKey {
    let mut key = key("ec-p256.pem", "ec", Algorithm::ES256);
    key.jwk.as_object_mut().expect("object").remove("alg");
    key
}

fn ed() -> TestKey {
    key("ed25519.pem", "ed", Algorithm::EdDSA)
}

fn claims(user: &str) -> Value {
    json!({"sub": user, "exp": now_secs() + 600})
}

/// A JWT signed by `key` with its own algorithm and kid.
fn sign(key: &TestKey, claims: &Value) -> String {
    sign_as(key, key.alg, Some(&key.kid), claims)
}

fn sign_as(key: &TestKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let header = Header {
        kid: kid.map(str::to_owned),
        ..Header::new(alg)
    };
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("jwt")
}

/// A JWT with this header JSON as written, HMAC-SHA256-signed with `secret`.
fn hs256_with_header(header: Value, claims: &Value, secret: &[u8]) -> String {
    let encode = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let message = format!("{}.{}", encode(&header), encode(claims));
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .expect("sign");
    format!("{message}.{signature}")
}

/// What the local provider serves, and how often it was asked.
struct ProviderState {
    keys: Mutex<Value>,
    up: AtomicBool,
    fetches: AtomicUsize,
}

/// A local identity provider serving a key set at `/.well-known/jwks.json`.
struct Provider {
    address: SocketAddr,
    state: Arc<ProviderState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn jwks(State(state): State<Arc<ProviderState>>) -> Response {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    if !state.up.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let keys = state.keys.lock().expect("lock").clone();
    axum::Json(keys).into_response()
}

impl Provider {
    async fn start(keys: &[&TestKey]) -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::start_on(listener, keys)
    }

    fn start_on(listener: tokio::net::TcpListener, keys: &[&TestKey]) -> Provider {
        let address = listener.local_addr().expect("address");
        let state = Arc::new(ProviderState {
            keys: Mutex::new(Value::Null),
            up: AtomicBool::new(true),
            fetches: AtomicUsize::new(0),
        });
        let router = axum::Router::new()
            .route("/.well-known/jwks.json", axum::routing::get(jwks))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let provider = Provider {
            address,
            state,
            server,
        };
        provider.serve(keys);
        provider
    }

    fn url(address: SocketAddr) -> reqwest::Url {
        format!("http://{address}/.well-known/jwks.json")
            .parse()
            .expect("url")
    }

    fn serve(&self, keys: &[&TestKey]) {
        let keys: Vec<&Value> = keys.iter().map(|key| &key.jwk).collect();
        *self.state.keys.lock().expect("lock") = json!({ "keys": keys });
    }

    fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::SeqCst);
    }

    fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }
}

fn jwks_config(address: SocketAddr, min_refetch: Duration) -> JwksConfig {
    JwksConfig {
        url: Provider::url(address),
        refresh: Duration::from_secs(600),
        min_refetch,
    }
}

/// The status and error code (and message) of `POST /realtime/subscribe` with `jwt`.
async fn subscribe_with(app: &TestApp, jwt: &str) -> (u16, String, String) {
    let response = app
        .post_subscribe(json!({"queryName": QUERY, "args": {"postId": 1}, "authToken": jwt}))
        .await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json");
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

async fn assert_accepted(app: &TestApp, jwt: &str, why: &str) {
    let (status, code, message) = subscribe_with(app, jwt).await;
    assert_eq!(status, 200, "{why}: {code} {message}");
    assert_eq!(app.upgrade(jwt, None).await.0, 101, "{why}: upgrade");
}

/// 401 `unauthorized` on `POST /realtime/subscribe` and on the upgrade; returns the message.
async fn assert_refused(app: &TestApp, jwt: &str, why: &str) -> String {
    let (status, code, message) = subscribe_with(app, jwt).await;
    assert_eq!(
        (status, code.as_str()),
        (401, "unauthorized"),
        "{why}: {message}"
    );
    assert_eq!(
        app.upgrade(jwt, None).await,
        (401, Some("unauthorized".to_owned())),
        "{why}: upgrade"
    );
    message
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_of_the_provider_are_accepted_beside_hs256() {
    let (rsa, ec, ed) = (rsa_a(), ec(), ed());
    let provider = Provider::start(&[&rsa, &ec, &ed]).await;
    let app = TestApp::spawn_with(|config| {
        config.auth.jwks = Some(jwks_config(provider.address, Duration::from_secs(60)))
    })
    .await;
    assert_eq!(provider.fetches(), 1, "fetched once, at start-up");
    for key in [&rsa, &ec, &ed] {
        assert_accepted(&app, &sign(key, &claims("u1")), &key.kid).await;
    }
    // The RSA key states alg RS256: another RSA algorithm under it is refused.
    assert_refused(
        &app,
        &sign_as(&rsa, Algorithm::RS384, Some("rsa-a"), &claims("u1")),
        "RS384 under a key that states RS256",
    )
    .await;
    assert_accepted(&app, &app.jwt("u1"), "HS256 beside the key set").await;

    // A subscription token made with a provider's JWT opens a socket with another of its JWTs.
    let (token, _) = {
        let response = app
            .post_subscribe(json!({"queryName": QUERY, "args": {"postId": 1}, "authToken": sign(&rsa, &claims("u1"))}))
            .await;
        let body: Value = response.json().await.expect("json");
        (body["token"].as_str().expect("token").to_owned(), ())
    };
    assert_eq!(
        app.upgrade(&sign(&ed, &claims("u1")), Some(&token)).await.0,
        101
    );
    assert_eq!(provider.fetches(), 1, "known keys cost no fetch");
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_one_refetch_and_unknown_kids_cannot_hammer_the_provider() {
    let (old, new) = (rsa_a(), rsa_b());
    let provider = Provider::start(&[&old]).await;
    let app = TestApp::spawn_with(|config| {
        config.auth.jwks = Some(jwks_config(provider.address, Duration::from_secs(60)))
    })
    .await;
    assert_accepted(&app, &sign(&old, &claims("u1")), "the first key").await;
    assert_eq!(provider.fetches(), 1);

    provider.serve(&[&new]);
    assert_accepted(&app, &sign(&new, &claims("u1")), "the rotated key").await;
    assert_eq!(provider.fetches(), 2, "one refetch for the new kid");
    let message = assert_refused(&app, &sign(&old, &claims("u1")), "the retired key").await;
    assert!(message.contains("kid"), "{message}");

    // A flood of made-up kids, concurrently: no fetch within the interval.
    let flood = (0..40).map(|i| {
        let jwt = sign_as(
            &new,
            Algorithm::RS256,
            Some(&format!("made-up-{i}")),
            &claims("u1"),
        );
        let app = &app;
        async move { subscribe_with(app, &jwt).await.0 }
    });
    let statuses = futures_util::future::join_all(flood).await;
    assert!(statuses.iter().all(|status| *status == 401), "{statuses:?}");
    assert_eq!(
        provider.fetches(),
        2,
        "unknown kids within the interval fetch nothing"
    );
    assert_accepted(&app, &sign(&new, &claims("u1")), "the current key still").await;
}

#[tokio::test]
async fn none_hmac_with_the_public_key_unknown_kid_unlisted_and_expired_tokens_are_401() {
    let (rsa, ec) = (rsa_a(), ec());
    let provider = Provider::start(&[&rsa, &ec]).await;
    let config_jwks = jwks_config(provider.address, Duration::from_secs(60));
    let with_secret =
        TestApp::spawn_with(|config| config.auth.jwks = Some(config_jwks.clone())).await;
    let without_secret = TestApp::spawn_with(|config| {
        config.auth.jwks = Some(config_jwks.clone());
        config.auth.jwt_secrets.clear();
    })
    .await;
    let good = claims("u1");
    let encode = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    // The RSA key's public forms an attacker could use as an HMAC secret.
    let public_forms: Vec<Vec<u8>> = vec![
        rsa.jwk["n"].as_str().expect("n").as_bytes().to_vec(),
        URL_SAFE_NO_PAD
            .decode(rsa.jwk["n"].as_str().expect("n"))
            .expect("modulus"),
        rsa.jwk.to_string().into_bytes(),
        public_pem("rsa-a.pem").into_bytes(),
    ];
    let mut refused: Vec<(String, String)> = vec![
        (
            "alg none".into(),
            format!(
                "{}.{}.",
                encode(&json!({"alg": "none", "kid": "rsa-a"})),
                encode(&good)
            ),
        ),
        (
            "unknown kid".into(),
            sign_as(&rsa, Algorithm::RS256, Some("nobody"), &good),
        ),
        (
            "expired".into(),
            sign(&rsa, &json!({"sub": "u1", "exp": now_secs() - 10})),
        ),
        (
            "unlisted algorithm PS256".into(),
            sign_as(&rsa, Algorithm::PS256, Some("rsa-a"), &good),
        ),
        (
            "ES256 under the RSA key's kid".into(),
            sign_as(&ec, Algorithm::ES256, Some("rsa-a"), &good),
        ),
        (
            "RS256 under the EC key's kid".into(),
            sign_as(&rsa, Algorithm::RS256, Some("ec"), &good),
        ),
        (
            "nbf in the future".into(),
            sign(
                &rsa,
                &json!({"sub": "u1", "exp": now_secs() + 600, "nbf": now_secs() + 300}),
            ),
        ),
        ("tampered claims".into(), {
            let jwt = sign(&rsa, &good);
            let parts: Vec<&str> = jwt.split('.').collect();
            format!("{}.{}.{}", parts[0], encode(&claims("u2")), parts[2])
        }),
    ];
    for (i, secret) in public_forms.iter().enumerate() {
        refused.push((
            format!("HS256 signed with public form {i} of the RSA key"),
            hs256_with_header(json!({"alg": "HS256", "kid": "rsa-a"}), &good, secret),
        ));
    }
    let mut critical = Header::new(Algorithm::RS256);
    critical.kid = Some("rsa-a".into());
    critical.crit = Some(vec!["exp".into()]);
    refused.push((
        "crit".into(),
        jsonwebtoken::encode(&critical, &good, &rsa.encoding).expect("jwt"),
    ));
    for app in [&with_secret, &without_secret] {
        assert_accepted(app, &sign(&rsa, &good), "the genuine token").await;
        for (why, jwt) in &refused {
            assert_refused(app, jwt, why).await;
        }
    }
    let message = assert_refused(
        &without_secret,
        &with_secret.jwt("u1"),
        "HS256 without a secret",
    )
    .await;
    assert!(message.contains("HS256"), "{message}");
}

/// The public key of a fixture in PEM, as `openssl rsa -pubout` writes it.
fn public_pem(file: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(file);
    let output = std::process::Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(path)
        .stderr(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    assert!(output.status.success(), "openssl rsa -pubout");
    String::from_utf8(output.stdout).expect("PEM is text")
}

#[tokio::test]
async fn a_provider_down_at_start_up_and_later_is_survived_with_the_cached_keys() {
    let rsa = rsa_a();
    // Nothing listens on the provider's address yet.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let app = TestApp::spawn_with(|config| {
        config.auth.jwks = Some(jwks_config(address, Duration::from_secs(60)))
    })
    .await;
    assert_accepted(&app, &app.jwt("u1"), "HS256 while the provider is down").await;
    let message = assert_refused(&app, &sign(&rsa, &claims("u1")), "no keys yet").await;
    assert!(message.contains("not loaded yet"), "{message}");

    // The provider comes up: the background retry loads its keys.
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .expect("rebind the port");
    let provider = Provider::start_on(listener, &[&rsa]);
    let jwt = sign(&rsa, &claims("u1"));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if subscribe_with(&app, &jwt).await.0 == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the keys arrived once the provider was up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(provider.fetches() >= 1);

    // Down again: a fetch fails with an error, and the cached keys keep working.
    provider.set_up(false);
    let key_set = app.state.auth().key_set().expect("a key set");
    let err = key_set.refresh().await.expect_err("the provider is down");
    assert!(err.to_string().contains("503"), "{err}");
    assert_accepted(&app, &jwt, "the cached key while the provider is down").await;
    assert_refused(
        &app,
        &sign_as(&rsa, Algorithm::RS256, Some("unseen"), &claims("u1")),
        "an unknown kid while the provider is down",
    )
    .await;
    let health = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn the_user_claim_names_the_user_for_tokens_limits_and_auth_rules() {
    let queries = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(queries.path().join("users")).expect("mkdir");
    std::fs::write(
        queries.path().join("users/stats.toml"),
        "[own]\nsql = \"SELECT :userId AS user_id\"\nargs = { userId = \"text\" }\nreturns = \"value\"\nauth = { userId = \"user_id\" }\nwatch = [{ table = \"post_stats\" }]\n",
    )
    .expect("query file");
    let rsa = rsa_a();
    let provider = Provider::start(&[&rsa]).await;
    let app = TestApp::spawn_with(|config| {
        config.queries = statgate::config::Queries::Directory(queries.path().to_owned());
        config.auth.jwt_user_claim = "user_id".into();
        config.auth.jwks = Some(jwks_config(provider.address, Duration::from_secs(60)));
        config.limits.max_sockets_per_user = 1;
    })
    .await;
    let exp = now_secs() + 600;
    let jwt = |user_id: Value, sub: &str| {
        sign(&rsa, &json!({"user_id": user_id, "sub": sub, "exp": exp}))
    };
    let subscribe = |jwt: String, user: &str| {
        app.post_subscribe(
            json!({"queryName": "users/stats/own", "args": {"userId": user}, "authToken": jwt}),
        )
    };
    let response = subscribe(jwt(json!("alice"), "auth0|1"), "alice").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let token = body["token"].as_str().expect("token").to_owned();
    assert_eq!(
        subscribe(jwt(json!("bob"), "alice"), "alice")
            .await
            .status(),
        403,
        "the rule binds to user_id, not sub"
    );
    assert_eq!(
        subscribe(jwt(json!(42), "x"), "42").await.status(),
        200,
        "a number user id"
    );
    let missing = sign(&rsa, &json!({"sub": "alice", "exp": exp}));
    let (status, _, message) = subscribe_with(&app, &missing).await;
    assert_eq!(status, 401);
    assert!(message.contains("missing claim user_id"), "{message}");

    // The token is alice's whatever her sub says; bob's JWT may not use it.
    assert_eq!(
        app.upgrade(&jwt(json!("bob"), "auth0|1"), Some(&token))
            .await,
        (403, Some("forbidden".to_owned()))
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/realtime/ws?authToken={}&token={token}",
        app.address,
        jwt(json!("alice"), "auth0|2")
    ))
    .await
    .expect("alice's socket opens");
    // One socket per user: alice (by user_id) has hers.
    assert_eq!(
        app.upgrade(&jwt(json!("alice"), "auth0|3"), None).await,
        (429, Some("too_many_sockets".to_owned()))
    );
    crate::helpers::assert_pong(&mut ws, "alice's socket is served").await;
    drop(ws);
    wait_until(WAIT, "alice's socket is released", || {
        app.state.metrics().connections.get() == 0
    })
    .await;
}
