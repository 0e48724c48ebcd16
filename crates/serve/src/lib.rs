//! Serving gRPC on one port: what the machine and the standalone signaling service share.
//!
//! One port takes native gRPC over HTTP/2 (TLS with ALPN, or plaintext h2c found by sniffing
//! the preface, [`negotiate`]) and HTTP/1.1 for browsers (gRPC-web and CORS, [`web`]). The
//! accept loop ([`connection`]) enforces the connection limits, closes idle and half-open
//! connections ([`idle`]), and drains on shutdown. The tower layers every call passes through
//! whatever the service behind them: the message limit ([`limits`]), the caller's deadline
//! ([`deadline`]), and API-key authentication with signed tokens ([`auth`]). What a server adds
//! per connection (its own bookkeeping, request extensions) comes in through a
//! [`ConnectionHook`].

pub mod auth;
pub mod connection;
pub mod deadline;
mod idle;
pub mod limits;
mod negotiate;
pub mod tls;
pub mod web;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response};
use tokio::net::TcpListener;

pub use connection::accept_all;
pub use negotiate::Protocol;

/// The one tower stack every call goes through, whichever transport it came by.
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

/// A request extension set on connections that are not TLS.
#[derive(Debug, Clone, Copy)]
pub struct Plaintext;

/// A content type's media type: what comes before any `;` parameters, trimmed.
pub fn media_type(value: &[u8]) -> &[u8] {
    value
        .split(|b| *b == b';')
        .next()
        .unwrap_or(value)
        .trim_ascii()
}

/// Whether a content type is one gRPC (or gRPC-web) is carried with.
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    let value = media_type(value);
    value.eq_ignore_ascii_case(b"application/grpc")
        || value.len() > b"application/grpc".len()
            && value[..b"application/grpc".len()].eq_ignore_ascii_case(b"application/grpc")
            && matches!(value[b"application/grpc".len()], b'+' | b'-')
}

/// Default most connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The default cap of connections from one address: a quarter of the limit, but never fewer
/// than 16 (or the whole limit, when that is smaller): a browser or an SDK opens several.
pub fn default_per_address(max_connections: usize) -> usize {
    (max_connections / 4).max(max_connections.min(16))
}

/// Default time a connection may sit with no call in flight.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Connection-level settings.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
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
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: default_per_address(DEFAULT_MAX_CONNECTIONS),
            request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(20),
            max_concurrent_streams: 1024,
            shutdown_grace: Duration::from_secs(5),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            tls: None,
        }
    }
}

/// A connection whose protocol is known, as a [`ConnectionHook`] sees it (its addresses
/// reach every request as `PeerInfo`).
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    pub protocol: Protocol,
    pub tls: bool,
}

/// What a server adds to each connection: bookkeeping that lasts as long as the connection
/// (the returned scope is dropped when it ends) and extensions on each of its requests.
pub trait ConnectionHook: Send + Sync + 'static {
    fn opened(&self, connection: &Opened) -> Box<dyn ConnectionScope>;
}

/// One connection's share of a [`ConnectionHook`].
pub trait ConnectionScope: Send + Sync {
    /// Adds what this connection's requests carry.
    fn prepare(&self, extensions: &mut http::Extensions);
}

/// A hook that adds nothing.
pub struct NoHook;

impl ConnectionHook for NoHook {
    fn opened(&self, _: &Opened) -> Box<dyn ConnectionScope> {
        Box::new(NoHook)
    }
}

impl ConnectionScope for NoHook {
    fn prepare(&self, _: &mut http::Extensions) {}
}

/// Why a server could not listen.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The bind address is malformed.
    #[error("bad bind address: {0}")]
    Address(String),
    /// Binding failed.
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: io::Error },
}

/// Binds `host:port` on every address the host resolves to (`localhost` → 127.0.0.1 and ::1),
/// all on one port. Addresses that cannot be bound are skipped if at least one can.
pub async fn bind(address: &str) -> Result<Vec<TcpListener>, BindError> {
    let (host, port) = tether_rpc::address::split_host_port(address)
        .map_err(|e| BindError::Address(e.to_string()))?;
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|source| BindError::Bind {
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
        return Err(BindError::Bind {
            address: address.into(),
            source: first_error
                .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")),
        });
    }
    Ok(listeners)
}
