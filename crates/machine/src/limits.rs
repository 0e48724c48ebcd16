//! The request message size limit (32 MiB, as viam-server's).
//!
//! The [`MessageLimitLayer`] reads the 5-byte gRPC frame prefixes of a request body as it
//! streams through and fails the body with `RESOURCE_EXHAUSTED` as soon as a message declares
//! a length over the limit — before any of it is buffered. tonic turns that body error into the
//! call's status, so the client sees the same code viam-server's Go stack gives.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::Request;
use http_body::{Body, Frame};

/// Viam's limit on one received message: 1 << 25 bytes, the same on every transport.
pub const MAX_MESSAGE_BYTES: usize = tether_rpc::framing::MAX_MESSAGE_BYTES;

/// Incremental parser of gRPC length prefixes.
#[derive(Debug, Clone)]
pub struct FrameLimit {
    limit: usize,
    header: [u8; 5],
    have: usize,
    remaining: usize,
}

impl FrameLimit {
    /// A parser that refuses messages longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            header: [0; 5],
            have: 0,
            remaining: 0,
        }
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
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]) as usize;
                if len > self.limit {
                    return Err(len);
                }
                self.remaining = len;
                self.have = 0;
            }
        }
        Ok(())
    }
}

/// A request body checked by a [`FrameLimit`].
pub struct LimitedBody<B> {
    inner: B,
    limit: FrameLimit,
    failed: bool,
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let frame = match std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            let limit = self.limit.limit;
            if let Err(len) = self.limit.feed(data.chunk()) {
                self.failed = true;
                let status = tonic::Status::resource_exhausted(format!(
                    "received message larger than max ({len} vs. {limit})"
                ));
                return Poll::Ready(Some(Err(Box::new(status))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }
}

/// The tower layer applying [`MAX_MESSAGE_BYTES`] to gRPC request bodies.
#[derive(Clone, Copy)]
pub struct MessageLimitLayer {
    limit: usize,
}

impl MessageLimitLayer {
    /// A layer with the given limit.
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl<S> tower::Layer<S> for MessageLimitLayer {
    type Service = MessageLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageLimitService {
            inner,
            limit: self.limit,
        }
    }
}

/// See [`MessageLimitLayer`].
#[derive(Clone)]
pub struct MessageLimitService<S> {
    inner: S,
    limit: usize,
}

impl<S, B> tower::Service<Request<B>> for MessageLimitService<S>
where
    S: tower::Service<Request<LimitedBody<B>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let limit = FrameLimit::new(self.limit);
        self.inner.call(req.map(|inner| LimitedBody {
            inner,
            limit,
            failed: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: u32) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&len.to_be_bytes());
        v
    }

    #[test]
    fn accepts_messages_up_to_the_limit_split_anywhere() {
        let mut stream = frame(3);
        stream.extend_from_slice(b"abc");
        stream.extend(frame(10));
        stream.extend_from_slice(&[7; 10]);
        for split in 0..stream.len() {
            let mut p = FrameLimit::new(10);
            p.feed(&stream[..split]).unwrap();
            p.feed(&stream[split..]).unwrap();
        }
    }

    #[test]
    fn refuses_an_oversize_prefix_even_split_byte_by_byte() {
        let mut stream = frame(2);
        stream.extend_from_slice(b"ok");
        stream.extend(frame(11));
        let mut p = FrameLimit::new(10);
        let mut result = Ok(());
        for b in &stream {
            result = result.and(p.feed(&[*b]));
        }
        assert_eq!(result, Err(11));
    }
}
