//! The typed client of the button API (`rdk:component:button`).

use tether_proto::viam::component::button::v1 as button;

use crate::{ClientError, RobotChannel};

component!(
    /// A button on the machine.
    Button,
    button::button_service_client::ButtonServiceClient<RobotChannel>
);

impl Button {
    /// Pushes it.
    pub async fn push(&mut self) -> Result<(), ClientError> {
        self.client
            .push(button::PushRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?;
        Ok(())
    }
}
