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
    let r = call(&mut send, addr, DO_COMMAND, &body, &[]).await;
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
    let r = call(
        &mut send,
        addr,
        GO_FOR,
        &go_for("left", 3.0),
        &[("grpc-timeout", "300m")],
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
    let r = call(
        &mut send,
        addr,
        GO_FOR,
        &go_for("right", 1.0),
        &[("grpc-timeout", "0n")],
    )
    .await;
    assert_eq!(r.grpc_status, Some(4), "{r:?}");

    let before = history(addr, "right").await;
    for bad in ["-1S", "garbage", "1H1S", "123456789S"] {
        let r = call(
            &mut send,
            addr,
            GO_FOR,
            &go_for("right", 1.0),
            &[("grpc-timeout", bad)],
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

use common::raw::{RawBody, h2_from, try_h2_from};
use tether_proto::viam::robot::v1 as robot;

type H2 = hyper::client::conn::http2::SendRequest<RawBody>;

/// A raw unary call; its reply.
async fn call(
    send: &mut H2,
    addr: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> common::raw::RawReply {
    read(
        send.send_request(grpc_request(addr, path, headers, full(grpc_frame(body))))
            .await
            .unwrap(),
        Duration::from_secs(10),
    )
    .await
}

/// The one message of a successful reply.
fn message<M: Message + Default>(r: &common::raw::RawReply) -> M {
    assert_eq!(r.grpc_status, Some(0), "{r:?}");
    M::decode(&r.body[5..]).unwrap()
}

/// On an open machine anyone could keep a dead client's session alive by heartbeating its id,
/// read from `GetSessions` (the motor ran on after its client was killed), and one caller
/// could list and cancel another's operations. Now sessions and operations belong to the
/// caller — its key, or on an open machine its address — and nobody may act as another: a
/// caller on another host sees neither, cannot heartbeat the session or cancel the call, and
/// the motor stops when its commander goes. Anyone may still stop anything (StopAll).
#[tokio::test]
async fn nobody_may_act_as_another_caller_and_anyone_may_stop() {
    let server = Server::start(&[
        "--config",
        common::temp_file(
            "open-500ms.json",
            r#"{"components": [{"name": "left", "api": "rdk:component:motor", "model": "fake"},
                               {"name": "right", "api": "rdk:component:motor", "model": "fake"}],
                "network": {"sessions": {"heartbeat_window": "500ms"}}}"#,
        )
        .to_str()
        .unwrap(),
    ]);
    let addr = server.addr.clone();
    // The commander, on 127.0.0.1: a session and a running motor.
    let mut owner = h2(&addr).await;
    let started: robot::StartSessionResponse = message(
        &call(
            &mut owner,
            &addr,
            "/viam.robot.v1.RobotService/StartSession",
            &[],
            &[],
        )
        .await,
    );
    let sid = started.id.clone();
    let set_power = motor::SetPowerRequest {
        name: "left".into(),
        power_pct: 0.5,
        extra: None,
    }
    .encode_to_vec();
    let r = call(
        &mut owner,
        &addr,
        "/viam.component.motor.v1.MotorService/SetPower",
        &set_power,
        &[("viam-sid", &sid)],
    )
    .await;
    assert_eq!(r.grpc_status, Some(0), "{r:?}");
    // And a long call of its own; its id from the owner's own GetOperations.
    let mut long_call = h2(&addr).await;
    let pending = long_call.send_request(grpc_request(
        &addr,
        GO_FOR,
        &[],
        full(grpc_frame(&go_for("right", 100.0))),
    ));
    let long = tokio::spawn(pending);
    let mut opid = String::new();
    for _ in 0..50 {
        let ops: robot::GetOperationsResponse = message(
            &call(
                &mut owner,
                &addr,
                "/viam.robot.v1.RobotService/GetOperations",
                &[],
                &[],
            )
            .await,
        );
        if let Some(op) = ops.operations.iter().find(|o| o.method == GO_FOR) {
            opid = op.id.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!opid.is_empty(), "the owner does not see its own GoFor");

    // Another host, 127.0.0.2.
    let mut other = h2_from(&addr, "127.0.0.2").await;
    let sessions: robot::GetSessionsResponse = message(
        &call(
            &mut other,
            &addr,
            "/viam.robot.v1.RobotService/GetSessions",
            &[],
            &[],
        )
        .await,
    );
    assert!(
        sessions.sessions.is_empty(),
        "another caller's sessions are listed: {sessions:?}"
    );
    let ops: robot::GetOperationsResponse = message(
        &call(
            &mut other,
            &addr,
            "/viam.robot.v1.RobotService/GetOperations",
            &[],
            &[],
        )
        .await,
    );
    assert!(
        ops.operations.is_empty(),
        "another caller's operations are listed: {ops:?}"
    );
    let cancel = robot::CancelOperationRequest { id: opid.clone() }.encode_to_vec();
    let r = call(
        &mut other,
        &addr,
        "/viam.robot.v1.RobotService/CancelOperation",
        &cancel,
        &[],
    )
    .await;
    assert_eq!(r.grpc_status, Some(7), "PERMISSION_DENIED: {r:?}");
    // The owner sees its own.
    let ops: robot::GetOperationsResponse = message(
        &call(
            &mut owner,
            &addr,
            "/viam.robot.v1.RobotService/GetOperations",
            &[],
            &[],
        )
        .await,
    );
    assert!(ops.operations.iter().any(|o| o.id == opid), "{ops:?}");

    // The commander goes silent; the other host heartbeats its session for it, in vain.
    let heartbeat = robot::SendSessionHeartbeatRequest { id: sid.clone() }.encode_to_vec();
    let gone = Instant::now();
    let mut stopped = false;
    while gone.elapsed() < Duration::from_secs(3) {
        let r = call(
            &mut other,
            &addr,
            "/viam.robot.v1.RobotService/SendSessionHeartbeat",
            &heartbeat,
            &[],
        )
        .await;
        assert_eq!(
            r.grpc_status,
            Some(3),
            "a stranger's heartbeat was accepted: {r:?}"
        );
        assert_eq!(r.grpc_message, "SESSION_EXPIRED");
        if history(&addr, "left").await.last().map(String::as_str) == Some("stop") {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stopped,
        "the motor kept running after its commander went silent"
    );
    assert!(
        gone.elapsed() < Duration::from_secs(2),
        "{:?}",
        gone.elapsed()
    );

    // Anyone may stop anything: StopAll from the other host ends the long call.
    let r = call(
        &mut other,
        &addr,
        "/viam.robot.v1.RobotService/StopAll",
        &[],
        &[],
    )
    .await;
    assert_eq!(r.grpc_status, Some(0), "{r:?}");
    let response = tokio::time::timeout(Duration::from_secs(5), long)
        .await
        .expect("the GoFor ends with StopAll")
        .unwrap()
        .unwrap();
    let r = read(response, Duration::from_secs(5)).await;
    assert_ne!(r.grpc_status, Some(0), "the GoFor outlived StopAll: {r:?}");
}

use common::raw::fed;

/// A request that never finished held its connection slot forever: with `max_connections:
/// 50`, 60 connections that each sent one HEADERS frame without END_STREAM (and answered
/// pings) locked out 118 of 118 new clients for 30 s. Now a connection with no working call
/// is idle however many calls it has open, the table makes room for a newcomer by closing the
/// longest-idle connection, and one address holds at most a share of the slots.
#[tokio::test]
async fn stalled_requests_hold_no_slot_and_a_newcomer_gets_in() {
    let config = common::temp_file(
        "stall-50.json",
        r#"{"components": [{"name": "left", "api": "rdk:component:motor", "model": "fake"}],
            "network": {"max_connections": 50}}"#,
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let addr = server.addr.clone();
    let version = "/viam.robot.v1.RobotService/GetVersion";
    // The attack, from 60 addresses (no per-address cap applies).
    let mut held = Vec::new();
    for i in 0..60 {
        let ip = format!("127.0.0.{}", 2 + i);
        let Some(mut send) = try_h2_from(&addr, &ip).await else {
            continue;
        };
        let (tx, body) = fed();
        let pending = send.send_request(grpc_request(&addr, version, &[], body));
        held.push((send, tx, tokio::spawn(pending)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A legitimate client gets in within a few seconds, attack or not.
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let ch = server.channel().await;
        match common::raw_unary(&ch, version, Vec::new()).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "locked out for {:?} ({attempts} attempts): {e:?}",
                    started.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let waited = started.elapsed();
    eprintln!(
        "a newcomer got in after {waited:?} ({attempts} attempts) during the stalled-request attack"
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    drop(held);
}

/// One address holds at most a share of the slots: the 17th connection from one address is
/// told so (the default share of 50 slots is 16), while another address gets in.
#[tokio::test]
async fn one_address_cannot_take_every_slot() {
    let config = common::temp_file(
        "per-address-50.json",
        r#"{"components": [{"name": "left", "api": "rdk:component:motor", "model": "fake"}],
            "network": {"max_connections": 50}}"#,
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let version = "/viam.robot.v1.RobotService/GetVersion";
    let mut open = Vec::new();
    for _ in 0..16 {
        let ch = server.channel().await;
        common::raw_unary(&ch, version, Vec::new()).await.unwrap();
        open.push(ch);
    }
    let ch = server.channel().await;
    let err = common::raw_unary(&ch, version, Vec::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("for your address"), "{err:?}");
    let mut other = h2_from(&server.addr, "127.0.0.9").await;
    let r = call(&mut other, &server.addr, version, &[], &[]).await;
    assert_eq!(r.grpc_status, Some(0), "{r:?}");
}

/// A unary request whose body never arrives whole (HTTP/2 without END_STREAM, or HTTP/1.1 with
/// a Content-Length it never sends) ends with DEADLINE_EXCEEDED instead of waiting forever.
#[tokio::test]
async fn a_unary_request_that_never_finishes_is_ended() {
    let server = Server::start(&[]);
    let addr = server.addr.clone();
    let mut send = h2(&addr).await;
    let (tx, body) = fed();
    let started = Instant::now();
    let response = send
        .send_request(grpc_request(&addr, GO_FOR, &[], body))
        .await
        .unwrap();
    let r = read(response, Duration::from_secs(30)).await;
    assert_eq!(r.grpc_status, Some(4), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    drop(tx);
    // HTTP/1.1: Content-Length 1000, 10 bytes sent.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "POST {GO_FOR} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/grpc\r\nContent-Length: 1000\r\n\r\n"
    )
    .unwrap();
    // A gRPC prefix declaring a 995-byte message, then 5 of its bytes: 10 of 1000.
    s.write_all(&[0, 0, 0, 0x03, 0xe3, 1, 2, 3, 4, 5]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}: {reply}",
        started.elapsed()
    );
    assert!(
        reply.contains("grpc-status: 4") || reply.starts_with("HTTP/1.1 4"),
        "{reply}"
    );
}

/// The Authenticate limiter was per address only: 50 loopback addresses gave 500 checked
/// guesses in 0.36 s. Failures on one configured key id now share a ceiling across every
/// address (30 at once, 3 per second after).
#[tokio::test]
async fn guesses_from_many_addresses_share_one_ceiling_per_key_id() {
    let config = common::temp_file(
        "auth-ceiling.json",
        r#"{"components": [{"name": "left", "api": "rdk:component:motor", "model": "fake"}],
            "auth": {"handlers": [{"type": "api-key", "config": {"key-a": "right-key"}}]}}"#,
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let addr = server.addr.clone();
    let guess = tether_proto::proto::rpc::v1::AuthenticateRequest {
        entity: "key-a".into(),
        credentials: Some(tether_proto::proto::rpc::v1::Credentials {
            r#type: "api-key".into(),
            payload: "wrong".into(),
        }),
    }
    .encode_to_vec();
    let (mut refused, mut checked) = (0, 0);
    let started = Instant::now();
    for i in 0..20 {
        let mut send = h2_from(&addr, &format!("127.0.1.{}", 1 + i)).await;
        for _ in 0..10 {
            let r = call(
                &mut send,
                &addr,
                "/proto.rpc.v1.AuthService/Authenticate",
                &guess,
                &[],
            )
            .await;
            match r.grpc_status {
                Some(16) => checked += 1,
                Some(8) => refused += 1,
                other => panic!("unexpected {other:?}: {r:?}"),
            }
        }
    }
    let took = started.elapsed();
    eprintln!("{checked} guesses checked, {refused} refused, in {took:?}");
    // The burst, plus the refill over the run.
    let allowed = 30 + (took.as_secs_f64() * 3.0).ceil() as usize + 1;
    assert!(
        checked <= allowed,
        "{checked} guesses checked in {took:?} (allowed {allowed})"
    );
    assert!(refused > 0);
}

/// Monitored calls buffered their first message twice, with nothing bounding the total and no
/// time limit while it was incomplete. Now the session layer reads field 1 where the frames
/// lie, one connection's monitored calls hold at most 64 MiB between them (RESOURCE_EXHAUSTED
/// beyond), and an incomplete message ends with its call's request deadline.
#[tokio::test]
async fn incomplete_monitored_messages_are_bounded_per_connection() {
    let server = Server::start(&[]);
    let addr = server.addr.clone();
    let mut send = h2(&addr).await;
    let set_power = "/viam.component.motor.v1.MotorService/SetPower";
    // Three SetPower calls each declaring a 30 MiB message and sending all but its last byte.
    let declared: u32 = 30 << 20;
    let mut calls = Vec::new();
    let mut feeders = Vec::new();
    for _ in 0..3 {
        let (tx, body) = fed();
        let pending = send.send_request(grpc_request(&addr, set_power, &[], body));
        calls.push(tokio::spawn(pending));
        feeders.push(tokio::spawn(async move {
            let mut prefix = vec![0u8];
            prefix.extend_from_slice(&declared.to_be_bytes());
            let _ = tx.send(bytes::Bytes::from(prefix)).await;
            let chunk = bytes::Bytes::from(vec![0u8; 1 << 20]);
            for _ in 0..29 {
                if tx.send(chunk.clone()).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(bytes::Bytes::from(vec![0u8; (1 << 20) - 1])).await;
            // Held open, never finished.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        }));
    }
    let mut codes = Vec::new();
    for call in calls {
        let response = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("every call is answered")
            .unwrap()
            .unwrap();
        codes.push(read(response, Duration::from_secs(30)).await.grpc_status);
    }
    codes.sort();
    // One is refused for the connection's budget at once; the others end at their deadline.
    assert!(
        codes.contains(&Some(8)),
        "none refused for the budget: {codes:?}"
    );
    assert!(
        codes.contains(&Some(4)),
        "none ended by its deadline: {codes:?}"
    );
    for f in feeders {
        f.abort();
    }
    // The connection and the machine still serve.
    let r = call(
        &mut h2(&addr).await,
        &addr,
        "/viam.robot.v1.RobotService/GetVersion",
        &[],
        &[],
    )
    .await;
    assert_eq!(r.grpc_status, Some(0), "{r:?}");
}
