//! The Tether client SDK.
//!
//! [`RobotClient::connect`] dials a machine, authenticates with an API key if one is given, and
//! returns a client whose typed resource clients ([`Motor::from_robot`], [`RobotClient::robot`])
//! all run over one [`RobotChannel`]. The channel is the transport seam: every call reads the
//! machine's *current* transport — WebRTC (gRPC over a data channel) or direct gRPC — adds the
//! access token, and — only on safety-monitored methods, decided by the
//! `safety_heartbeat_monitored` option in the same descriptors the server reads — the session
//! id, starting the session lazily before the first such call.
//!
//! Dialing tries WebRTC first (signaled through the machine's own signaling service unless
//! [`Options::signaling_address`] says otherwise; no ICE servers needed on a LAN) and falls back
//! to direct gRPC if WebRTC fails for any reason; [`Options::disable_webrtc`] and
//! [`Options::prefer_webrtc`] change that order, which reconnections keep. Each attempt is a
//! `Dialing` event and the winner a `Connected { transport: "webrtc" | "direct" }` event. A
//! machine on a loopback address is dialed with loopback-only ICE candidates.
//!
//! Sessions are heartbeated every window/5 from a dedicated OS thread with its own runtime, so
//! application work that hogs the application's runtime cannot starve them: on direct gRPC
//! over a connection of its own (the same path as the commanding connection), on WebRTC over
//! the commanding peer connection itself (whose engine runs on its own thread too). Either
//! way a session stays alive only while the path the commands take works. A call that fails
//! with `SESSION_EXPIRED` is never retried: the error reaches the application and the next
//! monitored call starts a new session.
//!
//! When the connection is lost — noticed by failed heartbeats within about one window, by a
//! transport error, or at once when a WebRTC peer connection ends — a supervisor reconnects on
//! the sans-IO [`backoff`] schedule, swaps the new transport under every typed client at once,
//! and resumes the session if the machine still has it. Every step is a [`ConnectionEvent`] on
//! [`RobotClient::events`]; after the last attempt the client reports `ReconnectionFailed` and
//! waits for the application. The library never exits the process.

/// The reconnection policy (tether-rpc's, shared with the machine's answerer).
pub use tether_rpc::backoff;
mod channel;
mod components;
mod reconnect;
mod robot_service;
mod session;
mod signaling;
mod webrtc;
mod wire;

use std::time::Duration;

pub use channel::RobotChannel;
pub use components::*;
pub use session::HeartbeatPolicy;
use tether_proto::viam::robot::v1 as robot;
use tether_proto::viam::robot::v1::robot_service_client::RobotServiceClient;
/// An ICE server (STUN or TURN) for WebRTC dials.
pub use tether_rtc::IceServer;
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

/// How the connection is secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// TLS, verifying the machine's certificate against the system's trusted roots.
    SystemRoots,
    /// TLS, verifying against this CA certificate (PEM), e.g. a machine's self-signed one.
    CaFile(std::path::PathBuf),
    /// No TLS (h2c). Only for machines on a network you trust, or localhost.
    Insecure,
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct Options {
    /// Transport security (default: TLS with the system's roots).
    pub tls: Tls,
    /// Credentials, if the machine requires them.
    pub credentials: Option<ApiKey>,
    /// Bound on a whole dial attempt: connect, authenticate, first call.
    pub dial_timeout: Duration,
    /// Never start sessions (no safety stop if this client vanishes).
    pub disable_sessions: bool,
    /// Reconnection pacing (`max_attempts: 0` never reconnects).
    pub backoff: backoff::BackoffPolicy,
    /// Where to signal WebRTC dials (default: the machine address itself, whose own
    /// signaling service answers for it).
    pub signaling_address: Option<String>,
    /// ICE servers (STUN/TURN) besides those the signaler suggests. None are needed on a LAN.
    pub ice_servers: Vec<IceServer>,
    /// WebRTC through a TURN relay only.
    pub force_relay: bool,
    /// WebRTC peer to peer only: host and server-reflexive candidates, never a relay.
    /// Mutually exclusive with `force_relay`.
    pub force_p2p: bool,
    /// Never try WebRTC: direct gRPC only.
    pub disable_webrtc: bool,
    /// Try WebRTC before direct gRPC (the default); when false, direct gRPC is tried first
    /// and WebRTC only if it fails. Either way the other method is the fallback, on the first
    /// dial and on every reconnection.
    pub prefer_webrtc: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tls: Tls::SystemRoots,
            credentials: None,
            dial_timeout: Duration::from_secs(20),
            disable_sessions: false,
            backoff: backoff::BackoffPolicy::default(),
            signaling_address: None,
            ice_servers: Vec::new(),
            force_relay: false,
            force_p2p: false,
            disable_webrtc: false,
            prefer_webrtc: true,
        }
    }
}

impl Options {
    /// These options without TLS (h2c).
    pub fn insecure(mut self) -> Self {
        self.tls = Tls::Insecure;
        self
    }

    /// These options with TLS verified against a CA certificate file (PEM).
    pub fn with_ca(mut self, ca_file: impl Into<std::path::PathBuf>) -> Self {
        self.tls = Tls::CaFile(ca_file.into());
        self
    }

    /// These options signaling WebRTC dials at `address` instead of the machine address.
    pub fn with_signaling_address(mut self, address: impl Into<String>) -> Self {
        self.signaling_address = Some(address.into());
        self
    }

    /// These options with extra ICE servers (STUN/TURN) for WebRTC.
    pub fn with_ice_servers(mut self, servers: impl IntoIterator<Item = IceServer>) -> Self {
        self.ice_servers.extend(servers);
        self
    }

    /// These options with WebRTC through a TURN relay only.
    pub fn force_relay(mut self) -> Self {
        self.force_relay = true;
        self
    }

    /// These options with WebRTC peer to peer only (no relay).
    pub fn force_p2p(mut self) -> Self {
        self.force_p2p = true;
        self
    }

    /// These options without WebRTC: direct gRPC only.
    pub fn disable_webrtc(mut self) -> Self {
        self.disable_webrtc = true;
        self
    }

    /// These options trying direct gRPC first, WebRTC only if that fails.
    pub fn prefer_direct(mut self) -> Self {
        self.prefer_webrtc = false;
        self
    }

    /// Checks that the options make sense together.
    pub fn validate(&self) -> Result<(), ClientError> {
        if self.force_relay && self.force_p2p {
            return Err(ClientError::InvalidOptions(
                "force_relay and force_p2p are mutually exclusive".into(),
            ));
        }
        Ok(())
    }

    /// The dial methods in the order they are tried.
    pub(crate) fn dial_order(&self) -> &'static [DialMethod] {
        if self.disable_webrtc {
            &[DialMethod::Direct]
        } else if self.prefer_webrtc {
            &[DialMethod::WebRtc, DialMethod::Direct]
        } else {
            &[DialMethod::Direct, DialMethod::WebRtc]
        }
    }

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

/// A way to reach a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DialMethod {
    WebRtc,
    Direct,
}

impl DialMethod {
    /// The name events use: `webrtc` or `direct`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::WebRtc => "webrtc",
            Self::Direct => "direct",
        }
    }
}

/// What happens to the connection and the session, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// A dial is starting.
    Connecting,
    /// Dialing by `method` (`webrtc` or `direct`), attempt number `attempt`.
    Dialing { method: String, attempt: u32 },
    /// Connected over `transport` (`webrtc` or `direct`).
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
    /// The options contradict each other.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The address is not usable.
    #[error("invalid address {0:?}: {1}")]
    Address(String, String),
    /// The connection could not be made; `failure` says why in a form to decide on.
    #[error("cannot connect to {address}: {message}")]
    Connect {
        address: String,
        failure: ConnectFailure,
        message: String,
    },
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

/// Why a connection could not be made, as a kind to decide on (retry or give up) rather than
/// a message to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The host name does not resolve.
    NameResolution,
    /// A TLS dial reached a machine that serves plaintext (it runs with `--no-tls`, or has no
    /// certificate): dial it with `Options::insecure()` (`tether connect --insecure`).
    PlaintextMachine,
    /// TLS failed otherwise: an untrusted certificate, or one for another name.
    Tls,
    /// Anything else on the way (refused, reset, unreachable, no WebRTC route): it may work
    /// later.
    Transport,
}

impl ClientError {
    /// Whether retrying the same dial can never succeed: credentials the machine refused, an
    /// address that cannot be used or resolved, or TLS against a plaintext machine.
    pub fn is_permanent(&self) -> bool {
        match self {
            ClientError::Auth(status) => matches!(
                status.code(),
                tonic::Code::Unauthenticated
                    | tonic::Code::PermissionDenied
                    | tonic::Code::InvalidArgument
            ),
            ClientError::Address(..) | ClientError::InvalidOptions(_) => true,
            ClientError::Connect { failure, .. } => matches!(
                failure,
                ConnectFailure::NameResolution | ConnectFailure::PlaintextMachine
            ),
            ClientError::Timeout(..) | ClientError::Status(_) => false,
        }
    }
}

/// A connection to a machine.
#[derive(Clone)]
pub struct RobotClient {
    channel: RobotChannel,
}

impl RobotClient {
    /// Dials `address` (`host:port`) and authenticates. Each dial method gets
    /// `options.dial_timeout`.
    pub async fn connect(address: &str, options: Options) -> Result<Self, ClientError> {
        let channel = RobotChannel::connect(address, options).await?;
        Ok(Self { channel })
    }

    /// The transport in use now: `webrtc` or `direct`.
    pub fn transport(&self) -> &'static str {
        self.channel.inner.transport().name()
    }

    /// The WebRTC route in use: the selected candidate pair's local and remote candidate
    /// types (`host`, `srflx`, `prflx`, `relay`) and remote address. None on direct gRPC.
    pub async fn webrtc_route(&self) -> Option<tether_rtc::Route> {
        match self.channel.inner.transport() {
            channel::Transport::WebRtc(rtc) => rtc.route().await,
            channel::Transport::Direct(_) => None,
        }
    }

    /// Whether the connection runs through a TURN relay, on either side (false on direct
    /// gRPC).
    pub async fn is_relayed(&self) -> bool {
        self.webrtc_route().await.is_some_and(|r| r.is_relayed())
    }

    /// The channel every typed client runs over.
    pub fn channel(&self) -> &RobotChannel {
        &self.channel
    }

    /// The robot service.
    pub fn robot(&self) -> RobotServiceClient<RobotChannel> {
        RobotServiceClient::new(self.channel.clone())
    }

    /// The events of the dial that made this client (`Connecting`, each `Dialing`, then
    /// `Connected`): they happened before [`Self::events`] could be subscribed to.
    pub fn first_dial_events(&self) -> &[ConnectionEvent] {
        &self.channel.inner.first_dial
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

    /// Checks the connection with a cheap call; if it fails or gets no answer within
    /// `timeout`, the reconnect supervisor takes over at once. Sessions do this by themselves
    /// through heartbeats; call it to notice a dead link while the client holds no session.
    pub async fn check_connection(&self, timeout: Duration) -> bool {
        reconnect::check(&self.channel.inner, timeout).await
    }

    /// Reconnects now (for example after `ReconnectionFailed`), on the backoff schedule.
    /// Returns whether it connected.
    pub async fn reconnect(&self) -> bool {
        reconnect::reconnect(&std::sync::Arc::downgrade(&self.channel.inner)).await
    }

    /// Heartbeats the current session now, for applications that manage sessions themselves
    /// (the client also heartbeats on its own). `SESSION_EXPIRED` ends the session locally.
    pub async fn send_heartbeat(&self) -> Result<(), ClientError> {
        let Some(id) = self.session_id() else {
            return Err(ClientError::Status(tonic::Status::failed_precondition(
                "no session to heartbeat",
            )));
        };
        let sent = self
            .robot()
            .send_session_heartbeat(robot::SendSessionHeartbeatRequest { id: id.clone() })
            .await;
        if let Err(status) = &sent
            && channel::is_session_expired(status)
            && self.channel.inner.session.end(&id)
        {
            self.channel
                .inner
                .emit(ConnectionEvent::SessionExpired { id });
        }
        sent?;
        Ok(())
    }

    /// Starts (or returns) the session now instead of before the first monitored call.
    pub async fn start_session(&self) -> Result<String, ClientError> {
        Ok(self.channel.ensure_session().await?)
    }
}

/// Runs `main` on a current-thread runtime of its own, on a thread named `name`, so that an
/// application that blocks its own runtime cannot stall it. Returns once the runtime is up,
/// with its handle; the runtime (and every task spawned on it) ends when `main` does.
pub(crate) fn runtime_thread<F, Fut>(name: &str, main: F) -> std::io::Result<tokio::runtime::Handle>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = handle_tx.send(Err(e));
                    return;
                }
            };
            let _ = handle_tx.send(Ok(runtime.handle().clone()));
            runtime.block_on(main());
        })?;
    handle_rx
        .recv()
        .map_err(|_| std::io::Error::other(format!("the {name} thread died")))?
}
