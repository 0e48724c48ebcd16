//! WebRTC benchmark against a release `tether serve --no-tls` it starts on 127.0.0.1:
//!
//! 1. N fresh WebRTC connections in a row (default 1000): connect time (dial through the
//!    machine's own signaling until the data channel is open), the first call on each, and the
//!    server's RSS, open file descriptors and threads every 10 % of the way — flat means no
//!    peer, socket or task is left behind;
//! 2. unary round trip (GetVersion) over WebRTC and, side by side, over direct gRPC;
//! 3. throughput of 8 MiB messages (a generic component's DoCommand echoes them back).
//!
//!     cargo run --release --example webrtc_bench -- target/release/tether [CONNECTIONS]

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark harness: a failed step aborts the measurement"
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tether_client::{Options, RobotClient};
use tether_proto::viam::common::v1::DoCommandRequest;
use tether_proto::viam::component::generic::v1::generic_service_client::GenericServiceClient;
use tether_proto::viam::robot::v1::GetVersionRequest;

fn pct(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)].as_secs_f64() * 1e3
}

/// (RSS KiB, open fds, threads) of a process.
fn usage(pid: u32) -> (u64, usize, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (field("VmRSS:"), fds, field("Threads:"))
}

async fn unary_rtt(client: &RobotClient, calls: usize) -> (f64, f64) {
    let mut robot = client.robot();
    for _ in 0..100 {
        robot.get_version(GetVersionRequest {}).await.unwrap();
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        robot.get_version(GetVersionRequest {}).await.unwrap();
        samples.push(t.elapsed());
    }
    (pct(&mut samples, 0.5), pct(&mut samples, 0.99))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let binary = args
        .next()
        .unwrap_or_else(|| "target/release/tether".into());
    let connections: usize = args.next().map_or(1000, |n| n.parse().expect("a count"));
    let mut server = Command::new(&binary)
        .args(["serve", "--bind", "127.0.0.1:0", "--no-tls"])
        .env(
            "RUST_LOG",
            std::env::var("SERVER_LOG").unwrap_or_else(|_| "warn,tether=info".into()),
        )
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start tether serve");
    let pid = server.id();
    // Kill the server however this ends (a failed assertion included).
    struct Reap(u32);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.to_string()).status();
        }
    }
    let _reap = Reap(pid);
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server output").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // With SERVER_LOG set, the server's log goes to our stderr.
    let echo = std::env::var("SERVER_LOG").is_ok();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if echo {
                eprintln!("server: {line}");
            }
        }
    });
    let options = || Options {
        dial_timeout: Duration::from_secs(10),
        ..Options::default().insecure()
    };

    // 1. Fresh connections in a row.
    let mut connect = Vec::with_capacity(connections);
    let mut closing = Vec::with_capacity(connections);
    let (mut lost, mut not_webrtc) = (0, 0);
    let step = (connections / 10).max(1);
    println!("fresh WebRTC connections: {connections}");
    println!("  after      RSS MiB   fds  threads");
    let report = |n: usize| {
        let (rss, fds, threads) = usage(pid);
        println!(
            "  {n:>5} {:>10.1} {fds:>5} {threads:>8}",
            rss as f64 / 1024.0
        );
    };
    report(0);
    let started = Instant::now();
    for i in 1..=connections {
        let t = Instant::now();
        let client = RobotClient::connect(&addr, options())
            .await
            .expect("connect");
        connect.push(t.elapsed());
        if client.transport() != "webrtc" {
            not_webrtc += 1;
        }
        if let Err(e) = client.robot().get_version(GetVersionRequest {}).await {
            println!("  connection {i}: first call failed: {e}");
            lost += 1;
        }
        let t = Instant::now();
        drop(client);
        closing.push(t.elapsed());
        if i % step == 0 {
            // Give the machine a moment to notice the last peer is gone.
            tokio::time::sleep(Duration::from_millis(200)).await;
            report(i);
        }
    }
    let total = started.elapsed();
    println!(
        "  connect p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} in {:.1} s",
        pct(&mut connect, 0.5),
        pct(&mut connect, 0.9),
        pct(&mut connect, 0.99),
        pct(&mut connect, 1.0),
        connections,
        total.as_secs_f64()
    );
    println!(
        "  dropping a client: p50 {:.1} ms, max {:.1} ms",
        pct(&mut closing, 0.5),
        pct(&mut closing, 1.0)
    );
    println!("  first calls lost: {lost}; connections not over WebRTC: {not_webrtc}");

    // 2. Unary round trip, WebRTC and direct.
    let rtc = RobotClient::connect(&addr, options()).await.unwrap();
    assert_eq!(rtc.transport(), "webrtc");
    let direct = RobotClient::connect(&addr, options().disable_webrtc())
        .await
        .unwrap();
    for round in 0..2 {
        let (p50, p99) = unary_rtt(&rtc, 3000).await;
        println!("unary GetVersion over WebRTC (round {round}): p50 {p50:.3} ms, p99 {p99:.3} ms");
        let (p50, p99) = unary_rtt(&direct, 3000).await;
        println!("unary GetVersion over direct (round {round}): p50 {p50:.3} ms, p99 {p99:.3} ms");
    }

    // 3. 8 MiB messages, echoed.
    for (name, client) in [("WebRTC", &rtc), ("direct", &direct)] {
        let mut generic = GenericServiceClient::new(client.channel().clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let payload = "x".repeat(8 << 20);
        let mut command = prost_types::Struct::default();
        command.fields.insert(
            "blob".into(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(payload)),
            },
        );
        let request = DoCommandRequest {
            name: "generic".into(),
            command: Some(command),
        };
        let rounds = 8;
        let t = Instant::now();
        for _ in 0..rounds {
            generic.do_command(request.clone()).await.expect("echo");
        }
        let secs = t.elapsed().as_secs_f64();
        // Each round carries 8 MiB each way.
        println!(
            "8 MiB DoCommand echo over {name}: {:.0} ms per round trip, {:.1} MiB/s (both directions counted)",
            secs * 1e3 / rounds as f64,
            (rounds * 16) as f64 / secs
        );
    }
    drop((rtc, direct));
    let _ = server.kill();
    let _ = server.wait();
}
