//! The typed client of the arm API (`rdk:component:arm`).

use super::Pose;
use tether_proto::viam::component::arm::v1 as arm;

use crate::{ClientError, RobotChannel};

actuator!(Arm, arm);

component!(
    /// An arm on the machine.
    Arm,
    arm::arm_service_client::ArmServiceClient<RobotChannel>
);

impl Arm {
    /// The end effector's pose.
    pub async fn end_position(&mut self) -> Result<Pose, ClientError> {
        Ok(self
            .client
            .get_end_position(arm::GetEndPositionRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .pose
            .unwrap_or_default())
    }

    /// Moves the end effector to `pose`, returning when there.
    pub async fn move_to_position(&mut self, pose: Pose) -> Result<(), ClientError> {
        self.client
            .move_to_position(arm::MoveToPositionRequest {
                name: self.name.clone(),
                to: Some(pose),
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Joint positions, in degrees (or millimetres for prismatic joints).
    pub async fn joint_positions(&mut self) -> Result<Vec<f64>, ClientError> {
        Ok(self
            .client
            .get_joint_positions(arm::GetJointPositionsRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .positions
            .map(|p| p.values)
            .unwrap_or_default())
    }

    /// Moves every joint to `positions`, returning when there.
    pub async fn move_to_joint_positions(&mut self, positions: &[f64]) -> Result<(), ClientError> {
        self.client
            .move_to_joint_positions(arm::MoveToJointPositionsRequest {
                name: self.name.clone(),
                positions: Some(arm::JointPositions {
                    values: positions.to_vec(),
                }),
                extra: None,
            })
            .await?;
        Ok(())
    }
}
