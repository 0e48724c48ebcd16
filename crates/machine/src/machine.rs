//! The machine: its resources, built from a validated config, and the operations in flight.
//! Services look resources up here; `StopAll` and shutdown bring every actuator to rest here.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tonic::Status;
use uuid::Uuid;

use crate::commanders::Commanders;
use crate::config::Config;
use crate::operations::Operations;
use crate::resource::{Actuator, ApiName, Component, Resource, ResourceName, Resources};
use crate::sessions::Sessions;
use crate::telemetry::{StopCause, Telemetry};

/// Why a machine could not be built from a validated config.
#[derive(Debug, thiserror::Error)]
#[error("cannot build {resource}: {message}")]
pub struct BuildError {
    /// The resource whose model failed to build.
    pub resource: ResourceName,
    /// What went wrong.
    pub message: String,
}

/// A running machine.
pub struct Machine {
    resources: Resources,
    operations: Arc<Operations>,
    sessions: Arc<Sessions>,
    /// Connections that command without a session ([`crate::commanders`]).
    commanders: Commanders,
    /// How long one actuator's Stop may take before it is reported as failed (StopAll,
    /// shutdown, session expiry): `network.sessions.stop_timeout`.
    stop_timeout: Duration,
    /// What the machine counts (`/metrics`, the page).
    telemetry: Arc<Telemetry>,
    started: SystemTime,
    revision: String,
}

/// Stops the machine started on its own ([`Machine::spawn_stops`]).
#[derive(Debug, Default)]
pub struct Stopping {
    /// The actuators being stopped.
    pub names: Vec<String>,
    tasks: Vec<tokio::task::JoinHandle<bool>>,
}

impl Stopping {
    /// Waits for every stop to return; whether all succeeded.
    pub async fn finished(self) -> bool {
        let mut ok = true;
        for task in self.tasks {
            ok &= task.await.unwrap_or(false);
        }
        ok
    }
}

/// Why one actuator's Stop under the stop timeout did not succeed.
#[derive(Debug)]
pub enum StopFailure {
    /// The actuator answered with an error.
    Failed(crate::resource::ResourceError),
    /// It did not answer within the timeout.
    NoAnswer(Duration),
}

/// Stops `actuator` within `timeout`.
async fn stop_within(actuator: &dyn Actuator, timeout: Duration) -> Result<(), StopFailure> {
    match tokio::time::timeout(timeout, actuator.stop(&Default::default())).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StopFailure::Failed(e)),
        Err(_) => Err(StopFailure::NoAnswer(timeout)),
    }
}

/// Builds every configured resource, each after the resources it depends on (config
/// validation checked that they exist and form no cycle), listed in configuration order.
fn build_resources(config: &Config) -> Result<Resources, BuildError> {
    let mut built = Resources::default();
    let mut pending: Vec<_> = config.resources().collect();
    while !pending.is_empty() {
        let before = pending.len();
        let mut still = Vec::new();
        for c in pending {
            let ready = c
                .dependencies
                .iter()
                .all(|d| built.get(&d.name.api, &d.name.name).is_some());
            if !ready {
                still.push(c);
                continue;
            }
            let name = ResourceName::new(c.api, c.name.clone());
            let resource = (c.model.build)(&crate::apis::Build {
                name: &c.name,
                attributes: &c.attributes,
                built: &built,
            })
            .map_err(|message| BuildError {
                resource: name.clone(),
                message,
            })?;
            // Names were checked unique when the config was validated.
            let _ = built.insert(name, resource);
        }
        if still.len() == before {
            return Err(BuildError {
                resource: ResourceName::new(still[0].api, still[0].name.clone()),
                message: "its dependencies form a cycle".into(),
            });
        }
        pending = still;
    }
    // Configuration order, whatever order they were built in.
    let mut ordered = Resources::default();
    for c in config.resources() {
        if let Some(r) = built.get(&c.api, &c.name) {
            let _ = ordered.insert(ResourceName::new(c.api, c.name.clone()), r.clone());
        }
    }
    Ok(ordered)
}

impl Machine {
    /// Builds every configured resource.
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        let telemetry = Arc::new(Telemetry::default());
        Ok(Self {
            resources: build_resources(config)?,
            operations: Arc::new(Operations::default()),
            sessions: Arc::new(Sessions::new(
                config.network.heartbeat_window,
                config.network.max_sessions,
                telemetry.clone(),
            )),
            commanders: Commanders::new(config.network.stop_on_disconnect),
            stop_timeout: config.network.stop_timeout,
            telemetry,
            started: SystemTime::now(),
            revision: config.revision.clone(),
        })
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

    /// The connections that command resources without a session.
    pub fn commanders(&self) -> &Commanders {
        &self.commanders
    }

    /// What the machine counts.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
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
    pub fn lookup(&self, api: &ApiName, name: &str) -> Result<&Resource, Status> {
        self.resources
            .get(api, name)
            .ok_or_else(|| Status::not_found(format!("resource \"{api}/{name}\" not found")))
    }

    /// The common view of a resource.
    pub fn component(&self, api: &ApiName, name: &str) -> Result<Arc<dyn Component>, Status> {
        Ok(self.lookup(api, name)?.component())
    }

    /// A resource as its API's trait object (`machine.typed::<dyn Motor>(&motor::API, "left")`);
    /// NOT_FOUND names it when absent.
    pub fn typed<T: ?Sized + Send + Sync + 'static>(
        &self,
        api: &ApiName,
        name: &str,
    ) -> Result<Arc<T>, Status> {
        self.lookup(api, name)?
            .typed::<T>()
            .ok_or_else(|| Status::internal(format!("{api}/{name} does not serve its API's trait")))
    }

    /// Starts a Stop of every actuator among `names`, each on a task of its own in the current
    /// span and under the stop timeout, so a hung one delays no other; its log lines say it
    /// followed `cause`, and its lateness (from `since`, the deadline or the connection's end)
    /// is counted.
    pub fn spawn_stops<'a>(
        &self,
        names: impl IntoIterator<Item = &'a ResourceName>,
        cause: StopCause,
        since: Instant,
    ) -> Stopping {
        let stop_timeout = self.stop_timeout;
        let mut stopping = Stopping::default();
        for name in names {
            let Some(actuator) = self
                .resources
                .get(&name.api, &name.name)
                .and_then(Resource::actuator)
            else {
                continue;
            };
            let name = name.clone();
            stopping.names.push(name.to_string());
            let telemetry = self.telemetry.clone();
            stopping
                .tasks
                .push(tokio::spawn(tracing::Instrument::in_current_span(async move {
                    let started = Instant::now();
                    let what = cause.describe();
                    let result = stop_within(actuator.as_ref(), stop_timeout).await;
                    telemetry.stopped(cause, since.elapsed(), result.is_ok());
                    match result {
                        Ok(()) => {
                            tracing::debug!(resource = %name, took = ?started.elapsed(), "stopped");
                            true
                        }
                        Err(StopFailure::Failed(err)) => {
                            tracing::error!(resource = %name, error = %err, "stop after {what} failed");
                            false
                        }
                        Err(StopFailure::NoAnswer(timeout)) => {
                            tracing::error!(resource = %name, ?timeout, "stop after {what} did not finish within its deadline");
                            false
                        }
                    }
                })));
        }
        stopping
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
                match stop_within(actuator.as_ref(), stop_timeout).await {
                    Ok(()) => None,
                    Err(StopFailure::Failed(e)) => Some(format!(
                        "failed to stop component named {name} with error {e}"
                    )),
                    Err(StopFailure::NoAnswer(t)) => Some(format!(
                        "failed to stop component named {name}: no answer within {t:?}"
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
