//! `tether`: the command line.
//!
//! `tether serve` starts a machine: the embedded demo rover when no config is given, or the
//! machine a viam-server-style JSON config describes. It refuses to start on any config error
//! (exit code 2) and, on SIGINT or SIGTERM, stops taking connections, lets open calls finish,
//! and brings every actuator to rest before exiting. `tether cert` writes a self-signed
//! certificate for a machine name, for `network.tls_cert_file`/`tls_key_file`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tether_machine::auth::Authenticator;
use tether_machine::config::{Config, parse_go_duration, split_host_port};
use tether_machine::machine::Machine;
use tether_machine::server::{self, ServerOptions};
use tether_machine::tls;

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
    /// Write a self-signed TLS certificate and key (PEM) for a machine name.
    Cert(CertArgs),
    /// Connect to a machine, list its resources, and print connection events as they happen.
    Connect(ConnectArgs),
    /// Serve WebRTC signaling for a fleet: machines behind NAT answer through it, callers
    /// reach them by name (in memory, or many instances on one Redis).
    Signal(SignalArgs),
}

#[derive(clap::Args)]
struct SignalArgs {
    /// The service's config file (JSON: bind_address, api_keys with their grants,
    /// redis_url, ice_servers, turn_rest, ...).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address, overriding bind_address.
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
}

#[derive(clap::Args)]
struct ConnectArgs {
    /// The machine's address, host:port.
    address: String,
    /// API key (with --api-key-id).
    #[arg(long, requires = "api_key_id")]
    api_key: Option<String>,
    /// API key id (with --api-key).
    #[arg(long, requires = "api_key")]
    api_key_id: Option<String>,
    /// Plaintext (h2c) instead of TLS.
    #[arg(long, conflicts_with = "ca")]
    insecure: bool,
    /// Verify the machine's TLS certificate against this CA file (PEM), e.g. its self-signed one.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// How often to check the connection while nothing else happens.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_go_duration)]
    check_interval: std::time::Duration,
    /// Signal WebRTC through this service (a fleet's `tether signal`, host:port) instead of
    /// the machine's address; the address is then the machine's name there.
    #[arg(long, value_name = "ADDR")]
    signaling_address: Option<String>,
    /// WebRTC through a TURN relay only.
    #[arg(long, conflicts_with = "force_p2p")]
    force_relay: bool,
    /// WebRTC peer to peer only (host and server-reflexive candidates, never a relay).
    #[arg(long)]
    force_p2p: bool,
    /// Never fall back to direct gRPC: WebRTC or nothing.
    #[arg(long)]
    webrtc_only: bool,
    /// Set motor NAME to POWER (-1 to 1) once connected, holding a session: when this program
    /// stops, the machine stops the motor within its heartbeat window.
    #[arg(long, value_name = "NAME=POWER")]
    set_power: Option<String>,
    /// Exit once the resources (and any command) are done instead of watching the connection.
    #[arg(long)]
    once: bool,
}

#[derive(clap::Args)]
struct CertArgs {
    /// Names the certificate is valid for (DNS names or IP addresses); localhost and 127.0.0.1
    /// are always included.
    #[arg(long = "name", value_name = "NAME", required = true)]
    names: Vec<String>,
    /// Where to write the certificate.
    #[arg(long, value_name = "FILE", default_value = "cert.pem")]
    cert: PathBuf,
    /// Where to write the private key (created readable by the owner only).
    #[arg(long, value_name = "FILE", default_value = "key.pem")]
    key: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
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

/// The log filter: `RUST_LOG` (default `info`). The WebRTC engine's own records (webrtc-rs
/// logs through `log`, bridged here) show only when `RUST_LOG` names them, e.g.
/// `RUST_LOG=info,webrtc_sctp=debug`: at `info` they are chatty, and what matters of their
/// errors reaches the machine's own log as the machine's errors.
fn log_filter() -> tracing_subscriber::EnvFilter {
    let asked = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::EnvFilter::try_new(with_engine_quiet(&asked))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// `asked`, plus `CRATE=off` for every engine crate none of its directives targets.
fn with_engine_quiet(asked: &str) -> String {
    const ENGINE: &[&str] = &[
        "webrtc",
        "webrtc_data",
        "webrtc_sctp",
        "webrtc_ice",
        "webrtc_dtls",
        "webrtc_srtp",
        "webrtc_mdns",
        "webrtc_util",
        "turn",
        "stun",
        "interceptor",
        "sdp",
        "rtp",
        "rtcp",
    ];
    // A directive's target: what comes before `=` (and before any `[span]`), e.g.
    // `webrtc_sctp::association` in `webrtc_sctp::association=trace`.
    let targets: Vec<&str> = asked
        .split(',')
        .filter_map(|d| d.split_once('=').map(|(t, _)| t))
        .map(|t| t.split('[').next().unwrap_or(t).trim())
        .collect();
    let mut filter = asked.to_string();
    for engine in ENGINE {
        let named = targets
            .iter()
            .any(|t| *t == *engine || t.starts_with(&format!("{engine}::")));
        if !named {
            filter.push_str(&format!(",{engine}=off"));
        }
    }
    filter
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
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
        Command::Cert(args) => cert(args),
        Command::Connect(args) => runtime.block_on(connect(args)),
        Command::Signal(args) => runtime.block_on(signal(args)),
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
    let tls = match config.network.tls() {
        Some((cert, key)) => {
            Some(tls::server_config(cert, key).map_err(|e| anyhow::anyhow!("{e}"))?)
        }
        None => None,
    };
    let auth = match &config.auth {
        Some(a) => {
            let audience = config.network.fqdn.as_deref().unwrap_or("tether");
            Some(Arc::new(
                Authenticator::new(audience, &a.api_keys).map_err(|e| anyhow::anyhow!("{e}"))?,
            ))
        }
        None => None,
    };

    let shutdown = shutdown_signal()?;
    let machine = Arc::new(Machine::new(&config)?);
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
    // Bound before the machine says it is listening: a client may heartbeat at once.
    let datagram_sockets = if config.network.heartbeat_datagrams {
        server::bind_datagrams(&addresses).await
    } else {
        Vec::new()
    };
    let transport = if tls.is_some() {
        "TLS, ALPN h2 and http/1.1"
    } else {
        "h2c, plaintext"
    };
    for addr in &addresses {
        tracing::info!("listening on {addr} (gRPC over {transport})");
    }
    match &config.auth {
        Some(a) => tracing::info!("authentication required: {} API key(s)", a.api_keys.len()),
        None if addresses.iter().any(|a| !a.ip().is_loopback()) => tracing::warn!(
            "NO AUTHENTICATION: this machine is open to anyone who can reach {addresses:?}; \
             configure auth.handlers with API keys, or bind to localhost"
        ),
        None => tracing::info!("no authentication (listening on loopback only)"),
    }
    // Tell the user what to dial: the configured address, or the real one for port 0.
    let dial = match (
        split_host_port(&config.network.bind_address),
        addresses.first(),
    ) {
        (Ok((_, 0)), Some(actual)) => actual.to_string(),
        _ => config.network.bind_address.clone(),
    };
    let python_options = match (tls.is_some(), config.auth.is_some()) {
        (false, false) => {
            "RobotClient.Options(dial_options=DialOptions(insecure=True, disable_webrtc=True))"
        }
        (true, false) => "RobotClient.Options(dial_options=DialOptions(disable_webrtc=True))",
        (false, true) => {
            "RobotClient.Options.with_api_key(KEY, KEY_ID) with dial_options.insecure = True"
        }
        (true, true) => {
            "RobotClient.Options.with_api_key(KEY, KEY_ID) with dial_options.disable_webrtc = True"
        }
    };
    tracing::info!(
        "connect with address \"{dial}\", e.g. Python: RobotClient.at_address(\"{dial}\", {python_options})"
    );
    let options = ServerOptions {
        connection: server::ConnectionOptions {
            max_connections: config.network.max_connections,
            max_connections_per_address: config.network.max_connections_per_address,
            idle_timeout: config.network.idle_timeout,
            tls,
            ..Default::default()
        },
        auth,
        webrtc: (!config.network.disable_webrtc).then(|| server::WebRtcOptions {
            ice_servers: config.network.ice_servers.clone(),
            max_peers: config.network.max_webrtc_peers,
            remote: config
                .cloud
                .as_ref()
                .map(|c| tether_signal::answer_client::RemoteSignaling {
                    address: c.signaling_address.clone(),
                    insecure: c.signaling_insecure,
                    hosts: vec![c.fqdn.clone()],
                    api_key: c.api_key.clone(),
                }),
            aliases: config
                .cloud
                .iter()
                .flat_map(|c| std::iter::once(c.fqdn.clone()).chain(c.local_fqdn.clone()))
                .collect(),
            ..server::WebRtcOptions::default()
        }),
        fqdn: config.network.fqdn.clone(),
        bind_address: config.network.bind_address.clone(),
        allowed_origins: config.network.allowed_origins.clone(),
    };
    server::run(
        listeners,
        datagram_sockets,
        machine.clone(),
        options,
        shutdown,
    )
    .await?;
    let failures = machine.stop_all(None).await;
    for f in &failures {
        tracing::error!("{f}");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn signal(args: SignalArgs) -> anyhow::Result<()> {
    use tether_signal::standalone::{SignalConfig, serve};
    let mut config = match &args.config {
        Some(path) => SignalConfig::load(path)?,
        None => SignalConfig::parse("{}", "the default config")?,
    };
    if let Some(bind) = args.bind {
        tether_rpc::address::split_host_port(&bind).context("bad --bind address")?;
        config.bind_address = bind;
    }
    let shutdown = shutdown_signal()?;
    let transport = if config.tls.is_some() {
        "TLS, ALPN h2 and http/1.1"
    } else {
        "h2c, plaintext"
    };
    let keys = config.keys.len();
    serve(config, shutdown, |started| {
        tracing::info!(
            "tether {} signaling service: {}",
            env!("CARGO_PKG_VERSION"),
            match &started.instance {
                Some(id) => format!("instance {id} on Redis"),
                None => "in memory (one instance)".into(),
            }
        );
        if keys == 0 {
            tracing::warn!("no api_keys: anyone on this host may answer for and call any machine");
        }
        for addr in &started.addresses {
            tracing::info!("listening on {addr} (signaling over {transport})");
        }
    })
    .await?;
    tracing::info!("stopped");
    Ok(())
}

async fn connect(args: ConnectArgs) -> anyhow::Result<()> {
    use tether_client::{ConnectionEvent, Options, RobotClient};
    let mut options = match (&args.api_key, &args.api_key_id) {
        (Some(key), Some(id)) => Options::with_api_key(key.clone(), id.clone()),
        _ => Options::default(),
    };
    if args.insecure {
        options = options.insecure();
    }
    if let Some(ca) = &args.ca {
        options = options.with_ca(ca.clone());
    }
    if let Some(s) = &args.signaling_address {
        options = options.with_signaling_address(s.clone());
    }
    if args.force_relay {
        options = options.force_relay();
    }
    if args.force_p2p {
        options = options.force_p2p();
    }
    let command = match &args.set_power {
        None => None,
        Some(text) => {
            let (name, power) = text
                .split_once('=')
                .context("--set-power takes NAME=POWER, e.g. left=0.3")?;
            let power: f64 = power
                .parse()
                .ok()
                .filter(|p: &f64| (-1.0..=1.0).contains(p))
                .context("--set-power: POWER is a number from -1 to 1")?;
            Some((name.to_string(), power))
        }
    };
    let print = |event: &ConnectionEvent| {
        if args.json {
            println!("{}", event_json(event));
        } else {
            println!("{}", event_text(event));
        }
    };
    let robot = RobotClient::connect(&args.address, options).await?;
    let mut events = robot.events();
    // The first dial's events happened before anyone could subscribe; replay them.
    for event in robot.first_dial_events() {
        print(event);
    }
    let transport = robot.transport();
    if args.webrtc_only && transport != "webrtc" {
        anyhow::bail!("connected over {transport}, not WebRTC (--webrtc-only)");
    }
    let route = robot.webrtc_route().await;
    let (local, remote) = route
        .as_ref()
        .map_or(("", ""), |r| (r.local_type, r.remote_type));
    let relayed = route.as_ref().is_some_and(|r| r.is_relayed());
    if args.json {
        println!(
            "{}",
            serde_json::json!({"event": "route", "transport": transport, "relayed": relayed,
                               "local": local, "remote": remote})
        );
    } else if route.is_some() {
        println!(
            "route: {transport}, {local} to {remote}{}",
            if relayed {
                " (through a TURN relay)"
            } else {
                ""
            }
        );
    } else {
        println!("route: {transport}");
    }
    let resources = robot.resource_names().await?;
    if args.json {
        let names: Vec<_> = resources
            .iter()
            .map(|r| format!("{}:{}:{}/{}", r.namespace, r.r#type, r.subtype, r.name))
            .collect();
        println!(
            "{}",
            serde_json::json!({"event": "resources", "resources": names})
        );
    } else {
        println!("{} resources:", resources.len());
        for r in &resources {
            println!("  {}:{}:{}/{}", r.namespace, r.r#type, r.subtype, r.name);
        }
    }
    // Kept for as long as the program runs: its session holds the motor's command.
    let _motor = match command {
        Some((name, power)) => {
            let mut motor = tether_client::Motor::from_robot(&robot, &name);
            motor.set_power(power).await?;
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"event": "commanded", "motor": name, "power": power,
                                       "session": robot.session_id()})
                );
            } else {
                println!("motor {name} at power {power}");
            }
            Some(motor)
        }
        None => None,
    };
    if args.once {
        return Ok(());
    }
    let mut check = tokio::time::interval(args.check_interval);
    let interrupted = shutdown_signal()?;
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            event = events.recv() => match event {
                Ok(e) => print(&e),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("({n} events missed)");
                }
                Err(_) => return Ok(()),
            },
            // A cheap call now and then: a dead link is noticed (and reconnected) even when
            // nothing else is happening.
            _ = check.tick() => {
                robot.check_connection(args.check_interval).await;
            }
        }
    }
}

fn event_text(e: &tether_client::ConnectionEvent) -> String {
    use tether_client::ConnectionEvent as E;
    match e {
        E::Connecting => "connecting".into(),
        E::Dialing { method, attempt } => format!("dialing ({method}, attempt {attempt})"),
        E::Connected { transport } => format!("connected ({transport})"),
        E::Disconnected { cause } => format!("disconnected: {cause}"),
        E::Reconnecting { attempt, delay } => {
            format!(
                "reconnecting: attempt {attempt} in {} ms",
                delay.as_millis()
            )
        }
        E::ReconnectionFailed { attempts } => {
            format!("reconnection failed after {attempts} attempts")
        }
        E::SessionStarted { id } => format!("session started ({id})"),
        E::SessionResumed { id } => format!("session resumed ({id})"),
        E::SessionExpired { id } => {
            format!("session expired ({id}): the machine stopped what it drove")
        }
    }
}

fn event_json(e: &tether_client::ConnectionEvent) -> serde_json::Value {
    use serde_json::json;
    use tether_client::ConnectionEvent as E;
    match e {
        E::Connecting => json!({"event": "connecting"}),
        E::Dialing { method, attempt } => {
            json!({"event": "dialing", "method": method, "attempt": attempt})
        }
        E::Connected { transport } => json!({"event": "connected", "transport": transport}),
        E::Disconnected { cause } => json!({"event": "disconnected", "cause": cause}),
        E::Reconnecting { attempt, delay } => {
            json!({"event": "reconnecting", "attempt": attempt, "delay_ms": delay.as_millis() as u64})
        }
        E::ReconnectionFailed { attempts } => {
            json!({"event": "reconnection_failed", "attempts": attempts})
        }
        E::SessionStarted { id } => json!({"event": "session_started", "id": id}),
        E::SessionResumed { id } => json!({"event": "session_resumed", "id": id}),
        E::SessionExpired { id } => json!({"event": "session_expired", "id": id}),
    }
}

fn cert(args: CertArgs) -> anyhow::Result<()> {
    let mut names = args.names;
    for default in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|n| n == default) {
            names.push(default.to_string());
        }
    }
    let (cert_pem, key_pem) = tls::self_signed(&names).map_err(|e| anyhow::anyhow!("{e}"))?;
    for path in [&args.cert, &args.key] {
        if path.exists() && !args.force {
            anyhow::bail!("{} exists; pass --force to overwrite it", path.display());
        }
    }
    std::fs::write(&args.cert, cert_pem)
        .with_context(|| format!("cannot write {}", args.cert.display()))?;
    write_private(&args.key, key_pem.as_bytes())
        .with_context(|| format!("cannot write {}", args.key.display()))?;
    println!(
        "wrote {} and {} for {names:?}; serve them with \"network\": {{\"tls_cert_file\": {:?}, \
         \"tls_key_file\": {:?}}}",
        args.cert.display(),
        args.key.display(),
        args.cert.display().to_string(),
        args.key.display().to_string()
    );
    Ok(())
}

/// Writes a file readable by its owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
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

#[cfg(test)]
mod tests {
    use super::with_engine_quiet;

    #[test]
    fn the_engine_is_quiet_unless_a_directive_names_it() {
        let f = with_engine_quiet("info");
        assert!(
            f.contains(",webrtc=off") && f.contains(",webrtc_sctp=off"),
            "{f}"
        );
        // Tether's own webrtc modules are not the engine.
        let f = with_engine_quiet("info,tether_machine::webrtc::heartbeats=trace");
        assert!(f.contains(",webrtc=off"), "{f}");
        let f = with_engine_quiet("info,webrtc_sctp::association=trace");
        assert!(
            !f.contains("webrtc_sctp=off") && f.contains(",webrtc=off"),
            "{f}"
        );
        let f = with_engine_quiet("webrtc=debug");
        assert!(
            !f.contains(",webrtc=off") && f.contains(",webrtc_ice=off"),
            "{f}"
        );
    }
}
