//! Wire mechanisms shared by the machine and the client.
//!
//! [`framing`] is the sans-IO codec of gRPC over a WebRTC data channel, as Viam's peers speak
//! it: bytes of one data-channel message in, stream events out; responses out as data-channel
//! messages. It knows nothing of WebRTC, tokio or tonic, so every rule is tested exactly.
//! [`grpc`] converts between HTTP/2 gRPC bodies (5-byte-prefixed messages) and bare messages.

pub mod framing;
pub mod grpc;

/// How long a caller's WebRTC offer may take to be answered and its exchange finished
/// (goutils' default offer deadline): the signaling service enforces it, callers bound one
/// attempt by it.
pub const OFFER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
