//! Call deadlines on direct gRPC: the `grpc-timeout` header, enforced.
//!
//! A caller that says how long it will wait (`grpc-timeout: 300m`) gets `DEADLINE_EXCEEDED`
//! when the call outlives it, and the handler is dropped — so a blocking move it started
//! halts, as on every other cancellation. A streaming answer is cut at the deadline with the
//! same status in its trailers. A malformed value (`-1S`, `1H1S`, `garbage`, more than eight
//! digits) is refused with `INVALID_ARGUMENT` before anything runs, as viam-server's gRPC stack
//! does. The WebRTC path carries the deadline in its own field and enforces it in its dispatch,
//! so this layer sees no header there.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use tether_rpc::framing::parse_grpc_timeout;
use tether_rpc::vocabulary::GRPC_TIMEOUT_HEADER;
use tokio::time::{Instant, Sleep};

/// The message of a call ended by its deadline (grpc-go's text, which clients show).
pub const DEADLINE_MESSAGE: &str = "context deadline exceeded";

/// The deadline a request asks for: `Ok(None)` without a header, `Err` for a malformed one.
pub fn requested(headers: &HeaderMap) -> Result<Option<Duration>, tonic::Status> {
    let Some(value) = headers.get(GRPC_TIMEOUT_HEADER) else {
        return Ok(None);
    };
    let malformed = || {
        tonic::Status::invalid_argument(format!(
            "malformed grpc-timeout {:?}: expected 1-8 digits and a unit (H, M, S, m, u, n)",
            String::from_utf8_lossy(&value.as_bytes()[..value.len().min(32)])
        ))
    };
    let text = value.to_str().map_err(|_| malformed())?;
    parse_grpc_timeout(text).map(Some).ok_or_else(malformed)
}

/// The tower layer enforcing `grpc-timeout`.
#[derive(Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService { inner }
    }
}

/// See [`DeadlineLayer`].
#[derive(Clone)]
pub struct DeadlineService<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for DeadlineService<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let mut inner = self.inner.clone();
        std::mem::swap(&mut self.inner, &mut inner);
        let timeout = match requested(req.headers()) {
            Ok(None) => return Box::pin(inner.call(req)),
            Ok(Some(t)) => t,
            Err(status) => return Box::pin(async move { Ok(status.into_http::<Body>()) }),
        };
        let deadline = Instant::now() + timeout;
        let call = inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout_at(deadline, call).await {
                Ok(response) => Ok(response?.map(|body| {
                    Body::new(DeadlineBody {
                        inner: body,
                        sleep: Box::pin(tokio::time::sleep_until(deadline)),
                        done: false,
                    })
                })),
                Err(_) => {
                    Ok(tonic::Status::deadline_exceeded(DEADLINE_MESSAGE).into_http::<Body>())
                }
            }
        })
    }
}

/// A response body cut at the call's deadline, ending with `DEADLINE_EXCEEDED` trailers.
struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    done: bool,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            if frame.is_none() {
                self.done = true;
            }
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.done = true;
            let mut trailers = HeaderMap::new();
            let _ = tonic::Status::deadline_exceeded(DEADLINE_MESSAGE).add_header(&mut trailers);
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(GRPC_TIMEOUT_HEADER, HeaderValue::from_bytes(value).unwrap());
        h
    }

    #[test]
    fn malformed_timeouts_are_refused_and_good_ones_read() {
        assert_eq!(requested(&HeaderMap::new()).unwrap(), None);
        assert_eq!(
            requested(&with(b"300m")).unwrap(),
            Some(Duration::from_millis(300))
        );
        assert_eq!(requested(&with(b"0n")).unwrap(), Some(Duration::ZERO));
        for bad in [
            &b"-1S"[..],
            b"garbage",
            b"1H1S",
            b"123456789S",
            b"\xef\xbf\xbc",
        ] {
            let e = requested(&with(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
    }
}
