//! Latency benchmark: `callers` concurrent callers share ONE HTTP/2 connection and each makes
//! `calls` sequential unary `MotorService/GetPosition` calls; prints p50/p99/max per call.
//!
//!     cargo run --release --example latency -- 127.0.0.1:8080 [callers=8] [calls=5000]
//!
//! Run by `scripts/bench` against a release `tether serve`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark harness: a failed step aborts the measurement"
)]

use std::time::{Duration, Instant};

use tether_proto::viam::component::motor::v1::GetPositionRequest;
use tether_proto::viam::component::motor::v1::motor_service_client::MotorServiceClient;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let callers: usize = args.next().map_or(Ok(8), |s| s.parse())?;
    let calls: usize = args.next().map_or(Ok(5000), |s| s.parse())?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let request = || GetPositionRequest {
        name: "left".into(),
        extra: None,
    };
    // Warm up the connection and the server.
    let mut warm = MotorServiceClient::new(channel.clone());
    for _ in 0..500 {
        warm.get_position(request()).await?;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let mut client = MotorServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(calls);
            for _ in 0..calls {
                let t = Instant::now();
                client.get_position(request()).await?;
                samples.push(t.elapsed());
            }
            Ok::<_, tonic::Status>(samples)
        }));
    }
    let mut all: Vec<Duration> = Vec::with_capacity(callers * calls);
    for t in tasks {
        all.extend(t.await??);
    }
    let wall = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "latency: {callers} callers on one connection, {} calls in {:.2} s ({:.0} calls/s): \
         p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        all.len(),
        wall.as_secs_f64(),
        all.len() as f64 / wall.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        all[all.len() - 1].as_secs_f64() * 1e3,
    );
    Ok(())
}
