//! Fleet signaling benchmark, real processes on loopback (`scripts/bench-fleet` starts Redis
//! and runs this with the release binary):
//!
//! 1. connect time (the Rust client's whole WebRTC dial, until the data channel answers a
//!    first call), side by side: through the machine's embedded signaling, through a
//!    standalone `tether signal` in memory, and through instance A of two on Redis while the
//!    machine answers on instance B;
//! 2. exchanges per second one instance sustains on Redis (gRPC `Call` + `CallUpdate` against
//!    `Answer` streams, no WebRTC), with the service's CPU;
//! 3. how long a machine is unreachable after its signaling instance is killed and another
//!    takes its address;
//! 4. round trip over a TURN relay against host candidates and direct gRPC.
//!
//!     cargo run --release --example fleet_bench -- target/release/tether REDIS_URL [DIALS]

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark harness: a failed step aborts the measurement"
)]

#[path = "../tests/common/signaling.rs"]
mod signaling;
#[allow(dead_code, reason = "the support module serves several benchmarks")]
mod support;

use signaling::{signaling_client, to};

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tether_client::{Options, RobotClient};
use tether_proto::proto::rpc::webrtc::v1 as pb;
use tether_proto::viam::robot::v1::GetVersionRequest;

const KEY_ID: &str = "operator";
const KEY: &str = "operator-key-0123456789";
const ROVER_ID: &str = "rover-key";
const ROVER_KEY: &str = "rover-key-0123456789";
const BENCH_HOST: &str = "bench.fleet.test";

struct Proc {
    child: Child,
    addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin ARGS` and waits for its "listening on" line (or `ready` in its log).
fn start(bin: &str, args: &[&str], ready: Option<&str>) -> Proc {
    let mut child = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.map(str::to_string);
    std::thread::spawn(move || {
        let mut addr = None;
        for line in lines.map_while(Result::ok) {
            if addr.is_none()
                && let Some(rest) = line.split("listening on ").nth(1)
            {
                addr = rest.split_whitespace().next().map(str::to_string);
                if ready.is_none() {
                    let _ = tx.send(addr.clone().unwrap());
                }
            }
            if let (Some(r), Some(a)) = (&ready, &addr)
                && line.contains(r.as_str())
            {
                let _ = tx.send(a.clone());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("did not start");
    Proc { child, addr }
}

fn file(name: &str, text: &str) -> String {
    let path = std::env::temp_dir().join(format!("fleet-bench-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn signal_config(redis: Option<&str>) -> String {
    let redis = redis
        .map(|r| format!(r#""redis_url": "{r}","#))
        .unwrap_or_default();
    format!(
        r#"{{{redis} "max_callers_per_host": 64, "api_keys": [
          {{"id": "{ROVER_ID}", "key": "{ROVER_KEY}", "answer": ["rover-a.fleet.test", "rover-b.fleet.test", "{BENCH_HOST}"]}},
          {{"id": "{KEY_ID}", "key": "{KEY}", "call": ["rover-a.fleet.test", "rover-b.fleet.test", "{BENCH_HOST}"]}}]}}"#
    )
}

fn machine_config(signaling: &str, fqdn: &str) -> String {
    format!(
        r#"{{"components": [{{"name": "left", "api": "rdk:component:motor", "model": "fake"}}],
            "auth": {{"handlers": [{{"type": "api-key", "config": {{"{KEY_ID}": "{KEY}"}}}}]}},
            "cloud": {{"signaling_address": "{signaling}", "signaling_insecure": true,
                       "fqdn": "{fqdn}", "api_key": {{"id": "{ROVER_ID}", "key": "{ROVER_KEY}"}}}}}}"#
    )
}

fn options(signaling: Option<&str>) -> Options {
    let mut o = Options::with_api_key(KEY, KEY_ID).insecure();
    o.disable_sessions = true;
    o.backoff.max_attempts = 0;
    if let Some(s) = signaling {
        o = o.with_signaling_address(s);
    }
    o
}

/// One WebRTC dial and its first call; the time, or why it failed.
async fn dial(address: &str, options: Options) -> Result<(Duration, RobotClient), String> {
    let t0 = Instant::now();
    let robot = RobotClient::connect(address, options)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let events = format!("{:?}", robot.first_dial_events());
    if !events.contains("webrtc") {
        return Err(format!("not over WebRTC: {events}"));
    }
    robot.resource_names().await.map_err(|e| format!("{e:?}"))?;
    Ok((t0.elapsed(), robot))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    let at = |p: f64| ms(samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)]);
    format!(
        "p50 {:7.1} ms  p99 {:7.1} ms  max {:7.1} ms  (n={})",
        at(0.5),
        at(0.99),
        ms(*samples.last().unwrap()),
        samples.len()
    )
}

/// An answerer that answers every offer at once on fresh `Answer` streams, until `stop`.
async fn answer_forever(addr: String, stop: Arc<std::sync::atomic::AtomicBool>) {
    let (mut client, token) = signaling_client(&addr, ROVER_ID, ROVER_KEY).await;
    while !stop.load(Ordering::Relaxed) {
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::AnswerResponse>(4);
        let out = futures::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|m| (m, rx)) });
        let Ok(r) = client.answer(to(out, BENCH_HOST, &token)).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut incoming = r.into_inner();
        while let Ok(Some(m)) = incoming.message().await {
            if let Some(pb::answer_request::Stage::Init(_)) = m.stage {
                use pb::answer_response::Stage;
                for stage in [
                    Stage::Init(pb::AnswerResponseInitStage {
                        sdp: "answer".into(),
                    }),
                    Stage::Done(pb::AnswerResponseDoneStage {}),
                ] {
                    let _ = tx
                        .send(pb::AnswerResponse {
                            uuid: m.uuid.clone(),
                            stage: Some(stage),
                        })
                        .await;
                }
            }
        }
    }
}

/// Exchanges per second through the instance at `caller` (answerers on `answerer`).
async fn exchanges(caller: &str, answerer: &str, pid: u32, seconds: u64, concurrency: usize) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answerers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(answer_forever(answerer.to_string(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        String,
        u64,
    >::new()));
    let until = Instant::now() + Duration::from_secs(seconds);
    let cpu0 = support::cpu_ticks(pid);
    let t0 = Instant::now();
    let callers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (caller, done, failed) = (caller.to_string(), done.clone(), failed.clone());
            tokio::spawn(async move {
                let (mut client, token) = signaling_client(&caller, KEY_ID, KEY).await;
                while Instant::now() < until {
                    let call = client
                        .call(to(
                            pb::CallRequest {
                                sdp: "offer".into(),
                                disable_trickle: false,
                            },
                            BENCH_HOST,
                            &token,
                        ))
                        .await;
                    let ok: Result<(), String> = match call {
                        Ok(r) => {
                            let mut s = r.into_inner();
                            match s.message().await {
                                Ok(Some(first)) => {
                                    let done_update = pb::CallUpdateRequest {
                                        uuid: first.uuid,
                                        update: Some(pb::call_update_request::Update::Done(true)),
                                    };
                                    let sent = client
                                        .call_update(to(done_update, BENCH_HOST, &token))
                                        .await
                                        .map(|_| ())
                                        .map_err(|e| format!("CallUpdate {:?}", e.code()));
                                    while let Ok(Some(_)) = s.message().await {}
                                    sent
                                }
                                Ok(None) => Err("Call ended without an answer".into()),
                                Err(e) => Err(format!("Call stream {:?}", e.code())),
                            }
                        }
                        Err(e) => Err(format!("Call {:?} {}", e.code(), e.message())),
                    };
                    match ok {
                        Ok(()) => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(why) => {
                            *failed.lock().unwrap().entry(why).or_insert(0u64) += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            })
        })
        .collect();
    for c in callers {
        c.await.unwrap();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (support::cpu_ticks(pid) - cpu0) as f64 / 100.0;
    stop.store(true, Ordering::Relaxed);
    for a in answerers {
        a.abort();
    }
    let n = done.load(Ordering::Relaxed);
    println!(
        "  {:.0} exchanges/s ({n} in {elapsed:.1} s, {concurrency} callers, 4 answerers); the caller's instance used {:.0} % of a core; failed: {:?}",
        n as f64 / elapsed,
        cpu / elapsed * 100.0,
        failed.lock().unwrap()
    );
}

async fn median_rtt(robot: &RobotClient, n: usize) -> Duration {
    let mut r = robot.robot();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        r.get_version(GetVersionRequest {}).await.unwrap();
        samples.push(t0.elapsed());
    }
    samples.sort();
    samples[n / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .expect("usage: fleet_bench TETHER_BIN REDIS_URL [DIALS]")
        .clone();
    let redis = args
        .get(2)
        .expect("usage: fleet_bench TETHER_BIN REDIS_URL [DIALS]")
        .clone();
    let dials: usize = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(100);

    let memory = file("memory.json", &signal_config(None));
    let shared = file("redis.json", &signal_config(Some(&redis)));
    let bind = ["--bind", "127.0.0.1:0"];
    let standalone = start(
        &bin,
        &["signal", "--config", &memory, bind[0], bind[1]],
        None,
    );
    let a = start(
        &bin,
        &["signal", "--config", &shared, bind[0], bind[1]],
        None,
    );
    let b_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b_addr = format!("127.0.0.1:{b_port}");
    let mut b = start(
        &bin,
        &["signal", "--config", &shared, "--bind", &b_addr],
        None,
    );
    let answering = Some("answering calls through the signaling service");
    let m_a_config = file(
        "rover-a.json",
        &machine_config(&standalone.addr, "rover-a.fleet.test"),
    );
    let m_a = start(
        &bin,
        &["serve", "--config", &m_a_config, bind[0], bind[1]],
        answering,
    );
    let m_b_config = file(
        "rover-b.json",
        &machine_config(&b.addr, "rover-b.fleet.test"),
    );
    let m_b = start(
        &bin,
        &["serve", "--config", &m_b_config, bind[0], bind[1]],
        answering,
    );

    println!("1. connect time over WebRTC, {dials} dials each (interleaved), signaling:");
    let routes: [(&str, String, Option<String>); 3] = [
        ("the machine's own (embedded)", m_a.addr.clone(), None),
        (
            "standalone, in memory",
            "rover-a.fleet.test".into(),
            Some(standalone.addr.clone()),
        ),
        (
            "caller on A, machine on B, Redis",
            "rover-b.fleet.test".into(),
            Some(a.addr.clone()),
        ),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); routes.len()];
    for _ in 0..dials {
        for (i, (_, address, signaling)) in routes.iter().enumerate() {
            let (t, robot) = dial(address, options(signaling.as_deref())).await.unwrap();
            samples[i].push(t);
            drop(robot);
        }
    }
    for (i, (name, _, _)) in routes.iter().enumerate() {
        println!("  {name:34} {}", summary(&mut samples[i]));
    }

    println!(
        "2. signaling exchanges one instance sustains (Call + CallUpdate against Answer streams):"
    );
    exchanges(&a.addr, &a.addr, a.child.id(), 5, 8).await;
    println!("   the same with the answerers on instance B:");
    exchanges(&a.addr, &b.addr, a.child.id(), 5, 8).await;

    println!(
        "3. unreachable after the machine's signaling instance is killed (SIGKILL) and another takes its address:"
    );
    let mut gaps = Vec::new();
    for _ in 0..5 {
        drop(b);
        let killed = Instant::now();
        b = start(
            &bin,
            &["signal", "--config", &shared, "--bind", &b_addr],
            None,
        );
        let restarted = killed.elapsed();
        loop {
            let mut o = options(Some(&a.addr));
            o.dial_timeout = Duration::from_secs(3);
            if dial("rover-b.fleet.test", o).await.is_ok() {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "never came back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        gaps.push(killed.elapsed());
        eprintln!("    (new instance up after {restarted:?})");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("  {}", summary(&mut gaps));

    println!(
        "4. round trip (GetVersion median of 200) to the machine through the fleet's signaling:"
    );
    let turn = tether_rtc::turn_server::TurnServer::start("tether", "relay-secret")
        .await
        .unwrap();
    let (_, host) = dial("rover-b.fleet.test", options(Some(&a.addr)))
        .await
        .unwrap();
    let (_, relayed) = dial(
        "rover-b.fleet.test",
        options(Some(&a.addr))
            .with_ice_servers([turn.ice_server()])
            .force_relay(),
    )
    .await
    .unwrap();
    assert!(relayed.is_relayed().await && !host.is_relayed().await);
    let mut direct_options = options(None);
    direct_options.disable_webrtc = true;
    let direct = RobotClient::connect(&m_b.addr, direct_options)
        .await
        .unwrap();
    println!(
        "  WebRTC, host candidates   {:7.3} ms",
        ms(median_rtt(&host, 200).await)
    );
    println!(
        "  WebRTC, TURN relay        {:7.3} ms",
        ms(median_rtt(&relayed, 200).await)
    );
    println!(
        "  direct gRPC               {:7.3} ms",
        ms(median_rtt(&direct, 200).await)
    );
    drop((host, relayed, direct));
    turn.close().await;
    drop((m_a, m_b, a, b, standalone));
}
