//! WebRTC on the machine: its answerer (one peer per call, taken from the signaling call
//! queue) and the dispatch of gRPC frames from data channels into the one tower stack. The
//! signaling service itself and its queue are the `tether-signal` crate, embedded here on the
//! machine's port.

pub mod answerer;
pub mod dispatch;
pub mod heartbeats;

pub use answerer::Answerer;
pub use tether_signal::{CallQueue, Hosts, MemoryQueue, SignalingApi};
