//! Serves gRPC calls framed on a WebRTC data channel through the same tower stack as TCP.
//!
//! Each `headers` frame becomes an `http::Request` (POST, the method as path, the metadata as
//! headers, `-bin` values base64 as HTTP carries them) whose body is fed with the stream's
//! messages in gRPC framing and ends at `eos` or, for a method whose request is one message
//! (unary and server-streaming), with that message: Viam's TypeScript SDK sends a unary
//! call's message with `eom` and never an `eos`, and viam-server runs the handler on it.
//! The request carries the connection's [`PeerInfo`] and the [`Entity`] authenticated when the
//! caller signaled, marked [`ChannelAuthenticated`] so the auth layer accepts it without a
//! token. The response goes back as `headers`, messages and `trailers`; a trailers-only
//! response (every error before a message) is recognised in the HTTP headers.
//!
//! One task per stream, tracked in a `JoinSet` aborted when the channel ends; one writer task
//! per channel sends frames in the order each stream produced them. The deadline of a call
//! (`timeout` in its headers, or the `grpc-timeout` header rust-utils copies) bounds the
//! whole call here, since tonic's router does not enforce it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use tether_rpc::framing::{
    self, Metadata, ServerEvent, ServerStreams, encode_response_headers, encode_response_message,
    encode_trailers, parse_grpc_timeout,
};
use tether_rpc::grpc::{MessageSplitter, SplitError, is_transport_header, message_prefix};
use tether_rpc::metadata::{OnInvalid, headers_to_metadata, metadata_to_headers};
use tether_rpc::vocabulary::GRPC_TIMEOUT_HEADER;
use tether_rtc::Channel;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tower::ServiceExt;

use crate::auth::ChannelAuthenticated;
use crate::server::Stack;
use crate::sessions::{Entity, PeerInfo};

/// Request messages buffered per stream before the reader waits for its handler.
const BODY_BUFFER: usize = 16;
/// Encoded frames queued for the channel writer.
const WRITE_BUFFER: usize = 256;

/// Who is on the other end of a data channel.
#[derive(Clone)]
pub struct ConnectionContext {
    pub info: PeerInfo,
    pub entity: Arc<str>,
    /// The channel's budget for monitored calls' first messages.
    pub budget: crate::sessions::BufferBudget,
    /// The peer connection, for what it commands without a session.
    pub link: crate::commanders::ConnectionLink,
}

impl ConnectionContext {
    /// Makes `req` a call of this connection: its peer, its buffer budget, and the entity that
    /// authenticated when it signaled (so the auth layer needs no token).
    pub fn attach<B>(&self, req: &mut Request<B>) {
        req.extensions_mut().insert(self.info.clone());
        req.extensions_mut().insert(self.budget.clone());
        req.extensions_mut().insert(Entity(self.entity.clone()));
        req.extensions_mut().insert(ChannelAuthenticated);
        req.extensions_mut().insert(self.link.clone());
    }
}

type BodySender = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

struct Open {
    body: Option<BodySender>,
    /// The request is one message: the body ends with it.
    one_message: bool,
    task: AbortHandle,
}

/// Serves the channel until it closes (or `closed` resolves); then cancels every call.
pub async fn serve<S>(
    channel: Channel,
    service: S,
    context: ConnectionContext,
    closed: impl Future<Output = ()>,
) where
    S: Stack,
{
    let (out, mut outgoing) = mpsc::channel::<Bytes>(WRITE_BUFFER);
    let writer_channel = channel.clone();
    let writer = tokio::spawn(tracing::Instrument::in_current_span(async move {
        while let Some(frame) = outgoing.recv().await {
            if writer_channel.send(frame).await.is_err() {
                break;
            }
        }
    }));
    let mut codec = ServerStreams::default();
    let mut open: HashMap<u64, Open> = HashMap::new();
    let mut tasks: JoinSet<u64> = JoinSet::new();
    // Which stream each call task serves, so a task that panicked still frees its stream.
    let mut streams_of: HashMap<tokio::task::Id, u64> = HashMap::new();
    tokio::pin!(closed);
    loop {
        tokio::select! {
            _ = &mut closed => break,
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let stream = match done {
                    Ok((id, stream)) => {
                        streams_of.remove(&id);
                        stream
                    }
                    Err(e) => {
                        let Some(stream) = streams_of.remove(&e.id()) else { continue };
                        // An aborted task's stream was already freed where it was aborted (the
                        // id may even serve a new call by now). A panicked one's was not: free
                        // it, and answer its caller instead of leaving it hanging.
                        if !e.is_panic() {
                            continue;
                        }
                        {
                            tracing::error!(stream, "a call task panicked; answering INTERNAL");
                            let _ = out.send(Bytes::from(encode_response_headers(stream, &[]))).await;
                            let _ = out
                                .send(Bytes::from(encode_trailers(
                                    stream,
                                    tonic::Code::Internal as i32,
                                    "internal error: the call failed unexpectedly",
                                    &[],
                                )))
                                .await;
                        }
                        stream
                    }
                };
                codec.finish(stream);
                open.remove(&stream);
            }
            frame = channel.recv() => {
                let Some(frame) = frame else { break };
                let events = match codec.receive(&frame) {
                    Ok(events) => events,
                    Err(e) => {
                        tracing::debug!(error = %e, "dropping an undecodable data-channel frame");
                        continue;
                    }
                };
                for event in events {
                    match event {
                        ServerEvent::Open { stream, method, metadata, timeout } => {
                            let (body_tx, body_rx) = mpsc::channel(BODY_BUFFER);
                            let one_message = tether_proto::takes_one_message(&method);
                            let call = CallSpec { stream, method, metadata, timeout };
                            let task = tasks.spawn(tracing::Instrument::in_current_span(run_call(call, body_rx, service.clone(), context.clone(), out.clone())));
                            streams_of.insert(task.id(), stream);
                            open.insert(stream, Open { body: Some(body_tx), one_message, task });
                        }
                        ServerEvent::Message { stream, payload } => {
                            let Some(o) = open.get_mut(&stream) else { continue };
                            // A one-message request ends with its message, `eos` or not; what
                            // else the peer sends on it is not read.
                            let Some(body) = (if o.one_message { o.body.take() } else { o.body.clone() }) else { continue };
                            // Waits while the handler is BODY_BUFFER messages behind: bounded
                            // memory, at the price of pausing this channel's reads meanwhile.
                            let mut framed = BytesMut::with_capacity(5 + payload.len());
                            framed.extend_from_slice(&message_prefix(payload.len()));
                            framed.extend_from_slice(&payload);
                            let _ = body.send(Ok(Frame::data(framed.freeze()))).await;
                        }
                        ServerEvent::HalfClose { stream } => {
                            if let Some(o) = open.get_mut(&stream) {
                                o.body = None;
                            }
                        }
                        ServerEvent::Cancel { stream } => {
                            if let Some(o) = open.remove(&stream) {
                                o.task.abort();
                            }
                        }
                        ServerEvent::Fail { stream, frames } => {
                            if let Some(o) = open.remove(&stream) {
                                o.task.abort();
                            }
                            for f in frames {
                                if out.send(Bytes::from(f)).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    tasks.shutdown().await;
    drop(out);
    writer.abort();
}

struct CallSpec {
    stream: u64,
    method: String,
    metadata: Metadata,
    timeout: Option<Duration>,
}

/// Headers a peer's metadata must not set on the synthesized request: the transport's, and
/// `content-type`, which is always `application/grpc` here.
fn reserved(key: &str) -> bool {
    is_transport_header(key) || key == "content-type"
}

fn build_request(call: &CallSpec, body: Body) -> Result<(Request<Body>, Option<Duration>), String> {
    if !call.method.starts_with('/') {
        return Err(format!("malformed method {:?}", call.method));
    }
    let mut req = Request::builder()
        .method(http::Method::POST)
        .uri(call.method.as_str())
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(body)
        .map_err(|e| format!("malformed method {:?}: {e}", call.method))?;
    let mut timeout = call.timeout.filter(|t| !t.is_zero());
    if timeout.is_none() {
        timeout = call
            .metadata
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(GRPC_TIMEOUT_HEADER))
            .and_then(|(_, values)| parse_grpc_timeout(values.first()?));
    }
    let metadata = metadata_to_headers(&call.metadata, reserved, OnInvalid::Fail)
        .map_err(|e| e.to_string())?;
    let headers = req.headers_mut();
    for (name, value) in &metadata {
        headers.append(name.clone(), value.clone());
    }
    Ok((req, timeout))
}

/// Metadata from response headers or trailers, without the gRPC transport keys.
fn metadata_of(headers: &HeaderMap) -> Metadata {
    headers_to_metadata(headers, |key| {
        key == "content-type" || key.starts_with("grpc-") && key != "grpc-status-details-bin"
    })
}

fn status_of(headers: &HeaderMap) -> (i32, String) {
    match tonic::Status::from_header_map(headers) {
        Some(s) => (s.code() as i32, s.message().to_string()),
        None => (
            tonic::Code::Internal as i32,
            "response ended without a grpc-status".into(),
        ),
    }
}

async fn run_call<S>(
    call: CallSpec,
    body: mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
    service: S,
    context: ConnectionContext,
    out: mpsc::Sender<Bytes>,
) -> u64
where
    S: Stack,
{
    let stream = call.stream;
    let body = Body::new(http_body_util::StreamBody::new(futures::stream::unfold(
        body,
        |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
    )));
    let send = |frame: Vec<u8>| {
        let out = out.clone();
        async move { out.send(Bytes::from(frame)).await.is_ok() }
    };
    let (mut req, timeout) = match build_request(&call, body) {
        Ok(built) => built,
        Err(message) => {
            send(encode_response_headers(stream, &[])).await;
            send(encode_trailers(
                stream,
                framing::code::INVALID_ARGUMENT,
                &message,
                &[],
            ))
            .await;
            return stream;
        }
    };
    context.attach(&mut req);
    let headers_sent = AtomicBool::new(false);
    let work = respond(stream, service.oneshot(req), &send, &headers_sent);
    let finished = match timeout {
        Some(t) => tokio::time::timeout(t, work).await.is_ok(),
        None => {
            work.await;
            true
        }
    };
    if !finished {
        if !headers_sent.load(Ordering::Relaxed) {
            send(encode_response_headers(stream, &[])).await;
        }
        send(encode_trailers(
            stream,
            tonic::Code::DeadlineExceeded as i32,
            crate::deadline::DEADLINE_MESSAGE,
            &[],
        ))
        .await;
    }
    stream
}

async fn respond<F, Fut>(
    stream: u64,
    call: impl Future<Output = Result<Response<Body>, Infallible>>,
    send: &F,
    headers_sent: &AtomicBool,
) where
    F: Fn(Vec<u8>) -> Fut,
    Fut: Future<Output = bool>,
{
    let Ok(response) = call.await;
    let (parts, mut body) = response.into_parts();
    headers_sent.store(true, Ordering::Relaxed);
    if parts.headers.contains_key("grpc-status") {
        // Trailers-only: every error raised before a message.
        let (code, message) = status_of(&parts.headers);
        send(encode_response_headers(stream, &[])).await;
        send(encode_trailers(
            stream,
            code,
            &message,
            &metadata_of(&parts.headers),
        ))
        .await;
        return;
    }
    if !send(encode_response_headers(
        stream,
        &metadata_of(&parts.headers),
    ))
    .await
    {
        return;
    }
    let mut splitter = MessageSplitter::new(framing::MAX_MESSAGE_BYTES);
    loop {
        match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    splitter.push(data);
                    loop {
                        let message = match splitter.next_message() {
                            Ok(Some(m)) => m,
                            Ok(None) => break,
                            Err(e) => {
                                let why = match e {
                                    SplitError::Compressed => {
                                        "compressed responses are not supported over WebRTC".into()
                                    }
                                    e => format!("malformed response body: {e:?}"),
                                };
                                send(encode_trailers(
                                    stream,
                                    tonic::Code::Internal as i32,
                                    &why,
                                    &[],
                                ))
                                .await;
                                return;
                            }
                        };
                        for packet in encode_response_message(stream, &message) {
                            if !send(packet).await {
                                return;
                            }
                        }
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let (code, message) = status_of(&trailers);
                        send(encode_trailers(
                            stream,
                            code,
                            &message,
                            &metadata_of(&trailers),
                        ))
                        .await;
                        return;
                    }
                }
            },
            Some(Err(e)) => {
                send(encode_trailers(
                    stream,
                    tonic::Code::Internal as i32,
                    &format!("response failed: {e}"),
                    &[],
                ))
                .await;
                return;
            }
            None => {
                send(encode_trailers(
                    stream,
                    tonic::Code::Internal as i32,
                    "response ended without a grpc-status",
                    &[],
                ))
                .await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }

    #[test]
    fn requests_carry_metadata_but_not_reserved_headers() {
        let call = CallSpec {
            stream: 1,
            method: "/viam.robot.v1.RobotService/GetVersion".into(),
            metadata: vec![
                ("content-type".into(), vec!["text/evil".into()]),
                ("grpc-timeout".into(), vec!["2S".into()]),
                ("viam-sid".into(), vec!["abc".into()]),
                ("x-trace-bin".into(), vec!["\u{1}raw".into()]),
                ("x-ok-bin".into(), vec!["AAEC".into()]),
            ],
            timeout: None,
        };
        let (req, timeout) = build_request(&call, Body::empty()).unwrap();
        assert_eq!(timeout, Some(Duration::from_secs(2)));
        assert_eq!(req.headers()["content-type"], "application/grpc");
        assert_eq!(req.headers()["viam-sid"], "abc");
        assert_eq!(req.headers()["x-ok-bin"], "AAEC");
        // Raw `-bin` bytes are base64-encoded unpadded, as gRPC emits them (tether-rpc::metadata).
        assert_eq!(req.headers()["x-trace-bin"], "AXJhdw");
        assert!(req.headers().get("grpc-timeout").is_none());
        let bad = CallSpec {
            metadata: vec![("bad key".into(), vec!["v".into()])],
            ..call
        };
        assert!(
            build_request(&bad, Body::empty())
                .unwrap_err()
                .contains("invalid metadata key")
        );
    }
}
