//! Browsers: gRPC-web and CORS, in front of the one stack.
//!
//! A browser cannot speak gRPC (it gives a page no HTTP/2 trailers), so a web app speaks
//! gRPC-web: the same length-prefixed messages, with the status and trailers sent as a last
//! frame of the body (flag `0x80`), over HTTP/1.1 or HTTP/2. [`WebLayer`] is the outermost
//! layer on TCP connections:
//!
//! - a CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered
//!   here and never reaches a gRPC service;
//! - a gRPC-web request (`application/grpc-web`, `+proto`, `-text`) is translated by tonic-web
//!   into a gRPC request for the same stack (origin checks, limits, deadlines, auth,
//!   operations, sessions), and its response back;
//! - everything else (native gRPC, the readiness probe) goes to the stack untouched.
//!
//! Allowed origins: any by default, with the request's `Origin` echoed and credentials
//! allowed (the SDK's signaling fetches use `credentials: "include"`). That lets any page
//! call the machine from a browser on the same network, which is no more than any program on
//! that network can do: with authentication on, a call needs the API key's token, which a
//! browser never attaches by itself (it is a bearer token, not a cookie). An open machine is
//! open to every page as to every host. `network.cors.allowed_origins` narrows it to a list.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::Stack;

/// Request headers a gRPC-web client sends (the TypeScript SDK's set).
pub const ALLOWED_REQUEST_HEADERS: &[&str] = &[
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "authorization",
    "rpc-host",
    "viam-sid",
    "viam_client",
    "grpc-timeout",
];

/// Response headers a page may read: the status and the ones Viam's SDKs read.
pub const EXPOSED_RESPONSE_HEADERS: &[&str] = &[
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "opid",
    "content-type",
];

/// Which origins a page may call from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any origin (echoed back).
    #[default]
    Any,
    /// Only these (`scheme://host[:port]`, as a browser sends `Origin`).
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Whether `origin` is an origin as a browser sends it: `scheme://host[:port]`, http or
    /// https.
    pub fn is_origin(origin: &str) -> bool {
        let rest = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        rest.is_some_and(|r| {
            !r.is_empty() && !r.contains('/') && http::HeaderValue::from_str(origin).is_ok()
        })
    }
}

/// The CORS layer for `allowed`.
fn cors(allowed: &AllowedOrigins) -> CorsLayer {
    let origin = match allowed {
        AllowedOrigins::Any => AllowOrigin::mirror_request(),
        AllowedOrigins::List(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        ),
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_credentials(true)
        .allow_methods([Method::POST, Method::GET, Method::OPTIONS])
        .allow_headers(
            ALLOWED_REQUEST_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect::<Vec<_>>(),
        )
        .expose_headers(
            EXPOSED_RESPONSE_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect::<Vec<_>>(),
        )
        .max_age(std::time::Duration::from_secs(600))
}

/// Whether a request is gRPC-web (by its content type). Every TCP request asks: no
/// allocation.
pub fn is_grpc_web(req: &Request<Body>) -> bool {
    const TYPES: [&[u8]; 4] = [
        b"application/grpc-web",
        b"application/grpc-web+proto",
        b"application/grpc-web-text",
        b"application/grpc-web-text+proto",
    ];
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| crate::media_type(v.as_bytes()))
        .is_some_and(|v| TYPES.iter().any(|t| v.eq_ignore_ascii_case(t)))
}

/// The stack behind tonic-web: its bodies are tonic's, the stack's are axum's.
#[derive(Clone)]
struct Adapted<S>(S);

impl<S: Stack> tower::Service<Request<tonic::body::Body>> for Adapted<S> {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move {
            let Ok(response) = inner.oneshot(req.map(Body::new)).await;
            Ok(response.map(tonic::body::Body::new))
        })
    }
}

/// gRPC-web requests through tonic-web, everything else straight to the stack.
#[derive(Clone)]
pub struct GrpcWeb<S> {
    stack: S,
    web: tonic_web::GrpcWebService<Adapted<S>>,
}

impl<S: Stack> tower::Service<Request<Body>> for GrpcWeb<S> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if is_grpc_web(&req) {
            let web = self.web.clone();
            Box::pin(async move {
                let Ok(response) = web.oneshot(req).await;
                Ok(response.map(Body::new))
            })
        } else {
            let stack = self.stack.clone();
            Box::pin(stack.oneshot(req))
        }
    }
}

/// The browser-facing layers: CORS outermost, then gRPC-web.
#[derive(Clone, Debug, Default)]
pub struct WebLayer {
    origins: AllowedOrigins,
}

impl WebLayer {
    /// Browsers from `origins` may call.
    pub fn new(origins: AllowedOrigins) -> Self {
        Self { origins }
    }

    /// Wraps `stack`.
    pub fn wrap<S: Stack>(&self, stack: S) -> tower_http::cors::Cors<GrpcWeb<S>> {
        use tower::Layer;
        let web = tonic_web::GrpcWebLayer::new().layer(Adapted(stack.clone()));
        cors(&self.origins).layer(GrpcWeb { stack, web })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_type(value: &str) -> Request<Body> {
        Request::builder()
            .header(http::header::CONTENT_TYPE, value)
            .body(Body::empty())
            .unwrap()
    }

    #[test]
    fn grpc_web_is_told_by_its_content_type() {
        for web in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "Application/gRPC-Web-Text",
            "application/grpc-web-text+proto; charset=utf-8",
        ] {
            assert!(is_grpc_web(&with_type(web)), "{web}");
        }
        for other in [
            "application/grpc",
            "application/grpc+proto",
            "text/plain",
            "",
        ] {
            assert!(!is_grpc_web(&with_type(other)), "{other}");
        }
    }
}
