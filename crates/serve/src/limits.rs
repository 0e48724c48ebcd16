//! The request message size limit (32 MiB, as viam-server's).
//!
//! The [`MessageLimitLayer`] reads the 5-byte gRPC frame prefixes of a request body as it
//! streams through (with tether-rpc's one prefix parser) and fails the body with `RESOURCE_EXHAUSTED` as soon as a message declares
//! a length over the limit — before any of it is buffered. tonic turns that body error into the
//! call's status, so the client sees the same code viam-server's Go stack gives.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::Request;
use http_body::{Body, Frame};
use tether_rpc::grpc::LengthLimit;

/// Viam's limit on one received message: 1 << 25 bytes, the same on every transport.
pub const MAX_MESSAGE_BYTES: usize = tether_rpc::framing::MAX_MESSAGE_BYTES;

/// A request body checked by a [`LengthLimit`].
pub struct LimitedBody<B> {
    inner: B,
    limit: LengthLimit,
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
            let limit = self.limit.max();
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

/// The tower layer applying [`MAX_MESSAGE_BYTES`] (or a service's own, smaller limit) to gRPC
/// request bodies.
#[derive(Clone, Copy)]
pub struct MessageLimitLayer {
    limit: usize,
    service: Option<(&'static str, usize)>,
}

impl MessageLimitLayer {
    /// A layer with the given limit.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            service: None,
        }
    }

    /// The same layer with a smaller limit for the calls of one gRPC service (signaling
    /// carries an SDP or a candidate: a small one).
    pub fn with_service_limit(mut self, service: &'static str, limit: usize) -> Self {
        self.service = Some((service, limit.min(self.limit)));
        self
    }
}

impl<S> tower::Layer<S> for MessageLimitLayer {
    type Service = MessageLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageLimitService {
            inner,
            limit: *self,
        }
    }
}

impl MessageLimitLayer {
    /// The limit of one request message on `path`.
    fn limit_for(&self, path: &str) -> usize {
        let service = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map(|(s, _)| s);
        match self.service {
            Some((name, limit)) if service == Some(name) => limit,
            _ => self.limit,
        }
    }
}

/// See [`MessageLimitLayer`].
#[derive(Clone)]
pub struct MessageLimitService<S> {
    inner: S,
    limit: MessageLimitLayer,
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
        let limit = LengthLimit::new(self.limit.limit_for(req.uri().path()));
        self.inner.call(req.map(|inner| LimitedBody {
            inner,
            limit,
            failed: false,
        }))
    }
}
