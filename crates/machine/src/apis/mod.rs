//! The API registry: one module per component or service API, one list that registers them.
//!
//! Each module (`apis/motor`, `apis/movement_sensor`, ...) is the whole room of its API: it
//! names the API (`rdk:component:motor`) and its proto service, defines the trait its models
//! implement, builds its models from config (`apis/<api>/fake.rs` is the simulated one), and
//! adapts the generated gRPC service to the trait. It exports one [`Registration`], and
//! [`REGISTERED`] lists them all; everything that needs to know which APIs exist — config
//! validation, the router, `ResourceRPCSubtypes`, the session layer finding the resource of a
//! monitored call — reads that list. Adding an API is one module and one line here.

pub mod arm;
pub mod base;
pub mod button;
pub mod camera;
pub mod gantry;
pub mod generic;
pub mod gripper;
pub mod motor;
pub mod movement_sensor;
pub mod sensor;
pub mod servo;
pub mod switch;

use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tether_proto::viam::common::v1 as common;
use tonic::{Request, Response, Status};

use crate::convert::{object_to_struct, struct_to_object};
use crate::machine::Machine;
use crate::resource::{ApiName, Resource, ResourceKind, ResourceName, Resources};

/// Every API this build serves, in the order `ResourceRPCSubtypes` lists them.
pub static REGISTERED: &[&Registration] = &[
    &arm::REGISTRATION,
    &base::REGISTRATION,
    &button::REGISTRATION,
    &camera::REGISTRATION,
    &gantry::REGISTRATION,
    &generic::REGISTRATION,
    &gripper::REGISTRATION,
    &motor::REGISTRATION,
    &movement_sensor::REGISTRATION,
    &sensor::REGISTRATION,
    &servo::REGISTRATION,
    &switch::REGISTRATION,
];

/// What one API module tells the rest of the machine.
pub struct Registration {
    /// The API (`rdk:component:motor`).
    pub api: ApiName,
    /// Its fully qualified gRPC service (`viam.component.motor.v1.MotorService`).
    pub proto_service: &'static str,
    /// The models config can name for it.
    pub models: &'static [Model],
    /// Adds the API's gRPC service, adapted to this machine's resources, to the router.
    pub serve: fn(&mut tonic::service::RoutesBuilder, Arc<Machine>),
}

/// One model of an API, as config names it (`"model": "fake"`, or `"rdk:builtin:fake"`).
pub struct Model {
    /// The model's short name.
    pub name: &'static str,
    /// Checks the attributes; returns the resources the model needs built before it.
    pub check: fn(&Value) -> Result<Vec<Dependency>, String>,
    /// Builds the model from checked attributes; its dependencies are built by then.
    pub build: fn(&Build<'_>) -> Result<Resource, String>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// A resource a model needs, and the model it must be (a fake movement sensor follows a fake
/// base: `model: Some("fake")`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The resource.
    pub name: ResourceName,
    /// The model it must have, when the dependent needs that model's internals.
    pub model: Option<&'static str>,
}

/// What a model's `build` gets.
pub struct Build<'a> {
    /// The resource's short name.
    pub name: &'a str,
    /// Its checked attributes.
    pub attributes: &'a Value,
    /// The resources built so far (every dependency among them).
    pub built: &'a Resources,
}

impl Build<'_> {
    /// The attributes, parsed (they were checked with the same type when config was read).
    pub fn attributes<A: Attributes>(&self) -> Result<A, String> {
        attributes(self.attributes)
    }

    /// A dependency's model, when it is an `M`.
    pub fn dependency<M: Send + Sync + 'static>(
        &self,
        api: &ApiName,
        name: &str,
    ) -> Result<Arc<M>, String> {
        self.built
            .get(api, name)
            .ok_or_else(|| format!("{api}/{name} is not built"))?
            .model::<M>()
            .ok_or_else(|| format!("{api}/{name} is not of the model this one needs"))
    }
}

/// A model's attributes: deserialized strictly, then checked for what serde cannot say.
pub trait Attributes: DeserializeOwned {
    /// Checks values serde cannot (ranges, consistency).
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// For models that take no attributes: any attribute is an error.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoAttributes {}

impl Attributes for NoAttributes {}

/// Parses and validates attributes.
pub fn attributes<A: Attributes>(value: &Value) -> Result<A, String> {
    let parsed = A::deserialize(value).map_err(|e| e.to_string())?;
    parsed.validate()?;
    Ok(parsed)
}

/// A model `check` for models whose attributes are an `A` and who need no other resource.
pub fn check_attributes<A: Attributes>(value: &Value) -> Result<Vec<Dependency>, String> {
    attributes::<A>(value).map(|_| Vec::new())
}

/// The registered API named `namespace:type:subtype`.
pub fn find(namespace: &str, kind: &str, subtype: &str) -> Option<&'static Registration> {
    let kind = ResourceKind::parse(kind)?;
    REGISTERED
        .iter()
        .copied()
        .find(|r| r.api.namespace == namespace && r.api.kind == kind && r.api.subtype == subtype)
}

/// The registered API whose gRPC service is `service` (`viam.component.motor.v1.MotorService`).
pub fn by_proto_service(service: &str) -> Option<&'static Registration> {
    REGISTERED
        .iter()
        .copied()
        .find(|r| r.proto_service == service)
}

/// The subtypes of one kind, for error messages (`arm, base, ...`).
pub fn subtypes(kind: ResourceKind) -> String {
    REGISTERED
        .iter()
        .filter(|r| r.api.kind == kind)
        .map(|r| r.api.subtype)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds every registered API's service to the router.
pub fn serve_all(routes: &mut tonic::service::RoutesBuilder, machine: &Arc<Machine>) {
    for registration in REGISTERED {
        (registration.serve)(routes, machine.clone());
    }
}

/// Serves a machine's resources through the generated service traits: each API module
/// implements its service's trait on it.
#[derive(Clone)]
pub struct Adapter {
    machine: Arc<Machine>,
}

impl Adapter {
    /// An adapter for this machine.
    pub fn new(machine: Arc<Machine>) -> Self {
        Self { machine }
    }
}

/// A gRPC service answer.
pub type Reply<T> = Result<Response<T>, Status>;

/// A successful answer.
pub fn ok<T>(message: T) -> Reply<T> {
    Ok(Response::new(message))
}

/// Wraps a generated server in the machine's message limits, both ways.
macro_rules! limited {
    ($server:expr) => {
        $server
            .max_decoding_message_size(crate::limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::limits::MAX_MESSAGE_BYTES)
    };
}
pub(crate) use limited;

/// The methods every resource API shares (`DoCommand`, `GetStatus`, `GetGeometries`), for an
/// [`Adapter`] trait impl: `shared_methods!(API, do_command, get_status, get_geometries);`
/// with the ones the API's proto declares. The methods are written in the form
/// `#[async_trait]` gives them, since that attribute has already run when this expands.
macro_rules! shared_methods {
    ($api:expr $(, $method:ident)* $(,)?) => {
        $(crate::apis::shared_methods!(@ $api, $method);)*
    };
    (@ $api:expr, do_command) => {
        crate::apis::shared_methods!(@method $api, do_command, DoCommandRequest, DoCommandResponse,
            |a, api, r| crate::apis::do_command(a, api, r).await);
    };
    (@ $api:expr, get_status) => {
        crate::apis::shared_methods!(@method $api, get_status, GetStatusRequest, GetStatusResponse,
            |a, api, r| crate::apis::get_status(a, api, r).await);
    };
    (@ $api:expr, get_geometries) => {
        crate::apis::shared_methods!(@method $api, get_geometries, GetGeometriesRequest,
            GetGeometriesResponse, |a, api, r| crate::apis::get_geometries(a, api, r));
    };
    (@method $api:expr, $method:ident, $request:ident, $response:ident,
        |$a:ident, $apiv:ident, $r:ident| $call:expr) => {
        fn $method<'life0, 'async_trait>(
            &'life0 self,
            $r: tonic::Request<tether_proto::viam::common::v1::$request>,
        ) -> ::core::pin::Pin<
            Box<
                dyn ::core::future::Future<
                        Output = crate::apis::Reply<tether_proto::viam::common::v1::$response>,
                    > + ::core::marker::Send
                    + 'async_trait,
            >,
        >
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move {
                let ($a, $apiv) = (self, &$api);
                $call
            })
        }
    };
}
pub(crate) use shared_methods;

impl Adapter {
    /// The resource `name` of `api` as its trait object; NOT_FOUND names it when absent.
    pub fn typed<T: ?Sized + Send + Sync + 'static>(
        &self,
        api: &ApiName,
        name: &str,
    ) -> Result<Arc<T>, Status> {
        self.machine.typed(api, name)
    }
}

/// A `GetReadings` answer from a resource's readings.
pub fn readings_response(readings: crate::resource::Object) -> Reply<common::GetReadingsResponse> {
    ok(common::GetReadingsResponse {
        readings: readings
            .into_iter()
            .map(|(k, v)| (k, crate::convert::json_to_pb(v)))
            .collect(),
    })
}

/// `DoCommand` on any resource.
pub async fn do_command(
    adapter: &Adapter,
    api: &ApiName,
    request: Request<common::DoCommandRequest>,
) -> Reply<common::DoCommandResponse> {
    let req = request.into_inner();
    let component = adapter.machine.component(api, &req.name)?;
    let result = component.do_command(struct_to_object(req.command)).await?;
    Ok(Response::new(common::DoCommandResponse {
        result: Some(object_to_struct(result)),
    }))
}

/// `GetStatus` on any resource.
pub async fn get_status(
    adapter: &Adapter,
    api: &ApiName,
    request: Request<common::GetStatusRequest>,
) -> Reply<common::GetStatusResponse> {
    let req = request.into_inner();
    let status = adapter.machine.component(api, &req.name)?.status().await?;
    Ok(Response::new(common::GetStatusResponse {
        result: Some(object_to_struct(status)),
    }))
}

/// `GetGeometries`: simulated resources have no configured geometry.
pub fn get_geometries(
    adapter: &Adapter,
    api: &ApiName,
    request: Request<common::GetGeometriesRequest>,
) -> Reply<common::GetGeometriesResponse> {
    adapter.machine.lookup(api, &request.get_ref().name)?;
    Ok(Response::new(common::GetGeometriesResponse {
        geometries: vec![],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registration_names_a_declared_service_once() {
        let services = tether_proto::service_names();
        let mut seen = std::collections::HashSet::new();
        for r in REGISTERED {
            assert!(
                services.iter().any(|s| s == r.proto_service),
                "{} names {}, which our protos do not declare",
                r.api,
                r.proto_service
            );
            assert!(seen.insert(r.api), "{} registered twice", r.api);
            assert!(!r.models.is_empty(), "{} has no model", r.api);
            let found =
                find(r.api.namespace, r.api.kind.as_str(), r.api.subtype).map(|f| f.proto_service);
            assert_eq!(found, Some(r.proto_service));
            assert_eq!(
                by_proto_service(r.proto_service).map(|f| f.api),
                Some(r.api)
            );
        }
    }
}
