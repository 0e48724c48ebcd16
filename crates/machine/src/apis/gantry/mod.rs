//! The gantry API (`rdk:component:gantry`, `viam.component.gantry.v1.GantryService`): a gantry: linear axes that move to positions.
//!
//! Its trait, its models (`fake`, in [`fake`]) and the adapter from the generated service to
//! the trait.

pub mod fake;

use std::sync::Arc;

use async_trait::async_trait;
use tether_proto::viam::component::gantry;
use tonic::{Request, Status};

use crate::apis::{
    Adapter, Build, Model, Registration, Reply, check_attributes, limited, ok, shared_methods,
};
use crate::convert::struct_to_object;
use crate::machine::Machine;
use crate::resource::{Actuator, ApiName, Object, Resource, Result};

/// `rdk:component:gantry`.
pub const API: ApiName = ApiName::component("gantry");

/// The gantry API's entry in the registry.
pub static REGISTRATION: Registration = Registration {
    api: API,
    proto_service: "viam.component.gantry.v1.GantryService",
    models: &[Model {
        name: "fake",
        check: check_attributes::<fake::FakeGantryAttributes>,
        build: build_fake,
    }],
    serve,
};

/// A gantry (`rdk:component:gantry`).
#[async_trait]
pub trait Gantry: Actuator {
    /// Axis positions in mm.
    async fn position(&self, extra: &Object) -> Result<Vec<f64>>;
    /// Moves the axes, returning when there.
    async fn move_to_position(
        &self,
        positions_mm: Vec<f64>,
        speeds_mm_per_sec: Vec<f64>,
        extra: &Object,
    ) -> Result<()>;
    /// Homes the axes.
    async fn home(&self, extra: &Object) -> Result<bool>;
    /// Axis lengths in mm.
    async fn lengths(&self, extra: &Object) -> Result<Vec<f64>>;
}

/// A resource serving this API from `model`.
pub fn resource<M: Gantry>(model: Arc<M>) -> Resource {
    Resource::new(
        model.clone() as Arc<dyn Gantry>,
        model.clone(),
        Some(model.clone()),
        model,
    )
}

fn build_fake(b: &Build<'_>) -> std::result::Result<Resource, String> {
    let attributes = b.attributes::<fake::FakeGantryAttributes>()?;
    Ok(resource(Arc::new(fake::FakeGantry::new(
        b.name,
        &attributes,
    ))))
}

fn serve(routes: &mut tonic::service::RoutesBuilder, machine: Arc<Machine>) {
    routes.add_service(limited!(
        gantry::v1::gantry_service_server::GantryServiceServer::new(Adapter::new(machine))
    ));
}

impl Adapter {
    fn gantry(&self, name: &str) -> std::result::Result<Arc<dyn Gantry>, Status> {
        self.typed::<dyn Gantry>(&API, name)
    }
}

#[tonic::async_trait]
impl gantry::v1::gantry_service_server::GantryService for Adapter {
    async fn get_position(
        &self,
        r: Request<gantry::v1::GetPositionRequest>,
    ) -> Reply<gantry::v1::GetPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let positions_mm = self.gantry(&r.name)?.position(&extra).await?;
        ok(gantry::v1::GetPositionResponse { positions_mm })
    }

    async fn move_to_position(
        &self,
        r: Request<gantry::v1::MoveToPositionRequest>,
    ) -> Reply<gantry::v1::MoveToPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.gantry(&r.name)?
            .move_to_position(r.positions_mm, r.speeds_mm_per_sec, &extra)
            .await?;
        ok(gantry::v1::MoveToPositionResponse {})
    }

    async fn home(&self, r: Request<gantry::v1::HomeRequest>) -> Reply<gantry::v1::HomeResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let homed = self.gantry(&r.name)?.home(&extra).await?;
        ok(gantry::v1::HomeResponse { homed })
    }

    async fn get_lengths(
        &self,
        r: Request<gantry::v1::GetLengthsRequest>,
    ) -> Reply<gantry::v1::GetLengthsResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let lengths_mm = self.gantry(&r.name)?.lengths(&extra).await?;
        ok(gantry::v1::GetLengthsResponse { lengths_mm })
    }

    async fn stop(&self, r: Request<gantry::v1::StopRequest>) -> Reply<gantry::v1::StopResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.gantry(&r.name)?.stop(&extra).await?;
        ok(gantry::v1::StopResponse {})
    }

    async fn is_moving(
        &self,
        r: Request<gantry::v1::IsMovingRequest>,
    ) -> Reply<gantry::v1::IsMovingResponse> {
        let is_moving = self.gantry(&r.get_ref().name)?.is_moving().await?;
        ok(gantry::v1::IsMovingResponse { is_moving })
    }

    shared_methods!(API, do_command, get_status, get_geometries);
}
