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

/// The length of gRPC's message prefix: a compression flag and a big-endian `u32` length.
pub const PREFIX_LEN: usize = 5;

/// What a message's 5-byte prefix says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// The message is compressed (flag 1).
    pub compressed: bool,
    /// The message's length in bytes, not counting the prefix.
    pub len: usize,
}

impl Prefix {
    /// Reads the prefix at the start of `buf`; `None` if fewer than 5 bytes are there. This is
    /// the one parser of gRPC's length prefix: the splitter here, the machine's message limit
    /// and its session layer all read prefixes with it.
    pub fn parse(buf: &[u8]) -> Option<Prefix> {
        let bytes: [u8; PREFIX_LEN] = buf.get(..PREFIX_LEN)?.try_into().ok()?;
        Some(Prefix {
            compressed: bytes[0] != 0,
            len: u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize,
        })
    }
}

/// The length a complete prefix declares, or `None` if fewer than 5 bytes are there.
fn header(buf: &[u8], max: usize) -> Result<Option<usize>, SplitError> {
    let Some(prefix) = Prefix::parse(buf) else {
        return Ok(None);
    };
    if prefix.compressed {
        return Err(SplitError::Compressed);
    }
    if prefix.len > max {
        return Err(SplitError::TooLarge(prefix.len));
    }
    Ok(Some(prefix.len))
}

/// Watches a gRPC body go by, chunk by chunk, without keeping it: reads each message's prefix
/// and fails as soon as one declares a length over the limit, before any of it is buffered.
#[derive(Debug, Clone)]
pub struct LengthLimit {
    limit: usize,
    prefix: [u8; PREFIX_LEN],
    have: usize,
    remaining: usize,
}

impl LengthLimit {
    /// A watcher that refuses messages longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            prefix: [0; PREFIX_LEN],
            have: 0,
            remaining: 0,
        }
    }

    /// The limit, in bytes.
    pub fn max(&self) -> usize {
        self.limit
    }

    /// Feeds body bytes; fails with the declared length of the first oversize message.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), usize> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                data = &data[n..];
                continue;
            }
            let n = (PREFIX_LEN - self.have).min(data.len());
            self.prefix[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if let Some(prefix) = Prefix::parse(&self.prefix[..self.have]) {
                if prefix.len > self.limit {
                    return Err(prefix.len);
                }
                self.remaining = prefix.len;
                self.have = 0;
            }
        }
        Ok(())
    }
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

    // The message limit the machine enforces on every request body.

    fn prefixed(len: u32) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&len.to_be_bytes());
        v
    }

    #[test]
    fn accepts_messages_up_to_the_limit_split_anywhere() {
        let mut stream = prefixed(3);
        stream.extend_from_slice(b"abc");
        stream.extend(prefixed(10));
        stream.extend_from_slice(&[7; 10]);
        for split in 0..stream.len() {
            let mut p = LengthLimit::new(10);
            p.feed(&stream[..split]).unwrap();
            p.feed(&stream[split..]).unwrap();
        }
    }

    #[test]
    fn refuses_an_oversize_prefix_even_split_byte_by_byte() {
        let mut stream = prefixed(2);
        stream.extend_from_slice(b"ok");
        stream.extend(prefixed(11));
        let mut p = LengthLimit::new(10);
        let mut result = Ok(());
        for b in &stream {
            result = result.and(p.feed(&[*b]));
        }
        assert_eq!(result, Err(11));
    }
}
