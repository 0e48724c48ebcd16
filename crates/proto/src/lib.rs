//! Tether's wire types.
//!
//! Everything here is generated at build time from the `.proto` files in the workspace's
//! `proto/` folder, which we wrote from the facts of Viam's public API so that Viam's official
//! SDKs talk to Tether unchanged. Besides the generated modules this crate offers the encoded
//! descriptor set (served by gRPC reflection) and [`is_safety_monitored`], which answers from the
//! `viam.common.v1.safety_heartbeat_monitored` method option in those descriptors — never from a
//! hand-written list — whether a method drives an actuator that a session must keep alive.

#![allow(clippy::all, missing_docs)]

pub mod codec;

include!(concat!(env!("OUT_DIR"), "/_includes.rs"));

use std::collections::BTreeSet;
use std::sync::OnceLock;

/// The encoded `FileDescriptorSet` of every file in `proto/`, imports included.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tether_descriptor.bin"));

/// Full name of the method option that marks safety-monitored methods.
pub const SAFETY_MONITORED_OPTION: &str = "viam.common.v1.safety_heartbeat_monitored";

/// Decodes the descriptor set into a reflection pool. The pool is not kept: callers that need
/// it at run time hold it themselves.
#[allow(
    clippy::expect_used,
    reason = "an invariant: the set is our own build script's output, embedded in the binary"
)]
pub fn descriptor_pool() -> prost_reflect::DescriptorPool {
    prost_reflect::DescriptorPool::decode(FILE_DESCRIPTOR_SET)
        .expect("the descriptor set was produced by our own build script")
}

/// The gRPC paths (`/package.Service/Method`) of every method whose descriptor carries
/// `safety_heartbeat_monitored = true`, computed once from the descriptors.
pub fn safety_monitored_methods() -> &'static BTreeSet<String> {
    static SET: OnceLock<BTreeSet<String>> = OnceLock::new();
    SET.get_or_init(|| {
        let pool = descriptor_pool();
        let Some(option) = pool.get_extension_by_name(SAFETY_MONITORED_OPTION) else {
            return BTreeSet::new();
        };
        method_paths(&pool, |method| {
            method
                .options()
                .get_extension(&option)
                .as_bool()
                .unwrap_or(false)
        })
    })
}

/// The gRPC paths (`/package.Service/Method`) of the methods in `pool` that `keep` keeps.
fn method_paths(
    pool: &prost_reflect::DescriptorPool,
    keep: impl Fn(&prost_reflect::MethodDescriptor) -> bool,
) -> BTreeSet<String> {
    pool.services()
        .flat_map(|service| service.methods().collect::<Vec<_>>())
        .filter(|method| keep(method))
        .map(|method| format!("/{}/{}", method.parent_service().full_name(), method.name()))
        .collect()
}

/// Whether the method at this gRPC path (`/package.Service/Method`) is safety-monitored.
pub fn is_safety_monitored(path: &str) -> bool {
    safety_monitored_methods().contains(path)
}

/// The gRPC paths of every method whose client streams (client-streaming and bidi): their
/// request bodies may stay open, where a unary or server-streaming call's request is one
/// message.
pub fn client_streaming_methods() -> &'static BTreeSet<String> {
    static SET: OnceLock<BTreeSet<String>> = OnceLock::new();
    SET.get_or_init(|| method_paths(&descriptor_pool(), |m| m.is_client_streaming()))
}

/// Whether the method at this path streams from the client (unknown paths do not).
pub fn is_client_streaming(path: &str) -> bool {
    client_streaming_methods().contains(path)
}

/// The gRPC paths of every method whose request is one message (unary and server-streaming).
pub fn one_message_methods() -> &'static BTreeSet<String> {
    static SET: OnceLock<BTreeSet<String>> = OnceLock::new();
    SET.get_or_init(|| method_paths(&descriptor_pool(), |m| !m.is_client_streaming()))
}

/// Whether the method at this path is known to take exactly one request message, so that
/// its handler may run on that message without waiting for the end of the request (unknown
/// paths are not).
pub fn takes_one_message(path: &str) -> bool {
    one_message_methods().contains(path)
}

/// The gRPC paths of every method in the descriptor set.
pub fn method_paths_all() -> &'static BTreeSet<String> {
    static SET: OnceLock<BTreeSet<String>> = OnceLock::new();
    SET.get_or_init(|| method_paths(&descriptor_pool(), |_| true))
}

/// The path of a method in the descriptor set, as a string that lives for the program (for
/// metric labels); `None` for any other path.
pub fn known_method(path: &str) -> Option<&'static str> {
    method_paths_all().get(path).map(String::as_str)
}

/// Service names (`package.Service`) of every service in the descriptor set.
pub fn service_names() -> Vec<String> {
    descriptor_pool()
        .services()
        .map(|s| s.full_name().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fact sheet's table of safety-monitored methods (PROTOCOL.md §3.2), minus the test
    /// echo service we do not define.
    const SHEET: &[(&str, &[&str])] = &[
        (
            "viam.component.arm.v1.ArmService",
            &[
                "MoveToPosition",
                "MoveToJointPositions",
                "MoveThroughJointPositions",
                "MoveThroughJointPositionsStreamed",
            ],
        ),
        (
            "viam.component.base.v1.BaseService",
            &["MoveStraight", "Spin", "SetPower", "SetVelocity"],
        ),
        ("viam.component.button.v1.ButtonService", &["Push"]),
        (
            "viam.component.gantry.v1.GantryService",
            &["MoveToPosition"],
        ),
        (
            "viam.component.gripper.v1.GripperService",
            &["Open", "Grab", "GoToInputs"],
        ),
        (
            "viam.component.motor.v1.MotorService",
            &["SetPower", "GoFor", "GoTo", "SetRPM"],
        ),
        ("viam.component.servo.v1.ServoService", &["Move"]),
        ("viam.component.switch.v1.SwitchService", &["SetPosition"]),
    ];

    #[test]
    fn monitored_methods_equal_the_fact_sheet_table() {
        let expected: BTreeSet<String> = SHEET
            .iter()
            .flat_map(|(service, methods)| methods.iter().map(move |m| format!("/{service}/{m}")))
            .collect();
        assert_eq!(safety_monitored_methods(), &expected);
        assert!(is_safety_monitored(
            "/viam.component.motor.v1.MotorService/SetPower"
        ));
        assert!(!is_safety_monitored(
            "/viam.component.motor.v1.MotorService/Stop"
        ));
        assert!(!is_safety_monitored("/viam.robot.v1.RobotService/StopAll"));
    }

    #[test]
    fn client_streaming_is_read_from_the_descriptors() {
        assert!(is_client_streaming(
            "/proto.rpc.webrtc.v1.SignalingService/Answer"
        ));
        assert!(!is_client_streaming(
            "/viam.component.motor.v1.MotorService/GoFor"
        ));
        assert!(!is_client_streaming(
            "/viam.robot.v1.RobotService/StreamStatus"
        ));
        assert!(takes_one_message(
            "/viam.component.motor.v1.MotorService/GoFor"
        ));
        assert!(takes_one_message(
            "/viam.robot.v1.RobotService/StreamStatus"
        ));
        assert!(!takes_one_message(
            "/proto.rpc.webrtc.v1.SignalingService/Answer"
        ));
        assert!(!takes_one_message("/nope.Service/Missing"));
    }

    #[test]
    fn every_expected_service_is_declared() {
        let names = service_names();
        for s in [
            "viam.robot.v1.RobotService",
            "viam.component.generic.v1.GenericService",
            "viam.service.generic.v1.GenericService",
            "proto.rpc.v1.AuthService",
            "proto.rpc.webrtc.v1.SignalingService",
        ] {
            assert!(names.iter().any(|n| n == s), "{s} missing");
        }
        let robot = descriptor_pool()
            .get_service_by_name("viam.robot.v1.RobotService")
            .unwrap();
        assert_eq!(robot.methods().count(), 26);
    }
}
