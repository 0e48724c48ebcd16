//! The router: every gRPC service the machine serves — the robot service, each registered
//! API's service, reflection (v1 and v1alpha), authentication and signaling when on — plus
//! the plain-HTTP paths of [`crate::page`] (`GET /`: the readiness probe, and the machine's
//! page to a browser).

use std::sync::Arc;

use tether_proto::proto::rpc::v1::auth_service_server::AuthServiceServer;
use tether_proto::proto::rpc::webrtc::v1::signaling_service_server::SignalingServiceServer;
use tether_proto::viam::robot::v1::robot_service_server::RobotServiceServer;

use super::ServeError;
use crate::apis::limited;
use crate::auth::{AuthApi, Authenticator};
use crate::machine::Machine;
use crate::robot::RobotApi;
use crate::webrtc::SignalingApi;

/// The router of every service (plus `AuthService` when authentication is on) and the
/// machine's page ([`crate::page`]), which shows the machine as `name`.
pub fn app(
    machine: Arc<Machine>,
    auth: Option<Arc<Authenticator>>,
    signaling: Option<SignalingApi>,
    name: Arc<str>,
) -> Result<axum::Router, ServeError> {
    let has_auth = auth.is_some();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tether_proto::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let mut routes = tonic::service::Routes::builder();
    routes.add_service(limited!(RobotServiceServer::new(RobotApi::new(
        machine.clone()
    ))));
    crate::apis::serve_all(&mut routes, &machine);
    routes
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    if let Some(auth) = auth {
        routes.add_service(AuthServiceServer::new(AuthApi::new(auth)));
    }
    if let Some(signaling) = signaling {
        // Signaling messages are an SDP or a candidate: decoded only up to a small cap, not the
        // 32 MiB every other service takes.
        routes.add_service(
            SignalingServiceServer::new(signaling)
                .max_decoding_message_size(tether_signal::service::MAX_SIGNALING_MESSAGE)
                .max_encoding_message_size(tether_signal::service::MAX_SIGNALING_MESSAGE),
        );
    }
    let router = crate::page::routes(
        routes.routes().into_axum_router(),
        crate::page::PageState {
            machine,
            name,
            auth: has_auth,
        },
    );
    Ok(router)
}
