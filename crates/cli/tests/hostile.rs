//! What a hostile client can do, tried against a real `tether serve` process, and kept fixed:
//! each test reproduces an attack from the hardening review and checks the machine answers it
//! precisely and keeps serving everyone else.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is the test failing"
)]

mod common;

use std::time::{Duration, Instant};

use common::Server;
use common::raw::{full, grpc_frame, grpc_request, h2, read};
use prost::Message;
use tether_proto::viam::common::v1::DoCommandRequest;
use tether_proto::viam::component::motor::v1 as motor;

const GO_FOR: &str = "/viam.component.motor.v1.MotorService/GoFor";
const DO_COMMAND: &str = "/viam.component.motor.v1.MotorService/DoCommand";

fn go_for(name: &str, revolutions: f64) -> Vec<u8> {
    motor::GoForRequest {
        name: name.into(),
        rpm: 60.0,
        revolutions,
        extra: None,
    }
    .encode_to_vec()
}

/// The commands a fake motor recorded (`DoCommand {"command": "history"}`), by name.
async fn history(addr: &str, name: &str) -> Vec<String> {
    let mut send = h2(addr).await;
    let command = prost_types::Struct {
        fields: [(
            "command".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("history".into())),
            },
        )]
        .into_iter()
        .collect(),
    };
    let body = DoCommandRequest {
        name: name.into(),
        command: Some(command),
    }
    .encode_to_vec();
    let r = read(
        send.send_request(grpc_request(addr, DO_COMMAND, &[], full(grpc_frame(&body))))
            .await
            .unwrap(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(r.grpc_status, Some(0), "{r:?}");
    let text = String::from_utf8_lossy(&r.body).to_string();
    ["go_for", "set_power", "stop"]
        .iter()
        .flat_map(|c| std::iter::repeat_n(c.to_string(), text.matches(c).count()))
        .collect()
}

/// `grpc-timeout` was ignored on direct gRPC: a 3 s GoFor with a 300 ms deadline ran 3 s, and
/// `0n`, `-1S`, `garbage`, `1H1S` were all OK. Now the deadline ends the call (and its motion)
/// and malformed values are refused before anything runs.
#[tokio::test]
async fn grpc_timeouts_are_enforced_and_malformed_ones_refused() {
    let server = Server::start(&[]);
    let addr = &server.addr;
    let mut send = h2(addr).await;
    let started = Instant::now();
    let r = read(
        send.send_request(grpc_request(
            addr,
            GO_FOR,
            &[("grpc-timeout", "300m")],
            full(grpc_frame(&go_for("left", 3.0))),
        ))
        .await
        .unwrap(),
        Duration::from_secs(10),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(r.grpc_status, Some(4), "DEADLINE_EXCEEDED: {r:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The motion the call started halted with it.
    let mut robot =
        tether_proto::viam::component::motor::v1::motor_service_client::MotorServiceClient::new(
            server.channel().await,
        );
    let moving = robot
        .is_moving(motor::IsMovingRequest {
            name: "left".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .is_moving;
    assert!(!moving, "the deadline's GoFor still runs");

    // `0n` has already passed.
    let r = read(
        send.send_request(grpc_request(
            addr,
            GO_FOR,
            &[("grpc-timeout", "0n")],
            full(grpc_frame(&go_for("right", 1.0))),
        ))
        .await
        .unwrap(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(r.grpc_status, Some(4), "{r:?}");

    let before = history(addr, "right").await;
    for bad in ["-1S", "garbage", "1H1S", "123456789S"] {
        let r = read(
            send.send_request(grpc_request(
                addr,
                GO_FOR,
                &[("grpc-timeout", bad)],
                full(grpc_frame(&go_for("right", 1.0))),
            ))
            .await
            .unwrap(),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(
            r.grpc_status,
            Some(3),
            "INVALID_ARGUMENT for {bad:?}: {r:?}"
        );
        assert!(r.grpc_message.contains("grpc-timeout"), "{r:?}");
    }
    // None of the refused calls reached the motor.
    assert_eq!(history(addr, "right").await, before);
}

use tether_proto::proto::rpc::webrtc::v1 as signaling;
use tether_proto::proto::rpc::webrtc::v1::signaling_service_client::SignalingServiceClient;

fn to_machine<T>(addr: &str, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("rpc-host", addr.parse().unwrap());
    r
}

/// The server's resident memory, from /proc.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Any client that passed auth could register as an answerer on the machine's embedded
/// signaling (an `Answer` stream naming the machine) and receive other callers' offers: with 8
/// streams an attacker got 8 of 20. The embedded service now refuses `Answer`: the machine's
/// own answerer takes offers in process.
#[tokio::test]
async fn an_outside_answerer_is_refused_and_callers_still_reach_the_machine() {
    let server = Server::start(&[]);
    let addr = server.addr.clone();
    let mut client = SignalingServiceClient::new(server.channel().await);
    let hello = signaling::AnswerResponse {
        uuid: String::new(),
        stage: None,
    };
    let mut refused = 0;
    for _ in 0..8 {
        let stream = futures::stream::iter([hello.clone()]);
        match client.answer(to_machine(&addr, stream)).await {
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
                refused += 1;
            }
            Ok(response) => {
                let mut offers = response.into_inner();
                let first = tokio::time::timeout(Duration::from_secs(5), offers.message()).await;
                match first {
                    Ok(Err(status)) => {
                        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
                        refused += 1;
                    }
                    other => panic!("an outside Answer stream was served: {other:?}"),
                }
            }
        }
    }
    assert_eq!(refused, 8);
    // Callers still reach the machine itself, over WebRTC.
    for _ in 0..5 {
        let robot = tether_client::RobotClient::connect(
            &addr,
            tether_client::Options::default().insecure(),
        )
        .await
        .unwrap();
        assert_eq!(robot.transport(), "webrtc");
        robot.resource_names().await.unwrap();
    }
}

/// A 30 MiB SDP was accepted and cost 173 MB for one call. Signaling messages are now decoded
/// only up to a small cap, and an SDP over 64 KiB is refused by name.
#[tokio::test]
async fn oversize_sdps_are_refused_without_the_memory() {
    let server = Server::start(&[]);
    let addr = server.addr.clone();
    let pid = server.child.id();
    let mut client =
        SignalingServiceClient::new(server.channel().await).max_encoding_message_size(64 << 20);
    let before = rss_kb(pid);
    for _ in 0..3 {
        let call = signaling::CallRequest {
            sdp: "v".repeat(30 << 20),
            disable_trickle: false,
        };
        let status = client.call(to_machine(&addr, call)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    }
    let after = rss_kb(pid);
    assert!(
        after < before + 40_000,
        "RSS grew from {before} kB to {after} kB after three 30 MiB SDPs"
    );
    let call = signaling::CallRequest {
        sdp: "v".repeat(100 << 10),
        disable_trickle: false,
    };
    let status = client.call(to_machine(&addr, call)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("SDP of 102400 bytes"),
        "{status:?}"
    );
    eprintln!("RSS before {before} kB, after three 30 MiB SDPs {after} kB");
}

use common::raw::h1;

/// A web page could drive a motor on an open machine: `fetch(…, {mode: "no-cors"})` sends a
/// "simple" cross-origin POST with `Content-Type: text/plain` and a gRPC frame as the body, and
/// it was served (HTTP 200, the motor ran). Now a gRPC path needs a gRPC content type (415),
/// and plaintext HTTP/1.1 must name the machine in `Host` (421: DNS rebinding).
#[tokio::test]
async fn cross_origin_simple_requests_and_rebound_hosts_are_refused() {
    let server = Server::start(&[]);
    let addr = server.addr.clone();
    let set_power = motor::SetPowerRequest {
        name: "left".into(),
        power_pct: 0.5,
        extra: None,
    }
    .encode_to_vec();
    let path = "/viam.component.motor.v1.MotorService/SetPower";
    let before = history(&addr, "left").await;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        let mut send = h1(&addr).await;
        let request = http::Request::builder()
            .method("POST")
            .uri(path)
            .header("host", &addr)
            .header("origin", "http://evil.example")
            .header("content-type", content_type)
            .body(full(grpc_frame(&set_power)))
            .unwrap();
        let r = read(
            send.send_request(request).await.unwrap(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            r.status,
            http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}: {r:?}"
        );
    }
    // The same over HTTP/2 (a fetch from a page cannot, but nothing else may either).
    let mut send = h2(&addr).await;
    let mut request = grpc_request(&addr, path, &[], full(grpc_frame(&set_power)));
    request
        .headers_mut()
        .insert("content-type", http::HeaderValue::from_static("text/plain"));
    let r = read(
        send.send_request(request).await.unwrap(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(r.status, http::StatusCode::UNSUPPORTED_MEDIA_TYPE, "{r:?}");
    // DNS rebinding: the attacker's name in Host, over plaintext HTTP/1.1.
    let port = addr.rsplit(':').next().unwrap();
    for host in [format!("evil.example:{port}"), "evil.example".to_string()] {
        let mut send = h1(&addr).await;
        let request = http::Request::builder()
            .method("POST")
            .uri(path)
            .header("host", &host)
            .header("content-type", "application/grpc")
            .body(full(grpc_frame(&set_power)))
            .unwrap();
        let r = read(
            send.send_request(request).await.unwrap(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            r.status,
            http::StatusCode::MISDIRECTED_REQUEST,
            "{host}: {r:?}"
        );
    }
    // Nothing reached the motor.
    assert_eq!(history(&addr, "left").await, before);
    // The machine's own names still work for a plain GET (the readiness probe).
    for host in [addr.clone(), format!("localhost:{port}")] {
        let mut send = h1(&addr).await;
        let request = http::Request::builder()
            .uri("/")
            .header("host", &host)
            .body(full(Vec::new()))
            .unwrap();
        let r = read(
            send.send_request(request).await.unwrap(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(r.status, http::StatusCode::OK, "{host}: {r:?}");
    }
}

/// The fakes kept every command's `extra` in their history, bounded in entries but not in
/// bytes: a 4 MiB `Stop` whose `extra` is a million nulls cost 33.6 MB of RSS, and under a
/// 1.5 GB address-space limit the server aborted after 40 of them (every safety stop with it).
/// Now arguments are kept compactly; 40 of them leave the server's memory about where it was.
#[tokio::test]
async fn oversize_extras_do_not_accumulate_in_memory() {
    let server = Server::start(&[]);
    let addr = server.addr.clone();
    let pid = server.child.id();
    let nulls = prost_types::Value {
        kind: Some(prost_types::value::Kind::ListValue(
            prost_types::ListValue {
                values: vec![
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::NullValue(0)),
                    };
                    1_000_000
                ],
            },
        )),
    };
    let stop = motor::StopRequest {
        name: "left".into(),
        extra: Some(prost_types::Struct {
            fields: [("x".to_string(), nulls)].into_iter().collect(),
        }),
    }
    .encode_to_vec();
    assert!(stop.len() > 3 << 20, "{}", stop.len());
    let frame = grpc_frame(&stop);
    let before = rss_kb(pid);
    let mut send = h2(&addr).await;
    for i in 0..40 {
        let r = read(
            send.send_request(grpc_request(
                &addr,
                "/viam.component.motor.v1.MotorService/Stop",
                &[],
                full(frame.clone()),
            ))
            .await
            .unwrap(),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(r.grpc_status, Some(0), "stop {i}: {r:?}");
    }
    let after = rss_kb(pid);
    eprintln!("RSS before {before} kB, after 40 oversize extras {after} kB");
    assert!(
        after < before + 200_000,
        "RSS grew from {before} kB to {after} kB"
    );
    // The history still says what happened, compactly.
    let h = history(&addr, "left").await;
    assert_eq!(h.iter().filter(|c| *c == "stop").count(), 40);
}
