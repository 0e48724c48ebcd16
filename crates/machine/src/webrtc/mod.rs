//! WebRTC: the signaling service on the machine's port, its call queue, the machine's
//! answerer, and the dispatch of gRPC frames from data channels into the one tower stack.

pub mod answerer;
pub mod dispatch;
pub mod queue;
pub mod signaling;

pub use answerer::{Answerer, AnswererStats};
pub use queue::{CallQueue, MemoryQueue};
pub use signaling::{Hosts, SignalingApi};
