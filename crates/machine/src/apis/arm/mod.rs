//! The arm API (`rdk:component:arm`, `viam.component.arm.v1.ArmService`): an arm: joints and an end effector that move to positions.
//!
//! Its trait, its models (`fake`, in [`fake`]) and the adapter from the generated service to
//! the trait.

pub mod fake;

use std::sync::Arc;

use async_trait::async_trait;
use tether_proto::viam::common::v1::Pose;
use tether_proto::viam::component::arm;
use tonic::{Request, Status};

use crate::apis::{
    Adapter, Build, Model, Registration, Reply, check_attributes, limited, ok, shared_methods,
};
use crate::convert::struct_to_object;
use crate::machine::Machine;
use crate::resource::{Actuator, ApiName, Object, Resource, Result};

/// `rdk:component:arm`.
pub const API: ApiName = ApiName::component("arm");

/// The arm API's entry in the registry.
pub static REGISTRATION: Registration = Registration {
    api: API,
    proto_service: "viam.component.arm.v1.ArmService",
    models: &[Model {
        name: "fake",
        check: check_attributes::<fake::FakeArmAttributes>,
        build: build_fake,
    }],
    serve,
};

/// An arm (`rdk:component:arm`).
#[async_trait]
pub trait Arm: Actuator {
    /// Pose of the end effector.
    async fn end_position(&self, extra: &Object) -> Result<Pose>;
    /// Moves the end effector to a pose, returning when there.
    async fn move_to_position(&self, to: Pose, extra: &Object) -> Result<()>;
    /// Joint positions in degrees.
    async fn joint_positions(&self, extra: &Object) -> Result<Vec<f64>>;
    /// Moves the joints, returning when there.
    async fn move_to_joint_positions(&self, positions: Vec<f64>, extra: &Object) -> Result<()>;
    /// Moves through a sequence of joint positions, returning at the last.
    async fn move_through_joint_positions(
        &self,
        positions: Vec<Vec<f64>>,
        extra: &Object,
    ) -> Result<()>;
}

/// A resource serving this API from `model`.
pub fn resource<M: Arm>(model: Arc<M>) -> Resource {
    Resource::new(
        model.clone() as Arc<dyn Arm>,
        model.clone(),
        Some(model.clone()),
        model,
    )
}

fn build_fake(b: &Build<'_>) -> std::result::Result<Resource, String> {
    let attributes = b.attributes::<fake::FakeArmAttributes>()?;
    Ok(resource(Arc::new(fake::FakeArm::new(b.name, &attributes))))
}

fn serve(routes: &mut tonic::service::RoutesBuilder, machine: Arc<Machine>) {
    routes.add_service(limited!(
        arm::v1::arm_service_server::ArmServiceServer::new(Adapter::new(machine))
    ));
}

impl Adapter {
    fn arm(&self, name: &str) -> std::result::Result<Arc<dyn Arm>, Status> {
        self.typed::<dyn Arm>(&API, name)
    }
}

#[tonic::async_trait]
impl arm::v1::arm_service_server::ArmService for Adapter {
    async fn get_end_position(
        &self,
        r: Request<arm::v1::GetEndPositionRequest>,
    ) -> Reply<arm::v1::GetEndPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let pose = self.arm(&r.name)?.end_position(&extra).await?;
        ok(arm::v1::GetEndPositionResponse { pose: Some(pose) })
    }

    async fn move_to_position(
        &self,
        r: Request<arm::v1::MoveToPositionRequest>,
    ) -> Reply<arm::v1::MoveToPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let to = r
            .to
            .ok_or_else(|| Status::invalid_argument("MoveToPosition needs a target pose `to`"))?;
        self.arm(&r.name)?.move_to_position(to, &extra).await?;
        ok(arm::v1::MoveToPositionResponse {})
    }

    async fn get_joint_positions(
        &self,
        r: Request<arm::v1::GetJointPositionsRequest>,
    ) -> Reply<arm::v1::GetJointPositionsResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let values = self.arm(&r.name)?.joint_positions(&extra).await?;
        ok(arm::v1::GetJointPositionsResponse {
            positions: Some(arm::v1::JointPositions { values }),
        })
    }

    async fn move_to_joint_positions(
        &self,
        r: Request<arm::v1::MoveToJointPositionsRequest>,
    ) -> Reply<arm::v1::MoveToJointPositionsResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let values = r.positions.map(|p| p.values).unwrap_or_default();
        self.arm(&r.name)?
            .move_to_joint_positions(values, &extra)
            .await?;
        ok(arm::v1::MoveToJointPositionsResponse {})
    }

    async fn move_through_joint_positions(
        &self,
        r: Request<arm::v1::MoveThroughJointPositionsRequest>,
    ) -> Reply<arm::v1::MoveThroughJointPositionsResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let path = r.positions.into_iter().map(|p| p.values).collect();
        self.arm(&r.name)?
            .move_through_joint_positions(path, &extra)
            .await?;
        ok(arm::v1::MoveThroughJointPositionsResponse {})
    }

    async fn stop(&self, r: Request<arm::v1::StopRequest>) -> Reply<arm::v1::StopResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.arm(&r.name)?.stop(&extra).await?;
        ok(arm::v1::StopResponse {})
    }

    async fn is_moving(
        &self,
        r: Request<arm::v1::IsMovingRequest>,
    ) -> Reply<arm::v1::IsMovingResponse> {
        let is_moving = self.arm(&r.get_ref().name)?.is_moving().await?;
        ok(arm::v1::IsMovingResponse { is_moving })
    }

    async fn get_properties(
        &self,
        r: Request<arm::v1::GetPropertiesRequest>,
    ) -> Reply<arm::v1::GetPropertiesResponse> {
        self.arm(&r.get_ref().name)?;
        ok(arm::v1::GetPropertiesResponse {
            support_manual_mode: false,
            support_cartesian_commands: true,
        })
    }

    shared_methods!(API, do_command, get_status, get_geometries);
}
