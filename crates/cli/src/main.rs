//! `tether`: the command line.
//!
//! `tether serve` starts a machine: the embedded demo rover when no config is given, or the
//! machine a viam-server-style JSON config describes. It refuses to start on any config error
//! (exit code 2) and, on SIGINT or SIGTERM, stops taking connections, lets open calls finish,
//! and brings every actuator to rest before exiting.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tether_machine::config::{Config, split_host_port};
use tether_machine::machine::Machine;
use tether_machine::server::{self, ServerOptions};

#[derive(Parser)]
#[command(
    name = "tether",
    version,
    about = "Tether: robot connectivity and safety"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a machine (the embedded demo rover when no --config is given).
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Machine config file (viam-server's JSON shape).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address, overriding network.bind_address (e.g. 127.0.0.1:8080, :8080).
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
    /// Serve plaintext (h2c) even when TLS certificates are configured.
    #[arg(long)]
    no_tls: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (mut config, source) = match &args.config {
        Some(path) => (Config::load(path)?, format!("config {}", path.display())),
        None => (
            Config::parse(tether_machine::DEMO_CONFIG, "embedded demo")?,
            "the embedded demo machine (no --config given)".to_string(),
        ),
    };
    if let Some(bind) = args.bind {
        split_host_port(&bind).map_err(|e| anyhow::anyhow!("--bind: {e}"))?;
        config.network.bind_address = bind;
    }
    if args.no_tls {
        config.network.no_tls = true;
    }
    config
        .network
        .check_servable()
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let shutdown = shutdown_signal()?;
    let machine = Arc::new(Machine::new(&config));
    tracing::info!(
        "tether {} serving {source}: {} resources",
        env!("CARGO_PKG_VERSION"),
        machine.resources().len()
    );
    let listeners = server::bind(&config.network.bind_address)
        .await
        .context("cannot start the server")?;
    let addresses: Vec<_> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    for addr in &addresses {
        tracing::info!("listening on {addr} (gRPC over h2c, plaintext)");
    }
    // Tell the user what to dial: the configured address, or the real one for port 0.
    let dial = match (
        split_host_port(&config.network.bind_address),
        addresses.first(),
    ) {
        (Ok((_, 0)), Some(actual)) => actual.to_string(),
        _ => config.network.bind_address.clone(),
    };
    tracing::info!(
        "connect with address \"{dial}\", e.g. Python: RobotClient.at_address(\"{dial}\", \
         RobotClient.Options(dial_options=DialOptions(insecure=True, disable_webrtc=True)))"
    );
    let options = ServerOptions {
        max_connections: config.network.max_connections,
        ..ServerOptions::default()
    };
    server::run(listeners, machine.clone(), options, shutdown).await?;
    let failures = machine.stop_all(None).await;
    for f in &failures {
        tracing::error!("{f}");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers now (so a signal that arrives while the server is
/// still starting is not lost) and returns a future that resolves on the first of them.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    })
}
