//! Who may call: requests a web page can forge are refused before they reach a service.
//!
//! A page on any site can make a browser send a "simple" cross-origin POST — `fetch(url,
//! {mode: "no-cors"})` with `Content-Type: text/plain` and a gRPC frame as its body — without
//! a CORS preflight. On an open machine that drove a motor. So every call to a gRPC path must
//! carry a gRPC content type (`application/grpc`, `application/grpc+proto`, and the gRPC-web
//! ones), which no simple request can: anything else is `415 Unsupported Media Type`.
//!
//! DNS rebinding points an attacker's name at the machine's address, making the browser treat
//! the machine as the attacker's own origin. Its requests then carry the attacker's name in
//! `Host`; over plaintext HTTP/1.1 (what a browser speaks to a plaintext machine) `Host` must
//! name this machine — its configured names, `localhost`, or an address it listens on — or
//! the request is `421 Misdirected Request`. (Over TLS the certificate check does that job;
//! gRPC clients speak HTTP/2.) The readiness probe (`GET /`) and the machine's page's static
//! files answer any `Host`: they say nothing about the machine. Its `/status` and `/metrics` do
//! not.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use http::{Request, Response, StatusCode, Version};
use tether_signal::Hosts;

use crate::sessions::PeerInfo;

pub use tether_serve::{Plaintext, is_grpc_content_type, media_type};

fn refuse(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(format!("{message}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The tower layer refusing forged requests.
#[derive(Clone)]
pub struct OriginLayer {
    hosts: Arc<Hosts>,
}

impl OriginLayer {
    /// A layer accepting `Host` values that name this machine (`hosts`).
    pub fn new(hosts: Arc<Hosts>) -> Self {
        Self { hosts }
    }
}

impl<S> tower::Layer<S> for OriginLayer {
    type Service = OriginService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OriginService {
            inner,
            hosts: self.hosts.clone(),
        }
    }
}

/// See [`OriginLayer`].
#[derive(Clone)]
pub struct OriginService<S> {
    inner: S,
    hosts: Arc<Hosts>,
}

impl<S, B> tower::Service<Request<B>> for OriginService<S>
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
        // The readiness probe answers any Host (probes send an address or nothing useful);
        // it reveals nothing, nor do the page's static files. What the page then fetches (its
        // status, the metrics) must be asked of this machine by one of its names.
        let probe = req.method() == http::Method::GET && crate::page::is_static(req.uri().path());
        if !probe
            && req.version() == Version::HTTP_11
            && req.extensions().get::<Plaintext>().is_some()
        {
            let local = req.extensions().get::<PeerInfo>().and_then(|p| p.local);
            let host = req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok());
            let known = host.is_some_and(|h| {
                self.hosts.accepts(h, local)
                    || local
                        .is_some_and(|l| self.hosts.accepts(&format!("{h}:{}", l.port()), Some(l)))
            });
            if !known {
                return Box::pin(async {
                    Ok(refuse(
                        StatusCode::MISDIRECTED_REQUEST,
                        "this machine does not answer to that Host: address it by one of its \
                         names or addresses",
                    ))
                });
            }
        }
        if !crate::page::is_plain_http(req.uri().path()) {
            let grpc = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| is_grpc_content_type(v.as_bytes()));
            if !grpc {
                return Box::pin(async {
                    Ok(refuse(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "gRPC calls need Content-Type: application/grpc (or a gRPC-web type)",
                    ))
                });
            }
        }
        Box::pin(inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        for ok in [
            &b"application/grpc"[..],
            b"application/grpc+proto",
            b"Application/GRPC; charset=utf-8",
            b"application/grpc-web",
            b"application/grpc-web+proto",
            b"application/grpc-web-text",
        ] {
            assert!(is_grpc_content_type(ok), "{ok:?}");
        }
        for bad in [
            &b"text/plain"[..],
            b"application/grpcx",
            b"",
            b"application/x-www-form-urlencoded",
            b"multipart/form-data",
            b"application/json",
        ] {
            assert!(!is_grpc_content_type(bad), "{bad:?}");
        }
    }
}
