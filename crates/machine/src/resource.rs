//! The resource model: what a machine is made of.
//!
//! A resource is identified by its API — `namespace:type:subtype`, such as
//! `rdk:component:motor` or `rdk:service:motion` — and a short name (`left`). Components and
//! services are resources alike. Each API is one module under [`crate::apis`] that defines its
//! trait; a [`Resource`] holds a model behind that trait without this module knowing which
//! traits exist. Every resource offers [`Component`] (DoCommand, status); resources that move
//! also offer [`Actuator`] (`stop`, `is_moving`), which is what `StopAll`, shutdown and session
//! expiry use to bring the machine to rest.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

/// A JSON object: the `extra` parameters of a call, a DoCommand command or result, a status.
pub type Object = Map<String, Value>;

/// Why a resource call failed. Each variant maps to one gRPC status code.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The caller asked for something the resource cannot do with these arguments.
    #[error("{0}")]
    InvalidArgument(String),
    /// The resource is not in a state where the call makes sense.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The call was interrupted (its operation was cancelled or the resource was stopped).
    #[error("{0}")]
    Cancelled(String),
    /// The resource does not offer this call.
    #[error("{0}")]
    Unimplemented(String),
    /// Anything else: the hardware (or simulation) failed.
    #[error("{0}")]
    Internal(String),
}

impl From<ResourceError> for tonic::Status {
    fn from(err: ResourceError) -> Self {
        match err {
            ResourceError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            ResourceError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            ResourceError::Cancelled(m) => tonic::Status::cancelled(m),
            ResourceError::Unimplemented(m) => tonic::Status::unimplemented(m),
            ResourceError::Internal(m) => tonic::Status::internal(m),
        }
    }
}

/// Result of a resource call.
pub type Result<T> = std::result::Result<T, ResourceError>;

/// Whether a resource is a component (hardware) or a service (software on the machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// `component`: arms, bases, motors, sensors, ...
    Component,
    /// `service`: motion, navigation, data management, ...
    Service,
}

impl ResourceKind {
    /// The word used on the wire and in config (`component`, `service`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Component => "component",
            ResourceKind::Service => "service",
        }
    }

    /// Parses the wire word.
    pub fn parse(s: &str) -> Option<ResourceKind> {
        match s {
            "component" => Some(ResourceKind::Component),
            "service" => Some(ResourceKind::Service),
            _ => None,
        }
    }
}

/// An API: `namespace:type:subtype` (`rdk:component:motor`). The APIs this build serves are
/// constants of their modules; names from the wire or from config are resolved against the
/// registry ([`crate::apis::find`]), so an `ApiName` always names a served API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiName {
    /// The namespace (`rdk` for Viam's own APIs).
    pub namespace: &'static str,
    /// Component or service.
    pub kind: ResourceKind,
    /// The snake_case subtype (`motor`, `movement_sensor`, `motion`).
    pub subtype: &'static str,
}

impl ApiName {
    /// An `rdk:component:<subtype>` API.
    pub const fn component(subtype: &'static str) -> Self {
        Self {
            namespace: "rdk",
            kind: ResourceKind::Component,
            subtype,
        }
    }

    /// An `rdk:service:<subtype>` API.
    pub const fn service(subtype: &'static str) -> Self {
        Self {
            namespace: "rdk",
            kind: ResourceKind::Service,
            subtype,
        }
    }

    /// The wire form of the API itself (a resource name with an empty name), as
    /// `ResourceRPCSubtypes` reports it.
    pub fn to_proto(&self) -> tether_proto::viam::common::v1::ResourceName {
        tether_proto::viam::common::v1::ResourceName {
            namespace: self.namespace.into(),
            r#type: self.kind.as_str().into(),
            subtype: self.subtype.into(),
            name: String::new(),
        }
    }
}

impl fmt::Display for ApiName {
    /// `rdk:component:motor`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.namespace,
            self.kind.as_str(),
            self.subtype
        )
    }
}

/// A resource's full name: its API and its short name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceName {
    /// The API.
    pub api: ApiName,
    /// The short name, unique on the machine.
    pub name: String,
}

impl ResourceName {
    /// The resource `name` of `api`.
    pub fn new(api: ApiName, name: impl Into<String>) -> Self {
        Self {
            api,
            name: name.into(),
        }
    }

    /// The wire form.
    pub fn to_proto(&self) -> tether_proto::viam::common::v1::ResourceName {
        tether_proto::viam::common::v1::ResourceName {
            name: self.name.clone(),
            ..self.api.to_proto()
        }
    }
}

impl fmt::Display for ResourceName {
    /// The text form used in logs and errors: `rdk:component:motor/left`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.api, self.name)
    }
}

/// What every resource offers.
#[async_trait]
pub trait Component: Send + Sync + 'static {
    /// Runs a model-specific command.
    async fn do_command(&self, command: Object) -> Result<Object>;
    /// A model-specific status snapshot.
    async fn status(&self) -> Result<Object> {
        Ok(Object::new())
    }
}

/// A resource that moves and can be brought to rest.
#[async_trait]
pub trait Actuator: Component {
    /// Stops all motion now. Must be idempotent and must not wait on the motion it interrupts.
    async fn stop(&self, extra: &Object) -> Result<()>;
    /// Whether the resource is moving.
    async fn is_moving(&self) -> Result<bool>;
}

/// A handle on one built resource: the model behind its API's trait, with the views every
/// resource offers. Built by each API module's `resource` function, which knows the trait.
#[derive(Clone)]
pub struct Resource {
    /// `Arc<dyn ApiTrait>`, boxed once more so it can be handed out typed.
    typed: Arc<dyn Any + Send + Sync>,
    component: Arc<dyn Component>,
    actuator: Option<Arc<dyn Actuator>>,
    /// The model itself, for models that build on another model's internals (a simulated
    /// movement sensor follows a simulated base).
    model: Arc<dyn Any + Send + Sync>,
}

impl Resource {
    /// A resource serving `typed` (the model as its API's trait object), with its common and
    /// (when it moves) actuator views, and the model itself.
    pub fn new<T: ?Sized + Send + Sync + 'static>(
        typed: Arc<T>,
        component: Arc<dyn Component>,
        actuator: Option<Arc<dyn Actuator>>,
        model: Arc<dyn Any + Send + Sync>,
    ) -> Self {
        Self {
            typed: Arc::new(typed),
            component,
            actuator,
            model,
        }
    }

    /// The resource as its API's trait object (`resource.typed::<dyn Motor>()`); `None` if it
    /// serves another API.
    pub fn typed<T: ?Sized + Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.typed.downcast_ref::<Arc<T>>().cloned()
    }

    /// The model itself, if it is an `M`.
    pub fn model<M: Send + Sync + 'static>(&self) -> Option<Arc<M>> {
        self.model.clone().downcast::<M>().ok()
    }

    /// The common view.
    pub fn component(&self) -> Arc<dyn Component> {
        self.component.clone()
    }

    /// The actuator view, for resources that move.
    pub fn actuator(&self) -> Option<Arc<dyn Actuator>> {
        self.actuator.clone()
    }
}

/// Every resource of a machine, looked up by API and name.
#[derive(Clone, Default)]
pub struct Resources {
    by_api: HashMap<ApiName, HashMap<String, Resource>>,
    order: Vec<(ResourceName, Resource)>,
}

impl Resources {
    /// Adds a resource; gives it back if one of that name and API exists.
    pub fn insert(
        &mut self,
        name: ResourceName,
        resource: Resource,
    ) -> std::result::Result<(), Resource> {
        let of_api = self.by_api.entry(name.api).or_default();
        if of_api.contains_key(&name.name) {
            return Err(resource);
        }
        of_api.insert(name.name.clone(), resource.clone());
        self.order.push((name, resource));
        Ok(())
    }

    /// Looks a resource up (no allocation: this is on every call's path).
    pub fn get(&self, api: &ApiName, name: &str) -> Option<&Resource> {
        self.by_api.get(api)?.get(name)
    }

    /// Every resource, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = (&ResourceName, &Resource)> {
        self.order.iter().map(|(n, r)| (n, r))
    }

    /// How many resources.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}
