//! gRPC over a WebRTC data channel (`proto.rpc.webrtc.v1`), sans IO.
//!
//! Every data-channel message is one serialized `Request` (client → machine) or `Response`
//! (machine → client). A gRPC message travels as raw protobuf bytes — no 5-byte length
//! prefix — split into packets; the last has `eom`. A stream opens with `headers`, the client
//! half-closes with `eos` (in the same frame as its last message, as goutils sends it, or in a
//! frame of its own, as rust-utils does) and may cancel with `rst_stream`. The machine answers
//! `headers` first, then messages, then exactly one `trailers`.
//!
//! [`ServerStreams`] is the machine's side: [`ServerStreams::receive`] turns one data-channel
//! message into [`ServerEvent`]s and enforces the rules and limits — 32 MiB per message,
//! 256 concurrent streams, a bound on bytes buffered in reassembly across the channel — with
//! the errors Viam's peers expect. [`ClientStreams`] is the caller's side, used by the Rust
//! client and by tests to produce real frames.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tether_proto::google::rpc::Status;
use tether_proto::proto::rpc::webrtc::v1 as wire;

/// Largest gRPC message reassembled (1 << 25 bytes, as goutils).
pub const MAX_MESSAGE_BYTES: usize = 1 << 25;
/// Most streams open at once on one channel (as the rust-utils client caps itself).
pub const MAX_STREAMS: usize = 256;
/// Most bytes held in reassembly across all streams of one channel.
pub const MAX_BUFFERED_BYTES: usize = 64 << 20;
/// Packet data per request frame we send: 65,535 minus the worst-case request wrapper, 31
/// bytes with the widest (10-byte varint) stream id. goutils sends 65,509, which is right only
/// for small ids; whatever peers send, any packet size is accepted.
pub const MAX_REQUEST_PACKET: usize = 65_504;
/// Packet data per response frame we send: 65,535 minus the worst-case response wrapper (27
/// bytes with the widest stream id).
pub const MAX_RESPONSE_PACKET: usize = 65_508;

/// gRPC status codes used here.
pub mod code {
    pub const OK: i32 = 0;
    pub const CANCELLED: i32 = 1;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const UNIMPLEMENTED: i32 = 12;
}

/// Request or response metadata: key → values.
pub type Metadata = Vec<(String, Vec<String>)>;

fn metadata_from_wire(md: Option<wire::Metadata>) -> Metadata {
    let mut out: Metadata = md
        .map(|m| m.md.into_iter().map(|(k, v)| (k, v.values)).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn metadata_to_wire(md: &[(String, Vec<String>)]) -> Option<wire::Metadata> {
    if md.is_empty() {
        return None;
    }
    Some(wire::Metadata {
        md: md
            .iter()
            .map(|(k, v)| (k.clone(), wire::Strings { values: v.clone() }))
            .collect(),
    })
}

/// Parses a `grpc-timeout` value: 1–8 ASCII digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
/// Works on bytes, so any input — non-ASCII included — is answered, never a panic.
pub fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let bytes = text.as_bytes();
    let (&unit, digits) = bytes.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
#[test]
fn grpc_timeouts_never_panic_on_any_input() {
    // proptest's minimal failing input for the old split_at, and its neighbours.
    for text in [
        "\u{fffc}",
        "1\u{fffc}",
        "\u{fffc}S",
        "é",
        "1é",
        "",
        "S",
        "123456789S",
    ] {
        assert_eq!(parse_grpc_timeout(text), None, "{text:?}");
    }
    assert_eq!(
        parse_grpc_timeout("99999999H"),
        Some(Duration::from_secs(99_999_999 * 3600))
    );
    assert_eq!(parse_grpc_timeout("0n"), Some(Duration::ZERO));
}

/// A data-channel message that is not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable data-channel frame: {0}")]
pub struct FrameError(String);

/// What the machine must do after one incoming data-channel message.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// A new call: run `method` with this metadata (and deadline, if any).
    Open {
        stream: u64,
        method: String,
        metadata: Metadata,
        timeout: Option<Duration>,
    },
    /// A complete request message for the call.
    Message { stream: u64, payload: Bytes },
    /// The client will send no more messages.
    HalfClose { stream: u64 },
    /// The client cancelled the call: cancel its handler ("request cancelled"); send nothing.
    Cancel { stream: u64 },
    /// The call is refused or broken: send these frames (headers, trailers) and forget it;
    /// if a handler runs for it, cancel it.
    Fail { stream: u64, frames: Vec<Vec<u8>> },
}

#[derive(Debug, Default)]
struct ServerStream {
    reassembly: Vec<u8>,
    half_closed: bool,
}

/// The machine's side of one data channel.
#[derive(Debug)]
pub struct ServerStreams {
    streams: HashMap<u64, ServerStream>,
    buffered: usize,
    max_message: usize,
    max_streams: usize,
    max_buffered: usize,
}

impl Default for ServerStreams {
    fn default() -> Self {
        Self::new(MAX_MESSAGE_BYTES, MAX_STREAMS, MAX_BUFFERED_BYTES)
    }
}

impl ServerStreams {
    /// A channel with these limits.
    pub fn new(max_message: usize, max_streams: usize, max_buffered: usize) -> Self {
        Self {
            streams: HashMap::new(),
            buffered: 0,
            max_message,
            max_streams,
            max_buffered,
        }
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Bytes held in reassembly now.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Forgets a stream (its trailers were sent, or its handler ended).
    pub fn finish(&mut self, stream: u64) {
        if let Some(s) = self.streams.remove(&stream) {
            self.buffered -= s.reassembly.len();
        }
    }

    fn fail(&mut self, stream: u64, code: i32, message: &str) -> ServerEvent {
        self.finish(stream);
        ServerEvent::Fail {
            stream,
            frames: vec![
                encode_response_headers(stream, &[]),
                encode_trailers(stream, code, message, &[]),
            ],
        }
    }

    /// Decodes one incoming data-channel message and applies it.
    pub fn receive(&mut self, frame: &[u8]) -> Result<Vec<ServerEvent>, FrameError> {
        let request = wire::Request::decode(frame).map_err(|e| FrameError(e.to_string()))?;
        let stream = request.stream.map(|s| s.id).unwrap_or(0);
        let Some(kind) = request.r#type else {
            return Err(FrameError(format!("stream {stream}: frame without a type")));
        };
        use wire::request::Type;
        let known = self.streams.contains_key(&stream);
        match kind {
            Type::Headers(headers) => {
                if known {
                    return Ok(vec![self.fail(
                        stream,
                        code::INVALID_ARGUMENT,
                        "headers already received",
                    )]);
                }
                if self.streams.len() >= self.max_streams {
                    return Ok(vec![ServerEvent::Fail {
                        stream,
                        frames: vec![
                            encode_response_headers(stream, &[]),
                            encode_trailers(
                                stream,
                                code::RESOURCE_EXHAUSTED,
                                &format!(
                                    "too many concurrent streams (limit {})",
                                    self.max_streams
                                ),
                                &[],
                            ),
                        ],
                    }]);
                }
                self.streams.insert(stream, ServerStream::default());
                let timeout = headers
                    .timeout
                    .and_then(|t| Duration::try_from(t).ok())
                    .filter(|t| !t.is_zero());
                Ok(vec![ServerEvent::Open {
                    stream,
                    method: headers.method,
                    metadata: metadata_from_wire(headers.metadata),
                    timeout,
                }])
            }
            // Frames for streams that never sent headers are dropped, as goutils does.
            _ if !known => Ok(vec![]),
            Type::RstStream(_) => {
                self.finish(stream);
                Ok(vec![ServerEvent::Cancel { stream }])
            }
            Type::Message(message) => self.receive_message(stream, message),
        }
    }

    fn receive_message(
        &mut self,
        stream: u64,
        message: wire::RequestMessage,
    ) -> Result<Vec<ServerEvent>, FrameError> {
        let mut events = Vec::new();
        if self.streams[&stream].half_closed
            && (message.has_message || message.packet_message.is_some())
        {
            return Ok(vec![self.fail(
                stream,
                code::INVALID_ARGUMENT,
                "message after end of stream",
            )]);
        }
        if message.has_message {
            let Some(packet) = message.packet_message else {
                return Ok(vec![self.fail(
                    stream,
                    code::INVALID_ARGUMENT,
                    "message without a packet",
                )]);
            };
            let held = self.streams[&stream].reassembly.len();
            if held + packet.data.len() > self.max_message {
                return Ok(vec![self.fail(
                    stream,
                    code::RESOURCE_EXHAUSTED,
                    &format!(
                        "received message larger than max ({} vs. {})",
                        held + packet.data.len(),
                        self.max_message
                    ),
                )]);
            }
            if self.buffered + packet.data.len() > self.max_buffered {
                return Ok(vec![self.fail(
                    stream,
                    code::RESOURCE_EXHAUSTED,
                    "too many bytes buffered on this channel; retry later",
                )]);
            }
            let Some(s) = self.streams.get_mut(&stream) else {
                return Ok(events);
            };
            self.buffered += packet.data.len();
            s.reassembly.extend_from_slice(&packet.data);
            if packet.eom {
                let payload = Bytes::from(std::mem::take(&mut s.reassembly));
                self.buffered -= payload.len();
                events.push(ServerEvent::Message { stream, payload });
            }
        }
        if message.eos {
            let Some(s) = self.streams.get_mut(&stream) else {
                return Ok(events);
            };
            if !s.reassembly.is_empty() {
                return Ok(vec![self.fail(
                    stream,
                    code::INVALID_ARGUMENT,
                    "end of stream inside a message",
                )]);
            }
            s.half_closed = true;
            events.push(ServerEvent::HalfClose { stream });
        }
        Ok(events)
    }
}

fn encode_response(stream: u64, kind: wire::response::Type) -> Vec<u8> {
    wire::Response {
        stream: Some(wire::Stream { id: stream }),
        r#type: Some(kind),
    }
    .encode_to_vec()
}

/// The response `headers` frame (always first).
pub fn encode_response_headers(stream: u64, metadata: &[(String, Vec<String>)]) -> Vec<u8> {
    encode_response(
        stream,
        wire::response::Type::Headers(wire::ResponseHeaders {
            metadata: metadata_to_wire(metadata),
        }),
    )
}

/// One response message as packets of at most [`MAX_RESPONSE_PACKET`] bytes; the last has
/// `eom`. An empty message is one empty packet with `eom`.
pub fn encode_response_message(stream: u64, payload: &[u8]) -> Vec<Vec<u8>> {
    packets(payload, MAX_RESPONSE_PACKET)
        .map(|(data, eom)| {
            encode_response(
                stream,
                wire::response::Type::Message(wire::ResponseMessage {
                    packet_message: Some(wire::PacketMessage {
                        data: data.to_vec(),
                        eom,
                    }),
                }),
            )
        })
        .collect()
}

/// The `trailers` frame that ends a response.
pub fn encode_trailers(
    stream: u64,
    code: i32,
    message: &str,
    metadata: &[(String, Vec<String>)],
) -> Vec<u8> {
    encode_response(
        stream,
        wire::response::Type::Trailers(wire::ResponseTrailers {
            status: Some(Status {
                code,
                message: message.to_string(),
                details: vec![],
            }),
            metadata: metadata_to_wire(metadata),
        }),
    )
}

/// Splits a payload into packets of at most `max` bytes, marking the last.
fn packets(payload: &[u8], max: usize) -> impl Iterator<Item = (&[u8], bool)> {
    let count = payload.len().div_ceil(max).max(1);
    (0..count).map(move |i| {
        let start = i * max;
        let end = (start + max).min(payload.len());
        (&payload[start.min(payload.len())..end], i + 1 == count)
    })
}

/// What the caller learns from one incoming data-channel message.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The response headers.
    Headers { stream: u64, metadata: Metadata },
    /// A complete response message.
    Message { stream: u64, payload: Bytes },
    /// The call ended with this status (absent status = OK).
    Trailers {
        stream: u64,
        code: i32,
        message: String,
        metadata: Metadata,
    },
    /// The machine broke the protocol on this stream (e.g. a message before headers).
    Violation { stream: u64, reason: String },
}

#[derive(Debug, Default)]
struct ClientStream {
    headers: bool,
    reassembly: Vec<u8>,
}

/// The caller's side of one data channel.
#[derive(Debug)]
pub struct ClientStreams {
    next_id: u64,
    streams: HashMap<u64, ClientStream>,
    max_message: usize,
}

impl ClientStreams {
    /// Stream ids start at `first_id` (goutils starts at 1, rust-utils at 0).
    pub fn new(first_id: u64) -> Self {
        Self {
            next_id: first_id,
            streams: HashMap::new(),
            max_message: MAX_MESSAGE_BYTES,
        }
    }

    /// Opens a call: returns its id and the `headers` frame.
    pub fn open(
        &mut self,
        method: &str,
        metadata: &[(String, Vec<String>)],
        timeout: Option<Duration>,
    ) -> (u64, Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        self.streams.insert(id, ClientStream::default());
        let frame = wire::Request {
            stream: Some(wire::Stream { id }),
            r#type: Some(wire::request::Type::Headers(wire::RequestHeaders {
                method: method.to_string(),
                metadata: metadata_to_wire(metadata),
                timeout: timeout.and_then(|t| prost_types::Duration::try_from(t).ok()),
            })),
        }
        .encode_to_vec();
        (id, frame)
    }

    fn request(stream: u64, message: wire::RequestMessage) -> Vec<u8> {
        wire::Request {
            stream: Some(wire::Stream { id: stream }),
            r#type: Some(wire::request::Type::Message(message)),
        }
        .encode_to_vec()
    }

    /// One request message as packets; with `eos`, the last packet also half-closes (as
    /// goutils sends a unary request).
    pub fn message(&self, stream: u64, payload: &[u8], eos: bool) -> Vec<Vec<u8>> {
        packets(payload, MAX_REQUEST_PACKET)
            .map(|(data, eom)| {
                Self::request(
                    stream,
                    wire::RequestMessage {
                        has_message: true,
                        packet_message: Some(wire::PacketMessage {
                            data: data.to_vec(),
                            eom,
                        }),
                        eos: eos && eom,
                    },
                )
            })
            .collect()
    }

    /// A frame of its own that half-closes (as rust-utils sends it).
    pub fn half_close(&self, stream: u64) -> Vec<u8> {
        Self::request(
            stream,
            wire::RequestMessage {
                has_message: false,
                packet_message: None,
                eos: true,
            },
        )
    }

    /// Cancels a call.
    pub fn reset(&mut self, stream: u64) -> Vec<u8> {
        self.streams.remove(&stream);
        wire::Request {
            stream: Some(wire::Stream { id: stream }),
            r#type: Some(wire::request::Type::RstStream(true)),
        }
        .encode_to_vec()
    }

    /// Decodes one incoming data-channel message.
    pub fn receive(&mut self, frame: &[u8]) -> Result<Option<ClientEvent>, FrameError> {
        let response = wire::Response::decode(frame).map_err(|e| FrameError(e.to_string()))?;
        let stream = response.stream.map(|s| s.id).unwrap_or(0);
        let Some(s) = self.streams.get_mut(&stream) else {
            return Ok(None);
        };
        use wire::response::Type;
        Ok(match response.r#type {
            None => Some(ClientEvent::Violation {
                stream,
                reason: "frame without a type".into(),
            }),
            Some(Type::Headers(h)) => {
                s.headers = true;
                Some(ClientEvent::Headers {
                    stream,
                    metadata: metadata_from_wire(h.metadata),
                })
            }
            Some(Type::Message(_)) if !s.headers => {
                self.streams.remove(&stream);
                Some(ClientEvent::Violation {
                    stream,
                    reason: "message before headers".into(),
                })
            }
            Some(Type::Message(m)) => {
                let packet = m.packet_message.unwrap_or_default();
                if s.reassembly.len() + packet.data.len() > self.max_message {
                    self.streams.remove(&stream);
                    return Ok(Some(ClientEvent::Violation {
                        stream,
                        reason: "response message larger than max".into(),
                    }));
                }
                s.reassembly.extend_from_slice(&packet.data);
                packet.eom.then(|| ClientEvent::Message {
                    stream,
                    payload: Bytes::from(std::mem::take(&mut s.reassembly)),
                })
            }
            Some(Type::Trailers(t)) => {
                self.streams.remove(&stream);
                let status = t.status.unwrap_or_default();
                Some(ClientEvent::Trailers {
                    stream,
                    code: status.code,
                    message: status.message,
                    metadata: metadata_from_wire(t.metadata),
                })
            }
        })
    }
}

#[cfg(test)]
mod tests;
