//! The `statgate` binary: parse the command line, start logging, run the chosen command.

use anyhow::Context;
use clap::Parser;
use statgate::auth::Authenticator;
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use statgate::config::{parse_duration, Settings};
use statgate::db::{self, DatabaseHandle};
use statgate::registry::Registry;
use statgate::Application;

/// jemalloc, with background threads that purge freed pages after its decay time (10 s), so
/// the memory of a burst goes back to the system once the sockets that held it close, even
/// while the gateway is idle. glibc's malloc kept it (docs/BENCHMARKS.md, "memory").
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "statgate",
    version,
    about = "Realtime stat subscriptions over WebSockets, fed by PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Apply statgate's migrations (schema `statgate` only) and exit.
    Migrate {
        /// Also apply the example application (posts, comments, reactions, measurements and
        /// their stats): for trying statgate out, its tests and its benchmarks. Demo mode
        /// always applies it.
        #[arg(long)]
        example: bool,
    },
    /// Load the registry and prepare every query against the database.
    Check,
    /// Mint a JWT with the configured secret (development only).
    Token {
        /// The user id, put in the `sub` claim (and in `STATGATE_JWT_USER_CLAIM`).
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. `30m`, `1h`, `7d`.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Generate client types from the registry and the database's column types.
    Codegen {
        #[command(subcommand)]
        target: CodegenTarget,
    },
    /// Compare every declared counter and rollup with live SQL; exits 1 on drift.
    Verify {
        /// Only this counter (its name in `statgate.counters`).
        #[arg(long)]
        counter: Option<String>,
    },
    /// Rewrite a counter or rollup from its source table.
    Refresh {
        /// The counter's name in `statgate.counters`.
        name: String,
    },
    /// GET PATH from the gateway at STATGATE_LISTEN (a wildcard address on loopback); exits 0
    /// on a 2xx answer, 1 otherwise. For container HEALTHCHECKs: needs no curl.
    Healthcheck {
        /// `/healthz` (the process answers) or `/readyz` (its database connections work).
        #[arg(default_value = "/healthz")]
        path: String,
    },
}

#[derive(Debug, Subcommand)]
enum CodegenTarget {
    /// TypeScript declarations for `@statgate/client` (migrates first unless `--no-migrate`).
    Ts {
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    statgate::telemetry::init_logging(cli.settings.log_format, cli.settings.log.as_deref());
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Healthcheck { path } = &command {
        // Needs only the listen address, not the secrets the other commands validate.
        statgate::healthcheck::probe(cli.settings.listen, path, statgate::healthcheck::TIMEOUT)?;
        return Ok(());
    }
    raise_open_files_limit();
    // Demo mode's random secrets live beside its data directory: `token` must read them there.
    let demo = cli
        .settings
        .demo
        .unwrap_or(cli.settings.database_url.is_none());
    let config = match command {
        Command::Serve => cli.settings.into_config()?,
        Command::Token { .. } if demo => cli.settings.into_config()?,
        // `token` signs with STATGATE_JWT_SECRET only; the others sign nothing.
        _ => cli.settings.into_config_without_secrets()?,
    };
    match command {
        Command::Healthcheck { .. } => Ok(()), // answered above, without the configuration
        Command::Serve => serve(config).await,
        Command::Migrate { example } => {
            let set = db::MigrationSet::for_mode(config.demo, example);
            let report = with_pool(&config, false, |pool| async move {
                Ok(db::migrate(&pool, set).await?)
            })
            .await?;
            println!(
                "migrations applied: {} new{}",
                report.applied.len(),
                if set == db::MigrationSet::WithExample {
                    " (statgate and the example application)"
                } else {
                    " (schema statgate only)"
                }
            );
            Ok(())
        }
        Command::Check => {
            let registry = &Registry::configured(&config.queries)?;
            with_pool(&config, false, |pool| async move {
                Ok(registry.check(&pool).await?)
            })
            .await?;
            println!("{} queries ok", registry.len());
            Ok(())
        }
        Command::Codegen {
            target: CodegenTarget::Ts { out },
        } => {
            let registry = &Registry::configured(&config.queries)?;
            let text = with_pool(&config, config.migrate, |pool| async move {
                Ok(statgate::codegen::typescript(registry, &pool).await?)
            })
            .await?;
            match out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(())
        }
        Command::Verify { counter } => {
            let drift = with_pool(&config, config.migrate, |pool| async move {
                Ok(statgate::counters::verify(&pool, counter.as_deref()).await?)
            })
            .await?;
            for line in &drift {
                println!("{}", statgate::counters::describe(line));
            }
            if !drift.is_empty() {
                anyhow::bail!("{} group(s) drifted from live SQL", drift.len());
            }
            println!("no drift");
            Ok(())
        }
        Command::Refresh { name } => {
            let changed = with_pool(&config, config.migrate, |pool| {
                let name = name.clone();
                async move { Ok(statgate::counters::refresh(&pool, &name).await?) }
            })
            .await?;
            println!("{name}: {changed} row(s) rewritten");
            Ok(())
        }
        Command::Token { sub, ttl } => {
            let token = Authenticator::new(&config).mint_jwt(&sub, ttl)?;
            println!("{token}");
            Ok(())
        }
    }
}

/// Opens the database (starting the embedded server if needed), migrates if `migrate`, runs
/// `work` on a pool, and stops the embedded server whatever happened.
async fn with_pool<T, F, Fut>(
    config: &statgate::Config,
    migrate: bool,
    work: F,
) -> anyhow::Result<T>
where
    F: FnOnce(sqlx::PgPool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let database = DatabaseHandle::open(config).await?;
    let result = async {
        let pool = db::connect_pool(&database.url, config).await?;
        if migrate {
            db::migrate(&pool, db::MigrationSet::for_mode(config.demo, false)).await?;
        }
        work(pool).await
    }
    .await;
    database.close().await;
    result
}

async fn serve(config: statgate::Config) -> anyhow::Result<()> {
    let demo = config.demo;
    // Registered first: from here on SIGHUP (a closed terminal, `systemctl reload`) never ends
    // the process; once the gateway runs, it reloads the registry.
    let hangups = hangups();
    let app = Application::build(config)
        .await
        .context("statgate could not start")?;
    if demo {
        let token = app
            .state()
            .auth()
            .mint_jwt("alice", std::time::Duration::from_secs(24 * 3600))?;
        println!("{}", demo_banner(&app, &token));
    }
    if let Some(hangups) = hangups {
        tokio::spawn(reload_on_hangup(hangups, app.state().clone()));
    }
    let shutdown = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received, draining");
        shutdown.cancel();
    });
    app.run().await?;
    Ok(())
}

/// What a newcomer needs after `cargo run`: where to look, who they are, how to reach the
/// database, and how to stop.
fn demo_banner(app: &Application, token: &str) -> String {
    let mut banner = format!(
        "\n  statgate demo is running: open http://{}/\n  demo user alice, JWT: {token}\n",
        app.address()
    );
    if let Some(database) = app.embedded_database() {
        banner.push_str(&format!(
            "  database: psql {}\n  data directory: {}\n",
            database.url("postgres"),
            database.data_dir().display()
        ));
        if let Some(requested) = database.relocated_from() {
            banner.push_str(&format!(
                "    (the user that runs postgres cannot enter {}, so the data lives here)\n",
                requested.display()
            ));
        }
    }
    banner.push_str("  Ctrl-C to stop\n");
    banner
}

/// Raises the soft open-files limit to the hard one (systemd's default soft limit is 1,024):
/// every socket is a descriptor, and `STATGATE_MAX_CONNECTIONS` defaults to this limit.
fn raise_open_files_limit() {
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %err, "cannot raise the open-files limit");
    }
}

#[cfg(unix)]
type Hangups = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangups = std::convert::Infallible;

fn hangups() -> Option<Hangups> {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangups) => Some(hangups),
        Err(err) => {
            tracing::warn!(error = %err, "cannot handle SIGHUP: it will end the process");
            None
        }
    }
    #[cfg(not(unix))]
    None
}

/// Reloads the registry on every SIGHUP; a registry that fails its checks leaves the one in
/// force as it was.
#[cfg(unix)]
async fn reload_on_hangup(mut hangups: Hangups, state: statgate::AppState) {
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP received, reloading the registry");
        match statgate::reload::reload_registry(&state).await {
            Ok(report) => tracing::info!(
                added = report.added,
                changed = report.changed,
                removed = report.removed,
                resynced = report.signatures.resynced,
                ended = report.signatures.retired,
                "registry reloaded"
            ),
            Err(err) => {
                tracing::error!(error = %err, "registry reload refused; the previous registry stays in force")
            }
        }
    }
}

#[cfg(not(unix))]
async fn reload_on_hangup(hangups: Hangups, _state: statgate::AppState) {
    match hangups {}
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
