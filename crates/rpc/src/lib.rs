//! Wire mechanisms shared by the machine and the client.
//!
//! [`framing`] is the sans-IO codec of gRPC over a WebRTC data channel, as Viam's peers speak
//! it: bytes of one data-channel message in, stream events out; responses out as data-channel
//! messages. It knows nothing of WebRTC, tokio or tonic, so every rule is tested exactly.
//! [`grpc`] converts between HTTP/2 gRPC bodies (5-byte-prefixed messages) and bare messages
//! and holds the one parser of the length prefix. The wire vocabulary both ends share is here
//! too, written once: header names and status texts ([`vocabulary`]), the header↔metadata
//! mapping with its `-bin` rule ([`metadata`]), the request context every layer reads
//! ([`context`]) and `host:port` parsing ([`address`]).

pub mod address;
pub mod backoff;
pub mod context;
pub mod duration;
pub mod framing;
pub mod grpc;
pub mod heartbeat;
pub mod metadata;
pub mod sync;
pub mod vocabulary;

/// How long a caller's WebRTC offer may take to be answered and its exchange finished
/// (goutils' default offer deadline): the signaling service enforces it, callers bound one
/// attempt by it.
pub const OFFER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
