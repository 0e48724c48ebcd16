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
    let mut robot = tether_proto::viam::component::motor::v1::motor_service_client::MotorServiceClient::new(
        server.channel().await,
    );
    let moving = robot
        .is_moving(motor::IsMovingRequest { name: "left".into() })
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
        assert_eq!(r.grpc_status, Some(3), "INVALID_ARGUMENT for {bad:?}: {r:?}");
        assert!(r.grpc_message.contains("grpc-timeout"), "{r:?}");
    }
    // None of the refused calls reached the motor.
    assert_eq!(history(addr, "right").await, before);
}
