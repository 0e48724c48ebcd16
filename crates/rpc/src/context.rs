//! What a server knows of the caller of a request, as request extensions every layer reads:
//! the peer's transport and addresses (set per connection) and the entity the caller
//! authenticated as (set by the auth layer). The machine's layers and the signaling service
//! share them.

use std::net::SocketAddr;
use std::sync::Arc;

/// How a peer is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// Direct gRPC over TCP.
    Grpc,
    /// gRPC over a WebRTC data channel.
    WebRtc,
}

impl PeerKind {
    /// The transport's name in logs (`grpc`, `webrtc`).
    pub fn as_str(self) -> &'static str {
        match self {
            PeerKind::Grpc => "grpc",
            PeerKind::WebRtc => "webrtc",
        }
    }
}

/// What is known of the peer a request came from (a request extension set per connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The transport.
    pub kind: PeerKind,
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// Our address on that connection.
    pub local: Option<SocketAddr>,
}

/// The authenticated entity a request runs as (a request extension set by the auth layer).
/// Absent means unauthenticated, which owns sessions as the empty string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity(pub Arc<str>);

impl Entity {
    /// The entity a request runs as: the empty string when unauthenticated.
    pub fn of(extensions: &http::Extensions) -> Arc<str> {
        extensions
            .get::<Entity>()
            .map_or_else(|| Arc::from(""), |e| e.0.clone())
    }
}
