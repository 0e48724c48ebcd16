//! gRPC's length-prefixed messages, as HTTP/2 bodies carry them: each message is a 5-byte
//! prefix (a compression flag, then the big-endian length) and the message, and body frames
//! cut that stream anywhere. The data channel carries bare messages, so both ends of it
//! convert: the machine splits response bodies and prefixes request messages, the client the
//! other way round.

use bytes::{Buf, Bytes, BytesMut};

/// Why a body cannot be split into messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitError {
    /// A compressed message (the channel carries uncompressed protobuf only).
    Compressed,
    /// A message longer than the limit, as declared by its prefix.
    TooLarge(usize),
    /// The body ended in the middle of a message.
    Truncated,
}

/// Splits a gRPC body — messages with 5-byte prefixes (flag, big-endian length), cut
/// into body frames anywhere — back into whole messages without their prefixes.
#[derive(Debug)]
pub struct MessageSplitter {
    buf: BytesMut,
    /// Bytes of chunks not yet copied into `buf`: a chunk that holds whole messages is sliced,
    /// not copied.
    chunk: Bytes,
    max: usize,
}

impl MessageSplitter {
    pub fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            chunk: Bytes::new(),
            max,
        }
    }

    /// Adds one body frame's data. Call [`Self::next_message`] until it returns `None` before
    /// pushing more.
    pub fn push(&mut self, data: Bytes) {
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
    pub fn next_message(&mut self) -> Result<Option<Bytes>, SplitError> {
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
    pub fn finish(&self) -> Result<(), SplitError> {
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
pub fn message_prefix(len: usize) -> Bytes {
    let mut prefix = [0u8; 5];
    prefix[1..].copy_from_slice(&(len as u32).to_be_bytes());
    Bytes::copy_from_slice(&prefix)
}

/// Headers of the HTTP/2 hop or of gRPC's own framing rather than of the call: pseudo-headers,
/// connection-level headers, `te`, `content-length`, and `grpc-timeout` (the data channel
/// carries the deadline in a field of its own). Never call metadata on the data channel.
pub fn is_transport_header(name: &str) -> bool {
    name.starts_with(':')
        || matches!(
            name,
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
                | "upgrade"
                | "te"
                | "host"
                | "content-length"
                | "grpc-timeout"
        )
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
        let mut s = MessageSplitter::new(4);
        s.push(Bytes::from(framed(&[b"1234"])));
        assert_eq!(drain(&mut s), [&b"1234"[..]]);
    }

    #[test]
    fn prefixes_are_big_endian_lengths() {
        assert_eq!(&message_prefix(0)[..], [0, 0, 0, 0, 0]);
        assert_eq!(&message_prefix(0x0102_0304)[..], [0, 1, 2, 3, 4]);
    }
}
