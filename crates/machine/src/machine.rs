//! The machine: its resources, built from a validated config, and the operations in flight.
//! Services look resources up here; `StopAll` and shutdown bring every actuator to rest here.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tonic::Status;
use uuid::Uuid;

use crate::config::{Config, Model};
use crate::fake;
use crate::operations::Operations;
use crate::resource::{
    Arm, Base, Button, Camera, Component, Gantry, Gripper, Motor, Resource, ResourceName,
    Resources, Sensor, Servo, Subtype, Switch,
};
use crate::sessions::Sessions;

/// A running machine.
pub struct Machine {
    resources: Resources,
    operations: Arc<Operations>,
    sessions: Arc<Sessions>,
    /// How long one actuator's Stop may take before it is reported as failed (StopAll,
    /// shutdown, session expiry): `network.sessions.stop_timeout`.
    stop_timeout: Duration,
    started: SystemTime,
    revision: String,
}

fn build(model: &Model, name: &str) -> Resource {
    match model {
        Model::FakeArm(a) => Resource::Arm(Arc::new(fake::FakeArm::new(name, a))),
        Model::FakeBase(a) => Resource::Base(Arc::new(fake::FakeBase::new(name, a))),
        Model::FakeButton => Resource::Button(Arc::new(fake::FakeButton::new(name))),
        Model::FakeCamera(a) => Resource::Camera(Arc::new(fake::FakeCamera::new(name, a))),
        Model::FakeGantry(a) => Resource::Gantry(Arc::new(fake::FakeGantry::new(name, a))),
        Model::FakeGeneric => Resource::Generic(Arc::new(fake::FakeGeneric::new(name))),
        Model::FakeGripper(a) => Resource::Gripper(Arc::new(fake::FakeGripper::new(name, a))),
        Model::FakeMotor(a) => Resource::Motor(Arc::new(fake::FakeMotor::new(name, a))),
        Model::FakeSensor(a) => Resource::Sensor(Arc::new(fake::FakeSensor::new(name, a))),
        Model::FakeServo(a) => Resource::Servo(Arc::new(fake::FakeServo::new(name, a))),
        Model::FakeSwitch(a) => Resource::Switch(Arc::new(fake::FakeSwitch::new(name, a))),
    }
}

macro_rules! typed_lookup {
    ($($fn:ident: $variant:ident => $trait:ident),* $(,)?) => {$(
        /// Looks up a resource of this API by name; NOT_FOUND names it when absent.
        pub fn $fn(&self, name: &str) -> Result<Arc<dyn $trait>, Status> {
            match self.lookup(Subtype::$variant, name)? {
                Resource::$variant(r) => Ok(r.clone()),
                _ => Err(Status::internal("resource registry holds a mismatched type")),
            }
        }
    )*};
}

impl Machine {
    /// Builds every configured resource. The config is already validated, so this cannot fail.
    pub fn new(config: &Config) -> Self {
        let mut resources = Resources::default();
        for c in &config.components {
            let name = ResourceName {
                subtype: c.subtype,
                name: c.name.clone(),
            };
            // Names were checked unique when the config was validated.
            let _ = resources.insert(name, build(&c.model, &c.name));
        }
        Self {
            resources,
            operations: Arc::new(Operations::default()),
            sessions: Arc::new(Sessions::new(
                config.network.heartbeat_window,
                config.network.max_sessions,
            )),
            stop_timeout: config.network.stop_timeout,
            started: SystemTime::now(),
            revision: config.revision.clone(),
        }
    }

    /// Every resource.
    pub fn resources(&self) -> &Resources {
        &self.resources
    }

    /// The operations registry.
    pub fn operations(&self) -> &Arc<Operations> {
        &self.operations
    }

    /// The sessions.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// The deadline of each actuator's Stop.
    pub fn stop_timeout(&self) -> Duration {
        self.stop_timeout
    }

    /// When the machine started.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// The config revision.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// Looks a resource up; NOT_FOUND names the missing resource.
    pub fn lookup(&self, subtype: Subtype, name: &str) -> Result<&Resource, Status> {
        self.resources
            .get(subtype, name)
            .ok_or_else(|| Status::not_found(format!("resource \"{subtype}/{name}\" not found")))
    }

    /// The common view of a resource.
    pub fn component(&self, subtype: Subtype, name: &str) -> Result<Arc<dyn Component>, Status> {
        Ok(self.lookup(subtype, name)?.component())
    }

    typed_lookup! {
        arm: Arm => Arm,
        base: Base => Base,
        button: Button => Button,
        camera: Camera => Camera,
        gantry: Gantry => Gantry,
        gripper: Gripper => Gripper,
        motor: Motor => Motor,
        sensor: Sensor => Sensor,
        servo: Servo => Servo,
        switch: Switch => Switch,
    }

    /// Cancels every operation but `keep`, then stops every actuator in parallel, each under
    /// the stop timeout. Returns one message per actuator that failed to stop.
    pub async fn stop_all(&self, keep: Option<Uuid>) -> Vec<String> {
        let cancelled = self.operations.cancel_all_except(keep);
        let stop_timeout = self.stop_timeout;
        let stops = self.resources.iter().filter_map(|(name, r)| {
            let actuator = r.actuator()?;
            let name = name.clone();
            Some(async move {
                let outcome =
                    tokio::time::timeout(stop_timeout, actuator.stop(&Default::default())).await;
                match outcome {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!(
                        "failed to stop component named {name} with error {e}"
                    )),
                    Err(_) => Some(format!(
                        "failed to stop component named {name}: no answer within {stop_timeout:?}"
                    )),
                }
            })
        });
        let failures: Vec<String> = futures::future::join_all(stops)
            .await
            .into_iter()
            .flatten()
            .collect();
        tracing::info!(
            cancelled_operations = cancelled,
            failures = failures.len(),
            "stopped all actuators"
        );
        failures
    }
}
