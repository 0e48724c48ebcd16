//! The typed client of the base API (`rdk:component:base`).

use super::Vector3;
use tether_proto::viam::component::base::v1 as base;

use crate::{ClientError, RobotChannel};

actuator!(Base, base);

component!(
    /// A mobile base on the machine.
    Base,
    base::base_service_client::BaseServiceClient<RobotChannel>
);

impl Base {
    /// Drives `distance_mm` straight (negative: backwards) at `mm_per_sec`, returning when done.
    pub async fn move_straight(
        &mut self,
        distance_mm: i64,
        mm_per_sec: f64,
    ) -> Result<(), ClientError> {
        self.client
            .move_straight(base::MoveStraightRequest {
                name: self.name.clone(),
                distance_mm,
                mm_per_sec,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Turns `angle_deg` in place at `degs_per_sec`, returning when done.
    pub async fn spin(&mut self, angle_deg: f64, degs_per_sec: f64) -> Result<(), ClientError> {
        self.client
            .spin(base::SpinRequest {
                name: self.name.clone(),
                angle_deg,
                degs_per_sec,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Runs at linear and angular power, each component in [-1, 1], until told otherwise.
    pub async fn set_power(
        &mut self,
        linear: Vector3,
        angular: Vector3,
    ) -> Result<(), ClientError> {
        self.client
            .set_power(base::SetPowerRequest {
                name: self.name.clone(),
                linear: Some(linear),
                angular: Some(angular),
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Runs at linear (mm/s) and angular (degrees/s) velocity until told otherwise.
    pub async fn set_velocity(
        &mut self,
        linear: Vector3,
        angular: Vector3,
    ) -> Result<(), ClientError> {
        self.client
            .set_velocity(base::SetVelocityRequest {
                name: self.name.clone(),
                linear: Some(linear),
                angular: Some(angular),
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Width, turning radius and wheel circumference, in metres.
    pub async fn properties(&mut self) -> Result<base::GetPropertiesResponse, ClientError> {
        Ok(self
            .client
            .get_properties(base::GetPropertiesRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner())
    }
}
