//! The machine's side of heartbeat datagrams ([`tether_rpc::heartbeat`]): each message on a
//! peer's `tether-heartbeat` channel is run as a `SendSessionHeartbeat` call through the same
//! tower stack as every call of that peer (so the same caller, owner checks and session
//! rules apply; the time it says it was sent goes in the call's send-time header), and
//! answered with one ack. One at a time per peer: a flood is served no
//! faster than the stack answers, and a message too large to be a heartbeat is dropped unread.

use axum::body::Body;
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tether_proto::viam::robot::v1::robot_service_server::RobotServiceServer;
use tether_rpc::grpc::message_prefix;
use tether_rpc::heartbeat::{Ack, MAX_DATAGRAM, SENT_HEADER, decode_datagram, encode_ack};
use tether_rpc::vocabulary::SESSION_EXPIRED;
use tether_rtc::Channel;
use tower::ServiceExt;

use super::dispatch::ConnectionContext;
use crate::server::Stack;

/// The heartbeat method's path, from the generated server's name.
fn heartbeat_path() -> String {
    format!(
        "/{}/SendSessionHeartbeat",
        <RobotServiceServer<crate::robot::RobotApi> as tonic::server::NamedService>::NAME
    )
}

/// Serves `channel` until it closes (the answerer aborts it when the peer ends).
pub async fn serve<S: Stack>(channel: Channel, service: S, context: ConnectionContext) {
    let path = heartbeat_path();
    while let Some(message) = channel.recv().await {
        if message.len() > MAX_DATAGRAM {
            continue;
        }
        let received = std::time::Instant::now();
        let (session, sent_us) = decode_datagram(&message).unwrap_or_default();
        let ack = heartbeat(&path, message.clone(), sent_us, service.clone(), &context).await;
        let took = received.elapsed();
        // A lost answer costs the client nothing: the next heartbeat follows within W/5.
        let _ = channel.send(encode_ack(ack, &message)).await;
        tracing::trace!(
            %session,
            ?ack,
            ?took,
            send = ?(received.elapsed() - took),
            buffered = channel.buffered(),
            "heartbeat datagram"
        );
    }
}

/// Runs one heartbeat datagram as the call it stands for.
async fn heartbeat<S: Stack>(
    path: &str,
    message: Bytes,
    sent_us: Option<u64>,
    service: S,
    context: &ConnectionContext,
) -> Ack {
    let body = [message_prefix(message.len()), message].concat();
    let mut builder = Request::builder()
        .method(http::Method::POST)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers");
    // When the client sent it, as a heartbeat call says so.
    if let Some(sent) = sent_us {
        builder = builder.header(SENT_HEADER, sent);
    }
    let Ok(mut req) = builder.body(Body::from(body)) else {
        return Ack::Refused;
    };
    context.attach(&mut req);
    req.extensions_mut().insert(crate::telemetry::FromDatagram);
    let Ok(response) = service.oneshot(req).await;
    let (parts, body) = response.into_parts();
    // A trailers-only answer carries its status in the headers; otherwise it is in the
    // trailers after the (empty) response message.
    let status = match tonic::Status::from_header_map(&parts.headers) {
        Some(s) => Some(s),
        None => match body.collect().await {
            Ok(collected) => collected
                .trailers()
                .and_then(tonic::Status::from_header_map),
            Err(_) => None,
        },
    };
    match status {
        Some(s) if s.code() == tonic::Code::Ok => Ack::Alive,
        Some(s) if s.message() == SESSION_EXPIRED => Ack::Expired,
        _ => Ack::Refused,
    }
}
