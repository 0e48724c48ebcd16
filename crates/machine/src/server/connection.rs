//! Serving connections: the accept loop with its connection limit, and one connection's life —
//! negotiation, HTTP/2 or HTTP/1.1 through the one stack, idle and shutdown closes — or, past
//! the limit, a clear refusal.
//!
//! Limits are explicit: past `max_connections`, a new connection is answered (gRPC
//! `RESOURCE_EXHAUSTED`, or HTTP 503) and closed, never silently dropped. HTTP/2 keepalive
//! pings find dead (half-open) peers; a connection with no call in flight for `idle_timeout` is
//! closed, so a flood of idle connections cannot hold the slots of legitimate clients for
//! longer than that.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::idle::Activity;
use super::negotiate::{Protocol, negotiate};
use super::{ServerOptions, Stack};
use crate::operations::Holding;
use crate::sessions::{PeerInfo, PeerKind};

/// HTTP/2 flow-control window of a connection (2 MiB).
const CONNECTION_WINDOW: u32 = 2 << 20;

/// HTTP/2 flow-control window of a stream (1 MiB).
const STREAM_WINDOW: u32 = 1 << 20;

/// How long a connection closed for idleness gets to finish its goodbye (GOAWAY, ping).
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// How many over-limit connections may be in the middle of being told so at once; beyond
/// this they are closed without an answer (and logged).
const MAX_REJECTING: usize = 64;

/// How long an over-limit connection is kept to deliver its rejection.
const REJECT_LINGER: Duration = Duration::from_secs(3);

/// Accepts on every listener until `stop`, serving each connection on `tracker`.
pub(crate) fn accept_all<S: Stack>(
    listeners: Vec<TcpListener>,
    service: S,
    options: ServerOptions,
    stop: &CancellationToken,
    tracker: &TaskTracker,
) -> Arc<ServerOptions> {
    let options = Arc::new(options);
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));

    for listener in listeners {
        let (service, options, slots, rejecting, stop, conns) = (
            service.clone(),
            options.clone(),
            slots.clone(),
            rejecting.clone(),
            stop.clone(),
            tracker.clone(),
        );
        tracker.spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = stop.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let (service, options, stop) =
                            (service.clone(), options.clone(), stop.clone());
                        let span = tracing::info_span!(
                            "connection",
                            %peer,
                            transport = tracing::field::Empty
                        );
                        conns.spawn(tracing::Instrument::instrument(
                            async move {
                                serve_connection(stream, peer, service, &options, stop).await;
                                drop(permit);
                            },
                            span,
                        ));
                    }
                    Err(_) => match rejecting.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let (options, max) = (options.clone(), options.max_connections);
                            tracing::warn!(%peer, max, "connection limit reached; refusing connection");
                            conns.spawn(async move {
                                reject_connection(stream, &options, max).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            tracing::warn!(%peer, "connection limit reached and rejection queue full; closing connection");
                        }
                    },
                }
            }
        });
    }
    options
}

async fn serve_connection<S>(
    stream: TcpStream,
    peer: SocketAddr,
    service: S,
    options: &ServerOptions,
    stop: CancellationToken,
) where
    S: Stack,
{
    let local = stream.local_addr().ok();
    // Set up by the accept loop: every log line of the connection, and of each call on it,
    // says whose connection it is.
    let span = tracing::Span::current();
    let (io, protocol) =
        match negotiate(stream, options.tls.as_ref(), options.header_read_timeout).await {
            Ok(negotiated) => negotiated,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "closing connection");
                return;
            }
        };
    span.record(
        "transport",
        match protocol {
            Protocol::Http2 => "h2",
            Protocol::Http1 => "http1",
        },
    );
    tracing::debug!(%peer, ?protocol, "connection");
    let info = PeerInfo {
        kind: PeerKind::Grpc,
        remote: Some(peer),
        local,
    };
    let activity = Arc::new(Activity::new());
    let tracked = activity.clone();
    let call_span = span.clone();
    let plaintext = options.tls.is_none();
    // Every request learns its peer, and counts as in flight until its response body is done.
    let service = tower::service_fn(move |req: Request<Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(info.clone());
        if plaintext {
            req.extensions_mut().insert(crate::origin::Plaintext);
        }
        let in_flight = tracked.begin();
        let call = {
            let _entered = call_span.enter();
            service.clone().oneshot(req)
        };
        tracing::Instrument::instrument(
            async move {
                let response = call.await?;
                Ok::<_, Infallible>(response.map(|body| Body::new(Holding::new(body, in_flight))))
            },
            call_span.clone(),
        )
    });
    let hyper_service = TowerToHyperService::new(service);
    let io = TokioIo::new(io);
    let idle = activity.idle_for(options.idle_timeout);
    tokio::pin!(idle);
    // Serves a connection until it ends, shutdown starts, or it has been idle too long. Both
    // protocols' connections have `graceful_shutdown`, but no trait in common.
    macro_rules! drive {
        ($conn:expr) => {{
            let conn = $conn;
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
                _ = &mut idle => {
                    tracing::debug!(%peer, timeout = ?options.idle_timeout, "closing idle connection");
                    conn.as_mut().graceful_shutdown();
                    // A peer that no longer answers would hold a graceful close open; bound it.
                    tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await.unwrap_or(Ok(()))
                }
            }
        }};
    }

    let result = match protocol {
        Protocol::Http2 => {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .keep_alive_interval(options.keepalive_interval)
                .keep_alive_timeout(options.keepalive_timeout)
                .max_concurrent_streams(options.max_concurrent_streams)
                // Explicit windows, not adaptive: h2's flood guard allows buffered small DATA
                // frames up to half the connection window, and a 64 KiB window (what adaptive
                // starts from) let a client pipelining ~130 small unary calls be disconnected
                // with ENHANCE_YOUR_CALM.
                .initial_connection_window_size(CONNECTION_WINDOW)
                .initial_stream_window_size(STREAM_WINDOW);
            drive!(builder.serve_connection(io, hyper_service))
        }
        Protocol::Http1 => {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(options.header_read_timeout)
                .keep_alive(true);
            drive!(builder.serve_connection(io, hyper_service))
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = ?e, "connection ended with an error");
    }
}

/// Answers every request on an over-limit connection with a clear error, then closes it.
async fn reject_connection(stream: TcpStream, options: &ServerOptions, max: usize) {
    let timeout = options.header_read_timeout.min(REJECT_LINGER);
    let Ok((io, protocol)) = negotiate(stream, options.tls.as_ref(), timeout).await else {
        return;
    };
    let message = format!(
        "connection limit reached: this machine serves at most {max} connections at once; \
         close idle connections or try again later"
    );
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let message = message.clone();
        async move {
            let grpc = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            let response = if grpc {
                tonic::Status::resource_exhausted(message).into_http::<Body>()
            } else {
                let mut r = Response::new(Body::from(message + "\n"));
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                r
            };
            Ok::<_, Infallible>(response)
        }
    });
    let io = TokioIo::new(io);
    let serve = async {
        match protocol {
            Protocol::Http2 => {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service)
                    .await;
            }
            Protocol::Http1 => {
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(io, service)
                    .await;
            }
        }
    };
    let _ = tokio::time::timeout(REJECT_LINGER, serve).await;
}
