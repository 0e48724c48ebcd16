//! The typed client of the switch API (`rdk:component:switch`).

use tether_proto::viam::component::switch::v1 as switch;

use crate::{ClientError, RobotChannel};

component!(
    /// A switch on the machine.
    Switch,
    switch::switch_service_client::SwitchServiceClient<RobotChannel>
);

impl Switch {
    /// Sets it to `position`, counted from 0.
    pub async fn set_position(&mut self, position: u32) -> Result<(), ClientError> {
        self.client
            .set_position(switch::SetPositionRequest {
                name: self.name.clone(),
                position,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// The current position, counted from 0.
    pub async fn position(&mut self) -> Result<u32, ClientError> {
        Ok(self
            .client
            .get_position(switch::GetPositionRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .position)
    }

    /// How many positions it has, and their labels (possibly none).
    pub async fn number_of_positions(&mut self) -> Result<(u32, Vec<String>), ClientError> {
        let response = self
            .client
            .get_number_of_positions(switch::GetNumberOfPositionsRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner();
        Ok((response.number_of_positions, response.labels))
    }
}
