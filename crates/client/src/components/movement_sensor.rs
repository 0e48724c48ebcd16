//! The typed client of the movement sensor API (`rdk:component:movement_sensor`).

use std::collections::HashMap;

use prost_types::Value;
use tether_proto::viam::common::v1::{GeoPoint, Orientation, Vector3};
use tether_proto::viam::component::movementsensor::v1 as movement_sensor;

use crate::{ClientError, RobotChannel};

component!(
    /// A movement sensor (GPS, compass, IMU) on the machine.
    MovementSensor,
    movement_sensor::movement_sensor_service_client::MovementSensorServiceClient<RobotChannel>
);

impl MovementSensor {
    /// Where it is (latitude and longitude in degrees) and its altitude in metres.
    pub async fn position(&mut self) -> Result<(GeoPoint, f32), ClientError> {
        let r = self
            .client
            .get_position(movement_sensor::GetPositionRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner();
        Ok((r.coordinate.unwrap_or_default(), r.altitude_m))
    }

    /// Linear velocity in m/s.
    pub async fn linear_velocity(&mut self) -> Result<Vector3, ClientError> {
        Ok(self
            .client
            .get_linear_velocity(movement_sensor::GetLinearVelocityRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .linear_velocity
            .unwrap_or_default())
    }

    /// Angular velocity in degrees per second.
    pub async fn angular_velocity(&mut self) -> Result<Vector3, ClientError> {
        Ok(self
            .client
            .get_angular_velocity(movement_sensor::GetAngularVelocityRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .angular_velocity
            .unwrap_or_default())
    }

    /// Compass heading: degrees clockwise from north.
    pub async fn compass_heading(&mut self) -> Result<f64, ClientError> {
        Ok(self
            .client
            .get_compass_heading(movement_sensor::GetCompassHeadingRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .value)
    }

    /// Orientation as an orientation vector in degrees.
    pub async fn orientation(&mut self) -> Result<Orientation, ClientError> {
        Ok(self
            .client
            .get_orientation(movement_sensor::GetOrientationRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .orientation
            .unwrap_or_default())
    }

    /// What the sensor reports.
    pub async fn properties(
        &mut self,
    ) -> Result<movement_sensor::GetPropertiesResponse, ClientError> {
        Ok(self
            .client
            .get_properties(movement_sensor::GetPropertiesRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner())
    }

    /// How accurate it is.
    pub async fn accuracy(&mut self) -> Result<movement_sensor::GetAccuracyResponse, ClientError> {
        Ok(self
            .client
            .get_accuracy(movement_sensor::GetAccuracyRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner())
    }

    /// Every supported figure at once.
    pub async fn readings(&mut self) -> Result<HashMap<String, Value>, ClientError> {
        Ok(self
            .client
            .get_readings(tether_proto::viam::common::v1::GetReadingsRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .readings
            .into_iter()
            .collect())
    }
}
