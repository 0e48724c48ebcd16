//! WebRTC signaling: the broker that lets a caller and a machine exchange their offer, answer
//! and ICE candidates before they talk peer to peer.
//!
//! [`service`] is `proto.rpc.webrtc.v1.SignalingService` (`Call`, `CallUpdate`, `Answer`,
//! `OptionalWebRTCConfig`) over a [`queue::CallQueue`]: callers' offers wait there until an
//! answerer for their host takes them. The queue is a trait so one service can run embedded
//! in a machine (the in-memory [`queue::MemoryQueue`], the machine's own answerer taking the
//! offers) or standalone for a fleet (a shared backend, answerers connecting over `Answer`).
//! The service reads the caller's identity and address from the request context the server's
//! layers set ([`tether_rpc::context`]). [`redis_queue::RedisQueue`] is the shared backend:
//! many signaling instances on one Redis.

pub mod answer_client;
pub mod fleet;
pub mod queue;
pub mod redis_queue;
pub mod service;
pub mod standalone;

pub use queue::{CallQueue, MemoryQueue, OfferSource};
pub use redis_queue::RedisQueue;
pub use service::{Answerers, Hosts, SignalingApi};
