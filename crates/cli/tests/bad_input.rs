//! Bad input against a real `tether serve` process: every case gets a precise gRPC status or
//! message, and the server keeps serving other clients afterwards.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is the test failing"
)]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Server, raw_stream_once, raw_unary, refused, temp_file};
use tether_proto::viam::component::motor::v1::motor_service_client::MotorServiceClient;
use tether_proto::viam::component::motor::v1::{GetPositionRequest, SetPowerRequest};
use tether_proto::viam::robot::v1::ResourceNamesRequest;
use tether_proto::viam::robot::v1::robot_service_client::RobotServiceClient;
use tonic::Code;

/// A normal call succeeds: the server is still serving.
async fn still_serving(server: &Server) {
    let mut robot = RobotServiceClient::new(server.channel().await);
    let names = robot
        .resource_names(ResourceNamesRequest {})
        .await
        .expect("server still serves")
        .into_inner();
    assert_eq!(names.resources.len(), 12);
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument() {
    let server = Server::start(&[]);
    let ch = server.channel().await;
    // Field 1 declared as a length-delimited string of 100 bytes, but only 3 follow.
    let err = raw_unary(
        &ch,
        "/viam.component.motor.v1.MotorService/GetPosition",
        &b"\x0a\x64abc"[..],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("malformed"), "{}", err.message());
    // A wire type that does not match the field (varint in the `name` string field).
    let err = raw_unary(
        &ch,
        "/viam.component.motor.v1.MotorService/SetPower",
        &b"\x08\x01"[..],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    still_serving(&server).await;
}

#[tokio::test]
async fn unknown_resource_is_not_found_naming_it() {
    let server = Server::start(&[]);
    let mut motor = MotorServiceClient::new(server.channel().await);
    let err = motor
        .set_power(SetPowerRequest {
            name: "wheel-9".into(),
            power_pct: 0.5,
            extra: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("rdk:component:motor/wheel-9"),
        "{}",
        err.message()
    );
    // A resource of another API under the same service is not found either.
    let err = motor
        .get_position(GetPositionRequest {
            name: "base".into(),
            extra: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    still_serving(&server).await;
}

#[tokio::test]
async fn unknown_and_unserved_methods_are_unimplemented() {
    let server = Server::start(&[]);
    let ch = server.channel().await;
    for path in [
        "/viam.component.motor.v1.MotorService/Fly",
        "/no.such.Service/Method",
        // Declared in the proto, not served by this build.
        "/viam.robot.v1.RobotService/Shutdown",
        "/viam.robot.v1.RobotService/GetCloudMetadata",
        "/viam.component.camera.v1.CameraService/GetPointCloud",
    ] {
        let err = raw_unary(&ch, path, Vec::new()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented, "{path}: {err:?}");
    }
    still_serving(&server).await;
}

#[tokio::test]
async fn oversize_message_is_resource_exhausted() {
    let server = Server::start(&[]);
    let ch = server.channel().await;
    let body = vec![0u8; (1 << 25) + 1];
    let err = raw_unary(
        &ch,
        "/viam.component.generic.v1.GenericService/DoCommand",
        body,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("larger than max"),
        "{}",
        err.message()
    );
    // Exactly at the limit is accepted (and then fails to decode as a DoCommandRequest, which
    // proves it reached the decoder).
    let mut at_limit = vec![0x12u8]; // field 2 (command), length-delimited
    at_limit.extend_from_slice(&[0xfa, 0xff, 0xff, 0x0f]); // varint 33554426
    at_limit.resize(1 << 25, 0);
    let err = raw_unary(
        &ch,
        "/viam.component.generic.v1.GenericService/DoCommand",
        at_limit,
    )
    .await
    .unwrap_err();
    assert_ne!(err.code(), Code::ResourceExhausted, "{err:?}");
    still_serving(&server).await;
}

#[tokio::test]
async fn garbage_on_the_socket_is_dropped_and_others_are_served() {
    let server = Server::start(&[]);
    for garbage in [
        &b"\x00\x01\x02\xff\xfe garbage \r\n\r\n"[..],
        // A valid HTTP/2 preface followed by a nonsense frame.
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..],
    ] {
        let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(garbage).unwrap();
        let mut sink = Vec::new();
        // The server answers (HTTP 400 or GOAWAY) and closes; it must not hang.
        let _ = s.read_to_end(&mut sink);
    }
    still_serving(&server).await;
}

#[tokio::test]
async fn readiness_probe_and_opid_header() {
    let server = Server::start(&[]);
    let reply = common::http_get(&server.addr, "/");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    let ch = server.channel().await;
    let r = raw_unary(&ch, "/viam.robot.v1.RobotService/GetVersion", Vec::new())
        .await
        .unwrap();
    let opid = r.metadata().get("opid").expect("opid header");
    assert_eq!(opid.to_str().unwrap().len(), 36, "{opid:?}");
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_our_services() {
    let server = Server::start(&[]);
    let ch = server.channel().await;
    // ServerReflectionRequest { list_services (field 7) = "*" }
    let list = &b"\x3a\x01*"[..];
    for path in [
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ] {
        let replies = raw_stream_once(&ch, path, list).await.expect(path);
        let text = String::from_utf8_lossy(&replies.concat()).into_owned();
        for service in [
            "viam.robot.v1.RobotService",
            "viam.component.motor.v1.MotorService",
            "viam.component.camera.v1.CameraService",
        ] {
            assert!(text.contains(service), "{path} does not list {service}");
        }
    }
}

#[tokio::test]
async fn connection_limit_rejects_with_a_clear_error() {
    let config = temp_file(
        "limit.json",
        r#"{"components": [{"name": "m", "api": "rdk:component:motor", "model": "fake"}],
            "network": {"max_connections": 2}}"#,
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let a = server.channel().await;
    let b = server.channel().await;
    for ch in [&a, &b] {
        raw_unary(ch, "/viam.robot.v1.RobotService/GetVersion", Vec::new())
            .await
            .unwrap();
    }
    let c = server.channel().await;
    let err = raw_unary(&c, "/viam.robot.v1.RobotService/GetVersion", Vec::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("connection limit"),
        "{}",
        err.message()
    );
    // Existing connections are unaffected; a slot frees up when one closes.
    raw_unary(&a, "/viam.robot.v1.RobotService/GetVersion", Vec::new())
        .await
        .unwrap();
    drop((b, c));
    let mut served = false;
    for _ in 0..100 {
        let d = server.channel().await;
        if raw_unary(&d, "/viam.robot.v1.RobotService/GetVersion", Vec::new())
            .await
            .is_ok()
        {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "no slot freed after closing a connection");
}

#[test]
fn bad_config_files_are_refused_with_a_clear_error() {
    let cases = [
        ("syntax.json", r#"{"components": [ "#, "EOF while parsing"),
        (
            "unknown_key.json",
            r#"{"componets": []}"#,
            "unknown field `componets`",
        ),
        (
            "bad_attr.json",
            r#"{"components": [{"name": "left", "api": "rdk:component:motor", "model": "fake", "attributes": {"max_rpm": "fast"}}]}"#,
            r#"components[0] "left": attributes: invalid type"#,
        ),
        (
            "dup.json",
            r#"{"components": [{"name": "a", "type": "motor", "model": "fake"}, {"name": "a", "type": "servo", "model": "fake"}]}"#,
            "duplicate name",
        ),
        (
            "model.json",
            r#"{"components": [{"name": "a", "type": "motor", "model": "acme:motors:turbo"}]}"#,
            "unknown model",
        ),
        (
            "window.json",
            r#"{"network": {"sessions": {"heartbeat_window": "10ms"}}}"#,
            "heartbeat_window must be between [30ms, 1m]",
        ),
    ];
    for (name, text, expected) in cases {
        let (code, stderr) = refused(&temp_file(name, text));
        assert_ne!(code, Some(0), "{name} was accepted");
        assert!(code.is_some(), "{name}: killed by a signal: {stderr}");
        assert!(
            stderr.contains(expected),
            "{name}: expected {expected:?} in:\n{stderr}"
        );
    }
    let (code, stderr) = refused(std::path::Path::new("/nonexistent/tether.json"));
    assert_ne!(code, Some(0));
    assert!(stderr.contains("cannot read config file"), "{stderr}");
}

#[test]
fn sigterm_shuts_down_gracefully_and_stops_actuators() {
    let mut server = Server::start(&[]);
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("server exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", server.log());
    std::thread::sleep(Duration::from_millis(100));
    let log = server.log();
    assert!(log.contains("stopped all actuators"), "{log}");
}

#[tokio::test]
async fn many_pipelined_small_calls_on_one_connection_are_all_served() {
    // A busy client pipelining small unary calls must not be mistaken for a DATA-frame flood
    // (h2 answers that with GOAWAY ENHANCE_YOUR_CALM, dropping every call on the connection).
    let server = Server::start(&[]);
    let ch = server.channel().await;
    let calls = (0..3000).map(|_| {
        let mut motor = MotorServiceClient::new(ch.clone());
        async move {
            motor
                .get_position(GetPositionRequest {
                    name: "left".into(),
                    extra: None,
                })
                .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of 3000 failed, first: {:?}",
        failed.len(),
        failed.first()
    );
}
