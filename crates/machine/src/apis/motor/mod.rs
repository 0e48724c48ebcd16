//! The motor API (`rdk:component:motor`, `viam.component.motor.v1.MotorService`): a motor: power, rpm, relative and absolute moves, position.
//!
//! Its trait, its models (`fake`, in [`fake`]) and the adapter from the generated service to
//! the trait.

pub mod fake;

use std::sync::Arc;

use async_trait::async_trait;
use tether_proto::viam::component::motor;
use tonic::{Request, Status};

use crate::apis::{
    Adapter, Build, Model, Registration, Reply, check_attributes, limited, ok, shared_methods,
};
use crate::convert::struct_to_object;
use crate::machine::Machine;
use crate::resource::{Actuator, ApiName, Object, Resource, Result};

/// `rdk:component:motor`.
pub const API: ApiName = ApiName::component("motor");

/// The motor API's entry in the registry.
pub static REGISTRATION: Registration = Registration {
    api: API,
    proto_service: "viam.component.motor.v1.MotorService",
    models: &[Model {
        name: "fake",
        check: check_attributes::<fake::FakeMotorAttributes>,
        build: build_fake,
    }],
    serve,
};

/// A motor (`rdk:component:motor`).
#[async_trait]
pub trait Motor: Actuator {
    /// Runs at a fraction of full power in [-1, 1] until told otherwise.
    async fn set_power(&self, power_pct: f64, extra: &Object) -> Result<()>;
    /// Turns `revolutions` at `rpm`, returning when done (0 revolutions: run until stopped).
    async fn go_for(&self, rpm: f64, revolutions: f64, extra: &Object) -> Result<()>;
    /// Goes to an absolute position at `rpm`, returning when there.
    async fn go_to(&self, rpm: f64, position_revolutions: f64, extra: &Object) -> Result<()>;
    /// Runs at `rpm` until told otherwise.
    async fn set_rpm(&self, rpm: f64, extra: &Object) -> Result<()>;
    /// Makes the current position read as `offset`.
    async fn reset_zero_position(&self, offset: f64, extra: &Object) -> Result<()>;
    /// Position in revolutions from zero.
    async fn position(&self, extra: &Object) -> Result<f64>;
    /// Whether the motor reports its position.
    async fn position_reporting(&self, extra: &Object) -> Result<bool>;
    /// Whether it is powered, and at what fraction of full power.
    async fn is_powered(&self, extra: &Object) -> Result<(bool, f64)>;
}

/// A resource serving this API from `model`.
pub fn resource<M: Motor>(model: Arc<M>) -> Resource {
    Resource::new(
        model.clone() as Arc<dyn Motor>,
        model.clone(),
        Some(model.clone()),
        model,
    )
}

fn build_fake(b: &Build<'_>) -> std::result::Result<Resource, String> {
    let attributes = b.attributes::<fake::FakeMotorAttributes>()?;
    Ok(resource(Arc::new(fake::FakeMotor::new(
        b.name,
        &attributes,
    ))))
}

fn serve(routes: &mut tonic::service::RoutesBuilder, machine: Arc<Machine>) {
    routes.add_service(limited!(
        motor::v1::motor_service_server::MotorServiceServer::new(Adapter::new(machine))
    ));
}

impl Adapter {
    fn motor(&self, name: &str) -> std::result::Result<Arc<dyn Motor>, Status> {
        self.typed::<dyn Motor>(&API, name)
    }
}

#[tonic::async_trait]
impl motor::v1::motor_service_server::MotorService for Adapter {
    async fn set_power(
        &self,
        r: Request<motor::v1::SetPowerRequest>,
    ) -> Reply<motor::v1::SetPowerResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.motor(&r.name)?.set_power(r.power_pct, &extra).await?;
        ok(motor::v1::SetPowerResponse {})
    }

    async fn go_for(&self, r: Request<motor::v1::GoForRequest>) -> Reply<motor::v1::GoForResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.motor(&r.name)?
            .go_for(r.rpm, r.revolutions, &extra)
            .await?;
        ok(motor::v1::GoForResponse {})
    }

    async fn go_to(&self, r: Request<motor::v1::GoToRequest>) -> Reply<motor::v1::GoToResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.motor(&r.name)?
            .go_to(r.rpm, r.position_revolutions, &extra)
            .await?;
        ok(motor::v1::GoToResponse {})
    }

    async fn set_rpm(
        &self,
        r: Request<motor::v1::SetRpmRequest>,
    ) -> Reply<motor::v1::SetRpmResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.motor(&r.name)?.set_rpm(r.rpm, &extra).await?;
        ok(motor::v1::SetRpmResponse {})
    }

    async fn reset_zero_position(
        &self,
        r: Request<motor::v1::ResetZeroPositionRequest>,
    ) -> Reply<motor::v1::ResetZeroPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.motor(&r.name)?
            .reset_zero_position(r.offset, &extra)
            .await?;
        ok(motor::v1::ResetZeroPositionResponse {})
    }

    async fn get_position(
        &self,
        r: Request<motor::v1::GetPositionRequest>,
    ) -> Reply<motor::v1::GetPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let position = self.motor(&r.name)?.position(&extra).await?;
        ok(motor::v1::GetPositionResponse { position })
    }

    async fn get_properties(
        &self,
        r: Request<motor::v1::GetPropertiesRequest>,
    ) -> Reply<motor::v1::GetPropertiesResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let position_reporting = self.motor(&r.name)?.position_reporting(&extra).await?;
        ok(motor::v1::GetPropertiesResponse { position_reporting })
    }

    async fn stop(&self, r: Request<motor::v1::StopRequest>) -> Reply<motor::v1::StopResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.motor(&r.name)?.stop(&extra).await?;
        ok(motor::v1::StopResponse {})
    }

    async fn is_powered(
        &self,
        r: Request<motor::v1::IsPoweredRequest>,
    ) -> Reply<motor::v1::IsPoweredResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let (is_on, power_pct) = self.motor(&r.name)?.is_powered(&extra).await?;
        ok(motor::v1::IsPoweredResponse { is_on, power_pct })
    }

    async fn is_moving(
        &self,
        r: Request<motor::v1::IsMovingRequest>,
    ) -> Reply<motor::v1::IsMovingResponse> {
        let is_moving = self.motor(&r.get_ref().name)?.is_moving().await?;
        ok(motor::v1::IsMovingResponse { is_moving })
    }

    shared_methods!(API, do_command, get_status, get_geometries);
}
