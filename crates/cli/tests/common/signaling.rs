//! Signaling as a test or a benchmark speaks it by hand: `Authenticate` with an API key, a
//! `SignalingService` client, and requests naming their `rpc-host` and carrying the token.
//! (Also compiled into `examples/fleet_bench.rs`, which cannot use the rest of `common`.)

use tether_proto::proto::rpc::webrtc::v1 as pb;
use tonic::Status;
use tonic::transport::Channel;

pub type SignalingClient = pb::signaling_service_client::SignalingServiceClient<Channel>;

/// `AuthService.Authenticate` with an API key over `ch`: the access token.
pub async fn authenticate(ch: &Channel, id: &str, key: &str) -> Result<String, Status> {
    use tether_proto::proto::rpc::v1::auth_service_client::AuthServiceClient;
    use tether_proto::proto::rpc::v1::{AuthenticateRequest, Credentials};
    AuthServiceClient::new(ch.clone())
        .authenticate(AuthenticateRequest {
            entity: id.into(),
            credentials: Some(Credentials {
                r#type: "api-key".into(),
                payload: key.into(),
            }),
        })
        .await
        .map(|r| r.into_inner().access_token)
}

/// A signaling client of the service at `addr` (plaintext), authenticated as key `id`: the
/// client and its token.
pub async fn signaling_client(addr: &str, id: &str, key: &str) -> (SignalingClient, String) {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token = authenticate(&ch, id, key).await.unwrap();
    (SignalingClient::new(ch), token)
}

/// `message` for `host`, with `token`.
pub fn to<T>(message: T, host: &str, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("rpc-host", host.parse().unwrap());
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}
