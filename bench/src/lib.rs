//! `statgate-bench`: the load generator that proves (or disproves) the performance targets.
//!
//! It drives a *running* statgate and its database the way real clients and writers do: real
//! WebSockets (many source addresses past ~28k sockets), real `POST /realtime/subscribe`, real
//! SQL writes into the example application. Every run is bounded in time, prints one human
//! table and writes the same figures as JSON for comparing runs. Latencies are measured from
//! the moment a write is issued to the moment a client holds the resulting value, so they are
//! an upper bound on commit→client. Gateway RSS and CPU come from `/proc/<pid>`; statement
//! counts from the gateway's own counters and, when installed, `pg_stat_statements`.

pub mod clients;
pub mod fanout;
pub mod floor;
pub mod idle;
pub mod memory;
pub mod report;
pub mod spread;
pub mod storm;
pub mod subscribe;

use std::net::IpAddr;

use clap::{Args, Parser, Subcommand};

pub use report::Report;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Setup(String),
}

#[derive(Debug, Parser)]
#[command(
    name = "statgate-bench",
    about = "Load generator for a running statgate"
)]
pub struct BenchCli {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub mode: Mode,
}

/// The gateway and database under test.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Base URL of the gateway.
    #[arg(
        long,
        env = "BENCH_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// The gateway's database (writes and final-value checks go here).
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// The gateway's HS256 JWT secret, to mint authTokens.
    #[arg(
        long,
        env = "STATGATE_JWT_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// The gateway's process id, for RSS and CPU readings from /proc.
    #[arg(long, global = true)]
    pub gateway_pid: Option<u32>,
    /// Source addresses for sockets, rotated (127.0.0.1,127.0.0.2,... for more than ~28k).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1",
        global = true
    )]
    pub sources: Vec<IpAddr>,
    /// Sockets being opened at once.
    #[arg(long, default_value_t = 256, global = true)]
    pub connect_concurrency: usize,
    /// Write the JSON report here (default: target/bench/<mode>-<unix time>.json).
    #[arg(long, global = true)]
    pub json: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Mode {
    /// S sockets on one signature; one change at a time; first and last delivery latency.
    Fanout(fanout::FanoutArgs),
    /// S sockets over K signatures; writers at C changes/s for T seconds; latency, rate, lost values.
    Spread(spread::SpreadArgs),
    /// Hold N sockets for T seconds; gateway RSS per socket and CPU.
    Idle(idle::IdleArgs),
    /// One user subscribes to many large values, then closes: gateway RSS held, at peak, and
    /// after the close.
    Memory(memory::MemoryArgs),
    /// POST /realtime/subscribe at a given concurrency; requests/s and latency.
    Subscribe(subscribe::SubscribeArgs),
    /// N clients drop and resubscribe at once; time until all hold current values.
    ReconnectStorm(storm::StormArgs),
    /// `fanout` against a minimal WebSocket server: what this machine gives without statgate.
    Floor(floor::FloorArgs),
    /// The minimal server `floor` starts (not for direct use).
    #[command(hide = true)]
    FloorServer(floor::FloorServerArgs),
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Fanout(_) => "fanout",
            Mode::Spread(_) => "spread",
            Mode::Idle(_) => "idle",
            Mode::Memory(_) => "memory",
            Mode::Subscribe(_) => "subscribe",
            Mode::ReconnectStorm(_) => "reconnect-storm",
            Mode::Floor(_) => "floor",
            Mode::FloorServer(_) => "floor-server",
        }
    }
}

/// Runs one benchmark and returns its report.
pub async fn run(cli: BenchCli) -> Result<Report, BenchError> {
    raise_open_files_limit();
    let target = cli.target;
    match cli.mode {
        Mode::Fanout(args) => fanout::run(&target, args).await,
        Mode::Spread(args) => spread::run(&target, args).await,
        Mode::Idle(args) => idle::run(&target, args).await,
        Mode::Memory(args) => memory::run(&target, args).await,
        Mode::Subscribe(args) => subscribe::run(&target, args).await,
        Mode::ReconnectStorm(args) => storm::run(&target, args).await,
        Mode::Floor(args) => floor::run(&target, args).await,
        Mode::FloorServer(_) => Err(BenchError::Setup(
            "floor-server is the server `floor` starts; run it through the binary".into(),
        )),
    }
}

/// Tens of thousands of sockets need more than the usual 1,024 descriptors.
fn raise_open_files_limit() {
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: cannot raise the open-files limit: {err}");
    }
}
