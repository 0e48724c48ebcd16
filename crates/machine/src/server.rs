//! The one-port server.
//!
//! Every connection on the machine's port is served by the same tower stack: the message-size
//! limit, the operations layer, then a router holding every gRPC service, gRPC reflection (v1
//! and v1alpha) and `GET /` (the readiness probe). Connections speak HTTP/2 with prior
//! knowledge (h2c, what gRPC clients send) or HTTP/1.1; which one is decided by reading the
//! first bytes, under a header-read timeout so a silent peer cannot hold a slot.
//!
//! With TLS configured, the handshake (under the same timeout) picks the protocol by ALPN (`h2`
//! or `http/1.1`). With API keys configured, the auth layer runs first of all.
//!
//! Limits are explicit: past `max_connections`, a new connection is answered (gRPC
//! `RESOURCE_EXHAUSTED`, or HTTP 503) and closed, never silently dropped. HTTP/2 keepalive
//! pings find dead (half-open) peers; a connection with no call in flight for `idle_timeout` is
//! closed, so a flood of idle connections cannot hold the slots of legitimate clients for
//! longer than that. On shutdown the listeners close, every connection is asked to finish
//! (GOAWAY), and the caller gets control back within a grace period.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tether_proto::viam::robot::v1::robot_service_server::RobotServiceServer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{ServiceBuilder, ServiceExt};

use crate::apis::limited;
use crate::auth::{AuthApi, AuthLayer, Authenticator};
use crate::config::split_host_port;
use crate::limits::{MAX_MESSAGE_BYTES, MessageLimitLayer};
use crate::machine::Machine;
use crate::operations::Holding;
use crate::operations::OperationsLayer;
use crate::robot::RobotApi;
use crate::sessions::{PeerInfo, PeerKind, SessionLayer};
use crate::webrtc::{Answerer, AnswererStats, CallQueue, Hosts, MemoryQueue, SignalingApi};
use tether_proto::proto::rpc::v1::auth_service_server::AuthServiceServer;
use tether_proto::proto::rpc::webrtc::v1::signaling_service_server::SignalingServiceServer;

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP/2 flow-control window of a connection (2 MiB).
const CONNECTION_WINDOW: u32 = 2 << 20;

/// HTTP/2 flow-control window of a stream (1 MiB).
const STREAM_WINDOW: u32 = 1 << 20;

/// How long a connection closed for idleness gets to finish its goodbye (GOAWAY, ping).
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// How many over-limit connections may be in the middle of being told so at once; beyond
/// this they are closed without an answer (and logged).
const MAX_REJECTING: usize = 64;

/// How long an over-limit connection is kept to deliver its rejection.
const REJECT_LINGER: Duration = Duration::from_secs(3);

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
}

/// WebRTC settings of the server.
#[derive(Debug, Clone)]
pub struct WebRtcOptions {
    /// The machine's name (an `rpc-host` it answers to).
    pub fqdn: Option<String>,
    /// The configured bind address (`host:port`), also an `rpc-host` it answers to.
    pub bind_address: String,
    /// STUN/TURN servers for the answerer, also handed to callers by `OptionalWebRTCConfig`.
    pub ice_servers: Vec<tether_rtc::IceServer>,
    /// Most peer connections at once.
    pub max_peers: usize,
}

impl Default for WebRtcOptions {
    fn default() -> Self {
        Self {
            fqdn: None,
            bind_address: crate::config::DEFAULT_BIND_ADDRESS.into(),
            ice_servers: Vec::new(),
            max_peers: crate::config::DEFAULT_MAX_WEBRTC_PEERS,
        }
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_connections: crate::config::DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(20),
            max_concurrent_streams: 1024,
            shutdown_grace: Duration::from_secs(5),
            idle_timeout: crate::config::DEFAULT_IDLE_TIMEOUT,
            tls: None,
            auth: None,
            webrtc: Some(WebRtcOptions::default()),
        }
    }
}

/// Binds `host:port` on every address the host resolves to (`localhost` → 127.0.0.1 and ::1),
/// all on one port. Addresses that cannot be bound are skipped if at least one can.
pub async fn bind(address: &str) -> Result<Vec<TcpListener>, ServeError> {
    let (host, port) = split_host_port(address).map_err(ServeError::Address)?;
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

/// The router of every service (plus `AuthService` when authentication is on).
pub fn app(
    machine: Arc<Machine>,
    auth: Option<Arc<Authenticator>>,
    signaling: Option<SignalingApi>,
) -> Result<axum::Router, ServeError> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tether_proto::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let mut routes = tonic::service::Routes::builder();
    routes.add_service(limited!(RobotServiceServer::new(RobotApi::new(
        machine.clone()
    ))));
    crate::apis::serve_all(&mut routes, &machine);
    routes
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    if let Some(auth) = auth {
        routes.add_service(AuthServiceServer::new(AuthApi::new(auth)));
    }
    if let Some(signaling) = signaling {
        routes.add_service(limited!(SignalingServiceServer::new(signaling)));
    }
    let router = routes
        .routes()
        .into_axum_router()
        .route("/", axum::routing::get(|| async { "ready\n" }));
    Ok(router)
}

/// Serves `listeners` until `shutdown` resolves, then lets connections finish within the grace
/// period.
pub async fn run(
    listeners: Vec<TcpListener>,
    machine: Arc<Machine>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    // The machine's names as `rpc-host`, known once the port is.
    let port = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .map_or(0, |a| a.port());
    let loopback_only = listeners
        .iter()
        .all(|l| l.local_addr().is_ok_and(|a| a.ip().is_loopback()));
    let webrtc = options.webrtc.clone().map(|w| {
        let hosts = Arc::new(Hosts::new(port, w.fqdn.as_deref(), &w.bind_address));
        let queue: Arc<dyn CallQueue> = Arc::new(MemoryQueue::default());
        let api = SignalingApi::new(queue.clone(), hosts.clone(), w.ice_servers.clone());
        (w, hosts, queue, api)
    });
    let router = app(
        machine.clone(),
        options.auth.clone(),
        webrtc.as_ref().map(|(_, _, _, api)| api.clone()),
    )?;
    let service = ServiceBuilder::new()
        .layer(MessageLimitLayer::new(MAX_MESSAGE_BYTES))
        .option_layer(options.auth.clone().map(AuthLayer::new))
        .layer(OperationsLayer::new(machine.operations().clone()))
        .layer(SessionLayer::new(machine.clone()))
        .service(router);
    let expiry = tokio::spawn(machine.sessions().clone().run_expiry(machine.clone()));
    let answerer_stop = CancellationToken::new();
    let answerer = webrtc.map(|(w, hosts, queue, _)| {
        let answerer = Answerer {
            queue,
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
            stats: Arc::new(AnswererStats::default()),
        };
        tokio::spawn(answerer.run(answerer_stop.clone()))
    });
    let options = Arc::new(options);
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();

    for listener in listeners {
        let (service, options, slots, rejecting, stop, conns) = (
            service.clone(),
            options.clone(),
            slots.clone(),
            rejecting.clone(),
            stop.clone(),
            tracker.clone(),
        );
        tracker.spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = stop.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let (service, options, stop) =
                            (service.clone(), options.clone(), stop.clone());
                        conns.spawn(async move {
                            serve_connection(stream, peer, service, &options, stop).await;
                            drop(permit);
                        });
                    }
                    Err(_) => match rejecting.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let (options, max) = (options.clone(), options.max_connections);
                            tracing::warn!(%peer, max, "connection limit reached; refusing connection");
                            conns.spawn(async move {
                                reject_connection(stream, &options, max).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            tracing::warn!(%peer, "connection limit reached and rejection queue full; closing connection");
                        }
                    },
                }
            }
        });
    }
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
    Ok(())
}

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http2,
    Http1,
}

/// A connection's byte stream, plaintext or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Reads just enough to tell HTTP/2 prior knowledge from HTTP/1; returns the bytes read.
async fn sniff<I: AsyncRead + Unpin>(stream: &mut I) -> io::Result<(Protocol, Vec<u8>)> {
    let mut buf = vec![0u8; H2_PREFACE.len()];
    let mut have = 0;
    while have < H2_PREFACE.len() {
        let n = stream.read(&mut buf[have..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before sending a request",
            ));
        }
        have += n;
        if buf[..have] != H2_PREFACE[..have] {
            buf.truncate(have);
            return Ok((Protocol::Http1, buf));
        }
    }
    Ok((Protocol::Http2, buf))
}

/// Completes TLS (if configured) and finds the protocol, all within `timeout`.
async fn negotiate(
    stream: TcpStream,
    tls: Option<&Arc<rustls::ServerConfig>>,
    timeout: Duration,
) -> Result<(Box<dyn Io>, Protocol), String> {
    let work = async {
        match tls {
            Some(config) => {
                let mut tls = tokio_rustls::TlsAcceptor::from(config.clone())
                    .accept(stream)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                match tls.get_ref().1.alpn_protocol() {
                    Some(b"h2") => Ok((Box::new(tls) as Box<dyn Io>, Protocol::Http2)),
                    Some(_) => Ok((Box::new(tls) as Box<dyn Io>, Protocol::Http1)),
                    // No ALPN: the client may still speak HTTP/2 with prior knowledge.
                    None => {
                        let (protocol, prefix) =
                            sniff(&mut tls).await.map_err(|e| e.to_string())?;
                        Ok((
                            Box::new(Prefixed::new(prefix, tls)) as Box<dyn Io>,
                            protocol,
                        ))
                    }
                }
            }
            None => {
                let mut stream = stream;
                let (protocol, prefix) = sniff(&mut stream).await.map_err(|e| e.to_string())?;
                Ok((
                    Box::new(Prefixed::new(prefix, stream)) as Box<dyn Io>,
                    protocol,
                ))
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no request within {timeout:?}"))?
}

/// Calls in flight on one connection, and when the last one ended, for closing the
/// connection once idle. A call costs two atomic updates; the watcher polls.
struct Activity {
    opened: std::time::Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `opened` when the count last dropped to zero.
    quiet_since_ms: AtomicU64,
}

/// Counts a call in flight until dropped (with its response body).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.opened.elapsed().as_millis() as u64;
        self.0.quiet_since_ms.store(now, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: std::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            quiet_since_ms: AtomicU64::new(0),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Acquire);
        InFlight(self.clone())
    }

    /// Resolves once no call has been in flight for `timeout` (checked every `timeout / 4`).
    async fn idle_for(&self, timeout: Duration) {
        let mut tick = tokio::time::interval((timeout / 4).max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.in_flight.load(Ordering::Acquire) != 0 {
                continue;
            }
            let now = self.opened.elapsed().as_millis() as u64;
            let quiet = now.saturating_sub(self.quiet_since_ms.load(Ordering::Relaxed));
            if quiet >= timeout.as_millis() as u64 {
                return;
            }
        }
    }
}

async fn serve_connection<S>(
    stream: TcpStream,
    peer: SocketAddr,
    service: S,
    options: &ServerOptions,
    stop: CancellationToken,
) where
    S: Stack,
{
    let local = stream.local_addr().ok();
    let (io, protocol) =
        match negotiate(stream, options.tls.as_ref(), options.header_read_timeout).await {
            Ok(negotiated) => negotiated,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "closing connection");
                return;
            }
        };
    tracing::debug!(%peer, ?protocol, "connection");
    let info = PeerInfo {
        kind: PeerKind::Grpc,
        remote: Some(peer),
        local,
    };
    let activity = Arc::new(Activity::new());
    let tracked = activity.clone();
    // Every request learns its peer, and counts as in flight until its response body is done.
    let service = tower::service_fn(move |req: Request<Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(info.clone());
        let in_flight = tracked.begin();
        let call = service.clone().oneshot(req);
        async move {
            let response = call.await?;
            Ok::<_, Infallible>(response.map(|body| Body::new(Holding::new(body, in_flight))))
        }
    });
    let hyper_service = TowerToHyperService::new(service);
    let io = TokioIo::new(io);
    let idle = activity.idle_for(options.idle_timeout);
    tokio::pin!(idle);
    // Serves a connection until it ends, shutdown starts, or it has been idle too long. Both
    // protocols' connections have `graceful_shutdown`, but no trait in common.
    macro_rules! drive {
        ($conn:expr) => {{
            let conn = $conn;
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
                _ = &mut idle => {
                    tracing::debug!(%peer, timeout = ?options.idle_timeout, "closing idle connection");
                    conn.as_mut().graceful_shutdown();
                    // A peer that no longer answers would hold a graceful close open; bound it.
                    tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await.unwrap_or(Ok(()))
                }
            }
        }};
    }

    let result = match protocol {
        Protocol::Http2 => {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .keep_alive_interval(options.keepalive_interval)
                .keep_alive_timeout(options.keepalive_timeout)
                .max_concurrent_streams(options.max_concurrent_streams)
                // Explicit windows, not adaptive: h2's flood guard allows buffered small DATA
                // frames up to half the connection window, and a 64 KiB window (what adaptive
                // starts from) let a client pipelining ~130 small unary calls be disconnected
                // with ENHANCE_YOUR_CALM.
                .initial_connection_window_size(CONNECTION_WINDOW)
                .initial_stream_window_size(STREAM_WINDOW);
            drive!(builder.serve_connection(io, hyper_service))
        }
        Protocol::Http1 => {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(options.header_read_timeout)
                .keep_alive(true);
            drive!(builder.serve_connection(io, hyper_service))
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = ?e, "connection ended with an error");
    }
}

/// Answers every request on an over-limit connection with a clear error, then closes it.
async fn reject_connection(stream: TcpStream, options: &ServerOptions, max: usize) {
    let timeout = options.header_read_timeout.min(REJECT_LINGER);
    let Ok((io, protocol)) = negotiate(stream, options.tls.as_ref(), timeout).await else {
        return;
    };
    let message = format!(
        "connection limit reached: this machine serves at most {max} connections at once; \
         close idle connections or try again later"
    );
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let message = message.clone();
        async move {
            let grpc = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            let response = if grpc {
                tonic::Status::resource_exhausted(message).into_http::<Body>()
            } else {
                let mut r = Response::new(Body::from(message + "\n"));
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                r
            };
            Ok::<_, Infallible>(response)
        }
    });
    let io = TokioIo::new(io);
    let serve = async {
        match protocol {
            Protocol::Http2 => {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service)
                    .await;
            }
            Protocol::Http1 => {
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(io, service)
                    .await;
            }
        }
    };
    let _ = tokio::time::timeout(REJECT_LINGER, serve).await;
}

/// A stream that first yields bytes already read from it.
struct Prefixed<I> {
    prefix: Vec<u8>,
    read: usize,
    inner: I,
}

impl<I> Prefixed<I> {
    fn new(prefix: Vec<u8>, inner: I) -> Self {
        Self {
            prefix,
            read: 0,
            inner,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read < self.prefix.len() {
            let n = (self.prefix.len() - self.read).min(buf.remaining());
            let start = self.read;
            buf.put_slice(&self.prefix[start..start + n]);
            self.read += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
