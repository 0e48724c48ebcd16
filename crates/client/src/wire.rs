//! The sans-IO half of gRPC over a WebRTC data channel on the client side: turning a tonic
//! request (HTTP/2-shaped: headers, a body of 5-byte-prefixed messages, `grpc-timeout`) into
//! what the data-channel protocol carries (metadata, bare messages, a timeout), and the
//! machine's answers (metadata, bare messages, a status) back into what tonic reads.
//!
//! No tasks, no channels, no clocks: every rule here is unit-tested exactly.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use tether_rpc::framing::{Metadata, parse_grpc_timeout};

/// Request headers that describe the HTTP/2 hop rather than the call, and headers that travel
/// in a field of their own: never copied into the data channel's request metadata.
const NOT_METADATA: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "host",
    "content-length",
    // In `RequestHeaders.timeout`.
    "grpc-timeout",
    // The machine trusts the identity authenticated at `Call`; a bearer token inside the
    // channel is unneeded, so it is not sent where nothing checks it.
    "authorization",
];

/// The call's metadata from tonic's request headers: every header except the hop-by-hop ones,
/// values grouped by name in the order they appear. `-bin` values are already base64 in HTTP
/// and travel as they are. Values that are not visible ASCII cannot be represented as a
/// metadata string and are left out.
pub(crate) fn request_metadata(headers: &HeaderMap) -> Metadata {
    let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        if name.starts_with(':') || NOT_METADATA.contains(&name) {
            continue;
        }
        match value.to_str() {
            Ok(v) => grouped
                .entry(name.to_string())
                .or_default()
                .push(v.to_string()),
            Err(_) => tracing::debug!(header = name, "non-ASCII header left out of metadata"),
        }
    }
    grouped.into_iter().collect()
}

/// The deadline a `grpc-timeout` header gives (`<up to 8 digits><H|M|S|m|u|n>`); `None` for a
/// missing or malformed one, which gRPC treats as no deadline.
pub(crate) fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    parse_grpc_timeout(headers.get("grpc-timeout")?.to_str().ok()?)
}

/// Why a request body cannot be carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SplitError {
    /// A compressed message (the channel carries uncompressed protobuf only).
    Compressed,
    /// A message longer than the limit, as declared by its prefix.
    TooLarge(usize),
    /// The body ended in the middle of a message.
    Truncated,
}

impl SplitError {
    pub(crate) fn status(&self) -> tonic::Status {
        match self {
            Self::Compressed => {
                tonic::Status::internal("compressed messages cannot be sent over WebRTC")
            }
            Self::TooLarge(n) => tonic::Status::resource_exhausted(format!(
                "request message of {n} bytes is larger than the limit of {} bytes",
                tether_rpc::framing::MAX_MESSAGE_BYTES
            )),
            Self::Truncated => tonic::Status::internal("request body ended inside a message"),
        }
    }
}

/// Splits a gRPC request body — messages with 5-byte prefixes (flag, big-endian length), cut
/// into body frames anywhere — back into whole messages without their prefixes.
#[derive(Debug)]
pub(crate) struct MessageSplitter {
    buf: BytesMut,
    /// Bytes of chunks not yet copied into `buf`: a chunk that holds whole messages is sliced,
    /// not copied.
    chunk: Bytes,
    max: usize,
}

impl MessageSplitter {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            chunk: Bytes::new(),
            max,
        }
    }

    /// Adds one body frame's data. Call [`Self::next_message`] until it returns `None` before
    /// pushing more.
    pub(crate) fn push(&mut self, data: Bytes) {
        if !self.chunk.is_empty() {
            self.buf.extend_from_slice(&self.chunk);
            self.chunk = Bytes::new();
        }
        if self.buf.is_empty() {
            self.chunk = data;
        } else {
            self.buf.extend_from_slice(&data);
        }
    }

    /// The next whole message, if one is complete.
    pub(crate) fn next_message(&mut self) -> Result<Option<Bytes>, SplitError> {
        // Fast path: the pending chunk starts at a message boundary.
        if self.buf.is_empty() {
            match header(&self.chunk, self.max)? {
                Some(len) if self.chunk.len() >= 5 + len => {
                    self.chunk.advance(5);
                    return Ok(Some(self.chunk.split_to(len)));
                }
                _ => {
                    // Incomplete: keep it for the next frame.
                    self.buf.extend_from_slice(&self.chunk);
                    self.chunk = Bytes::new();
                    return Ok(None);
                }
            }
        }
        match header(&self.buf, self.max)? {
            Some(len) if self.buf.len() >= 5 + len => {
                self.buf.advance(5);
                Ok(Some(self.buf.split_to(len).freeze()))
            }
            _ => Ok(None),
        }
    }

    /// Checks that the body ended on a message boundary.
    pub(crate) fn finish(&self) -> Result<(), SplitError> {
        if self.buf.is_empty() && self.chunk.is_empty() {
            Ok(())
        } else {
            Err(SplitError::Truncated)
        }
    }
}

/// The length a complete prefix declares, or `None` if fewer than 5 bytes are there.
fn header(buf: &[u8], max: usize) -> Result<Option<usize>, SplitError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] != 0 {
        return Err(SplitError::Compressed);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > max {
        return Err(SplitError::TooLarge(len));
    }
    Ok(Some(len))
}

/// The 5-byte prefix of an uncompressed message of `len` bytes.
pub(crate) fn message_prefix(len: usize) -> Bytes {
    let mut prefix = [0u8; 5];
    prefix[1..].copy_from_slice(&(len as u32).to_be_bytes());
    Bytes::copy_from_slice(&prefix)
}

/// Metadata as HTTP headers. A value that is not a valid header value is dropped, except for
/// `-bin` keys, whose raw bytes are base64-encoded as HTTP carries them.
pub(crate) fn metadata_headers(metadata: &Metadata) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (key, values) in metadata {
        let Ok(name) = HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes()) else {
            tracing::debug!(key, "response metadata key is not a header name");
            continue;
        };
        for value in values {
            let value = match HeaderValue::from_str(value) {
                Ok(v) => v,
                Err(_) if key.ends_with("-bin") => {
                    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(value);
                    match HeaderValue::from_str(&encoded) {
                        Ok(v) => v,
                        Err(_) => continue,
                    }
                }
                Err(_) => {
                    tracing::debug!(key, "response metadata value is not a header value");
                    continue;
                }
            };
            headers.append(name.clone(), value);
        }
    }
    headers
}

/// The HTTP trailers (or trailers-only headers) for a call that ended with `code`: the
/// metadata, then `grpc-status` and the percent-encoded `grpc-message` (metadata cannot
/// override those).
pub(crate) fn status_headers(code: i32, message: &str, metadata: &Metadata) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let status = tonic::Status::with_metadata(
        tonic::Code::from(code),
        message,
        tonic::metadata::MetadataMap::from_headers(metadata_headers(metadata)),
    );
    if status.add_header(&mut headers).is_err() {
        // Only a message that cannot be a header value even percent-encoded; keep the code.
        headers = HeaderMap::new();
        let _ = tonic::Status::new(status.code(), "").add_header(&mut headers);
    }
    headers
}

/// Trailers for a call that failed on this side with `status`.
pub(crate) fn local_status_headers(status: &tonic::Status) -> HeaderMap {
    status_headers(status.code() as i32, status.message(), &Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            out.extend_from_slice(&message_prefix(m.len()));
            out.extend_from_slice(m);
        }
        out
    }

    fn drain(s: &mut MessageSplitter) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(m) = s.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn whole_messages_in_one_frame_are_sliced_out() {
        let body = framed(&[b"one", b"", b"three"]);
        let mut s = MessageSplitter::new(100);
        s.push(Bytes::from(body));
        assert_eq!(drain(&mut s), [&b"one"[..], b"", b"three"]);
        s.finish().unwrap();
    }

    #[test]
    fn messages_spanning_frames_are_reassembled_at_every_cut() {
        let messages: [&[u8]; 3] = [b"first message", b"", b"x"];
        let body = framed(&messages);
        // Every way of cutting the body into two or three frames.
        for a in 0..=body.len() {
            for b in a..=body.len() {
                let mut s = MessageSplitter::new(100);
                let mut got = Vec::new();
                for part in [&body[..a], &body[a..b], &body[b..]] {
                    s.push(Bytes::copy_from_slice(part));
                    got.extend(drain(&mut s));
                }
                assert_eq!(got, messages, "cut at {a}, {b}");
                s.finish().unwrap();
            }
        }
    }

    #[test]
    fn one_byte_frames_work() {
        let body = framed(&[b"abc", b"defgh"]);
        let mut s = MessageSplitter::new(100);
        let mut got = Vec::new();
        for byte in body {
            s.push(Bytes::from(vec![byte]));
            got.extend(drain(&mut s));
        }
        assert_eq!(got, [&b"abc"[..], b"defgh"]);
    }

    #[test]
    fn a_body_ending_inside_a_message_is_truncated() {
        let body = framed(&[b"abcdef"]);
        for cut in 1..body.len() {
            let mut s = MessageSplitter::new(100);
            s.push(Bytes::copy_from_slice(&body[..cut]));
            assert!(drain(&mut s).is_empty());
            assert_eq!(s.finish(), Err(SplitError::Truncated), "cut at {cut}");
        }
    }

    #[test]
    fn compressed_and_oversized_messages_are_refused() {
        let mut s = MessageSplitter::new(100);
        s.push(Bytes::from_static(&[1, 0, 0, 0, 1, 7]));
        assert_eq!(s.next_message(), Err(SplitError::Compressed));
        let mut s = MessageSplitter::new(4);
        s.push(Bytes::from(framed(&[b"12345"])));
        assert_eq!(s.next_message(), Err(SplitError::TooLarge(5)));
        assert_eq!(
            SplitError::TooLarge(5).status().code(),
            tonic::Code::ResourceExhausted
        );
        let mut s = MessageSplitter::new(4);
        s.push(Bytes::from(framed(&[b"1234"])));
        assert_eq!(drain(&mut s), [&b"1234"[..]]);
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let cases = [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("7u", Some(Duration::from_micros(7))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("", None),
            ("S", None),
            ("10", None),
            ("1x", None),
            ("-1S", None),
            ("123456789S", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_grpc_timeout(text), want, "{text:?}");
        }
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", HeaderValue::from_static("5S"));
        assert_eq!(grpc_timeout(&h), Some(Duration::from_secs(5)));
    }

    #[test]
    fn request_metadata_keeps_call_headers_and_drops_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("grpc-timeout", HeaderValue::from_static("5S"));
        h.insert("authorization", HeaderValue::from_static("Bearer x"));
        h.insert("viam-sid", HeaderValue::from_static("abc"));
        h.append("multi", HeaderValue::from_static("1"));
        h.append("multi", HeaderValue::from_static("2"));
        h.insert("trace-bin", HeaderValue::from_static("AAEC"));
        h.insert("odd", HeaderValue::from_bytes(&[0xff, 0x41]).unwrap());
        let md = request_metadata(&h);
        assert_eq!(
            md,
            vec![
                ("content-type".into(), vec!["application/grpc".into()]),
                ("multi".into(), vec!["1".into(), "2".into()]),
                ("trace-bin".into(), vec!["AAEC".into()]),
                ("viam-sid".into(), vec!["abc".into()]),
            ]
        );
    }

    #[test]
    fn trailers_carry_status_percent_encoded_message_and_metadata() {
        let md: Metadata = vec![
            ("Opid".into(), vec!["a".into(), "b".into()]),
            ("grpc-status".into(), vec!["0".into()]),
            ("raw-bin".into(), vec!["\u{1}\u{2}".into()]),
            ("bad key".into(), vec!["x".into()]),
            ("text".into(), vec!["line\nbreak".into()]),
        ];
        let t = status_headers(5, "no resource \"x\" — 100%", &md);
        assert_eq!(t["grpc-status"], "5");
        let message = t["grpc-message"].to_str().unwrap();
        assert!(
            !message.contains(' ') && message.contains("%22"),
            "{message}"
        );
        let status = tonic::Status::from_header_map(&t).unwrap();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "no resource \"x\" — 100%");
        let opids: Vec<_> = t.get_all("opid").iter().collect();
        assert_eq!(opids, ["a", "b"]);
        assert_eq!(t["raw-bin"], "AQI");
        assert!(t.get("text").is_none());
        assert_eq!(t.get_all("grpc-status").iter().count(), 1);
        let ok = status_headers(0, "", &Vec::new());
        assert_eq!(ok["grpc-status"], "0");
        assert!(ok.get("grpc-message").is_none());
        let unknown_code = status_headers(99, "odd", &Vec::new());
        assert_eq!(
            tonic::Status::from_header_map(&unknown_code)
                .unwrap()
                .code(),
            tonic::Code::Unknown
        );
    }

    #[test]
    fn prefixes_are_big_endian_lengths() {
        assert_eq!(&message_prefix(0)[..], [0, 0, 0, 0, 0]);
        assert_eq!(&message_prefix(0x0102_0304)[..], [0, 1, 2, 3, 4]);
    }
}
