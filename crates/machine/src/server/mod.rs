//! The one-port server: the composition root of the machine's serving side.
//!
//! It builds the one tower stack every call goes through, whatever its transport — message
//! limit, auth (when API keys are configured), operations, sessions, then the [`router`] — and
//! serves it on the machine's port ([`connection`]: negotiation by TLS/ALPN or sniffing in
//! [`negotiate`], idle closing in [`idle`], the connection limit) and on WebRTC data channels
//! (the answerer, taking calls from the embedded signaling service's queue). It starts the
//! session expiry driver, and on shutdown closes the listeners, asks every connection to finish
//! (GOAWAY) and gives control back within a grace period.

mod connection;
mod datagrams;
mod idle;
mod negotiate;
mod router;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;

pub use datagrams::bind as bind_datagrams;
pub use router::app;

use crate::auth::{AuthLayer, Authenticator};
use crate::config::split_host_port;
use crate::deadline::DeadlineLayer;
use crate::limits::{MAX_MESSAGE_BYTES, MessageLimitLayer};
use crate::machine::Machine;
use crate::operations::OperationsLayer;
use crate::origin::OriginLayer;
use crate::sessions::SessionLayer;
use crate::webrtc::{Answerer, CallQueue, Hosts, MemoryQueue, SignalingApi};
use tether_signal::Answerers;

/// The one tower stack every call goes through, whichever transport it came by: HTTP/2 or
/// HTTP/1 connections here, WebRTC data channels in [`crate::webrtc`].
pub trait Stack:
    tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Stack for S where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The bind address is malformed.
    #[error("bad bind address: {0}")]
    Address(String),
    /// Binding failed.
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: io::Error },
    /// gRPC reflection could not index our descriptors.
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(String),
}

/// Connection-level settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Most connections served at once.
    pub max_connections: usize,
    /// Most connections from one address (an IPv4 address or an IPv6 /64) at once.
    pub max_connections_per_address: usize,
    /// Time a unary call's request has to arrive whole.
    pub request_timeout: Duration,
    /// Time a new connection has to send its first bytes (HTTP/2 preface or HTTP/1 headers).
    pub header_read_timeout: Duration,
    /// Interval of HTTP/2 keepalive pings.
    pub keepalive_interval: Duration,
    /// Time to wait for a keepalive ping's answer before closing the connection.
    pub keepalive_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// Time connections get to finish after shutdown starts.
    pub shutdown_grace: Duration,
    /// A connection with no call in flight for this long is closed.
    pub idle_timeout: Duration,
    /// TLS, when the port serves it.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Authentication, when API keys are configured.
    pub auth: Option<Arc<Authenticator>>,
    /// WebRTC (signaling on this port and the machine's answerer), unless disabled.
    pub webrtc: Option<WebRtcOptions>,
    /// The machine's name: an `rpc-host` and a plaintext `Host` it answers to, and the
    /// answerer's host.
    pub fqdn: Option<String>,
    /// The configured bind address (`host:port`), also a name it answers to.
    pub bind_address: String,
    /// Which web pages may call from a browser (CORS).
    pub allowed_origins: crate::web::AllowedOrigins,
}

/// WebRTC settings of the server.
#[derive(Clone)]
pub struct WebRtcOptions {
    /// STUN/TURN servers for the answerer, also handed to callers by `OptionalWebRTCConfig`.
    pub ice_servers: Vec<tether_rtc::IceServer>,
    /// Most peer connections at once.
    pub max_peers: usize,
    /// The call queue the embedded signaling service and the answerer share (in memory by
    /// default; a shared backend lets a fleet's signaling reach this machine's answerer).
    pub queue: Arc<dyn CallQueue>,
}

impl std::fmt::Debug for WebRtcOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcOptions")
            .field("ice_servers", &self.ice_servers.len())
            .field("max_peers", &self.max_peers)
            .finish_non_exhaustive()
    }
}

impl Default for WebRtcOptions {
    fn default() -> Self {
        Self {
            ice_servers: Vec::new(),
            max_peers: crate::config::DEFAULT_MAX_WEBRTC_PEERS,
            queue: Arc::new(MemoryQueue::default()),
        }
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_connections: crate::config::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: crate::config::default_per_address(
                crate::config::DEFAULT_MAX_CONNECTIONS,
            ),
            request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(20),
            max_concurrent_streams: 1024,
            shutdown_grace: Duration::from_secs(5),
            idle_timeout: crate::config::DEFAULT_IDLE_TIMEOUT,
            tls: None,
            auth: None,
            webrtc: Some(WebRtcOptions::default()),
            fqdn: None,
            bind_address: crate::config::DEFAULT_BIND_ADDRESS.into(),
            allowed_origins: crate::web::AllowedOrigins::Any,
        }
    }
}

/// Binds `host:port` on every address the host resolves to (`localhost` → 127.0.0.1 and ::1),
/// all on one port. Addresses that cannot be bound are skipped if at least one can.
pub async fn bind(address: &str) -> Result<Vec<TcpListener>, ServeError> {
    let (host, port) = split_host_port(address).map_err(|e| ServeError::Address(e.to_string()))?;
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|source| ServeError::Bind {
            address: address.into(),
            source,
        })?
        .collect();
    let mut ips: Vec<_> = resolved.iter().map(|a| a.ip()).collect();
    ips.dedup();
    let mut listeners: Vec<TcpListener> = Vec::new();
    let mut first_error = None;
    let mut port = port;
    for ip in ips {
        match TcpListener::bind(SocketAddr::new(ip, port)).await {
            Ok(l) => {
                if port == 0 {
                    port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                }
                listeners.push(l);
            }
            Err(e) => {
                tracing::debug!(%ip, port, error = %e, "cannot bind one of the resolved addresses");
                first_error.get_or_insert(e);
            }
        }
    }
    if listeners.is_empty() {
        return Err(ServeError::Bind {
            address: address.into(),
            source: first_error
                .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")),
        });
    }
    Ok(listeners)
}

/// Serves `listeners` (and heartbeat datagrams on `datagram_sockets`, from
/// [`bind_datagrams`]) until `shutdown` resolves, then lets connections finish within the grace
/// period.
pub async fn run(
    listeners: Vec<TcpListener>,
    datagram_sockets: Vec<tokio::net::UdpSocket>,
    machine: Arc<Machine>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let port = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .map_or(0, |a| a.port());
    let loopback_only = listeners
        .iter()
        .all(|l| l.local_addr().is_ok_and(|a| a.ip().is_loopback()));
    // The machine's names (what `rpc-host` and a plaintext `Host` must say), known once the
    // port is.
    let hosts = Arc::new(Hosts::new(
        port,
        options.fqdn.as_deref(),
        &options.bind_address,
    ));
    let webrtc = options.webrtc.clone().map(|w| {
        let api = SignalingApi::new(w.queue.clone(), hosts.clone(), w.ice_servers.clone())
            .with_answerers(Answerers::Embedded);
        (w, api)
    });
    let router = app(
        machine.clone(),
        options.auth.clone(),
        webrtc.as_ref().map(|(_, api)| api.clone()),
        Arc::from(hosts.canonical.as_str()),
    )?;
    let service = ServiceBuilder::new()
        .layer(crate::telemetry::CallsLayer::new(
            machine.telemetry().clone(),
        ))
        .layer(OriginLayer::new(hosts.clone()))
        .layer(MessageLimitLayer::new(MAX_MESSAGE_BYTES))
        .layer(DeadlineLayer)
        .option_layer(options.auth.clone().map(AuthLayer::new))
        .layer(OperationsLayer::new(machine.operations().clone()))
        .layer(SessionLayer::new(machine.clone()))
        .service(router);
    let expiry = tokio::spawn(machine.sessions().clone().run_expiry(machine.clone()));
    let datagram_tasks: Vec<_> = datagram_sockets
        .into_iter()
        .map(|socket| tokio::spawn(datagrams::serve(socket, machine.sessions().clone())))
        .collect();
    if !datagram_tasks.is_empty() {
        machine.sessions().listen_for_datagrams();
    }
    let answerer_stop = CancellationToken::new();
    let answerer = webrtc.map(|(w, _)| {
        let answerer = Answerer {
            queue: w.queue,
            hosts: vec![hosts.canonical.clone()],
            peer_config: tether_rtc::PeerConfig {
                ice_servers: w.ice_servers,
                // A machine listening only on loopback offers only loopback candidates.
                interfaces: if loopback_only {
                    tether_rtc::Interfaces::LoopbackOnly
                } else {
                    tether_rtc::Interfaces::All
                },
                ..Default::default()
            },
            service: service.clone(),
            max_peers: w.max_peers,
            telemetry: machine.telemetry().clone(),
        };
        tokio::spawn(answerer.run(answerer_stop.clone()))
    });
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    // Browsers (CORS, gRPC-web) on TCP only: a WebRTC peer speaks gRPC framing itself.
    let web = crate::web::WebLayer::new(options.allowed_origins.clone()).wrap(service);
    let options = connection::accept_all(
        listeners,
        web,
        options,
        machine.telemetry().clone(),
        &stop,
        &tracker,
    );
    tracker.close();
    shutdown.await;
    tracing::info!("shutting down: no new connections; finishing the open ones");
    stop.cancel();
    answerer_stop.cancel();
    if let Some(a) = answerer
        && tokio::time::timeout(options.shutdown_grace, a)
            .await
            .is_err()
    {
        tracing::warn!("WebRTC peers still open after the grace period");
    }
    if tokio::time::timeout(options.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?options.shutdown_grace, "connections still open after the grace period; closing them");
    }
    expiry.abort();
    for task in datagram_tasks {
        task.abort();
    }
    Ok(())
}
