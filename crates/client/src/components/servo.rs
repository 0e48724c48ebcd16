//! The typed client of the servo API (`rdk:component:servo`).

use tether_proto::viam::component::servo::v1 as servo;

use crate::{ClientError, RobotChannel};

actuator!(Servo, servo);

component!(
    /// A servo on the machine.
    Servo,
    servo::servo_service_client::ServoServiceClient<RobotChannel>
);

impl Servo {
    /// Turns to `angle_deg`, returning when there.
    pub async fn move_to(&mut self, angle_deg: u32) -> Result<(), ClientError> {
        self.client
            .r#move(servo::MoveRequest {
                name: self.name.clone(),
                angle_deg,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Angle in degrees.
    pub async fn position(&mut self) -> Result<u32, ClientError> {
        Ok(self
            .client
            .get_position(servo::GetPositionRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .position_deg)
    }
}
