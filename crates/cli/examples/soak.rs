//! Session soak: many real `RobotClient`s holding sessions across an impaired link, killed and
//! replaced for a bounded time, with every expiry checked against who was killed.
//!
//!     soak --bin TETHER [--server-ns NS] [--bind ADDR] [--sessions N] [--window-ms W]
//!          [--seconds S] [--life-s MIN-MAX] [--transport direct|webrtc] [--seed N]
//!          [--max-late-ms L]
//!
//! `scripts/soak` runs it inside a client namespace joined to the server's by `impair.py`
//! (loss and jitter on every packet). It starts `TETHER serve` (inside `NS` with
//! `ip netns exec` when given) with N fake motors and a heartbeat window of W. Each of N slots
//! then loops until the time is up: connect a client, command its own motor with
//! `SetPower` (which starts the client's session; the client heartbeats it every W/5), hold it
//! for a random lifetime, then drop the client without a word — as a crashed app does — and
//! wait for the machine to expire the session and stop the motor, which an observer client
//! (no session) then reads back through `IsPowered`.
//!
//! The machine logs every expiry with `late_us` (its stop started that long after the session's
//! deadline: W after the last heartbeat, counted from when the client sent it for Tether's
//! timed heartbeats). An expiry is *true* if its client was killed
//! before it; otherwise — and for every `SessionExpired` a live client is told — it is *false*.
//! It prints its figures and exits non-zero on any false expiry, any killed session not expired,
//! any motor still powered after its expiry, or a stop more than L ms (default W/10) late.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a soak harness: a failed step aborts the run"
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tether_client::{ConnectionEvent, Motor, Options, RobotClient};

mod support;

#[derive(Clone)]
struct Args {
    bin: String,
    server_ns: Option<String>,
    bind: String,
    sessions: usize,
    window: Duration,
    run_for: Duration,
    life: (Duration, Duration),
    webrtc: bool,
    seed: u64,
    max_late: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        bin: String::new(),
        server_ns: None,
        bind: "127.0.0.1:18090".into(),
        sessions: 100,
        window: Duration::from_millis(500),
        run_for: Duration::from_secs(600),
        life: (Duration::from_secs(5), Duration::from_secs(30)),
        webrtc: false,
        seed: 1,
        max_late: Duration::ZERO,
    };
    let mut max_late = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--bin" => a.bin = value,
            "--server-ns" => a.server_ns = Some(value),
            "--bind" => a.bind = value,
            "--sessions" => a.sessions = number(&value)? as usize,
            "--window-ms" => a.window = Duration::from_millis(number(&value)?),
            "--seconds" => a.run_for = Duration::from_secs(number(&value)?),
            "--life-s" => {
                let (lo, hi) = value.split_once('-').ok_or("--life-s takes MIN-MAX")?;
                a.life = (
                    Duration::from_secs(number(lo)?),
                    Duration::from_secs(number(hi)?),
                );
                if a.life.0 > a.life.1 {
                    return Err("--life-s: MIN is above MAX".into());
                }
            }
            "--transport" => {
                a.webrtc = match value.as_str() {
                    "direct" => false,
                    "webrtc" => true,
                    other => return Err(format!("--transport {other}: direct or webrtc")),
                }
            }
            "--seed" => a.seed = number(&value)?,
            "--max-late-ms" => max_late = Some(Duration::from_millis(number(&value)?)),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.bin.is_empty() {
        return Err("--bin TETHER is required".into());
    }
    a.max_late = max_late.unwrap_or(a.window / 10);
    Ok(a)
}

/// A small deterministic generator (xorshift64*), so a seed replays the same lifetimes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis() as u64;
        lo + Duration::from_millis(if span == 0 { 0 } else { self.next() % span })
    }
}

#[derive(Default)]
struct Session {
    killed: Option<Instant>,
    /// When its client let it go without killing it (the run ended).
    released: Option<Instant>,
    /// When the machine logged its expiry, and the expiry's `late_us`.
    expired: Option<(Instant, u64)>,
}

#[derive(Default)]
struct Ledger {
    sessions: HashMap<String, Session>,
    /// Expiries of sessions no client here started (false by definition).
    unknown_expiries: Vec<String>,
}

type Shared = Arc<Mutex<Ledger>>;

#[derive(Default)]
struct Counters {
    started: AtomicUsize,
    killed: AtomicUsize,
    told_expired: AtomicUsize,
    disconnects: AtomicUsize,
    connect_failures: AtomicUsize,
    command_failures: AtomicUsize,
    not_expired: AtomicUsize,
    still_powered: AtomicUsize,
    unobserved: AtomicUsize,
}

/// Percentiles of durations in microseconds, in milliseconds.
fn percentiles(mut v: Vec<u64>) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.sort_unstable();
    let ms = |p: f64| support::percentile(&v, p) as f64 / 1e3;
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} stops)",
        ms(0.5),
        ms(0.99),
        ms(1.0),
        v.len()
    )
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // The clients' own logs, when asked for (`SOAK_CLIENT_LOG=tether_client=debug`).
    if let Ok(filter) = std::env::var("SOAK_CLIENT_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(soak(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn soak(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let motors: Vec<String> = (0..args.sessions)
        .map(|i| format!(r#"{{"name": "m{i}", "api": "rdk:component:motor", "model": "fake"}}"#))
        .collect();
    // Every client comes from one address here, with a command and a heartbeat connection (or
    // a peer connection, and for a while its replacement, or a second try at the first dial).
    let connections = args.sessions * 3 + 16;
    let config = std::env::temp_dir().join(format!("tether-soak-{}.json", std::process::id()));
    std::fs::write(
        &config,
        format!(
            r#"{{"components": [{}], "network": {{"max_connections": {connections},
                "max_connections_per_address": {connections}, "max_webrtc_peers": {connections},
                "sessions": {{"heartbeat_window": "{}ms"}}}}}}"#,
            motors.join(","),
            args.window.as_millis()
        ),
    )?;
    let mut command = match &args.server_ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, &args.bin]);
            c
        }
        None => Command::new(&args.bin),
    };
    let mut child = command
        .args(["serve", "--bind", &args.bind, "--config"])
        .arg(&config)
        .env(
            "RUST_LOG",
            std::env::var("TETHER_SOAK_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let ledger: Shared = Arc::default();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    {
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let ledger = ledger.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on ") {
                    let _ = ready_tx.send(());
                } else if let Some((id, late_us)) = support::expiry_of(&line) {
                    let mut ledger = ledger.lock().unwrap();
                    match ledger.sessions.get_mut(&id) {
                        Some(s) => s.expired = Some((Instant::now(), late_us)),
                        None => ledger.unknown_expiries.push(id),
                    }
                } else if line.contains(" WARN ")
                    || line.contains(" ERROR ")
                    || std::env::var_os("TETHER_SOAK_ECHO").is_some()
                {
                    eprintln!("server: {line}");
                }
            }
        });
    }
    let outcome = match ready_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(()) => run(&args, pid, &ledger).await,
        Err(_) => Err("the machine did not start listening within 30 s".into()),
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&config);
    outcome
}

fn options(args: &Args) -> Options {
    let mut o = Options::default().insecure();
    o.dial_timeout = Duration::from_secs(30);
    if args.webrtc {
        o.prefer_webrtc = true;
        o.force_p2p = true;
    } else {
        o = o.disable_webrtc();
    }
    o
}

async fn run(args: &Args, pid: u32, ledger: &Shared) -> Result<bool, Box<dyn std::error::Error>> {
    let mut observer_options = options(args);
    observer_options.disable_sessions = true;
    let observer = Arc::new(RobotClient::connect(&args.bind, observer_options).await?);
    let counters = Arc::new(Counters::default());
    let t0 = Instant::now();
    let end = t0 + args.run_for;
    let cpu0 = support::cpu_ticks(pid);
    let mut slots = Vec::new();
    for i in 0..args.sessions {
        let (args, ledger, counters, observer) = (
            args.clone(),
            ledger.clone(),
            counters.clone(),
            observer.clone(),
        );
        // Start the slots over one window, not all at once.
        let offset = args.window.mul_f64(i as f64 / args.sessions as f64);
        slots.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            slot(i, &args, end, &ledger, &counters, &observer).await;
        }));
    }
    for s in slots {
        let _ = s.await;
    }
    let cpu = (support::cpu_ticks(pid) - cpu0) as f64 / 100.0 / t0.elapsed().as_secs_f64();
    let rss = support::rss_kb(pid) as f64 / 1024.0;
    // The live clients have just let go; give their expiries no weight.
    let l = ledger.lock().unwrap();
    let c = &counters;
    let (mut late, mut kill_to_stop) = (Vec::new(), Vec::new());
    let mut false_server = l.unknown_expiries.len();
    for id in &l.unknown_expiries {
        eprintln!("soak: false expiry of session {id}");
    }
    for (id, session) in &l.sessions {
        let Some((at, late_us)) = session.expired else {
            continue;
        };
        match session {
            Session {
                killed: Some(k), ..
            } if at >= *k => {
                late.push(late_us);
                kill_to_stop.push(at.duration_since(*k).as_micros() as u64);
            }
            Session {
                released: Some(r), ..
            } if at >= *r => {}
            _ => {
                false_server += 1;
                eprintln!("soak: false expiry of session {id}");
            }
        }
    }
    let worst_late = late.iter().copied().max().unwrap_or(0);
    let load = |a: &AtomicUsize| a.load(Ordering::Relaxed);
    println!(
        "soak: {} sessions at W = {:?} over {} for {:?}: {} sessions started, {} killed",
        args.sessions,
        args.window,
        if args.webrtc { "WebRTC" } else { "direct gRPC" },
        args.run_for,
        load(&c.started),
        load(&c.killed),
    );
    println!(
        "  false expiries: {false_server} on the machine, {} told to live clients",
        load(&c.told_expired)
    );
    println!(
        "  killed sessions not expired: {}; motors still powered after expiry: {} ({} not read back)",
        load(&c.not_expired),
        load(&c.still_powered),
        load(&c.unobserved)
    );
    println!(
        "  stop after the session's deadline (last heartbeat + W): {}",
        percentiles(late)
    );
    println!(
        "  stop after the kill (W, and the last heartbeat's trip): {}",
        percentiles(kill_to_stop)
    );
    println!(
        "  live clients: {} disconnections seen, {} failed connects, {} failed commands",
        load(&c.disconnects),
        load(&c.connect_failures),
        load(&c.command_failures)
    );
    println!("  machine: {cpu:.2} cores on average, RSS {rss:.1} MB at the end");
    let ok = false_server == 0
        && load(&c.told_expired) == 0
        && load(&c.not_expired) == 0
        && load(&c.still_powered) == 0
        && load(&c.killed) > 0
        && u128::from(worst_late) <= args.max_late.as_micros();
    println!(
        "soak: {}",
        if ok {
            "passed".to_string()
        } else {
            format!(
                "FAILED (a false expiry, a killed session not stopped, or a stop more than {:?} late)",
                args.max_late
            )
        }
    );
    Ok(ok)
}

async fn slot(
    i: usize,
    args: &Args,
    end: Instant,
    ledger: &Shared,
    counters: &Counters,
    observer: &RobotClient,
) {
    let name = format!("m{i}");
    let mut rng = Rng::new(args.seed ^ (i as u64 + 1).wrapping_mul(0x1000_0001));
    while Instant::now() < end {
        let client = match RobotClient::connect(&args.bind, options(args)).await {
            Ok(c) => c,
            Err(e) => {
                counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                eprintln!("soak: slot {i}: connect failed: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut events = client.events();
        let Some(mut id) = command(&client, &name, ledger, counters).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let until = (Instant::now() + rng.between(args.life.0, args.life.1)).min(end);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until.into()) => break,
                event = events.recv() => match event {
                    Ok(ConnectionEvent::SessionExpired { id: expired }) => {
                        counters.told_expired.fetch_add(1, Ordering::Relaxed);
                        eprintln!("soak: slot {i}: live client told its session {expired} expired");
                        if let Some(new) = command(&client, &name, ledger, counters).await {
                            id = new;
                        }
                    }
                    Ok(ConnectionEvent::Disconnected { cause }) => {
                        counters.disconnects.fetch_add(1, Ordering::Relaxed);
                        eprintln!("soak: slot {i}: live client disconnected: {cause}");
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        }
        if Instant::now() >= end {
            if let Some(s) = ledger.lock().unwrap().sessions.get_mut(&id) {
                s.released = Some(Instant::now());
            }
            return;
        }
        // The crash: the client goes without a word.
        if let Some(s) = ledger.lock().unwrap().sessions.get_mut(&id) {
            s.killed = Some(Instant::now());
        }
        drop(events);
        drop(client);
        tracing::debug!(slot = i, session = %id, "killed");
        counters.killed.fetch_add(1, Ordering::Relaxed);
        let wait_until = Instant::now() + 3 * args.window + Duration::from_secs(5);
        let mut expired = false;
        while Instant::now() < wait_until {
            let seen = ledger.lock().unwrap().sessions.get(&id).map(|s| s.expired);
            if seen.flatten().is_some() {
                expired = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !expired {
            counters.not_expired.fetch_add(1, Ordering::Relaxed);
            eprintln!("soak: slot {i}: killed session {id} was not expired");
        }
        // The stop runs on a task of its own: read it back with some slack.
        tokio::time::sleep(args.window / 5).await;
        let mut motor = Motor::from_robot(observer, &name);
        let mut read = None;
        for _ in 0..3 {
            if let Ok(Ok((powered, _))) =
                tokio::time::timeout(Duration::from_secs(5), motor.is_powered()).await
            {
                read = Some(powered);
                break;
            }
        }
        match read {
            Some(false) => {}
            Some(true) => {
                counters.still_powered.fetch_add(1, Ordering::Relaxed);
                eprintln!("soak: slot {i}: {name} still powered after session {id} expired");
            }
            None => {
                counters.unobserved.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(rng.between(Duration::ZERO, args.window)).await;
    }
}

/// Commands the slot's motor, which starts the client's session; returns the session's id.
async fn command(
    client: &RobotClient,
    name: &str,
    ledger: &Shared,
    counters: &Counters,
) -> Option<String> {
    let mut motor = Motor::from_robot(client, name);
    for _ in 0..3 {
        match motor.set_power(0.5).await {
            Ok(()) => {
                let id = client.session_id()?;
                ledger
                    .lock()
                    .unwrap()
                    .sessions
                    .insert(id.clone(), Session::default());
                counters.started.fetch_add(1, Ordering::Relaxed);
                return Some(id);
            }
            Err(e) => {
                counters.command_failures.fetch_add(1, Ordering::Relaxed);
                eprintln!("soak: {name}: SetPower failed: {e}");
            }
        }
    }
    None
}
