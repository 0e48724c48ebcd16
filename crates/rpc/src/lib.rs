//! Wire mechanisms shared by the machine and the client.
//!
//! [`framing`] is the sans-IO codec of gRPC over a WebRTC data channel, as Viam's peers speak
//! it: bytes of one data-channel message in, stream events out; responses out as data-channel
//! messages. It knows nothing of WebRTC, tokio or tonic, so every rule is tested exactly.

pub mod framing;
