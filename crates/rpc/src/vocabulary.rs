//! The wire words both ends rely on, written once: header names and the status texts the
//! official clients match exactly. The machine, the signaling service and the client all
//! read them from here.

/// The request metadata key carrying a session id (`viam-sid`).
pub const SESSION_ID_HEADER: &str = "viam-sid";

/// The response header carrying a call's operation id.
pub const OPERATION_ID_HEADER: &str = "opid";

/// The request metadata key naming the machine a signaling call is for.
pub const RPC_HOST_HEADER: &str = "rpc-host";

/// The request header carrying the access token.
pub const AUTHORIZATION_HEADER: &str = "authorization";

/// What the access token follows in [`AUTHORIZATION_HEADER`] (case-sensitive, as goutils).
pub const BEARER_PREFIX: &str = "Bearer ";

/// The gRPC deadline header.
pub const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

/// The message of the `INVALID_ARGUMENT` status a call gets when its session is unknown,
/// expired or another owner's. Clients compare it exactly: the Python SDK resets its session
/// on it, and no client retries the call.
pub const SESSION_EXPIRED: &str = "SESSION_EXPIRED";
