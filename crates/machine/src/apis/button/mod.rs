//! The button API (`rdk:component:button`, `viam.component.button.v1.ButtonService`): a button that can be pushed.
//!
//! Its trait, its models (`fake`, in [`fake`]) and the adapter from the generated service to
//! the trait.

pub mod fake;

use std::sync::Arc;

use async_trait::async_trait;
use tether_proto::viam::component::button;
use tonic::{Request, Status};

use crate::apis::{
    Adapter, Build, Model, NoAttributes, Registration, Reply, check_attributes, limited, ok,
    shared_methods,
};
use crate::convert::struct_to_object;
use crate::machine::Machine;
use crate::resource::{ApiName, Component, Object, Resource, Result};

/// `rdk:component:button`.
pub const API: ApiName = ApiName::component("button");

/// The button API's entry in the registry.
pub static REGISTRATION: Registration = Registration {
    api: API,
    proto_service: "viam.component.button.v1.ButtonService",
    models: &[Model {
        name: "fake",
        check: check_attributes::<NoAttributes>,
        build: build_fake,
    }],
    serve,
};

/// A button (`rdk:component:button`).
#[async_trait]
pub trait Button: Component {
    /// Pushes it.
    async fn push(&self, extra: &Object) -> Result<()>;
}

/// A resource serving this API from `model`.
pub fn resource<M: Button>(model: Arc<M>) -> Resource {
    Resource::new(model.clone() as Arc<dyn Button>, model.clone(), None, model)
}

fn build_fake(b: &Build<'_>) -> std::result::Result<Resource, String> {
    b.attributes::<NoAttributes>()?;
    Ok(resource(Arc::new(fake::FakeButton::new(b.name))))
}

fn serve(routes: &mut tonic::service::RoutesBuilder, machine: Arc<Machine>) {
    routes.add_service(limited!(
        button::v1::button_service_server::ButtonServiceServer::new(Adapter::new(machine))
    ));
}

impl Adapter {
    fn button(&self, name: &str) -> std::result::Result<Arc<dyn Button>, Status> {
        self.typed::<dyn Button>(&API, name)
    }
}

#[tonic::async_trait]
impl button::v1::button_service_server::ButtonService for Adapter {
    async fn push(&self, r: Request<button::v1::PushRequest>) -> Reply<button::v1::PushResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        self.button(&r.name)?.push(&extra).await?;
        ok(button::v1::PushResponse {})
    }

    shared_methods!(API, do_command, get_status);
}
