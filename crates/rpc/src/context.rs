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

/// How much of a client-supplied string a log line keeps.
pub const MAX_LOGGED: usize = 128;

/// A client-supplied string (a key id, a method path, a candidate) as it goes into a log
/// line: at most [`MAX_LOGGED`] bytes, cut at a character boundary, with the full length
/// noted when cut — so a peer's megabyte-long key id costs a short line, not a megabyte.
#[derive(Debug, Clone, Copy)]
pub struct Clipped<'a>(pub &'a str);

impl std::fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.len() <= MAX_LOGGED {
            return f.write_str(self.0);
        }
        let mut end = MAX_LOGGED;
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{}…({} bytes)", &self.0[..end], self.0.len())
    }
}

#[cfg(test)]
#[test]
fn long_client_strings_are_clipped_in_logs() {
    assert_eq!(Clipped("key-1").to_string(), "key-1");
    let long = "é".repeat(1 << 19);
    let shown = Clipped(&long).to_string();
    assert!(shown.len() < 200, "{}", shown.len());
    assert!(shown.ends_with("…(1048576 bytes)"), "{shown}");
}
