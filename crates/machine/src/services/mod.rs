//! The gRPC services: the robot service and one service per component API.
//!
//! One [`Api`] value implements every generated service trait; each method looks the resource
//! up by its `name` (NOT_FOUND names a missing one), converts the wire message to a trait call,
//! and converts the result back. No method knows which model is behind a resource.

mod components;
mod robot;

use std::sync::Arc;

use tether_proto::viam::common::v1::{
    DoCommandRequest, DoCommandResponse, GetGeometriesRequest, GetGeometriesResponse,
    GetStatusRequest, GetStatusResponse,
};
use tonic::{Request, Response, Status};

use crate::convert::{object_to_struct, struct_to_object};
use crate::machine::Machine;
use crate::resource::Subtype;

/// Serves a machine's resources over every generated service trait.
#[derive(Clone)]
pub struct Api {
    machine: Arc<Machine>,
}

impl Api {
    /// Services for this machine.
    pub fn new(machine: Arc<Machine>) -> Self {
        Self { machine }
    }

    async fn do_command(
        &self,
        subtype: Subtype,
        request: Request<DoCommandRequest>,
    ) -> Result<Response<DoCommandResponse>, Status> {
        let req = request.into_inner();
        let component = self.machine.component(subtype, &req.name)?;
        let result = component.do_command(struct_to_object(req.command)).await?;
        Ok(Response::new(DoCommandResponse {
            result: Some(object_to_struct(result)),
        }))
    }

    async fn get_status(
        &self,
        subtype: Subtype,
        request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let req = request.into_inner();
        let status = self.machine.component(subtype, &req.name)?.status().await?;
        Ok(Response::new(GetStatusResponse {
            result: Some(object_to_struct(status)),
        }))
    }

    /// Simulated components have no configured geometry.
    fn get_geometries(
        &self,
        subtype: Subtype,
        request: Request<GetGeometriesRequest>,
    ) -> Result<Response<GetGeometriesResponse>, Status> {
        self.machine.lookup(subtype, &request.get_ref().name)?;
        Ok(Response::new(GetGeometriesResponse { geometries: vec![] }))
    }
}
