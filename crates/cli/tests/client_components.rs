//! The Rust client SDK's typed component clients and robot helpers against the demo machine,
//! mirroring what `tests/python/test_interop.py` asks of the Python SDK.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is the test failing"
)]

mod common;

use std::time::Duration;

use common::Server;
use prost_types::value::Kind;
use prost_types::{Struct, Value};
use tether_client::{
    Arm, Base, Button, Camera, ClientError, Gantry, Generic, Gripper, Motor, Options, Pose,
    RobotClient, Sensor, Servo, Switch, Vector3,
};
use tether_proto::viam::robot::v1::{get_machine_status_response, resource_status};

const GO_FOR_METHOD: &str = "/viam.component.motor.v1.MotorService/GoFor";
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The demo machine and a client connected to it.
async fn demo() -> (Server, RobotClient) {
    let server = Server::start(&[]);
    let robot = RobotClient::connect(&server.addr, Options::default().insecure())
        .await
        .unwrap();
    (server, robot)
}

fn text(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

fn number(n: f64) -> Value {
    Value {
        kind: Some(Kind::NumberValue(n)),
    }
}

fn structure(fields: &[(&str, Value)]) -> Struct {
    Struct {
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    }
}

/// The `command` of every entry of a `do_command({"command": "history"})` result.
fn history_commands(result: &Struct) -> Vec<String> {
    let Some(Kind::ListValue(list)) = result.fields.get("history").and_then(|v| v.kind.as_ref())
    else {
        panic!("no history list in {result:?}");
    };
    list.values
        .iter()
        .map(|entry| match &entry.kind {
            Some(Kind::StructValue(s)) => {
                match s.fields.get("command").and_then(|v| v.kind.as_ref()) {
                    Some(Kind::StringValue(c)) => c.clone(),
                    other => panic!("history entry without a command: {other:?}"),
                }
            }
            other => panic!("history entry is not a struct: {other:?}"),
        })
        .collect()
}

fn history() -> Struct {
    structure(&[("command", text("history"))])
}

fn assert_close(got: f64, want: f64, tolerance: f64) {
    assert!(
        (got - want).abs() <= tolerance,
        "{got} is not within {tolerance} of {want}"
    );
}

/// Polls `robot.operations()` until an operation with `method` shows up.
async fn find_operation(robot: &RobotClient, method: &str) -> String {
    for _ in 0..100 {
        let ops = robot.operations().await.unwrap();
        if let Some(op) = ops.iter().find(|o| o.method == method) {
            return op.id.clone();
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("no {method} operation appeared");
}

#[tokio::test]
async fn wrappers_know_their_names_and_expose_the_generated_client() {
    let (_server, robot) = demo().await;
    assert_eq!(Motor::from_robot(&robot, "left").name(), "left");
    assert_eq!(Base::from_robot(&robot, "base").name(), "base");
    assert_eq!(Arm::from_robot(&robot, "arm").name(), "arm");
    assert_eq!(Gripper::from_robot(&robot, "gripper").name(), "gripper");
    assert_eq!(Gantry::from_robot(&robot, "gantry").name(), "gantry");
    assert_eq!(Servo::from_robot(&robot, "servo").name(), "servo");
    assert_eq!(Switch::from_robot(&robot, "switch").name(), "switch");
    assert_eq!(Button::from_robot(&robot, "button").name(), "button");
    assert_eq!(Sensor::from_robot(&robot, "sensor").name(), "sensor");
    assert_eq!(Camera::from_robot(&robot, "camera").name(), "camera");
    assert_eq!(Generic::from_robot(&robot, "generic").name(), "generic");

    // The generated client reaches methods the wrapper has no helper for.
    let gantry = Gantry::from_robot(&robot, "gantry");
    let status = gantry
        .client()
        .get_status(tether_proto::viam::common::v1::GetStatusRequest {
            name: "gantry".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.result.is_some(), "{status:?}");

    // An unknown name fails as a status, not a panic.
    let err = Motor::from_robot(&robot, "nope")
        .position()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Status(s) if s.code() == tonic::Code::NotFound),
        "{err:?}"
    );
}

#[tokio::test]
async fn motor() {
    let (_server, robot) = demo().await;
    let mut m = Motor::from_robot(&robot, "left");

    m.set_power(0.5).await.unwrap();
    let (on, pct) = m.is_powered().await.unwrap();
    assert!(on);
    assert_close(pct, 0.5, 1e-9);
    assert!(m.is_moving().await.unwrap());
    let p0 = m.position().await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let p1 = m.position().await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let p2 = m.position().await.unwrap();
    assert!(
        p0 < p1 && p1 < p2,
        "position not advancing: {p0}, {p1}, {p2}"
    );

    m.stop().await.unwrap();
    assert!(!m.is_moving().await.unwrap());
    assert!(!m.is_powered().await.unwrap().0);

    let start = m.position().await.unwrap();
    m.go_for(600.0, 0.5).await.unwrap(); // blocks until done
    assert!(
        !m.is_moving().await.unwrap(),
        "still moving after go_for returned"
    );
    let after = m.position().await.unwrap();
    assert_close(after - start, 0.5, 0.05);

    let target = ((after + 1.0) * 1000.0).round() / 1000.0;
    m.go_to(600.0, target).await.unwrap();
    assert_close(m.position().await.unwrap(), target, 0.05);

    m.set_rpm(60.0).await.unwrap();
    assert!(m.is_moving().await.unwrap());
    m.stop().await.unwrap();
    assert!(!m.is_moving().await.unwrap());
    m.reset_zero_position(0.0).await.unwrap();
    assert_close(m.position().await.unwrap(), 0.0, 0.02);

    assert!(m.properties().await.unwrap().position_reporting);
    let commands = history_commands(&m.do_command(history()).await.unwrap());
    assert!(commands.iter().any(|c| c == "stop"), "{commands:?}");
}

#[tokio::test]
async fn base() {
    let (_server, robot) = demo().await;
    let mut b = Base::from_robot(&robot, "base");

    let forward = Vector3 {
        x: 0.0,
        y: 0.5,
        z: 0.0,
    };
    b.set_power(forward, Vector3::default()).await.unwrap();
    assert!(b.is_moving().await.unwrap());
    b.stop().await.unwrap();
    assert!(!b.is_moving().await.unwrap());

    let velocity = Vector3 {
        x: 0.0,
        y: 100.0,
        z: 0.0,
    };
    b.set_velocity(velocity, Vector3::default()).await.unwrap();
    assert!(b.is_moving().await.unwrap());
    b.stop().await.unwrap();
    assert!(!b.is_moving().await.unwrap());

    b.move_straight(50, 500.0).await.unwrap();
    assert!(!b.is_moving().await.unwrap());
    b.spin(10.0, 100.0).await.unwrap();
    assert!(!b.is_moving().await.unwrap());

    let props = b.properties().await.unwrap();
    assert!(props.width_meters > 0.0, "{props:?}");
    assert!(props.turning_radius_meters >= 0.0, "{props:?}");
    assert!(props.wheel_circumference_meters >= 0.0, "{props:?}");
}

#[tokio::test]
async fn arm() {
    let (_server, robot) = demo().await;
    let mut a = Arm::from_robot(&robot, "arm");

    let joints = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0];
    a.move_to_joint_positions(&joints).await.unwrap();
    let got = a.joint_positions().await.unwrap();
    assert_eq!(got.len(), joints.len(), "{got:?}");
    for (g, w) in got.iter().zip(joints) {
        assert_close(*g, w, 1e-6);
    }

    let want = Pose {
        x: 100.0,
        y: 200.0,
        z: 300.0,
        o_x: 0.0,
        o_y: 0.0,
        o_z: 1.0,
        theta: 0.0,
    };
    a.move_to_position(want).await.unwrap();
    let pose = a.end_position().await.unwrap();
    for (g, w) in [
        (pose.x, want.x),
        (pose.y, want.y),
        (pose.z, want.z),
        (pose.o_x, want.o_x),
        (pose.o_y, want.o_y),
        (pose.o_z, want.o_z),
        (pose.theta, want.theta),
    ] {
        assert_close(g, w, 1e-6);
    }
    assert!(!a.is_moving().await.unwrap());
    a.stop().await.unwrap();
}

#[tokio::test]
async fn gripper() {
    let (_server, robot) = demo().await;
    let mut g = Gripper::from_robot(&robot, "gripper");
    g.open().await.unwrap();
    let _grabbed: bool = g.grab().await.unwrap();
    assert!(!g.is_moving().await.unwrap());
    let _holding: bool = g.is_holding_something().await.unwrap();
    g.stop().await.unwrap();
    let commands = history_commands(&g.do_command(history()).await.unwrap());
    for want in ["open", "grab"] {
        assert!(commands.iter().any(|c| c == want), "{want}: {commands:?}");
    }
}

#[tokio::test]
async fn gantry() {
    let (_server, robot) = demo().await;
    let mut g = Gantry::from_robot(&robot, "gantry");
    let lengths = g.lengths().await.unwrap();
    assert_eq!(lengths, [500.0, 500.0, 250.0]);
    let positions = [10.0, 20.0, 30.0];
    g.move_to_position(&positions, &[500.0; 3]).await.unwrap();
    let got = g.position().await.unwrap();
    assert_eq!(got.len(), positions.len(), "{got:?}");
    for (g, w) in got.iter().zip(positions) {
        assert_close(*g, w, 1e-6);
    }
    assert!(!g.is_moving().await.unwrap());
    assert!(g.home().await.unwrap());
    g.stop().await.unwrap();
}

#[tokio::test]
async fn servo() {
    let (_server, robot) = demo().await;
    let mut s = Servo::from_robot(&robot, "servo");
    s.move_to(90).await.unwrap();
    assert_eq!(s.position().await.unwrap(), 90);
    assert!(!s.is_moving().await.unwrap());
    s.stop().await.unwrap();
}

#[tokio::test]
async fn switch() {
    let (_server, robot) = demo().await;
    let mut s = Switch::from_robot(&robot, "switch");
    let (count, labels) = s.number_of_positions().await.unwrap();
    assert_eq!(count, 3);
    assert_eq!(labels, ["off", "low", "high"]);
    for position in [1, 2, 0] {
        s.set_position(position).await.unwrap();
        assert_eq!(s.position().await.unwrap(), position);
    }
}

#[tokio::test]
async fn button() {
    let (_server, robot) = demo().await;
    let mut b = Button::from_robot(&robot, "button");
    b.push().await.unwrap();
    let commands = history_commands(&b.do_command(history()).await.unwrap());
    assert!(commands.iter().any(|c| c == "push"), "{commands:?}");
}

#[tokio::test]
async fn sensor() {
    let (_server, robot) = demo().await;
    let mut s = Sensor::from_robot(&robot, "sensor");
    let r1 = s.readings().await.unwrap();
    assert!(!r1.is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r2 = s.readings().await.unwrap();
    assert!(!r2.is_empty());
    assert_ne!(r1, r2, "readings identical 100 ms apart");
}

#[tokio::test]
async fn camera() {
    let (_server, robot) = demo().await;
    let mut c = Camera::from_robot(&robot, "camera");
    let images = c.images().await.unwrap();
    assert!(!images.is_empty());
    for image in &images {
        assert_eq!(image.mime_type, "image/png", "{}", image.source_name);
        assert!(
            image.data.starts_with(PNG_SIGNATURE),
            "not a PNG: {:?}",
            &image.data[..image.data.len().min(16)]
        );
        // IHDR follows the signature: length, type, then big-endian width and height.
        assert_eq!(&image.data[12..16], b"IHDR");
        let width = u32::from_be_bytes(image.data[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(image.data[20..24].try_into().unwrap());
        assert_eq!((width, height), (320, 240));
    }
    let props = c.properties().await.unwrap();
    assert!(
        props.mime_types.iter().any(|m| m == "image/png"),
        "{props:?}"
    );
}

#[tokio::test]
async fn generic_echoes() {
    let (_server, robot) = demo().await;
    let mut g = Generic::from_robot(&robot, "generic");
    let command = structure(&[("hello", text("world")), ("n", number(3.0))]);
    let result = g.do_command(command.clone()).await.unwrap();
    let want = structure(&[(
        "echo",
        Value {
            kind: Some(Kind::StructValue(command)),
        },
    )]);
    assert_eq!(result, want);
}

#[tokio::test]
async fn robot_version_and_machine_status() {
    let (_server, robot) = demo().await;
    let version = robot.version().await.unwrap();
    assert_eq!(version.platform, "tether");
    assert!(!version.version.is_empty(), "{version:?}");

    let status = robot.machine_status().await.unwrap();
    assert_eq!(status.state(), get_machine_status_response::State::Running);
    assert_eq!(status.resources.len(), 12, "{:?}", status.resources);
    for r in &status.resources {
        assert_eq!(r.state(), resource_status::State::Ready, "{r:?}");
    }
    assert_eq!(robot.resource_names().await.unwrap().len(), 12);
}

#[tokio::test]
async fn robot_operations_cancel_block_and_sessions() {
    let (_server, robot) = demo().await;

    // A running GoFor is listed, and cancelling it fails the call with CANCELLED.
    let mut right = Motor::from_robot(&robot, "right");
    let task = tokio::spawn({
        let mut right = right.clone();
        async move { right.go_for(60.0, 5.0).await } // ~5 s
    });
    let id = find_operation(&robot, GO_FOR_METHOD).await;
    assert!(!task.is_finished());
    robot.cancel_operation(&id).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("go_for did not end after cancel")
        .unwrap();
    assert!(
        matches!(&result, Err(ClientError::Status(s)) if s.code() == tonic::Code::Cancelled),
        "{result:?}"
    );
    for _ in 0..100 {
        if robot.operations().await.unwrap().iter().all(|o| o.id != id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        robot.operations().await.unwrap().iter().all(|o| o.id != id),
        "cancelled operation still listed"
    );
    right.stop().await.unwrap();

    // block_for_operation returns once the operation is done.
    let task = tokio::spawn({
        let mut right = right.clone();
        async move { right.go_for(120.0, 1.0).await } // ~0.5 s
    });
    let id = find_operation(&robot, GO_FOR_METHOD).await;
    robot.block_for_operation(&id).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("go_for still running after block_for_operation returned")
        .unwrap()
        .unwrap();
    assert!(!right.is_moving().await.unwrap());

    // The monitored calls above started this client's session, which the machine lists.
    let session = robot.session_id().expect("a session was started");
    let sessions = robot.sessions().await.unwrap();
    assert!(
        sessions.iter().any(|s| s.id == session),
        "{session} not in {sessions:?}"
    );
}
