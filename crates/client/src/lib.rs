//! The Tether client SDK.
//!
//! [`RobotClient::connect`] dials a machine, authenticates with an API key if one is given, and
//! returns a client whose typed resource clients ([`Motor::from_robot`], [`RobotClient::robot`])
//! all run over one [`RobotChannel`]. The channel is the transport seam: every call reads the
//! machine's *current* transport (direct gRPC today; WebRTC joins as another variant), adds the
//! access token, and — only on safety-monitored methods, decided by the
//! `safety_heartbeat_monitored` option in the same descriptors the server reads — the session
//! id, starting the session lazily before the first such call.
//!
//! Sessions are heartbeated every window/5 from a dedicated OS thread with its own runtime and
//! its own authenticated connection, so application work that hogs the application's runtime
//! cannot starve them. A call that fails with `SESSION_EXPIRED` is never retried: the error
//! reaches the application and the next monitored call starts a new session.
//!
//! Reconnection is paced by the sans-IO [`backoff`] policy. (The reconnect loop, connection
//! events for every state, TLS dialing and typed clients for every component are still to
//! come; see the README's client section.)

pub mod backoff;
mod channel;
mod reconnect;
mod session;

use std::time::Duration;

pub use channel::RobotChannel;
use tether_proto::viam::component::motor::v1 as motor;
use tether_proto::viam::robot::v1 as robot;
use tether_proto::viam::robot::v1::robot_service_client::RobotServiceClient;
use tokio::sync::broadcast;

/// API-key credentials.
#[derive(Clone)]
pub struct ApiKey {
    /// The key's id (the entity it authenticates as).
    pub id: String,
    /// The key.
    pub key: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct Options {
    /// Credentials, if the machine requires them.
    pub credentials: Option<ApiKey>,
    /// Bound on a whole dial attempt: connect, authenticate, first call.
    pub dial_timeout: Duration,
    /// Never start sessions (no safety stop if this client vanishes).
    pub disable_sessions: bool,
    /// Reconnection pacing (`max_attempts: 0` never reconnects).
    pub backoff: backoff::BackoffPolicy,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            credentials: None,
            dial_timeout: Duration::from_secs(20),
            disable_sessions: false,
            backoff: backoff::BackoffPolicy::default(),
        }
    }
}

impl Options {
    /// Options with API-key credentials.
    pub fn with_api_key(key: impl Into<String>, key_id: impl Into<String>) -> Self {
        Self {
            credentials: Some(ApiKey {
                id: key_id.into(),
                key: key.into(),
            }),
            ..Self::default()
        }
    }
}

/// What happens to the connection and the session, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// A dial is starting.
    Connecting,
    /// Dialing by `method`, attempt number `attempt`.
    Dialing { method: String, attempt: u32 },
    /// Connected over `transport`.
    Connected { transport: String },
    /// The connection was lost.
    Disconnected { cause: String },
    /// Reconnection attempt `attempt` starts after `delay`.
    Reconnecting { attempt: u32, delay: Duration },
    /// Every attempt failed; the client waits for the application (see
    /// [`RobotClient::reconnect`]).
    ReconnectionFailed { attempts: u32 },
    /// A session was started.
    SessionStarted { id: String },
    /// A session was resumed.
    SessionResumed { id: String },
    /// The machine reported the session expired; monitored resources it drove were stopped.
    SessionExpired { id: String },
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not usable.
    #[error("invalid address {0:?}: {1}")]
    Address(String, String),
    /// The connection could not be made.
    #[error("cannot connect to {address}: {message}")]
    Connect { address: String, message: String },
    /// The dial did not finish in time.
    #[error("connecting to {0} took longer than {1:?}")]
    Timeout(String, Duration),
    /// The machine refused the credentials.
    #[error("authentication failed: {0}")]
    Auth(tonic::Status),
    /// A call failed.
    #[error(transparent)]
    Status(#[from] tonic::Status),
}

/// A connection to a machine.
#[derive(Clone)]
pub struct RobotClient {
    channel: RobotChannel,
}

impl RobotClient {
    /// Dials `address` (`host:port`) and authenticates, all within `options.dial_timeout`.
    pub async fn connect(address: &str, options: Options) -> Result<Self, ClientError> {
        let channel = RobotChannel::connect(address, options).await?;
        Ok(Self { channel })
    }

    /// The channel every typed client runs over.
    pub fn channel(&self) -> &RobotChannel {
        &self.channel
    }

    /// The robot service.
    pub fn robot(&self) -> RobotServiceClient<RobotChannel> {
        RobotServiceClient::new(self.channel.clone())
    }

    /// Connection and session events from now on.
    pub fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.channel.events()
    }

    /// The machine's resources.
    pub async fn resource_names(
        &self,
    ) -> Result<Vec<tether_proto::viam::common::v1::ResourceName>, ClientError> {
        Ok(self
            .robot()
            .resource_names(robot::ResourceNamesRequest {})
            .await?
            .into_inner()
            .resources)
    }

    /// Stops every actuator on the machine and cancels its other operations.
    pub async fn stop_all(&self) -> Result<(), ClientError> {
        self.robot()
            .stop_all(robot::StopAllRequest { extra: vec![] })
            .await?;
        Ok(())
    }

    /// The current session id, if a session is active.
    pub fn session_id(&self) -> Option<String> {
        self.channel.session_id()
    }

    /// Reconnects now (for example after `ReconnectionFailed`), on the backoff schedule.
    /// Returns whether it connected.
    pub async fn reconnect(&self) -> bool {
        reconnect::reconnect(&self.channel.inner).await
    }

    /// Starts (or returns) the session now instead of before the first monitored call.
    pub async fn start_session(&self) -> Result<String, ClientError> {
        Ok(self.channel.ensure_session().await?)
    }
}

/// A motor on the machine.
#[derive(Clone)]
pub struct Motor {
    name: String,
    client: motor::motor_service_client::MotorServiceClient<RobotChannel>,
}

impl Motor {
    /// The motor named `name` on `robot`.
    pub fn from_robot(robot: &RobotClient, name: &str) -> Self {
        Self {
            name: name.to_string(),
            client: motor::motor_service_client::MotorServiceClient::new(robot.channel.clone()),
        }
    }

    /// Runs at a fraction of full power in [-1, 1].
    pub async fn set_power(&mut self, power_pct: f64) -> Result<(), ClientError> {
        self.client
            .set_power(motor::SetPowerRequest {
                name: self.name.clone(),
                power_pct,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Turns `revolutions` at `rpm`, returning when done.
    pub async fn go_for(&mut self, rpm: f64, revolutions: f64) -> Result<(), ClientError> {
        self.client
            .go_for(motor::GoForRequest {
                name: self.name.clone(),
                rpm,
                revolutions,
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Stops.
    pub async fn stop(&mut self) -> Result<(), ClientError> {
        self.client
            .stop(motor::StopRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?;
        Ok(())
    }

    /// Position in revolutions.
    pub async fn position(&mut self) -> Result<f64, ClientError> {
        Ok(self
            .client
            .get_position(motor::GetPositionRequest {
                name: self.name.clone(),
                extra: None,
            })
            .await?
            .into_inner()
            .position)
    }

    /// Whether it is moving.
    pub async fn is_moving(&mut self) -> Result<bool, ClientError> {
        Ok(self
            .client
            .is_moving(motor::IsMovingRequest {
                name: self.name.clone(),
            })
            .await?
            .into_inner()
            .is_moving)
    }
}
