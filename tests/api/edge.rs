//! The TCP edge: connection limits at accept, and the header, request and keep-alive timeouts,
//! in process and against the real binary under a slowloris attack.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::MaybeTlsStream;

use crate::helpers::{assert_pong, fresh_database, queries_dir, wait_for, wait_until, TestApp, Ws};

const WAIT: Duration = Duration::from_secs(10);

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A TCP connection to `to` from the loopback address `from`.
async fn try_connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    try_connect_from(from, to).await.expect("connect")
}

/// A WebSocket (with `token`, if any) from the loopback address `from`.
async fn websocket_from(from: IpAddr, to: SocketAddr, jwt: &str, token: Option<&str>) -> Ws {
    let mut url = format!("ws://{to}/realtime/ws?authToken={jwt}");
    if let Some(token) = token {
        url.push_str(&format!("&token={token}"));
    }
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "statgate.realtime.v1".parse().expect("header"),
    );
    let stream = connect_from(from, to).await;
    let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .expect("websocket upgrade");
    ws
}

/// Everything the server sends until it closes (within `within`).
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> String {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut bytes)).await;
    assert!(read.is_ok(), "the server closed within {within:?}");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Sends `GET /healthz` on `stream` and reads the 200 (the connection is being served).
async fn assert_served(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("request");
    let mut head = [0u8; 12];
    tokio::time::timeout(WAIT, stream.read_exact(&mut head))
        .await
        .expect("answered in time")
        .expect("a response");
    assert_eq!(&head, b"HTTP/1.1 200");
}

fn assert_refused(response: &str, scope: &str) {
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    let body: Value =
        serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap_or("")).expect("a JSON body");
    assert_eq!(body["error"]["code"], "too_many_connections", "{response}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(scope)),
        "{response}"
    );
}

#[tokio::test]
async fn connections_over_the_total_or_per_address_limit_get_503_at_accept_and_websockets_count() {
    let app = TestApp::spawn_with(|config| {
        config.http.max_connections = 4;
        config.http.max_connections_per_ip = 2;
        config.http.keep_alive_timeout = Duration::from_secs(1);
    })
    .await;
    // The harness's readiness probe left a keep-alive connection: the keep-alive timeout
    // closes it.
    wait_until(WAIT, "idle keep-alive connections closed", || {
        app.state.metrics().tcp_connections.get() == 0
    })
    .await;

    let ws = websocket_from(ip(2), app.address, &app.jwt("u1"), None).await;
    let _second = connect_from(ip(2), app.address).await;
    let mut third = connect_from(ip(2), app.address).await;
    assert_refused(&read_to_close(&mut third, WAIT).await, "address");

    let mut fourth = connect_from(ip(3), app.address).await;
    let _fifth = connect_from(ip(3), app.address).await;
    let mut sixth = connect_from(ip(4), app.address).await;
    assert_refused(&read_to_close(&mut sixth, WAIT).await, "server");
    assert_served(&mut fourth).await;

    drop(ws);
    wait_until(WAIT, "the closed WebSocket gave its place back", || {
        app.state.metrics().tcp_connections.get() == 3
    })
    .await;
    let mut seventh = connect_from(ip(4), app.address).await;
    assert_served(&mut seventh).await;
    // Read in process: the server is full, so `GET /metrics` would be refused too.
    let metrics = app.state.metrics().render();
    for scope in ["address", "server"] {
        assert!(
            metrics.contains(&format!(
                "statgate_refused_connections_total{{scope=\"{scope}\"}} 1"
            )),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn a_websocket_outlives_the_request_timeout_and_a_dribbled_body_gets_408() {
    let app = TestApp::spawn_with(|config| {
        config.http.request_timeout = Duration::from_secs(1);
    })
    .await;
    let mut ws = app.connect("u1", None).await;

    let mut slow = connect_from(ip(1), app.address).await;
    slow.write_all(
        b"POST /realtime/subscribe HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{",
    )
    .await
    .expect("head");
    let started = Instant::now();
    let response = read_to_close(&mut slow, WAIT).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("\"request_timeout\""), "{response}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Twice the request timeout after the upgrade, the socket is still served.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_pong(&mut ws, "the request timeout does not cut upgraded sockets").await;
}

// --- the slowloris attack against the real binary -----------------------------------------

const JWT_SECRET: &str = "edge-test-jwt-secret-0123456789abcdefghij";
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(1);
/// Scheduling slack on top of a timeout, on a small shared machine under attack.
const SLACK: Duration = Duration::from_secs(2);
const ATTACK_CONNECTIONS: usize = 5_000;
/// Connections attempted per 100 ms: the attack lasts about 10 s and wants some 800
/// half-open connections at a time, over the test's per-address limit of 600.
const ATTACK_STEP: usize = 50;

/// A `statgate serve` child process with a descriptor limit of 2,000.
struct Gateway {
    child: tokio::process::Child,
    address: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Gateway {
    async fn start(database_url: &str) -> Gateway {
        let mut child = tokio::process::Command::new("prlimit")
            .args([
                "--nofile=2000:2000",
                "--",
                env!("CARGO_BIN_EXE_statgate"),
                "serve",
            ])
            .env("DATABASE_URL", database_url)
            .env("STATGATE_QUERIES", queries_dir())
            .env("STATGATE_JWT_SECRET", JWT_SECRET)
            .env(
                "STATGATE_TOKEN_SECRET",
                "edge-test-token-secret-0123456789abcdefgh",
            )
            .env("STATGATE_LISTEN", "127.0.0.1:0")
            .env("STATGATE_HEADER_READ_TIMEOUT_SECS", "2")
            .env("STATGATE_REQUEST_TIMEOUT_SECS", "2")
            .env("STATGATE_KEEP_ALIVE_TIMEOUT_SECS", "1")
            .env("STATGATE_MAX_CONNECTIONS_PER_IP", "600")
            .env("STATGATE_MAX_SOCKETS_PER_IP", "100")
            .env("STATGATE_SUBSCRIBE_PER_SEC_PER_USER", "0")
            .env("NO_COLOR", "1")
            .env_remove("STATGATE_DEMO")
            .env_remove("STATGATE_MAX_CONNECTIONS")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("prlimit runs statgate");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let address = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().expect("log").push_str(&format!("{line}\n"));
                if let Some(address) = listening_address(&line) {
                    return address;
                }
            }
            panic!(
                "statgate exited before listening:\n{}",
                log.lock().expect("log")
            );
        })
        .await
        .expect("statgate listens within 60 s");
        let rest = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                rest.lock().expect("log").push_str(&format!("{line}\n"));
            }
        });
        Gateway {
            child,
            address,
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// SIGTERM, then the exit status within 20 s.
    async fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("statgate exits within 20 s of SIGTERM")
            .expect("exit status")
    }
}

/// The `address=` field of the "statgate listening" log line, without colour codes.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let plain: String = strip_ansi(line);
    if !plain.contains("statgate listening") {
        return None;
    }
    plain
        .split_whitespace()
        .find_map(|field| field.strip_prefix("address="))
        .and_then(|address| address.parse().ok())
}

fn strip_ansi(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// The three shapes of half-open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Sends a request head a byte at a time, never finishing it.
    DribbledHeaders,
    /// Sends a whole head announcing a body, then the body a byte at a time.
    DribbledBody,
    /// Sends one request, reads the answer, then stays silent on the kept-alive connection.
    IdleKeepAlive,
}

impl Kind {
    /// The timeout that must close it, counted from the moment `Attack::run` starts its clock.
    fn limit(self) -> Duration {
        match self {
            Kind::DribbledHeaders => HEADER_READ_TIMEOUT,
            Kind::DribbledBody => REQUEST_TIMEOUT,
            Kind::IdleKeepAlive => KEEP_ALIVE_TIMEOUT,
        }
    }
}

/// What became of one attacking connection.
#[derive(Debug)]
struct Outcome {
    kind: Kind,
    /// From the start of its timeout to the server's close; `None`: never closed.
    closed_after: Option<Duration>,
    /// The first line the server sent, if any.
    status: String,
}

impl Outcome {
    fn refused(&self) -> bool {
        self.status.starts_with("HTTP/1.1 503")
    }
}

/// One attacking connection, kept half-open until the server closes it or `give_up` passes.
async fn attack(to: SocketAddr, kind: Kind, give_up: Instant) -> Outcome {
    let outcome = |closed_after, status: &[u8]| Outcome {
        kind,
        closed_after,
        status: String::from_utf8_lossy(status)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
    };
    let Ok(Ok(mut stream)) = tokio::time::timeout_at(give_up, try_connect_from(ip(1), to)).await
    else {
        return outcome(None, b"not accepted");
    };
    let (head, drip): (&[u8], &[u8]) = match kind {
        Kind::DribbledHeaders => (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ", b"a"),
        Kind::DribbledBody => (
            b"POST /realtime/subscribe HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{",
            b" ",
        ),
        Kind::IdleKeepAlive => (b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", b""),
    };
    let mut clock = Instant::now();
    let mut received = Vec::new();
    if stream.write_all(head).await.is_err() {
        return outcome(Some(clock.elapsed()), b"closed before the head was written");
    }
    let mut buf = [0u8; 4096];
    if kind == Kind::IdleKeepAlive {
        // The keep-alive clock starts once the answer is in.
        while !String::from_utf8_lossy(&received).contains("\"ok\"}") {
            match tokio::time::timeout_at(give_up, stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buf[..n]),
                Ok(_) => return outcome(Some(clock.elapsed()), &received),
                Err(_) => return outcome(None, &received),
            }
        }
        clock = Instant::now();
        received.clear();
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(n) if n > 0 => received.extend_from_slice(&buf[..n]),
                _ => return outcome(Some(clock.elapsed()), &received),
            },
            _ = tick.tick(), if !drip.is_empty() => {
                if stream.write_all(drip).await.is_err() {
                    return outcome(Some(clock.elapsed()), &received);
                }
            }
            _ = tokio::time::sleep_until(give_up) => return outcome(None, &received),
        }
    }
}

/// What a legitimate client from another address saw during the attack.
#[derive(Default)]
struct Probes {
    rounds: usize,
    slowest: Duration,
    failures: Vec<String>,
}

/// One legitimate round from 127.0.0.2: `/healthz`, a subscribe, and the WebSocket's
/// snapshot, each within 1 s.
async fn probe(to: SocketAddr, jwt: &str, post: i64, probes: &mut Probes) {
    const WITHIN: Duration = Duration::from_secs(1);
    let http = reqwest::Client::builder()
        .local_address(ip(2))
        .pool_max_idle_per_host(0)
        .timeout(WITHIN)
        .build()
        .expect("client");
    let mut step = |what: &str, started: Instant, ok: Result<(), String>| {
        let took = started.elapsed();
        probes.slowest = probes.slowest.max(took);
        match ok {
            Ok(()) if took <= WITHIN => {}
            Ok(()) => probes.failures.push(format!("{what} took {took:?}")),
            Err(err) => probes
                .failures
                .push(format!("{what}: {err} after {took:?}")),
        }
    };
    let started = Instant::now();
    let health = http.get(format!("http://{to}/healthz")).send().await;
    step(
        "healthz",
        started,
        health
            .map_err(|e| e.to_string())
            .and_then(|r| match r.status().as_u16() {
                200 => Ok(()),
                other => Err(format!("status {other}")),
            }),
    );
    let started = Instant::now();
    let subscribed = async {
        let reply = http
            .post(format!("http://{to}/realtime/subscribe"))
            .json(&json!({"queryName": "posts/stats/commentCount", "args": {"postId": post}, "authToken": jwt}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = reply.status();
        let body: Value = reply.json().await.map_err(|e| e.to_string())?;
        match body["token"].as_str() {
            Some(token) if status == 200 => Ok(token.to_owned()),
            _ => Err(format!("status {status}: {body}")),
        }
    }
    .await;
    let token = subscribed.clone().ok();
    step("subscribe", started, subscribed.map(|_| ()));
    if let Some(token) = token {
        let started = Instant::now();
        let snapshot = tokio::time::timeout(WITHIN, async {
            let mut ws = websocket_from(ip(2), to, jwt, Some(&token)).await;
            wait_for(&mut ws, WITHIN, |e| e["event"] == "query:update").await;
        })
        .await
        .map_err(|_| "no snapshot".to_owned());
        step("websocket snapshot", started, snapshot);
    }
    probes.rounds += 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_attack_of_5000_half_open_connections_is_shed_and_healthz_and_subscribe_still_answer(
) {
    rlimit::increase_nofile_limit(u64::MAX).expect("the test holds thousands of sockets");
    let (url, db) = fresh_database().await;
    let post: i64 =
        sqlx::query_scalar("insert into posts (title, author_id) values ('t', 'a') returning id")
            .fetch_one(&db)
            .await
            .expect("post");
    let gateway = Gateway::start(&url).await;
    let to = gateway.address;
    let now = chrono::Utc::now().timestamp();
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "legit", "iat": now, "exp": now + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("jwt");

    let give_up = Instant::now() + Duration::from_secs(25);
    let kinds = [
        Kind::DribbledHeaders,
        Kind::DribbledBody,
        Kind::IdleKeepAlive,
    ];
    // The attack runs on a runtime and thread of its own, so that its 5,000 tasks do not
    // delay the legitimate client's (what is timed is the gateway, not this process).
    let attack_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("attack runtime");
    let attackers = std::thread::spawn(move || {
        attack_runtime.block_on(async move {
            let mut tasks = Vec::with_capacity(ATTACK_CONNECTIONS);
            let mut pace = tokio::time::interval(Duration::from_millis(100));
            for n in 0..ATTACK_CONNECTIONS {
                if n % ATTACK_STEP == 0 {
                    pace.tick().await;
                }
                tasks.push(tokio::spawn(attack(to, kinds[n % kinds.len()], give_up)));
            }
            let mut outcomes = Vec::with_capacity(tasks.len());
            for task in tasks {
                outcomes.push(task.await.expect("attacker task"));
            }
            outcomes
        })
    });

    let mut probes = Probes::default();
    while !attackers.is_finished() && Instant::now() < give_up {
        probe(to, &jwt, post, &mut probes).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let outcomes = tokio::task::spawn_blocking(move || attackers.join().expect("attack thread"))
        .await
        .expect("attack joined");
    let metrics = reqwest::get(format!("http://{to}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let log = gateway.log();
    let exit = gateway.stop().await;

    let refused = outcomes.iter().filter(|o| o.refused()).count();
    let never_closed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.closed_after.is_none())
        .collect();
    let mut report = format!(
        "{} probe rounds, slowest step {:?}; {refused} of {} connections refused at accept, {} never closed",
        probes.rounds,
        probes.slowest,
        outcomes.len(),
        never_closed.len()
    );
    for kind in kinds {
        let of_kind = outcomes.iter().filter(|o| o.kind == kind && !o.refused());
        let slowest = of_kind.filter_map(|o| o.closed_after).max();
        report.push_str(&format!(
            "\n{kind:?}: slowest close {slowest:?} (limit {:?})",
            kind.limit()
        ));
    }
    println!("{report}");
    assert!(
        probes.failures.is_empty(),
        "legitimate requests failed during the attack: {:?}\n{report}\n{log}",
        &probes.failures[..probes.failures.len().min(10)]
    );
    assert!(probes.rounds >= 10, "{report}");
    assert!(
        never_closed.is_empty(),
        "{:?}\n{report}",
        &never_closed[..never_closed.len().min(5)]
    );
    for outcome in &outcomes {
        let bound = if outcome.refused() {
            SLACK
        } else {
            outcome.kind.limit() + SLACK
        };
        let closed_after = outcome.closed_after.unwrap_or(Duration::MAX);
        assert!(
            closed_after <= bound,
            "{outcome:?} over {bound:?}\n{report}"
        );
    }
    let body_timeouts = outcomes
        .iter()
        .filter(|o| o.kind == Kind::DribbledBody && o.status.starts_with("HTTP/1.1 408"))
        .count();
    assert!(body_timeouts > 0, "dribbled bodies get 408\n{report}");
    assert!(refused > 0, "the per-address limit engaged\n{report}");
    assert!(
        metrics.contains("statgate_refused_connections_total{scope=\"address\"}"),
        "{metrics}"
    );
    assert!(
        exit.success(),
        "statgate exits 0 on SIGTERM: {exit:?}\n{log}"
    );
}
