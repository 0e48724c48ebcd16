//! Session benchmark: stop lateness, false expiries, and server CPU/RSS while holding many
//! heartbeating sessions.
//!
//!     cargo run --release --example session_bench -- TETHER_BIN SESSIONS WINDOW_MS KILLED
//!
//! It starts `TETHER_BIN serve` on 127.0.0.1 with a window of WINDOW_MS and KILLED fake motors,
//! opens SESSIONS sessions over 8 connections, each heartbeating every window/5 on its own task
//! (staggered), has the first KILLED sessions command one motor each, measures the server's CPU
//! and RSS for a while, then stops heartbeating the KILLED sessions all at once. The server logs
//! one line per expiry with `late_us` (when its stops started, minus the deadline): the bench
//! collects those for the killed sessions, and counts expiries of any other session — and any
//! SESSION_EXPIRED a healthy session's heartbeat got — as false expiries. Bounded in time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark harness: a failed step aborts the measurement"
)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tether_proto::viam::component::motor::v1::SetPowerRequest;
use tether_proto::viam::component::motor::v1::motor_service_client::MotorServiceClient;
use tether_proto::viam::robot::v1::robot_service_client::RobotServiceClient;
use tether_proto::viam::robot::v1::{SendSessionHeartbeatRequest, StartSessionRequest};
use tonic::transport::Channel;

mod support;

type Expiries = Arc<Mutex<Vec<(String, u64)>>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bin, sessions, window_ms, killed] = &args[..] else {
        return Err("usage: session_bench TETHER_BIN SESSIONS WINDOW_MS KILLED".into());
    };
    let (sessions, window_ms, killed): (usize, u64, usize) =
        (sessions.parse()?, window_ms.parse()?, killed.parse()?);
    let window = Duration::from_millis(window_ms);
    let killed = killed.min(sessions);

    let motors: Vec<String> = (0..killed)
        .map(|i| format!(r#"{{"name": "m{i}", "api": "rdk:component:motor", "model": "fake"}}"#))
        .collect();
    let config =
        std::env::temp_dir().join(format!("tether-session-bench-{}.json", std::process::id()));
    std::fs::write(
        &config,
        format!(
            r#"{{"components": [{}], "network": {{"sessions": {{"heartbeat_window": "{window_ms}ms"}}}}}}"#,
            motors.join(",")
        ),
    )?;
    let mut child = Command::new(bin)
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env(
            "RUST_LOG",
            std::env::var("TETHER_BENCH_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let expiries: Expiries = Arc::default();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    {
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let expiries = expiries.clone();
        let echo_all = std::env::var_os("TETHER_BENCH_ECHO").is_some();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = addr_tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                } else if echo_all
                    || line.contains(" WARN ")
                    || line.contains(" ERROR ")
                    || line.contains("ended with an error")
                {
                    eprintln!("server: {line}");
                } else if let Some(expiry) = support::expiry_of(&line) {
                    expiries.lock().unwrap().push(expiry);
                }
            }
        });
    }
    let addr = addr_rx.recv_timeout(Duration::from_secs(30))?;
    let result = run(&addr, pid, sessions, window, killed, &expiries).await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&config);
    result
}

async fn run(
    addr: &str,
    pid: u32,
    sessions: usize,
    window: Duration,
    killed: usize,
    expiries: &Expiries,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut channels: Vec<Channel> = Vec::new();
    for _ in 0..8 {
        channels.push(
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    let rss_idle = support::rss_kb(pid);
    // Each session lives on its own task: start it, (victims) command one motor with it, then
    // heartbeat every window/5. Starts are staggered across one heartbeat period, so no session
    // waits for the others to start before its first heartbeat (at W = 30 ms that matters).
    let period = window / 5;
    let healthy_expired = Arc::new(AtomicUsize::new(0));
    let heartbeats = Arc::new(AtomicUsize::new(0));
    let (id_tx, mut id_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
    let mut tasks = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let channel = channels[i % channels.len()].clone();
        let (healthy_expired, heartbeats, id_tx) =
            (healthy_expired.clone(), heartbeats.clone(), id_tx.clone());
        let offset = period.mul_f64(i as f64 / sessions as f64);
        let is_victim = i < killed;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut robot = RobotServiceClient::new(channel.clone());
            let id = match robot
                .start_session(StartSessionRequest {
                    resume: String::new(),
                })
                .await
            {
                Ok(r) => r.into_inner().id,
                Err(e) => {
                    eprintln!("session {i}: StartSession failed: {e}");
                    return;
                }
            };
            if is_victim {
                let mut req = tonic::Request::new(SetPowerRequest {
                    name: format!("m{i}"),
                    power_pct: 0.5,
                    extra: None,
                });
                if let Ok(sid) = id.parse() {
                    req.metadata_mut().insert("viam-sid", sid);
                }
                if let Err(e) = MotorServiceClient::new(channel).set_power(req).await {
                    eprintln!("session {i}: SetPower failed: {e}");
                }
            }
            let _ = id_tx.send((i, id.clone()));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match robot
                    .send_session_heartbeat(SendSessionHeartbeatRequest { id: id.clone() })
                    .await
                {
                    Ok(_) => {
                        heartbeats.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.message() == "SESSION_EXPIRED" => {
                        if !is_victim {
                            healthy_expired.fetch_add(1, Ordering::Relaxed);
                        }
                        return;
                    }
                    Err(_) => {}
                }
            }
        }));
    }
    drop(id_tx);
    let mut ids = vec![String::new(); sessions];
    let started_by = Instant::now() + period + Duration::from_secs(30);
    let mut started = 0;
    while started < sessions && Instant::now() < started_by {
        match tokio::time::timeout(Duration::from_secs(1), id_rx.recv()).await {
            Ok(Some((i, id))) => {
                ids[i] = id;
                started += 1;
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    if started < sessions {
        return Err(format!("only {started} of {sessions} sessions started").into());
    }
    // Steady state: measure the server holding the sessions.
    tokio::time::sleep(window.max(Duration::from_secs(1))).await;
    let measure = Duration::from_secs(5);
    let (t0, c0, h0) = (
        Instant::now(),
        support::cpu_ticks(pid),
        heartbeats.load(Ordering::Relaxed),
    );
    tokio::time::sleep(measure).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let cores = (support::cpu_ticks(pid) - c0) as f64 / 100.0 / elapsed;
    let rate = (heartbeats.load(Ordering::Relaxed) - h0) as f64 / elapsed;
    let rss_held = support::rss_kb(pid);
    // Kill the batch.
    let victims: HashSet<String> = ids.iter().take(killed).cloned().collect();
    for t in tasks.iter().take(killed) {
        t.abort();
    }
    let deadline = Instant::now() + 3 * window + Duration::from_secs(5);
    loop {
        let done = expiries
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, _)| victims.contains(id))
            .count();
        if done == killed || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Keep the healthy ones going for two more windows to catch any false expiry.
    tokio::time::sleep(2 * window).await;
    for t in &tasks {
        t.abort();
    }
    let all = expiries.lock().unwrap().clone();
    let mut late: Vec<u64> = all
        .iter()
        .filter(|(id, _)| victims.contains(id))
        .map(|(_, l)| *l)
        .collect();
    late.sort_unstable();
    let false_server = all.iter().filter(|(id, _)| !victims.contains(id)).count();
    let false_client = healthy_expired.load(Ordering::Relaxed);
    let needed = sessions as f64 / period.as_secs_f64();
    println!(
        "sessions: {sessions} at W={window:?} (heartbeat every {period:?}), {killed} killed at once; \
         heartbeats/s needed {needed:.0}, sustained by this load generator {rate:.0}"
    );
    if rate < 0.95 * needed {
        println!(
            "  WARNING: the load generator could not keep up, so healthy sessions missed heartbeats; \
             expiries below are client starvation, not server decisions"
        );
    }
    println!(
        "  stop lateness (stop start - deadline) over {} expiries: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        late.len(),
        support::percentile(&late, 0.5) as f64 / 1e3,
        support::percentile(&late, 0.99) as f64 / 1e3,
        late.last().copied().unwrap_or(0) as f64 / 1e3,
    );
    println!(
        "  false expiries: {false_server} (server-side), {false_client} healthy heartbeats refused; \
         missing expiries: {}",
        killed - late.len()
    );
    println!(
        "  server while holding them: {cores:.2} cores, RSS {:.1} MB (idle before: {:.1} MB)",
        rss_held as f64 / 1024.0,
        rss_idle as f64 / 1024.0
    );
    Ok(())
}
