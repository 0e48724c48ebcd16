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

/// Who a caller is, for owning sessions and operations: the entity it authenticated as, or —
/// on a machine without authentication — its IP address (`address:127.0.0.1`), which a third
/// party on another host does not share (the Python SDK heartbeats on a second connection from
/// the same address). Nobody may act as another owner: use its session, see or cancel its
/// operations.
pub fn owner_of(extensions: &http::Extensions) -> Arc<str> {
    if let Some(Entity(entity)) = extensions.get::<Entity>()
        && !entity.is_empty()
    {
        return entity.clone();
    }
    match extensions.get::<PeerInfo>().and_then(|p| p.remote) {
        Some(remote) => Arc::from(address_owner(remote.ip()).as_str()),
        None => Arc::from(""),
    }
}

/// Which addresses count as one host for per-address limits: an IPv4 address, or an IPv6 /64
/// (one host can hold a whole /64); IPv4-mapped IPv6 is IPv4.
pub fn address_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
        v4 => v4,
    }
}

#[cfg(test)]
#[test]
fn ipv6_hosts_are_their_slash_64() {
    let a = address_key("2001:db8:1:2:aaaa::1".parse().unwrap());
    let b = address_key("2001:db8:1:2:bbbb::9".parse().unwrap());
    let c = address_key("2001:db8:1:3::1".parse().unwrap());
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(
        address_key("::ffff:10.0.0.1".parse().unwrap()),
        "10.0.0.1".parse::<std::net::IpAddr>().unwrap()
    );
}

/// The owner name of an unauthenticated caller at `ip`.
pub fn address_owner(ip: std::net::IpAddr) -> String {
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    };
    format!("address:{ip}")
}

#[cfg(test)]
#[test]
fn owners_are_the_entity_or_else_the_address() {
    let mut e = http::Extensions::new();
    assert_eq!(&*owner_of(&e), "");
    e.insert(PeerInfo {
        kind: PeerKind::Grpc,
        remote: Some("127.0.0.2:5555".parse().unwrap()),
        local: None,
    });
    assert_eq!(&*owner_of(&e), "address:127.0.0.2");
    e.insert(Entity(Arc::from("")));
    assert_eq!(&*owner_of(&e), "address:127.0.0.2");
    e.insert(Entity(Arc::from("key-a")));
    assert_eq!(&*owner_of(&e), "key-a");
    let mut v6 = http::Extensions::new();
    v6.insert(PeerInfo {
        kind: PeerKind::Grpc,
        remote: Some("[::ffff:10.0.0.1]:1".parse().unwrap()),
        local: None,
    });
    assert_eq!(&*owner_of(&v6), "address:10.0.0.1");
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
