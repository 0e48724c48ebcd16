//! The gripper API (`rdk:component:gripper`, `viam.component.gripper.v1.GripperService`): a gripper: opens, grabs, reports whether it holds something.
//!
//! Its trait, its models (`fake`, in [`fake`]) and the adapter from the generated service to
//! the trait.

pub mod fake;

use std::sync::Arc;

use async_trait::async_trait;
use tether_proto::viam::component::gripper;
use tonic::{Request, Status};

use crate::apis::{
    Adapter, Build, Model, Registration, Reply, check_attributes, limited, ok, shared_methods,
};
use crate::convert::struct_to_object;
use crate::machine::Machine;
use crate::resource::{Actuator, ApiName, Object, Resource, Result};

/// `rdk:component:gripper`.
pub const API: ApiName = ApiName::component("gripper");

/// The gripper API's entry in the registry.
pub static REGISTRATION: Registration = Registration {
    api: API,
    proto_service: "viam.component.gripper.v1.GripperService",
    models: &[Model {
        name: "fake",
        check: check_attributes::<fake::FakeGripperAttributes>,
        build: build_fake,
    }],
    serve,
};

/// A gripper (`rdk:component:gripper`).
#[async_trait]
pub trait Gripper: Actuator {
    /// Opens fully, returning when open.
    async fn open(&self, extra: &Object) -> Result<()>;
    /// Closes on an object; true if something was grabbed.
    async fn grab(&self, extra: &Object) -> Result<bool>;
    /// Whether the gripper holds something.
    async fn is_holding_something(&self, extra: &Object) -> Result<bool>;
    /// The gripper's inputs (jaw opening in mm).
    async fn current_inputs(&self, extra: &Object) -> Result<Vec<f64>>;
    /// Moves the inputs, returning when there.
    async fn go_to_inputs(&self, values: Vec<f64>, extra: &Object) -> Result<()>;
}

/// A resource serving this API from `model`.
pub fn resource<M: Gripper>(model: Arc<M>) -> Resource {
    Resource::new(
        model.clone() as Arc<dyn Gripper>,
        model.clone(),
        Some(model.clone()),
        model,
    )
}

fn build_fake(b: &Build<'_>) -> std::result::Result<Resource, String> {
    let attributes = b.attributes::<fake::FakeGripperAttributes>()?;
    Ok(resource(Arc::new(fake::FakeGripper::new(
        b.name,
        &attributes,
    ))))
}

fn serve(routes: &mut tonic::service::RoutesBuilder, machine: Arc<Machine>) {
    routes.add_service(limited!(
        gripper::v1::gripper_service_server::GripperServiceServer::new(Adapter::new(machine))
    ));
}

impl Adapter {
    fn gripper(&self, name: &str) -> std::result::Result<Arc<dyn Gripper>, Status> {
        self.typed::<dyn Gripper>(&API, name)
    }
}

#[tonic::async_trait]
impl gripper::v1::gripper_service_server::GripperService for Adapter {
    async fn open(&self, r: Request<gripper::v1::OpenRequest>) -> Reply<gripper::v1::OpenResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.gripper(&r.name)?.open(&extra).await?;
        ok(gripper::v1::OpenResponse {})
    }

    async fn grab(&self, r: Request<gripper::v1::GrabRequest>) -> Reply<gripper::v1::GrabResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let success = self.gripper(&r.name)?.grab(&extra).await?;
        ok(gripper::v1::GrabResponse {
            success,
            extra: None,
        })
    }

    async fn stop(&self, r: Request<gripper::v1::StopRequest>) -> Reply<gripper::v1::StopResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.gripper(&r.name)?.stop(&extra).await?;
        ok(gripper::v1::StopResponse {})
    }

    async fn is_moving(
        &self,
        r: Request<gripper::v1::IsMovingRequest>,
    ) -> Reply<gripper::v1::IsMovingResponse> {
        let is_moving = self.gripper(&r.get_ref().name)?.is_moving().await?;
        ok(gripper::v1::IsMovingResponse { is_moving })
    }

    async fn is_holding_something(
        &self,
        r: Request<gripper::v1::IsHoldingSomethingRequest>,
    ) -> Reply<gripper::v1::IsHoldingSomethingResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let holding = self.gripper(&r.name)?.is_holding_something(&extra).await?;
        ok(gripper::v1::IsHoldingSomethingResponse {
            is_holding_something: holding,
            meta: None,
        })
    }

    async fn get_current_inputs(
        &self,
        r: Request<gripper::v1::GetCurrentInputsRequest>,
    ) -> Reply<gripper::v1::GetCurrentInputsResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let values = self.gripper(&r.name)?.current_inputs(&extra).await?;
        ok(gripper::v1::GetCurrentInputsResponse { values })
    }

    async fn go_to_inputs(
        &self,
        r: Request<gripper::v1::GoToInputsRequest>,
    ) -> Reply<gripper::v1::GoToInputsResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.gripper(&r.name)?
            .go_to_inputs(r.values, &extra)
            .await?;
        ok(gripper::v1::GoToInputsResponse {})
    }

    shared_methods!(API, do_command, get_status, get_geometries);
}
