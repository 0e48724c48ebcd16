//! The typed client of the motor API (`rdk:component:motor`).

use tether_proto::viam::component::motor::v1 as motor;

use crate::{ClientError, RobotChannel};

actuator!(Motor, motor);

component!(
    /// A motor on the machine.
    Motor,
    motor::motor_service_client::MotorServiceClient<RobotChannel>
);

impl Motor {
    /// Runs at a fraction of full power in [-1, 1].
    pub async fn set_power(&mut self, power_pct: f64) -> Result<(), ClientError> {
        self.client
            .set_power(motor::SetPowerRequest {
                name: self.name.clone(),
                power_pct,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Turns `revolutions` at `rpm`, returning when done.
    pub async fn go_for(&mut self, rpm: f64, revolutions: f64) -> Result<(), ClientError> {
        self.client
            .go_for(motor::GoForRequest {
                name: self.name.clone(),
                rpm,
                revolutions,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Turns to `position_revolutions` at `rpm`, returning when there.
    pub async fn go_to(&mut self, rpm: f64, position_revolutions: f64) -> Result<(), ClientError> {
        self.client
            .go_to(motor::GoToRequest {
                name: self.name.clone(),
                rpm,
                position_revolutions,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Runs at `rpm` until told otherwise.
    pub async fn set_rpm(&mut self, rpm: f64) -> Result<(), ClientError> {
        self.client
            .set_rpm(motor::SetRpmRequest {
                name: self.name.clone(),
                rpm,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Makes the current position read as `offset` revolutions.
    pub async fn reset_zero_position(&mut self, offset: f64) -> Result<(), ClientError> {
        self.client
            .reset_zero_position(motor::ResetZeroPositionRequest {
                name: self.name.clone(),
                offset,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Position in revolutions.
    pub async fn position(&mut self) -> Result<f64, ClientError> {
        Ok(self
            .client
            .get_position(motor::GetPositionRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .position)
    }

    /// Whether it reports its position.
    pub async fn properties(&mut self) -> Result<motor::GetPropertiesResponse, ClientError> {
        Ok(self
            .client
            .get_properties(motor::GetPropertiesRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner())
    }

    /// Whether it is powered, and at what fraction of full power.
    pub async fn is_powered(&mut self) -> Result<(bool, f64), ClientError> {
        let response = self
            .client
            .is_powered(motor::IsPoweredRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner();
        Ok((response.is_on, response.power_pct))
    }
}
