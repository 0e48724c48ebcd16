//! The generic API (`rdk:component:generic`, `viam.component.generic.v1.GenericService`): a generic component: DoCommand only.
//!
//! Its trait, its models (`fake`, in [`fake`]) and the adapter from the generated service to
//! the trait.

pub mod fake;

use std::sync::Arc;

use tether_proto::viam::component::generic;

use crate::apis::{
    Adapter, Build, Model, NoAttributes, Registration, check_attributes, limited, shared_methods,
};
use crate::machine::Machine;
use crate::resource::{ApiName, Component, Resource};

/// `rdk:component:generic`.
pub const API: ApiName = ApiName::component("generic");

/// The generic API's entry in the registry.
pub static REGISTRATION: Registration = Registration {
    api: API,
    proto_service: "viam.component.generic.v1.GenericService",
    models: &[Model {
        name: "fake",
        check: check_attributes::<NoAttributes>,
        build: build_fake,
    }],
    serve,
};

/// A resource serving this API from `model`.
pub fn resource<M: Component>(model: Arc<M>) -> Resource {
    Resource::new(
        model.clone() as Arc<dyn Component>,
        model.clone(),
        None,
        model,
    )
}

fn build_fake(b: &Build<'_>) -> std::result::Result<Resource, String> {
    b.attributes::<NoAttributes>()?;
    Ok(resource(Arc::new(fake::FakeGeneric::new(b.name))))
}

fn serve(routes: &mut tonic::service::RoutesBuilder, machine: Arc<Machine>) {
    routes.add_service(limited!(
        generic::v1::generic_service_server::GenericServiceServer::new(Adapter::new(machine))
    ));
}

#[tonic::async_trait]
impl generic::v1::generic_service_server::GenericService for Adapter {
    shared_methods!(API, do_command, get_status, get_geometries);
}
