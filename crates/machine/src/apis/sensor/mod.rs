//! The sensor API (`rdk:component:sensor`, `viam.component.sensor.v1.SensorService`): a sensor: a map of readings.
//!
//! Its trait, its models (`fake`, in [`fake`]) and the adapter from the generated service to
//! the trait.

pub mod fake;

use std::sync::Arc;

use async_trait::async_trait;
use tether_proto::viam::common::v1 as common;
use tether_proto::viam::component::sensor;
use tonic::{Request, Status};

use crate::apis::{
    Adapter, Build, Model, Registration, Reply, check_attributes, limited, readings_response,
    shared_methods,
};
use crate::convert::struct_to_object;
use crate::machine::Machine;
use crate::resource::{ApiName, Component, Object, Resource, Result};

/// `rdk:component:sensor`.
pub const API: ApiName = ApiName::component("sensor");

/// The sensor API's entry in the registry.
pub static REGISTRATION: Registration = Registration {
    api: API,
    proto_service: "viam.component.sensor.v1.SensorService",
    models: &[Model {
        name: "fake",
        check: check_attributes::<fake::FakeSensorAttributes>,
        build: build_fake,
    }],
    serve,
};

/// A sensor (`rdk:component:sensor`).
#[async_trait]
pub trait Sensor: Component {
    /// Current readings.
    async fn readings(&self, extra: &Object) -> Result<Object>;
}

/// A resource serving this API from `model`.
pub fn resource<M: Sensor>(model: Arc<M>) -> Resource {
    Resource::new(model.clone() as Arc<dyn Sensor>, model.clone(), None, model)
}

fn build_fake(b: &Build<'_>) -> std::result::Result<Resource, String> {
    let attributes = b.attributes::<fake::FakeSensorAttributes>()?;
    Ok(resource(Arc::new(fake::FakeSensor::new(
        b.name,
        &attributes,
    ))))
}

fn serve(routes: &mut tonic::service::RoutesBuilder, machine: Arc<Machine>) {
    routes.add_service(limited!(
        sensor::v1::sensor_service_server::SensorServiceServer::new(Adapter::new(machine))
    ));
}

impl Adapter {
    fn sensor(&self, name: &str) -> std::result::Result<Arc<dyn Sensor>, Status> {
        self.typed::<dyn Sensor>(&API, name)
    }
}

#[tonic::async_trait]
impl sensor::v1::sensor_service_server::SensorService for Adapter {
    async fn get_readings(
        &self,
        r: Request<common::GetReadingsRequest>,
    ) -> Reply<common::GetReadingsResponse> {
        let r = r.into_inner();
        let extra = struct_to_object(r.extra);
        let readings = self.sensor(&r.name)?.readings(&extra).await?;
        readings_response(readings)
    }

    shared_methods!(API, do_command, get_status, get_geometries);
}
