//! The Tether machine server.
//!
//! A machine is a set of resources — components and services, each API one module of
//! [`apis`] (its trait, its models, its gRPC adapter) registered in one list — built from a
//! validated [`config::Config`] into a [`machine::Machine`], and served over gRPC on one port
//! by [`server`]. The path of a call: TCP or a WebRTC data channel → the one tower stack
//! (message limit, auth, operations, sessions) → the API's adapter → the resource's trait
//! method → the model (the simulated ones are each API's `fake`, built on [`sim`]).

pub mod apis;
pub mod commanders;
pub mod config;
pub mod convert;
pub mod machine;
pub mod operations;
pub mod origin;
pub mod page;
pub mod resource;
pub mod robot;
pub mod server;
pub mod sessions;
pub mod sim;
/// The poison-tolerant lock helpers (tether-rpc's).
pub use tether_rpc::sync;
pub mod telemetry;
/// What the machine serves with, shared with the standalone signaling service.
pub use tether_serve::{auth, deadline, limits, tls, web};
pub mod webrtc;

/// The embedded demo machine's config: a rover with one of every component.
pub const DEMO_CONFIG: &str = include_str!("demo.json");
