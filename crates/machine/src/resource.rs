//! The resource model: what a machine is made of.
//!
//! A resource is identified by its API (`rdk:component:motor`) and a short name (`left`). Each
//! component API has one trait here that a model implements; the gRPC services translate wire
//! messages into calls on these traits and never know which model is behind them. Components
//! that move implement [`Actuator`] (`stop`, `is_moving`), which is what `StopAll`, shutdown and
//! (later) session expiry use to bring the machine to rest.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tether_proto::viam::common::v1::{Pose, Vector3};

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

/// The component APIs this build serves, named by their subtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subtype {
    Arm,
    Base,
    Button,
    Camera,
    Gantry,
    Generic,
    Gripper,
    Motor,
    Sensor,
    Servo,
    Switch,
}

impl Subtype {
    /// Every subtype, in a stable order.
    pub const ALL: [Subtype; 11] = [
        Subtype::Arm,
        Subtype::Base,
        Subtype::Button,
        Subtype::Camera,
        Subtype::Gantry,
        Subtype::Generic,
        Subtype::Gripper,
        Subtype::Motor,
        Subtype::Sensor,
        Subtype::Servo,
        Subtype::Switch,
    ];

    /// The snake_case subtype as it appears in resource names (`motor`).
    pub fn as_str(self) -> &'static str {
        match self {
            Subtype::Arm => "arm",
            Subtype::Base => "base",
            Subtype::Button => "button",
            Subtype::Camera => "camera",
            Subtype::Gantry => "gantry",
            Subtype::Generic => "generic",
            Subtype::Gripper => "gripper",
            Subtype::Motor => "motor",
            Subtype::Sensor => "sensor",
            Subtype::Servo => "servo",
            Subtype::Switch => "switch",
        }
    }

    /// Parses a subtype name.
    pub fn parse(s: &str) -> Option<Subtype> {
        Subtype::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The fully qualified gRPC service of this API.
    pub fn proto_service(self) -> String {
        let service = match self {
            Subtype::Arm => "ArmService",
            Subtype::Base => "BaseService",
            Subtype::Button => "ButtonService",
            Subtype::Camera => "CameraService",
            Subtype::Gantry => "GantryService",
            Subtype::Generic => "GenericService",
            Subtype::Gripper => "GripperService",
            Subtype::Motor => "MotorService",
            Subtype::Sensor => "SensorService",
            Subtype::Servo => "ServoService",
            Subtype::Switch => "SwitchService",
        };
        format!("viam.component.{}.v1.{service}", self.as_str())
    }
}

impl fmt::Display for Subtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rdk:component:{}", self.as_str())
    }
}

/// A resource's full name: its API and its short name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceName {
    /// The component API.
    pub subtype: Subtype,
    /// The short name, unique on the machine.
    pub name: String,
}

impl ResourceName {
    /// The wire form.
    pub fn to_proto(&self) -> tether_proto::viam::common::v1::ResourceName {
        tether_proto::viam::common::v1::ResourceName {
            namespace: "rdk".into(),
            r#type: "component".into(),
            subtype: self.subtype.as_str().into(),
            name: self.name.clone(),
        }
    }
}

impl fmt::Display for ResourceName {
    /// The text form used in logs and errors: `rdk:component:motor/left`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.subtype, self.name)
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

/// A component that moves and can be brought to rest.
#[async_trait]
pub trait Actuator: Component {
    /// Stops all motion now. Must be idempotent and must not wait on the motion it interrupts.
    async fn stop(&self, extra: &Object) -> Result<()>;
    /// Whether the component is moving.
    async fn is_moving(&self) -> Result<bool>;
}

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

/// Physical properties of a base.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BaseProperties {
    pub width_meters: f64,
    pub turning_radius_meters: f64,
    pub wheel_circumference_meters: f64,
}

/// A mobile base (`rdk:component:base`).
#[async_trait]
pub trait Base: Actuator {
    /// Drives straight for `distance_mm` at `mm_per_sec`, returning when done.
    async fn move_straight(&self, distance_mm: i64, mm_per_sec: f64, extra: &Object) -> Result<()>;
    /// Turns in place by `angle_deg` at `degs_per_sec`, returning when done.
    async fn spin(&self, angle_deg: f64, degs_per_sec: f64, extra: &Object) -> Result<()>;
    /// Drives at fractions of full power until told otherwise.
    async fn set_power(&self, linear: Vector3, angular: Vector3, extra: &Object) -> Result<()>;
    /// Drives at velocities (mm/s, deg/s) until told otherwise.
    async fn set_velocity(&self, linear: Vector3, angular: Vector3, extra: &Object) -> Result<()>;
    /// Physical properties.
    async fn properties(&self, extra: &Object) -> Result<BaseProperties>;
}

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

/// A gantry (`rdk:component:gantry`).
#[async_trait]
pub trait Gantry: Actuator {
    /// Axis positions in mm.
    async fn position(&self, extra: &Object) -> Result<Vec<f64>>;
    /// Moves the axes, returning when there.
    async fn move_to_position(
        &self,
        positions_mm: Vec<f64>,
        speeds_mm_per_sec: Vec<f64>,
        extra: &Object,
    ) -> Result<()>;
    /// Homes the axes.
    async fn home(&self, extra: &Object) -> Result<bool>;
    /// Axis lengths in mm.
    async fn lengths(&self, extra: &Object) -> Result<Vec<f64>>;
}

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

/// A servo (`rdk:component:servo`).
#[async_trait]
pub trait Servo: Actuator {
    /// Moves to an angle in degrees, returning when there.
    async fn move_to(&self, angle_deg: u32, extra: &Object) -> Result<()>;
    /// Current angle in degrees.
    async fn position(&self, extra: &Object) -> Result<u32>;
}

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

/// A button (`rdk:component:button`).
#[async_trait]
pub trait Button: Component {
    /// Pushes it.
    async fn push(&self, extra: &Object) -> Result<()>;
}

/// A sensor (`rdk:component:sensor`).
#[async_trait]
pub trait Sensor: Component {
    /// Current readings.
    async fn readings(&self, extra: &Object) -> Result<Object>;
}

/// One image from a camera.
#[derive(Debug, Clone)]
pub struct Image {
    pub source_name: String,
    pub mime_type: String,
    pub bytes: Vec<u8>,
}

/// What a camera says about itself.
#[derive(Debug, Clone)]
pub struct CameraProperties {
    pub width_px: u32,
    pub height_px: u32,
    pub mime_types: Vec<String>,
    pub frame_rate: Option<f32>,
}

/// A camera (`rdk:component:camera`).
#[async_trait]
pub trait Camera: Component {
    /// Current images, from the named sources (all sources if empty).
    async fn images(&self, filter_source_names: &[String], extra: &Object) -> Result<Vec<Image>>;
    /// Properties.
    async fn properties(&self) -> Result<CameraProperties>;
}

/// A handle on one configured resource, typed by its API.
#[derive(Clone)]
pub enum Resource {
    Arm(Arc<dyn Arm>),
    Base(Arc<dyn Base>),
    Button(Arc<dyn Button>),
    Camera(Arc<dyn Camera>),
    Gantry(Arc<dyn Gantry>),
    Generic(Arc<dyn Component>),
    Gripper(Arc<dyn Gripper>),
    Motor(Arc<dyn Motor>),
    Sensor(Arc<dyn Sensor>),
    Servo(Arc<dyn Servo>),
    Switch(Arc<dyn Switch>),
}

impl Resource {
    /// The API this resource implements.
    pub fn subtype(&self) -> Subtype {
        match self {
            Resource::Arm(_) => Subtype::Arm,
            Resource::Base(_) => Subtype::Base,
            Resource::Button(_) => Subtype::Button,
            Resource::Camera(_) => Subtype::Camera,
            Resource::Gantry(_) => Subtype::Gantry,
            Resource::Generic(_) => Subtype::Generic,
            Resource::Gripper(_) => Subtype::Gripper,
            Resource::Motor(_) => Subtype::Motor,
            Resource::Sensor(_) => Subtype::Sensor,
            Resource::Servo(_) => Subtype::Servo,
            Resource::Switch(_) => Subtype::Switch,
        }
    }

    /// The common view.
    pub fn component(&self) -> Arc<dyn Component> {
        match self {
            Resource::Arm(r) => r.clone(),
            Resource::Base(r) => r.clone(),
            Resource::Button(r) => r.clone(),
            Resource::Camera(r) => r.clone(),
            Resource::Gantry(r) => r.clone(),
            Resource::Generic(r) => r.clone(),
            Resource::Gripper(r) => r.clone(),
            Resource::Motor(r) => r.clone(),
            Resource::Sensor(r) => r.clone(),
            Resource::Servo(r) => r.clone(),
            Resource::Switch(r) => r.clone(),
        }
    }

    /// The actuator view, for resources that move.
    pub fn actuator(&self) -> Option<Arc<dyn Actuator>> {
        match self {
            Resource::Arm(r) => Some(r.clone()),
            Resource::Base(r) => Some(r.clone()),
            Resource::Gantry(r) => Some(r.clone()),
            Resource::Gripper(r) => Some(r.clone()),
            Resource::Motor(r) => Some(r.clone()),
            Resource::Servo(r) => Some(r.clone()),
            Resource::Button(_)
            | Resource::Camera(_)
            | Resource::Generic(_)
            | Resource::Sensor(_)
            | Resource::Switch(_) => None,
        }
    }
}

/// Every resource of a machine, looked up by API and name.
#[derive(Clone, Default)]
pub struct Resources {
    by_api: HashMap<Subtype, HashMap<String, Resource>>,
    order: Vec<(ResourceName, Resource)>,
}

impl Resources {
    /// Adds a resource; gives it back if one of that name and API exists.
    pub fn insert(
        &mut self,
        name: ResourceName,
        resource: Resource,
    ) -> std::result::Result<(), Resource> {
        let of_api = self.by_api.entry(name.subtype).or_default();
        if of_api.contains_key(&name.name) {
            return Err(resource);
        }
        of_api.insert(name.name.clone(), resource.clone());
        self.order.push((name, resource));
        Ok(())
    }

    /// Looks a resource up (no allocation: this is on every call's path).
    pub fn get(&self, subtype: Subtype, name: &str) -> Option<&Resource> {
        self.by_api.get(&subtype)?.get(name)
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
