//! The typed client of the gantry API (`rdk:component:gantry`).

use tether_proto::viam::component::gantry::v1 as gantry;

use crate::{ClientError, RobotChannel};

actuator!(Gantry, gantry);

component!(
    /// A gantry on the machine.
    Gantry,
    gantry::gantry_service_client::GantryServiceClient<RobotChannel>
);

impl Gantry {
    /// Position of each axis, in millimetres.
    pub async fn position(&mut self) -> Result<Vec<f64>, ClientError> {
        Ok(self
            .client
            .get_position(gantry::GetPositionRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .positions_mm)
    }

    /// Moves each axis to `positions_mm` at `speeds_mm_per_sec`, returning when there.
    pub async fn move_to_position(
        &mut self,
        positions_mm: &[f64],
        speeds_mm_per_sec: &[f64],
    ) -> Result<(), ClientError> {
        self.client
            .move_to_position(gantry::MoveToPositionRequest {
                name: self.name.clone(),
                positions_mm: positions_mm.to_vec(),
                speeds_mm_per_sec: speeds_mm_per_sec.to_vec(),
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Homes every axis; returns whether it homed.
    pub async fn home(&mut self) -> Result<bool, ClientError> {
        Ok(self
            .client
            .home(gantry::HomeRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .homed)
    }

    /// Length of each axis, in millimetres.
    pub async fn lengths(&mut self) -> Result<Vec<f64>, ClientError> {
        Ok(self
            .client
            .get_lengths(gantry::GetLengthsRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .lengths_mm)
    }
}
