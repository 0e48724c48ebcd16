//! Client SDK benchmark against a release `tether serve` it starts itself on 127.0.0.1:
//! connect + first call with an API key, unary round trip, time to detect a dead link (a proxy
//! that silently stops forwarding: the hard case, no reset), and time to reconnect once the
//! link is back.
//!
//!     cargo run --release --example client_bench -- target/release/tether

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark harness: a failed step aborts the measurement"
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tether_client::{ConnectionEvent, Motor, Options, RobotClient};
use tokio::sync::watch;

const KEY_ID: &str = "5a3a0c6e-1d52-4b8e-9c4b-6d0f2a7e9b11";
const KEY: &str = "bench-key-0123456789";
const WINDOW_MS: u64 = 1000;

fn pct(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)].as_secs_f64() * 1e3
}

/// A loopback proxy that can stop forwarding without closing anything (a blackhole).
async fn blackhole_proxy(target: String) -> (String, watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (flowing, _) = watch::channel(true);
    let state = flowing.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            for (mut from, mut to) in [(cr, sw), (sr, cw)].map(|(r, w)| (r, w)) {
                let mut flow = state.subscribe();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let Ok(n) = from.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        // While the link is "down", bytes are held, not delivered.
                        if flow.wait_for(|up| *up).await.is_err() {
                            return;
                        }
                        if to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    (addr, flowing)
}

async fn wait_event(
    events: &mut tokio::sync::broadcast::Receiver<ConnectionEvent>,
    pred: impl Fn(&ConnectionEvent) -> bool,
) -> ConnectionEvent {
    loop {
        if let Ok(e) = events.recv().await
            && pred(&e)
        {
            return e;
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bin = std::env::args()
        .nth(1)
        .ok_or("usage: client_bench TETHER_BIN")?;
    let config =
        std::env::temp_dir().join(format!("tether-client-bench-{}.json", std::process::id()));
    std::fs::write(
        &config,
        format!(
            r#"{{"components": [{{"name": "left", "api": "rdk:component:motor", "model": "fake"}}],
                "auth": {{"handlers": [{{"type": "api-key", "config": {{"{KEY_ID}": "{KEY}"}}}}]}},
                "network": {{"sessions": {{"heartbeat_window": "{WINDOW_MS}ms"}}}}}}"#
        ),
    )?;
    let mut child = Command::new(&bin)
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().ok_or("server exited")??;
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap_or("").to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let options = || Options::with_api_key(KEY, KEY_ID).insecure();

    // Connect + first call, with auth.
    let mut connects = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let robot = RobotClient::connect(&addr, options()).await?;
        robot.resource_names().await?;
        connects.push(t.elapsed());
    }
    println!(
        "connect + authenticate + first call: p50 {:.3} ms, p99 {:.3} ms",
        pct(&mut connects, 0.5),
        pct(&mut connects, 0.99)
    );

    // Unary round trip on one connection.
    let robot = RobotClient::connect(&addr, options()).await?;
    let mut left = Motor::from_robot(&robot, "left");
    for _ in 0..500 {
        left.position().await?;
    }
    let mut trips = Vec::new();
    for _ in 0..5000 {
        let t = Instant::now();
        left.position().await?;
        trips.push(t.elapsed());
    }
    println!(
        "unary round trip (GetPosition): p50 {:.1} µs, p99 {:.1} µs",
        pct(&mut trips, 0.5) * 1e3,
        pct(&mut trips, 0.99) * 1e3
    );
    drop((left, robot));

    // Baseline: a plain generated client on a plain tonic channel, same server, same call.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let token =
        tether_proto::proto::rpc::v1::auth_service_client::AuthServiceClient::new(channel.clone())
            .authenticate(tether_proto::proto::rpc::v1::AuthenticateRequest {
                entity: KEY_ID.into(),
                credentials: Some(tether_proto::proto::rpc::v1::Credentials {
                    r#type: "api-key".into(),
                    payload: KEY.into(),
                }),
            })
            .await?
            .into_inner()
            .access_token;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let mut raw =
        tether_proto::viam::component::motor::v1::motor_service_client::MotorServiceClient::new(
            channel,
        );
    let call = || {
        let mut r = tonic::Request::new(
            tether_proto::viam::component::motor::v1::GetPositionRequest {
                name: "left".into(),
                extra: None,
            },
        );
        r.metadata_mut().insert("authorization", bearer.clone());
        r
    };
    for _ in 0..500 {
        raw.get_position(call()).await?;
    }
    let mut base = Vec::new();
    for _ in 0..5000 {
        let t = Instant::now();
        raw.get_position(call()).await?;
        base.push(t.elapsed());
    }
    println!(
        "baseline, plain tonic client: p50 {:.1} µs, p99 {:.1} µs",
        pct(&mut base, 0.5) * 1e3,
        pct(&mut base, 0.99) * 1e3
    );

    // Dead link and reconnection, through a proxy that goes silent.
    let (proxy, flowing) = blackhole_proxy(addr.clone()).await;
    let robot = RobotClient::connect(&proxy, options()).await?;
    let mut left = Motor::from_robot(&robot, "left");
    left.set_power(0.2).await?; // a session: heartbeats every W/5
    let mut events = robot.events();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cut = Instant::now();
    flowing.send_replace(false);
    wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Disconnected { .. })
    })
    .await;
    let detected = cut.elapsed();
    println!(
        "dead link detected after {:.0} ms (window {WINDOW_MS} ms, heartbeat every {} ms)",
        detected.as_secs_f64() * 1e3,
        WINDOW_MS / 5
    );
    // Let the first reconnection attempt be pending, then bring the link back.
    let pending = match wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Reconnecting { .. })
    })
    .await
    {
        ConnectionEvent::Reconnecting { delay, .. } => delay,
        _ => Duration::ZERO,
    };
    let asked = Instant::now();
    flowing.send_replace(true);
    wait_event(&mut events, |e| {
        matches!(e, ConnectionEvent::Connected { .. })
    })
    .await;
    let reconnected = asked.elapsed();
    println!(
        "reconnected {:.1} ms after the link came back (pending backoff delay {:.1} ms)",
        reconnected.as_secs_f64() * 1e3,
        pending.as_secs_f64() * 1e3
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&config);
    Ok(())
}
