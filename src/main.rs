//! The `statgate` binary: parse the command line, start logging, run the chosen command.

use anyhow::Context;
use clap::Parser;
use statgate::auth::Authenticator;
use statgate::config::{Cli, CodegenTarget, Command};
use statgate::db::{self, DatabaseHandle};
use statgate::registry::Registry;
use statgate::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    statgate::telemetry::init_logging();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Healthcheck { path } = &command {
        // Needs only the listen address, not the secrets the other commands validate.
        statgate::healthcheck::probe(cli.settings.listen, path, statgate::healthcheck::TIMEOUT)?;
        return Ok(());
    }
    let config = cli.settings.into_config()?;
    match command {
        Command::Healthcheck { .. } => Ok(()), // answered above, without the configuration
        Command::Serve => serve(config).await,
        Command::Migrate => {
            with_pool(&config, true, |_| async { Ok(()) }).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Check => {
            let registry = &Registry::load(&config.queries_dir)?;
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
            let registry = &Registry::load(&config.queries_dir)?;
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
            db::migrate(&pool).await?;
        }
        work(pool).await
    }
    .await;
    database.close().await;
    result
}

async fn serve(config: statgate::Config) -> anyhow::Result<()> {
    let demo = config.demo;
    let app = Application::build(config)
        .await
        .context("statgate could not start")?;
    if demo {
        let token = app
            .state()
            .auth
            .mint_jwt("alice", std::time::Duration::from_secs(24 * 3600))?;
        println!(
            "\n  statgate demo is running: open http://{}/\n  demo user alice, JWT: {token}\n",
            app.address()
        );
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
