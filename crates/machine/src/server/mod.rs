//! The one-port server: the composition root of the machine's serving side.
//!
//! It builds the one tower stack every call goes through, whatever its transport — message
//! limit, auth (when API keys are configured), operations, sessions, then the [`router`] — and
//! serves it on the machine's port ([`connection`]: negotiation by TLS/ALPN or sniffing in
//! [`negotiate`], idle closing in [`idle`], the connection limit) and on WebRTC data channels
//! (the answerer, taking calls from the embedded signaling service's queue). It starts the
//! session expiry driver, and on shutdown closes the listeners, asks every connection to finish
//! (GOAWAY) and gives control back within a grace period.

mod datagrams;
mod router;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;

pub use datagrams::bind as bind_datagrams;
pub use router::app;
pub use tether_serve::{BindError, ConnectionOptions, Stack, bind};

use crate::auth::{AuthLayer, Authenticator};
use crate::deadline::DeadlineLayer;
use crate::limits::{MAX_MESSAGE_BYTES, MessageLimitLayer};
use crate::machine::Machine;
use crate::operations::OperationsLayer;
use crate::origin::OriginLayer;
use crate::sessions::SessionLayer;
use crate::webrtc::{Answerer, CallQueue, Hosts, MemoryQueue, SignalingApi};
use tether_serve::{ConnectionHook, ConnectionScope, Opened, Protocol};
use tether_signal::Answerers;
use tether_signal::answer_client::{RemoteOffers, RemoteSignaling};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// gRPC reflection could not index our descriptors.
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(String),
}

/// The machine's serving settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connection-level settings (limits, timeouts, TLS).
    pub connection: ConnectionOptions,
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
    /// A fleet's signaling service the machine also answers through (`cloud`), over `Answer`
    /// streams; the embedded service keeps serving the LAN.
    pub remote: Option<RemoteSignaling>,
    /// More names the machine answers to (`cloud.fqdn`, `cloud.local_fqdn`).
    pub aliases: Vec<String>,
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
            remote: None,
            aliases: Vec::new(),
        }
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            connection: ConnectionOptions::default(),
            auth: None,
            webrtc: Some(WebRtcOptions::default()),
            fqdn: None,
            bind_address: crate::config::DEFAULT_BIND_ADDRESS.into(),
            allowed_origins: crate::web::AllowedOrigins::Any,
        }
    }
}

/// What the machine keeps per connection: the connection in its telemetry, and on HTTP/2
/// connections the link that stops what they command without a session when they end.
struct MachineHook(Arc<crate::telemetry::Telemetry>);

struct MachineScope {
    _counted: crate::telemetry::OpenConnection,
    link: Option<(
        crate::commanders::ConnectionLink,
        tokio_util::sync::DropGuard,
    )>,
    budget: crate::sessions::BufferBudget,
}

impl ConnectionHook for MachineHook {
    fn opened(&self, c: &Opened) -> Box<dyn ConnectionScope> {
        let http2 = c.protocol == Protocol::Http2;
        Box::new(MachineScope {
            _counted: self
                .0
                .connection(crate::telemetry::tcp_transport(http2, c.tls)),
            // An HTTP/2 connection lasts: what it commands without a session is stopped when
            // it ends. HTTP/1.1 connections come and go as a browser pools them: no link, only
            // sessions cover their commands.
            link: http2.then(|| crate::commanders::ConnectionLink::new("h2")),
            // One budget for the first messages every monitored call on this connection
            // buffers.
            budget: crate::sessions::BufferBudget::default(),
        })
    }
}

impl ConnectionScope for MachineScope {
    fn prepare(&self, extensions: &mut http::Extensions) {
        extensions.insert(self.budget.clone());
        if let Some((link, _)) = &self.link {
            extensions.insert(link.clone());
        }
    }
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
    let aliases = options.webrtc.iter().flat_map(|w| w.aliases.iter());
    let hosts = Arc::new(
        Hosts::new(port, options.fqdn.as_deref(), &options.bind_address)
            .with_aliases(aliases.map(String::as_str)),
    );
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
        .layer(
            MessageLimitLayer::new(MAX_MESSAGE_BYTES).with_service_limit(
                tether_signal::service::SIGNALING_SERVICE,
                tether_signal::service::MAX_SIGNALING_MESSAGE,
            ),
        )
        .layer(DeadlineLayer)
        .option_layer(
            options
                .auth
                .clone()
                .map(|a| AuthLayer::new(a).with_open_paths(crate::page::is_open)),
        )
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
    let mut answerers = Vec::new();
    if let Some((w, _)) = webrtc {
        let slots = Arc::new(tokio::sync::Semaphore::new(w.max_peers));
        let answerer = |offers: Arc<dyn tether_signal::OfferSource>,
                        hosts: Vec<String>,
                        interfaces| Answerer {
            offers,
            hosts,
            peer_config: tether_rtc::PeerConfig {
                ice_servers: w.ice_servers.clone(),
                interfaces,
                ..Default::default()
            },
            service: service.clone(),
            slots: slots.clone(),
            max_peers: w.max_peers,
            telemetry: machine.telemetry().clone(),
        };
        // A machine listening only on loopback offers only loopback candidates to callers of
        // its own signaling.
        let local = answerer(
            w.queue.clone(),
            vec![hosts.canonical.clone()],
            if loopback_only {
                tether_rtc::Interfaces::LoopbackOnly
            } else {
                tether_rtc::Interfaces::All
            },
        );
        answerers.push(tokio::spawn(local.run(answerer_stop.clone())));
        if let Some(remote) = &w.remote {
            match RemoteOffers::start(remote.clone(), answerer_stop.clone()) {
                Ok(offers) => {
                    // Callers through a fleet's service come from elsewhere: every interface.
                    let fleet = answerer(offers, remote.hosts.clone(), tether_rtc::Interfaces::All);
                    answerers.push(tokio::spawn(fleet.run(answerer_stop.clone())));
                }
                Err(e) => tracing::error!("cannot answer through the signaling service: {e}"),
            }
        }
    }
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    // Browsers (CORS, gRPC-web) on TCP only: a WebRTC peer speaks gRPC framing itself.
    let web = crate::web::WebLayer::new(options.allowed_origins.clone()).wrap(service);
    let options = tether_serve::accept_all(
        listeners,
        web,
        options.connection,
        Arc::new(MachineHook(machine.telemetry().clone())),
        &stop,
        &tracker,
    );
    tracker.close();
    shutdown.await;
    tracing::info!("shutting down: no new connections; finishing the open ones");
    stop.cancel();
    answerer_stop.cancel();
    if tokio::time::timeout(options.shutdown_grace, futures::future::join_all(answerers))
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
