//! The Tether machine server.
//!
//! A machine is a set of resources (components behind one trait per API, see [`resource`]),
//! built from a validated [`config::Config`] into a [`machine::Machine`], and served over gRPC
//! on one port by [`server`]. The path of a call: TCP → message-size limit → operations layer
//! (every call is an operation with an id) → the generated service ([`services`]) → the
//! resource's trait method → the model (the simulated ones are in [`fake`]).

pub mod auth;
pub mod config;
pub mod convert;
pub mod fake;
pub mod limits;
pub mod machine;
pub mod operations;
pub mod resource;
pub mod server;
pub mod services;
pub mod sessions;
pub mod tls;
pub mod webrtc;

/// The embedded demo machine's config: a rover with one of every component.
pub const DEMO_CONFIG: &str = include_str!("demo.json");
