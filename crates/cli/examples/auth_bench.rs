//! Authenticate latency: `calls` sequential `AuthService/Authenticate` calls on one connection;
//! prints p50/p99/max, then the last access token on a line `token: ...` (for h2load).
//!
//!     cargo run --release --example auth_bench -- 127.0.0.1:8080 KEY_ID KEY [calls=2000]

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark harness: a failed step aborts the measurement"
)]

use std::time::{Duration, Instant};

use tether_proto::proto::rpc::v1::auth_service_client::AuthServiceClient;
use tether_proto::proto::rpc::v1::{AuthenticateRequest, Credentials};
use tether_proto::viam::component::motor::v1::GetPositionRequest;
use tether_proto::viam::component::motor::v1::motor_service_client::MotorServiceClient;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(id), Some(key)) = (args.first(), args.get(1), args.get(2)) else {
        return Err("usage: auth_bench ADDR KEY_ID KEY [calls]".into());
    };
    let calls: usize = args.get(3).map_or(Ok(2000), |s| s.parse())?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut client = AuthServiceClient::new(channel.clone());
    let request = || AuthenticateRequest {
        entity: id.clone(),
        credentials: Some(Credentials {
            r#type: "api-key".into(),
            payload: key.clone(),
        }),
    };
    let mut token = String::new();
    for _ in 0..100 {
        token = client
            .authenticate(request())
            .await?
            .into_inner()
            .access_token;
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        token = client
            .authenticate(request())
            .await?
            .into_inner()
            .access_token;
        samples.push(t.elapsed());
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "Authenticate: {calls} sequential calls: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3
    );
    // h2load only sees HTTP 200; prove the token is accepted for a real call (and that a call
    // without it is refused), so the authenticated throughput run measures real work.
    let mut motor = MotorServiceClient::new(channel.clone());
    let mut call = tonic::Request::new(GetPositionRequest {
        name: "left".into(),
        extra: None,
    });
    call.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    motor.get_position(call).await?;
    let refused = motor
        .get_position(GetPositionRequest {
            name: "left".into(),
            extra: None,
        })
        .await
        .expect_err("a call without a token must be refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    println!("token: {token}");
    Ok(())
}
