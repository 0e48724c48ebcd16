//! The typed client of the gripper API (`rdk:component:gripper`).

use tether_proto::viam::component::gripper::v1 as gripper;

use crate::{ClientError, RobotChannel};

actuator!(Gripper, gripper);

component!(
    /// A gripper on the machine.
    Gripper,
    gripper::gripper_service_client::GripperServiceClient<RobotChannel>
);

impl Gripper {
    /// Opens, returning when open.
    pub async fn open(&mut self) -> Result<(), ClientError> {
        self.client
            .open(gripper::OpenRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Closes until it grabs something or is fully closed; returns whether it grabbed.
    pub async fn grab(&mut self) -> Result<bool, ClientError> {
        Ok(self
            .client
            .grab(gripper::GrabRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .success)
    }

    /// Whether it is holding something.
    pub async fn is_holding_something(&mut self) -> Result<bool, ClientError> {
        Ok(self
            .client
            .is_holding_something(gripper::IsHoldingSomethingRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .is_holding_something)
    }
}
