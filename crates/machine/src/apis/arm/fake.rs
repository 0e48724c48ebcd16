//! The fake arm: joints and end pose move in straight lines at bounded speeds; it reports the
//! joints and the pose it was sent. There is no kinematic model: joint moves and pose moves are
//! tracked separately.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use tether_proto::viam::common::v1::Pose;

use super::Arm;
use crate::resource::{Actuator, Component, Object, ResourceError, Result};
use crate::sim::{Axes, slowest, straight};

/// Attributes of a fake arm (viam-server's `arm-model` and `model-path` are accepted).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeArmAttributes {
    /// Number of joints (default 6; `arm-model` "xArm7" implies 7).
    #[serde(default)]
    pub joints: Option<usize>,
    /// Joint speed in degrees per second (default 360).
    #[serde(default = "default_joint_speed")]
    pub joint_speed_degs_per_sec: f64,
    /// End-effector speed in mm per second (default 1000).
    #[serde(default = "default_linear_speed")]
    pub linear_speed_mm_per_sec: f64,
    #[serde(default, rename = "arm-model")]
    pub arm_model: Option<String>,
    #[serde(default, rename = "model-path")]
    pub model_path: Option<String>,
}

fn default_joint_speed() -> f64 {
    360.0
}
fn default_linear_speed() -> f64 {
    1000.0
}

impl FakeArmAttributes {
    /// Joint count after defaults.
    pub fn joint_count(&self) -> usize {
        self.joints.unwrap_or(match self.arm_model.as_deref() {
            Some("xArm7") => 7,
            Some(m) if m.to_lowercase().contains("xarm6") || m == "lite6" => 6,
            _ => 6,
        })
    }
}

impl crate::apis::Attributes for FakeArmAttributes {
    fn validate(&self) -> std::result::Result<(), String> {
        let n = self.joint_count();
        if n == 0 || n > 32 {
            return Err(format!("joints must be between 1 and 32, got {n}"));
        }
        for (field, v) in [
            ("joint_speed_degs_per_sec", self.joint_speed_degs_per_sec),
            ("linear_speed_mm_per_sec", self.linear_speed_mm_per_sec),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{field} must be a positive number, got {v}"));
            }
        }
        Ok(())
    }
}

/// A simulated arm.
#[derive(Debug)]
pub struct FakeArm {
    joints: Axes,
    pose: Axes,
    joint_speed: f64,
    linear_speed: f64,
}

fn pose_vec(p: &Pose) -> Vec<f64> {
    vec![p.x, p.y, p.z, p.o_x, p.o_y, p.o_z, p.theta]
}

fn vec_pose(v: &[f64]) -> Pose {
    Pose {
        x: v[0],
        y: v[1],
        z: v[2],
        o_x: v[3],
        o_y: v[4],
        o_z: v[5],
        theta: v[6],
    }
}

impl FakeArm {
    /// An arm at rest with all joints at 0 and the end effector at the origin pointing up.
    pub fn new(name: &str, attributes: &FakeArmAttributes) -> Self {
        Self {
            joints: Axes::new(name, vec![0.0; attributes.joint_count()]),
            pose: Axes::new(name, vec![0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            joint_speed: attributes.joint_speed_degs_per_sec,
            linear_speed: attributes.linear_speed_mm_per_sec,
        }
    }

    fn check_joints(&self, positions: &[f64]) -> Result<()> {
        let n = self.joints.position().len();
        if positions.len() != n {
            return Err(ResourceError::InvalidArgument(format!(
                "this arm has {n} joints, got {} positions",
                positions.len()
            )));
        }
        if let Some(bad) = positions.iter().find(|v| !v.is_finite()) {
            return Err(ResourceError::InvalidArgument(format!(
                "joint positions must be finite numbers, got {bad}"
            )));
        }
        Ok(())
    }

    async fn move_joints(&self, what: &'static str, positions: Vec<f64>) -> Result<()> {
        let speeds = vec![self.joint_speed; positions.len()];
        self.joints
            .move_to(what, json!({"positions": positions}), positions, |a, b| {
                slowest(a, b, &speeds)
            })
            .await
    }
}

#[async_trait]
impl Component for FakeArm {
    async fn do_command(&self, command: Object) -> Result<Object> {
        crate::sim::do_command(self.joints.history(), command)
    }
}

#[async_trait]
impl Actuator for FakeArm {
    async fn stop(&self, extra: &Object) -> Result<()> {
        self.joints.stop(Value::Object(extra.clone()));
        // One stop, one history entry: the pose axes share the arm's history only through
        // `joints`, so halt them without recording again.
        self.pose.stop(json!({}));
        Ok(())
    }

    async fn is_moving(&self) -> Result<bool> {
        Ok(self.joints.is_moving() || self.pose.is_moving())
    }
}

#[async_trait]
impl Arm for FakeArm {
    async fn end_position(&self, _extra: &Object) -> Result<Pose> {
        Ok(vec_pose(&self.pose.position()))
    }

    async fn move_to_position(&self, to: Pose, _extra: &Object) -> Result<()> {
        let target = pose_vec(&to);
        if let Some(bad) = target.iter().find(|v| !v.is_finite()) {
            return Err(ResourceError::InvalidArgument(format!(
                "pose values must be finite numbers, got {bad}"
            )));
        }
        let speed = self.linear_speed;
        // History is kept on the joints' history so the arm has one timeline.
        self.joints
            .history()
            .record("move_to_position", json!({"pose": target}));
        self.pose
            .move_to("move_to_position", json!({}), target, |a, b| {
                straight(&a[..3], &b[..3], speed)
            })
            .await
    }

    async fn joint_positions(&self, _extra: &Object) -> Result<Vec<f64>> {
        Ok(self.joints.position())
    }

    async fn move_to_joint_positions(&self, positions: Vec<f64>, _extra: &Object) -> Result<()> {
        self.check_joints(&positions)?;
        self.move_joints("move_to_joint_positions", positions).await
    }

    async fn move_through_joint_positions(
        &self,
        positions: Vec<Vec<f64>>,
        _extra: &Object,
    ) -> Result<()> {
        for p in &positions {
            self.check_joints(p)?;
        }
        for p in positions {
            self.move_joints("move_through_joint_positions", p).await?;
        }
        Ok(())
    }
}
