//! The switch API (`rdk:component:switch`, `viam.component.switch.v1.SwitchService`): a switch with discrete, labelled positions.
//!
//! Its trait, its models (`fake`, in [`fake`]) and the adapter from the generated service to
//! the trait.

pub mod fake;

use std::sync::Arc;

use async_trait::async_trait;
use tether_proto::viam::component::switch;
use tonic::{Request, Status};

use crate::apis::{
    Adapter, Build, Model, Registration, Reply, check_attributes, limited, ok, shared_methods,
};
use crate::convert::struct_to_object;
use crate::machine::Machine;
use crate::resource::{ApiName, Component, Object, Resource, Result};

/// `rdk:component:switch`.
pub const API: ApiName = ApiName::component("switch");

/// The switch API's entry in the registry.
pub static REGISTRATION: Registration = Registration {
    api: API,
    proto_service: "viam.component.switch.v1.SwitchService",
    models: &[Model {
        name: "fake",
        check: check_attributes::<fake::FakeSwitchAttributes>,
        build: build_fake,
    }],
    serve,
};

/// A switch with discrete positions (`rdk:component:switch`).
#[async_trait]
pub trait Switch: Component {
    /// Sets the position.
    async fn set_position(&self, position: u32, extra: &Object) -> Result<()>;
    /// The position.
    async fn position(&self, extra: &Object) -> Result<u32>;
    /// How many positions, and their labels.
    async fn number_of_positions(&self, extra: &Object) -> Result<(u32, Vec<String>)>;
}

/// A resource serving this API from `model`.
pub fn resource<M: Switch>(model: Arc<M>) -> Resource {
    Resource::new(model.clone() as Arc<dyn Switch>, model.clone(), None, model)
}

fn build_fake(b: &Build<'_>) -> std::result::Result<Resource, String> {
    let attributes = b.attributes::<fake::FakeSwitchAttributes>()?;
    Ok(resource(Arc::new(fake::FakeSwitch::new(
        b.name,
        &attributes,
    ))))
}

fn serve(routes: &mut tonic::service::RoutesBuilder, machine: Arc<Machine>) {
    routes.add_service(limited!(
        switch::v1::switch_service_server::SwitchServiceServer::new(Adapter::new(machine))
    ));
}

impl Adapter {
    fn switch(&self, name: &str) -> std::result::Result<Arc<dyn Switch>, Status> {
        self.typed::<dyn Switch>(&API, name)
    }
}

#[tonic::async_trait]
impl switch::v1::switch_service_server::SwitchService for Adapter {
    async fn set_position(
        &self,
        r: Request<switch::v1::SetPositionRequest>,
    ) -> Reply<switch::v1::SetPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.switch(&r.name)?
            .set_position(r.position, &extra)
            .await?;
        ok(switch::v1::SetPositionResponse {})
    }

    async fn get_position(
        &self,
        r: Request<switch::v1::GetPositionRequest>,
    ) -> Reply<switch::v1::GetPositionResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let position = self.switch(&r.name)?.position(&extra).await?;
        ok(switch::v1::GetPositionResponse { position })
    }

    async fn get_number_of_positions(
        &self,
        r: Request<switch::v1::GetNumberOfPositionsRequest>,
    ) -> Reply<switch::v1::GetNumberOfPositionsResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let (number_of_positions, labels) =
            self.switch(&r.name)?.number_of_positions(&extra).await?;
        ok(switch::v1::GetNumberOfPositionsResponse {
            number_of_positions,
            labels,
        })
    }

    shared_methods!(API, do_command, get_status);
}
