//! The servo API (`rdk:component:servo`, `viam.component.servo.v1.ServoService`): a servo: moves to an angle.
//!
//! Its trait, its models (`fake`, in [`fake`]) and the adapter from the generated service to
//! the trait.

pub mod fake;

use std::sync::Arc;

use async_trait::async_trait;
use tether_proto::viam::component::servo;
use tonic::{Request, Status};

use crate::apis::{
    Adapter, Build, Model, Registration, Reply, check_attributes, limited, ok, shared_methods,
};
use crate::convert::struct_to_object;
use crate::machine::Machine;
use crate::resource::{Actuator, ApiName, Object, Resource, Result};

/// `rdk:component:servo`.
pub const API: ApiName = ApiName::component("servo");

/// The servo API's entry in the registry.
pub static REGISTRATION: Registration = Registration {
    api: API,
    proto_service: "viam.component.servo.v1.ServoService",
    models: &[Model {
        name: "fake",
        check: check_attributes::<fake::FakeServoAttributes>,
        build: build_fake,
    }],
    serve,
};

/// A servo (`rdk:component:servo`).
#[async_trait]
pub trait Servo: Actuator {
    /// Moves to an angle in degrees, returning when there.
    async fn move_to(&self, angle_deg: u32, extra: &Object) -> Result<()>;
    /// Current angle in degrees.
    async fn position(&self, extra: &Object) -> Result<u32>;
}

/// A resource serving this API from `model`.
pub fn resource<M: Servo>(model: Arc<M>) -> Resource {
    Resource::new(
        model.clone() as Arc<dyn Servo>,
        model.clone(),
        Some(model.clone()),
        model,
    )
}

fn build_fake(b: &Build<'_>) -> std::result::Result<Resource, String> {
    let attributes = b.attributes::<fake::FakeServoAttributes>()?;
    Ok(resource(Arc::new(fake::FakeServo::new(
        b.name,
        &attributes,
    ))))
}

fn serve(routes: &mut tonic::service::RoutesBuilder, machine: Arc<Machine>) {
    routes.add_service(limited!(
        servo::v1::servo_service_server::ServoServiceServer::new(Adapter::new(machine))
    ));
}

impl Adapter {
    fn servo(&self, name: &str) -> std::result::Result<Arc<dyn Servo>, Status> {
        self.typed::<dyn Servo>(&API, name)
    }
}

#[tonic::async_trait]
impl servo::v1::servo_service_server::ServoService for Adapter {
    async fn r#move(&self, r: Request<servo::v1::MoveRequest>) -> Reply<servo::v1::MoveResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.servo(&r.name)?.move_to(r.angle_deg, &extra).await?;
        ok(servo::v1::MoveResponse {})
    }

    async fn get_position(
        &self,
        r: Request<servo::v1::GetPositionRequest>,
    ) -> Reply<servo::v1::GetPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let position_deg = self.servo(&r.name)?.position(&extra).await?;
        ok(servo::v1::GetPositionResponse { position_deg })
    }

    async fn stop(&self, r: Request<servo::v1::StopRequest>) -> Reply<servo::v1::StopResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.servo(&r.name)?.stop(&extra).await?;
        ok(servo::v1::StopResponse {})
    }

    async fn is_moving(
        &self,
        r: Request<servo::v1::IsMovingRequest>,
    ) -> Reply<servo::v1::IsMovingResponse> {
        let is_moving = self.servo(&r.get_ref().name)?.is_moving().await?;
        ok(servo::v1::IsMovingResponse { is_moving })
    }

    shared_methods!(API, do_command, get_status, get_geometries);
}
