//! The typed client of the sensor API (`rdk:component:sensor`).

use std::collections::HashMap;

use prost_types::Value;
use tether_proto::viam::component::sensor::v1 as sensor;

use tether_proto::viam::common::v1 as common;

use crate::{ClientError, RobotChannel};

component!(
    /// A sensor on the machine.
    Sensor,
    sensor::sensor_service_client::SensorServiceClient<RobotChannel>
);

impl Sensor {
    /// The current readings, by name.
    pub async fn readings(&mut self) -> Result<HashMap<String, Value>, ClientError> {
        Ok(self
            .client
            .get_readings(common::GetReadingsRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .readings)
    }
}
