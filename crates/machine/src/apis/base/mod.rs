//! The base API (`rdk:component:base`, `viam.component.base.v1.BaseService`): a mobile base: drives straight, spins, or runs at a power or velocity.
//!
//! Its trait, its models (`fake`, in [`fake`]) and the adapter from the generated service to
//! the trait.

pub mod fake;

use std::sync::Arc;

use async_trait::async_trait;
use tether_proto::viam::common::v1::Vector3;
use tether_proto::viam::component::base;
use tonic::{Request, Status};

use crate::apis::{
    Adapter, Build, Model, Registration, Reply, check_attributes, limited, ok, shared_methods,
};
use crate::convert::struct_to_object;
use crate::machine::Machine;
use crate::resource::{Actuator, ApiName, Object, Resource, Result};

/// `rdk:component:base`.
pub const API: ApiName = ApiName::component("base");

/// The base API's entry in the registry.
pub static REGISTRATION: Registration = Registration {
    api: API,
    proto_service: "viam.component.base.v1.BaseService",
    models: &[Model {
        name: "fake",
        check: check_attributes::<fake::FakeBaseAttributes>,
        build: build_fake,
    }],
    serve,
};

/// Physical properties of a base.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BaseProperties {
    pub width_meters: f64,
    pub turning_radius_meters: f64,
    pub wheel_circumference_meters: f64,
}

/// A mobile base (`rdk:component:base`).
#[async_trait]
pub trait Base: Actuator {
    /// Drives straight for `distance_mm` at `mm_per_sec`, returning when done.
    async fn move_straight(&self, distance_mm: i64, mm_per_sec: f64, extra: &Object) -> Result<()>;
    /// Turns in place by `angle_deg` at `degs_per_sec`, returning when done.
    async fn spin(&self, angle_deg: f64, degs_per_sec: f64, extra: &Object) -> Result<()>;
    /// Drives at fractions of full power until told otherwise.
    async fn set_power(&self, linear: Vector3, angular: Vector3, extra: &Object) -> Result<()>;
    /// Drives at velocities (mm/s, deg/s) until told otherwise.
    async fn set_velocity(&self, linear: Vector3, angular: Vector3, extra: &Object) -> Result<()>;
    /// Physical properties.
    async fn properties(&self, extra: &Object) -> Result<BaseProperties>;
}

/// A resource serving this API from `model`.
pub fn resource<M: Base>(model: Arc<M>) -> Resource {
    Resource::new(
        model.clone() as Arc<dyn Base>,
        model.clone(),
        Some(model.clone()),
        model,
    )
}

fn build_fake(b: &Build<'_>) -> std::result::Result<Resource, String> {
    let attributes = b.attributes::<fake::FakeBaseAttributes>()?;
    Ok(resource(Arc::new(fake::FakeBase::new(b.name, &attributes))))
}

fn serve(routes: &mut tonic::service::RoutesBuilder, machine: Arc<Machine>) {
    routes.add_service(limited!(
        base::v1::base_service_server::BaseServiceServer::new(Adapter::new(machine))
    ));
}

impl Adapter {
    fn base(&self, name: &str) -> std::result::Result<Arc<dyn Base>, Status> {
        self.typed::<dyn Base>(&API, name)
    }
}

#[tonic::async_trait]
impl base::v1::base_service_server::BaseService for Adapter {
    async fn move_straight(
        &self,
        r: Request<base::v1::MoveStraightRequest>,
    ) -> Reply<base::v1::MoveStraightResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.base(&r.name)?
            .move_straight(r.distance_mm, r.mm_per_sec, &extra)
            .await?;
        ok(base::v1::MoveStraightResponse {})
    }

    async fn spin(&self, r: Request<base::v1::SpinRequest>) -> Reply<base::v1::SpinResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.base(&r.name)?
            .spin(r.angle_deg, r.degs_per_sec, &extra)
            .await?;
        ok(base::v1::SpinResponse {})
    }

    async fn set_power(
        &self,
        r: Request<base::v1::SetPowerRequest>,
    ) -> Reply<base::v1::SetPowerResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.base(&r.name)?
            .set_power(
                r.linear.unwrap_or_default(),
                r.angular.unwrap_or_default(),
                &extra,
            )
            .await?;
        ok(base::v1::SetPowerResponse {})
    }

    async fn set_velocity(
        &self,
        r: Request<base::v1::SetVelocityRequest>,
    ) -> Reply<base::v1::SetVelocityResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.base(&r.name)?
            .set_velocity(
                r.linear.unwrap_or_default(),
                r.angular.unwrap_or_default(),
                &extra,
            )
            .await?;
        ok(base::v1::SetVelocityResponse {})
    }

    async fn stop(&self, r: Request<base::v1::StopRequest>) -> Reply<base::v1::StopResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.base(&r.name)?.stop(&extra).await?;
        ok(base::v1::StopResponse {})
    }

    async fn is_moving(
        &self,
        r: Request<base::v1::IsMovingRequest>,
    ) -> Reply<base::v1::IsMovingResponse> {
        let is_moving = self.base(&r.get_ref().name)?.is_moving().await?;
        ok(base::v1::IsMovingResponse { is_moving })
    }

    async fn get_properties(
        &self,
        r: Request<base::v1::GetPropertiesRequest>,
    ) -> Reply<base::v1::GetPropertiesResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let p = self.base(&r.name)?.properties(&extra).await?;
        ok(base::v1::GetPropertiesResponse {
            width_meters: p.width_meters,
            turning_radius_meters: p.turning_radius_meters,
            wheel_circumference_meters: p.wheel_circumference_meters,
        })
    }

    shared_methods!(API, do_command, get_status, get_geometries);
}
