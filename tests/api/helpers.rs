//! The test harness: one throwaway PostgreSQL per test binary (or `DATABASE_URL`), a fresh
//! database per test with migrations applied, and the real gateway on port 0.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sqlx::PgPool;
use statgate::config::Config;
use statgate::embedded::{EmbeddedOptions, EmbeddedPostgres};
use statgate::Application;
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One test per change feed, `<name>::notify`, `<name>::table` and `<name>::wal`, each running
/// `body(feed)`: the acceptance tests of the change pipeline hold whichever feed delivers.
macro_rules! every_feed {
    ($(#[$attr:meta])* $name:ident => $body:ident) => {
        mod $name {
            use statgate::config::ChangeFeed;
            $(#[$attr])*
            async fn notify() {
                super::$body(ChangeFeed::Notify).await
            }
            $(#[$attr])*
            async fn table() {
                super::$body(ChangeFeed::Table).await
            }
            $(#[$attr])*
            async fn wal() {
                super::$body(ChangeFeed::Wal).await
            }
        }
    };
}
pub(crate) use every_feed;

/// The server URL (without database) shared by every test of this binary.
struct Server {
    base_url: String,
    _embedded: Option<EmbeddedPostgres>,
}

static SERVER: OnceCell<Server> = OnceCell::const_new();

async fn server() -> &'static Server {
    SERVER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("DATABASE_URL") {
                let base = url
                    .rsplit_once('/')
                    .map(|(base, _)| base.to_owned())
                    .unwrap_or(url);
                return Server {
                    base_url: base,
                    _embedded: None,
                };
            }
            let dir = std::env::temp_dir().join(format!("statgate-test-{}", std::process::id()));
            let options = EmbeddedOptions {
                data_dir: dir.join("pgdata"),
                fast_unsafe: true,
                ..EmbeddedOptions::default()
            };
            let embedded = EmbeddedPostgres::start(options)
                .await
                .expect("the test harness starts PostgreSQL (are its server binaries installed?)");
            stop_when_this_process_exits(&dir);
            let base = embedded
                .url("postgres")
                .rsplit_once('/')
                .map(|(b, _)| b.to_owned())
                .expect("url");
            Server {
                base_url: base,
                _embedded: Some(embedded),
            }
        })
        .await
}

/// Statics are never dropped, so a watcher stops the test server once this process is gone.
// The watcher must outlive this process, so it is deliberately never waited for.
#[allow(clippy::zombie_processes)]
fn stop_when_this_process_exits(dir: &std::path::Path) {
    let bin = EmbeddedPostgres::find_bin_dir()
        .expect("binaries")
        .join("pg_ctl");
    let data = dir.join("pgdata");
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
         if [ $(id -u) = 0 ]; then runuser -u postgres -- {bin} stop -D {data} -m immediate; else {bin} stop -D {data} -m immediate; fi; \
         rm -rf {dir}",
        pid = std::process::id(),
        bin = bin.display(),
        data = data.display(),
        dir = dir.display(),
    );
    std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("watcher starts");
}

pub fn queries_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/blog/queries")
}

/// A PostgreSQL server of the test's own (so it may stop and restart it) under a temporary
/// directory, with a migrated database `name`. Dropping it stops the server and removes the
/// directory.
pub struct PrivateServer {
    server: Option<EmbeddedPostgres>,
    pub url: String,
    dir: PathBuf,
}

impl PrivateServer {
    pub async fn start(name: &str) -> (PrivateServer, PgPool) {
        Self::start_with(name, &[]).await
    }

    /// As [`start`](Self::start), with server settings (`-c name=value`) after statgate's.
    pub async fn start_with(name: &str, settings: &[(&str, &str)]) -> (PrivateServer, PgPool) {
        let dir = std::env::temp_dir().join(format!("statgate-{name}-{}", std::process::id()));
        let server = EmbeddedPostgres::start(EmbeddedOptions {
            data_dir: dir.join("pgdata"),
            fast_unsafe: true,
            settings: settings
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            ..EmbeddedOptions::default()
        })
        .await
        .expect("a private PostgreSQL for this test");
        server.create_database(name).await.expect("database");
        let url = server.url(name);
        let db = PgPool::connect(&url).await.expect("pool");
        statgate::db::migrate(&db, statgate::db::MigrationSet::WithExample)
            .await
            .expect("migrations");
        let private = PrivateServer {
            server: Some(server),
            url,
            dir,
        };
        (private, db)
    }

    fn server(&mut self) -> &mut EmbeddedPostgres {
        self.server.as_mut().expect("the server lives until drop")
    }

    pub async fn stop(&mut self) {
        self.server().stop().await.expect("stop");
    }

    /// Starts it again after [`stop`](Self::stop), or stops and starts it.
    pub async fn restart(&mut self) {
        self.server().restart().await.expect("restart");
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        // Stop the server (dropping it does), then remove its directory.
        drop(self.server.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh database with statgate's and the example application's migrations applied.
pub async fn fresh_database() -> (String, PgPool) {
    let (url, pool) = empty_database().await;
    statgate::db::migrate(&pool, statgate::db::MigrationSet::WithExample)
        .await
        .expect("migrations apply");
    (url, pool)
}

/// A fresh database without any migration: an application's database before statgate joins.
pub async fn empty_database() -> (String, PgPool) {
    let server = server().await;
    let name = format!("t_{}", uuid_like());
    let admin = PgPool::connect(&format!("{}/postgres", server.base_url))
        .await
        .expect("admin connection");
    sqlx::query(&format!("create database {name}"))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    let url = format!("{}/{name}", server.base_url);
    let pool = PgPool::connect(&url).await.expect("test pool");
    (url, pool)
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

pub struct TestApp {
    pub address: std::net::SocketAddr,
    pub db: PgPool,
    pub http: reqwest::Client,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub state: statgate::AppState,
    pub done: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// The gateway with change feed `feed`.
    pub async fn spawn_feed(feed: statgate::config::ChangeFeed) -> TestApp {
        Self::spawn_with(|config| config.feed.mode = feed).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        let (database_url, db) = fresh_database().await;
        Self::spawn_on(database_url, db, adjust).await
    }

    /// The gateway on a database the caller prepared (e.g. on a server the test restarts).
    pub async fn spawn_on(
        database_url: String,
        db: PgPool,
        adjust: impl FnOnce(&mut Config),
    ) -> TestApp {
        install_global_subscriber();
        let mut config = Config::for_tests(database_url.clone(), queries_dir());
        adjust(&mut config);
        let app = Application::build(config).await.expect("gateway starts");
        let address = app.address();
        let shutdown = app.shutdown_token();
        let state = app.state().clone();
        let done = tokio::spawn(app.run());
        let test_app = TestApp {
            address,
            db,
            // Below the gateway's keep-alive timeout, so the pool never reuses a connection the
            // gateway is closing at that moment.
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(1))
                .build()
                .expect("http client"),
            shutdown,
            state,
            done,
        };
        test_app.wait_ready().await;
        test_app
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    async fn wait_ready(&self) {
        wait_until_ready(&self.http, &self.url(""), Duration::from_secs(20)).await;
    }

    pub fn jwt(&self, user: &str) -> String {
        self.state
            .auth()
            .mint_jwt(user, Duration::from_secs(3600))
            .expect("jwt")
    }

    pub async fn post_subscribe(&self, body: Value) -> reqwest::Response {
        self.http
            .post(self.url("/realtime/subscribe"))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Subscribes and returns (token, signature); panics unless 200.
    pub async fn subscribe(&self, user: &str, query: &str, args: Value) -> (String, String) {
        let response = self
            .post_subscribe(json!({"queryName": query, "args": args, "authToken": self.jwt(user)}))
            .await;
        let status = response.status();
        let body: Value = response.json().await.expect("json body");
        assert_eq!(status, 200, "{body}");
        (
            body["token"].as_str().expect("token").to_owned(),
            body["signature"].as_str().expect("signature").to_owned(),
        )
    }

    /// A JWT with exactly these claims, signed with the gateway's (first) secret.
    pub fn sign_jwt(&self, claims: Value) -> String {
        let secret = self.state.config().auth.jwt_secrets[0].expose();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("jwt")
    }

    pub async fn connect(&self, user: &str, token: Option<&str>) -> Ws {
        self.connect_with_jwt(&self.jwt(user), token).await
    }

    /// Opens a socket authenticated by `jwt`, with an optional subscription token.
    pub async fn connect_with_jwt(&self, jwt: &str, token: Option<&str>) -> Ws {
        let mut url = format!("ws://{}/realtime/ws?authToken={jwt}", self.address);
        if let Some(token) = token {
            url.push_str(&format!("&token={token}"));
        }
        let mut request = url.into_client_request().expect("request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "statgate.realtime.v1".parse().expect("header"),
        );
        let (ws, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket connects");
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some("statgate.realtime.v1")
        );
        ws
    }

    /// Attempts a WebSocket upgrade with `jwt` (and a subscription token): the HTTP status
    /// (101 when the socket opened) and, for a refusal, its error code.
    pub async fn upgrade(&self, jwt: &str, token: Option<&str>) -> (u16, Option<String>) {
        let mut url = format!("ws://{}/realtime/ws?authToken={jwt}", self.address);
        if let Some(token) = token {
            url.push_str(&format!("&token={token}"));
        }
        match tokio_tungstenite::connect_async(url).await {
            Ok((_, response)) => (response.status().as_u16(), None),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let code = response
                    .body()
                    .as_deref()
                    .and_then(|body| serde_json::from_slice::<Value>(body).ok())
                    .and_then(|body| body["error"]["code"].as_str().map(str::to_owned));
                (response.status().as_u16(), code)
            }
            Err(other) => panic!("expected an HTTP answer to the upgrade, got {other}"),
        }
    }

    /// Subscribes `user` to `query(args)` on a new socket and reads until the snapshot arrives.
    pub async fn watch(&self, user: &str, query: &str, args: Value) -> (String, Ws, Received) {
        let (token, signature) = self.subscribe(user, query, args).await;
        let mut ws = self.connect(user, Some(&token)).await;
        let mut received = Received::default();
        read_until(&mut ws, &mut received, Duration::from_secs(20), |r| {
            r.value(&signature).is_some()
        })
        .await;
        (signature, ws, received)
    }

    /// `watch` for the comment count of `post`, as user `u1`.
    pub async fn watch_comments(&self, post: i64) -> (String, Ws, Received) {
        self.watch("u1", "posts/stats/commentCount", json!({"postId": post}))
            .await
    }

    /// Waits until no socket, subscription or signature is left in the gateway.
    pub async fn wait_released(&self, within: Duration, why: &str) {
        wait_until(within, why, || {
            self.state.metrics().connections.get() == 0
                && self.state.metrics().subscriptions.get() == 0
                && self.state.hub().is_empty()
        })
        .await;
    }

    /// The text of `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn new_post(&self) -> i64 {
        sqlx::query_scalar("insert into posts (title, author_id) values ('t', 'a') returning id")
            .fetch_one(&self.db)
            .await
            .expect("post")
    }

    pub async fn add_comment(&self, post: i64) {
        sqlx::query("insert into comments (post_id, author_id, body) values ($1, 'a', 'hi')")
            .bind(post)
            .execute(&self.db)
            .await
            .expect("comment");
    }

    pub async fn comment_count(&self, post: i64) -> i64 {
        sqlx::query_scalar("select count(*) from comments where post_id = $1 and not deleted")
            .bind(post)
            .fetch_one(&self.db)
            .await
            .expect("count")
    }
}

/// The next JSON text frame, within `within`.
pub async fn next_event(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        match message.ok()? {
            Message::Text(text) => return serde_json::from_str(text.as_str()).ok(),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

/// Reads events until one satisfies `predicate`; panics after `within`.
pub async fn wait_for(
    ws: &mut Ws,
    within: Duration,
    mut predicate: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = next_event(ws, left)
            .await
            .expect("the expected event arrived in time");
        if predicate(&event) {
            return event;
        }
    }
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// Sends `frame` as a JSON text frame.
pub async fn send_json(ws: &mut Ws, frame: Value) {
    send_text(ws, &frame.to_string()).await;
}

/// The values one socket has received, per signature, checking that versions only grow.
#[derive(Default)]
pub struct Received {
    pub latest: std::collections::HashMap<String, (u64, Value)>,
}

impl Received {
    /// Records one event; panics if a `query:update` goes back in version.
    pub fn record(&mut self, event: &Value) {
        if event["event"] != "query:update" {
            return;
        }
        let payload = &event["payload"];
        let signature = payload["signature"].as_str().expect("signature").to_owned();
        let version = payload["version"].as_u64().expect("version");
        if let Some((previous, _)) = self.latest.get(&signature) {
            assert!(
                version > *previous,
                "version went from {previous} to {version} on {signature}"
            );
        }
        self.latest
            .insert(signature, (version, payload["data"].clone()));
    }

    pub fn value(&self, signature: &str) -> Option<&Value> {
        self.latest.get(signature).map(|(_, value)| value)
    }
}

/// Reads `ws` until `done` holds for what it has received; panics after `within`.
pub async fn read_until(
    ws: &mut Ws,
    received: &mut Received,
    within: Duration,
    mut done: impl FnMut(&Received) -> bool,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !done(received) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_event(ws, left).await {
            Some(event) => received.record(&event),
            None => panic!(
                "socket closed or timed out before converging; holds {:?}",
                received.latest
            ),
        }
    }
}

/// Sends a text `ping` and asserts the answer is a pong: the socket is open and served.
pub async fn assert_pong(ws: &mut Ws, why: &str) {
    send_text(ws, "ping").await;
    let answer = wait_for(ws, Duration::from_secs(10), |e| e["event"] == "pong").await;
    assert_eq!(answer, serde_json::json!({"event": "pong"}), "{why}");
}

/// Asserts that nothing but a pong arrives in answer to a ping: everything the server meant
/// to send before the ping has been sent, so silence here is real silence.
pub async fn assert_silent(ws: &mut Ws, why: &str) {
    send_text(ws, "ping").await;
    let next = next_event(ws, Duration::from_secs(10)).await;
    assert_eq!(next, Some(serde_json::json!({"event": "pong"})), "{why}");
}

/// Polls `{base}/readyz` until it answers 200; panics after `within`.
pub async fn wait_until_ready(http: &reqwest::Client, base: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let ready = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|response| response.status() == 200);
        if ready {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{base} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestApp {
    /// `n` comments over `posts` in ONE statement, unevenly: the k-th post gets a share
    /// proportional to k.
    pub async fn insert_uneven_comments(&self, posts: &[i64], n: i64) {
        sqlx::query(
            "insert into comments (post_id, author_id, body)
             select ($1::int8[])[1 + floor(sqrt(random()) * cardinality($1::int8[]))::int % cardinality($1::int8[])], 'bulk', 'x'
               from generate_series(1, $2)",
        )
        .bind(posts)
        .bind(n)
        .execute(&self.db)
        .await
        .expect("bulk insert");
    }
}

/// Reads until `signature`'s value equals `expected`; panics after 20 s.
pub async fn converge_to(ws: &mut Ws, received: &mut Received, signature: &str, expected: Value) {
    read_until(ws, received, Duration::from_secs(20), |r| {
        r.value(signature) == Some(&expected)
    })
    .await;
}

/// Polls `condition` every 20 ms; panics with `what` after `within`.
/// One value of a `/metrics` text, 0 when absent.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

pub async fn wait_until(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads until the server closes; returns the close code and reason.
pub async fn close_of(ws: &mut Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// A small deterministic random generator, so a failing run can be replayed.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Log lines written by one test's threads (a `MakeWriter` for `tracing_subscriber::fmt`).
#[derive(Clone, Default)]
struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The process's global subscriber, installed once before any gateway runs or any log is
/// captured: with `TEST_LOG` set, statgate's debug lines on the test's output; otherwise a
/// registry that records nothing.
///
/// Without one, a capture of [`run_with_captured_logs`] was the only dispatcher of the process,
/// and tracing-core then computes a callsite's interest from the default of the thread that
/// first reaches it: a sibling test's thread, with no subscriber, cached "never" for a line
/// such as "feed poller reconnected", and the capture missed it (a resilience test failed in the
/// full suite, never alone). With a global subscriber every thread has one, and a capture makes
/// two dispatchers, whose interests are combined.
fn install_global_subscriber() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("statgate=debug"))
                .with_test_writer()
                .try_init();
        } else {
            let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
        }
    });
}

/// Runs `test` on a runtime of its own (two worker threads) whose threads log at `filter` to a
/// capture, and returns its output and the captured lines. Other tests in this process log to
/// the global subscriber, so their lines cannot be mistaken for this test's.
pub fn run_with_captured_logs<T>(
    filter: &str,
    test: impl std::future::Future<Output = T>,
) -> (T, Vec<String>) {
    install_global_subscriber();
    let logs = CapturedLogs::default();
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .without_time()
            .with_ansi(false)
            .with_writer(logs.clone())
            .finish(),
    );
    let for_threads = dispatch.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            // for the thread's whole life: the guard is never dropped.
            std::mem::forget(tracing::dispatcher::set_default(&for_threads));
        })
        .build()
        .expect("runtime");
    let output = tracing::dispatcher::with_default(&dispatch, || runtime.block_on(test));
    drop(runtime);
    let lines = String::from_utf8_lossy(&logs.0.lock().expect("lock"))
        .lines()
        .map(str::to_owned)
        .collect();
    (output, lines)
}
