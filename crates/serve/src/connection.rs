//! Serving connections: the accept loop with its connection limit, and one connection's life —
//! negotiation, HTTP/2 or HTTP/1.1 through the one stack, idle and shutdown closes — or, past
//! the limit, a clear refusal.
//!
//! Limits are explicit: past `max_connections`, a new connection is answered (gRPC
//! `RESOURCE_EXHAUSTED`, or HTTP 503) and closed, never silently dropped. HTTP/2 keepalive
//! pings find dead (half-open) peers; a connection with no call in flight for `idle_timeout` is
//! closed, so a flood of idle connections cannot hold the slots of legitimate clients for
//! longer than that.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
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

use crate::idle::{Activity, CallActivity, TrackedBody, TrackedResponse};
use crate::negotiate::{Protocol, negotiate};
use crate::{ConnectionHook, ConnectionOptions, Opened, Stack};
use tether_rpc::context::{PeerInfo, PeerKind};
use tether_rpc::sync::lock;

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

/// How long a connection must have been idle to be closed for a newcomer when the table is
/// full: long enough that a client between two calls keeps its connection.
const EVICTABLE_AFTER: Duration = Duration::from_secs(2);

/// How long a newcomer waits for the slot of the connection closed for it.
const EVICTION_WAIT: Duration = Duration::from_secs(2);

/// One open connection, as the table knows it.
struct Entry {
    key: IpAddr,
    activity: Arc<Activity>,
    evict: CancellationToken,
}

/// The open connections: how many each address holds, and which one has done nothing for
/// the longest (to make room for a newcomer when every slot is taken).
#[derive(Default)]
struct Table {
    next: u64,
    entries: HashMap<u64, Entry>,
}

impl Table {
    fn count(&self, key: IpAddr) -> usize {
        self.entries.values().filter(|e| e.key == key).count()
    }

    fn add(&mut self, key: IpAddr, activity: Arc<Activity>, evict: CancellationToken) -> u64 {
        self.next += 1;
        self.entries.insert(
            self.next,
            Entry {
                key,
                activity,
                evict,
            },
        );
        self.next
    }

    /// Asks the connection that has been idle longest (at least [`EVICTABLE_AFTER`]) to close;
    /// whether there was one.
    fn evict_most_idle(&mut self) -> bool {
        let victim = self
            .entries
            .values()
            .filter(|e| !e.evict.is_cancelled())
            .filter_map(|e| Some((e.activity.quiet()?, e)))
            .filter(|(quiet, _)| *quiet >= EVICTABLE_AFTER)
            .max_by_key(|(quiet, _)| *quiet);
        match victim {
            Some((quiet, e)) => {
                tracing::info!(
                    ?quiet,
                    "connection table full; closing the longest-idle connection for a newcomer"
                );
                e.evict.cancel();
                true
            }
            None => false,
        }
    }
}

/// Removes a connection from the table when it ends.
struct Registered {
    table: Arc<Mutex<Table>>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.table).entries.remove(&self.id);
    }
}

/// Accepts on every listener until `stop`, serving each connection on `tracker` through
/// `service`, with what `hook` adds to each connection.
pub fn accept_all<S: Stack>(
    listeners: Vec<TcpListener>,
    service: S,
    options: ConnectionOptions,
    hook: Arc<dyn ConnectionHook>,
    stop: &CancellationToken,
    tracker: &TaskTracker,
) -> Arc<ConnectionOptions> {
    let options = Arc::new(options);
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
    let table = Arc::new(Mutex::new(Table::default()));

    for listener in listeners {
        let (service, options, slots, rejecting, stop, conns, table, hook) = (
            service.clone(),
            options.clone(),
            slots.clone(),
            rejecting.clone(),
            stop.clone(),
            tracker.clone(),
            table.clone(),
            hook.clone(),
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
                let key = tether_rpc::context::address_key(peer.ip());
                let per_address = options.max_connections_per_address;
                if lock(&table).count(key) >= per_address {
                    let message = format!(
                        "connection limit reached for your address: this machine serves at \
                         most {per_address} connections from one address at once; close idle \
                         connections"
                    );
                    refuse(&conns, &rejecting, &options, stream, peer, message);
                    continue;
                }
                let permit = slots.clone().try_acquire_owned().ok();
                let (service, options, stop, slots, table, rejecting, tracker, hook) = (
                    service.clone(),
                    options.clone(),
                    stop.clone(),
                    slots.clone(),
                    table.clone(),
                    rejecting.clone(),
                    conns.clone(),
                    hook.clone(),
                );
                let span = tracing::info_span!(
                    "connection",
                    %peer,
                    transport = tracing::field::Empty
                );
                conns.spawn(tracing::Instrument::instrument(
                    async move {
                        // Every slot taken: make room by closing the longest-idle connection
                        // (a stalled or silent one), and take its slot once it is gone.
                        let permit = match permit {
                            Some(p) => p,
                            None => {
                                let evicted = lock(&table).evict_most_idle();
                                let freed = if evicted {
                                    tokio::time::timeout(EVICTION_WAIT, slots.acquire_owned())
                                        .await
                                        .ok()
                                        .and_then(Result::ok)
                                } else {
                                    None
                                };
                                match freed {
                                    Some(p) => p,
                                    None => {
                                        let max = options.max_connections;
                                        tracing::warn!(%peer, max, "connection limit reached; refusing connection");
                                        let message = format!(
                                            "connection limit reached: this machine serves at most \
                                             {max} connections at once; close idle connections or \
                                             try again later"
                                        );
                                        refuse(&tracker, &rejecting, &options, stream, peer, message);
                                        return;
                                    }
                                }
                            }
                        };
                        let activity = Arc::new(Activity::new());
                        let evict = CancellationToken::new();
                        let id = lock(&table).add(key, activity.clone(), evict.clone());
                        let _registered = Registered { table, id };
                        let connection = Connection {
                            stream,
                            peer,
                            activity,
                            evict,
                        };
                        serve_connection(connection, service, &options, &*hook, stop).await;
                        drop(permit);
                    },
                    span,
                ));
            }
        });
    }
    options
}

/// Answers an over-limit connection with `message` and closes it, on a task of its own while
/// the rejection queue has room; closes it at once otherwise.
fn refuse(
    tracker: &TaskTracker,
    rejecting: &Arc<Semaphore>,
    options: &Arc<ConnectionOptions>,
    stream: TcpStream,
    peer: SocketAddr,
    message: String,
) {
    match rejecting.clone().try_acquire_owned() {
        Ok(permit) => {
            tracing::warn!(%peer, "{message}");
            let options = options.clone();
            tracker.spawn(async move {
                reject_connection(stream, &options, message).await;
                drop(permit);
            });
        }
        Err(_) => {
            tracing::warn!(%peer, "connection refused and rejection queue full; closing connection");
        }
    }
}

/// One accepted connection, with what the table knows of it.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    activity: Arc<Activity>,
    /// Cancelled to close it to make room for a newcomer.
    evict: CancellationToken,
}

async fn serve_connection<S>(
    connection: Connection,
    service: S,
    options: &ConnectionOptions,
    hook: &dyn ConnectionHook,
    stop: CancellationToken,
) where
    S: Stack,
{
    let Connection {
        stream,
        peer,
        activity,
        evict,
    } = connection;
    let local = stream.local_addr().ok();
    // Set up by the accept loop: every log line of the connection, and of each call on it,
    // says whose connection it is.
    let span = tracing::Span::current();
    let negotiated = tokio::select! {
        n = negotiate(stream, options.tls.as_ref(), options.header_read_timeout) => n,
        _ = evict.cancelled() => Err("closed to make room for a newcomer before its first request".into()),
    };
    let (io, protocol) = match negotiated {
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
    // What the server keeps for the connection, released on every way out of here.
    let scope: Arc<dyn crate::ConnectionScope> = Arc::from(hook.opened(&Opened {
        protocol,
        tls: options.tls.is_some(),
    }));
    let info = PeerInfo {
        kind: PeerKind::Grpc,
        remote: Some(peer),
        local,
    };
    let tracked = activity.clone();
    let request_deadline = options.request_timeout;
    let call_span = span.clone();
    let plaintext = options.tls.is_none();
    // Every request learns its peer, and counts as in flight until its response body is done.
    let service = tower::service_fn(move |req: Request<Incoming>| {
        let call_activity = CallActivity::new(&tracked);
        // A unary (or server-streaming) call's request is one message: it must arrive whole in
        // time. Client-streaming calls may keep their request open.
        let path = req.uri().path();
        let streaming =
            tether_proto::is_client_streaming(path) || path.starts_with("/grpc.reflection.");
        let deadline = (!streaming).then_some(request_deadline);
        let mut req =
            req.map(|body| Body::new(TrackedBody::new(body, call_activity.clone(), deadline)));
        req.extensions_mut().insert(info.clone());
        scope.prepare(req.extensions_mut());
        if plaintext {
            req.extensions_mut().insert(crate::Plaintext);
        }
        let call = {
            let _entered = call_span.enter();
            service.clone().oneshot(req)
        };
        tracing::Instrument::instrument(
            async move {
                let response = call.await?;
                Ok::<_, Infallible>(
                    response.map(|body| Body::new(TrackedResponse::new(body, call_activity))),
                )
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
                _ = evict.cancelled() => {
                    tracing::debug!(%peer, "closing an idle connection to make room for a newcomer");
                    conn.as_mut().graceful_shutdown();
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
async fn reject_connection(stream: TcpStream, options: &ConnectionOptions, message: String) {
    let timeout = options.header_read_timeout.min(REJECT_LINGER);
    let Ok((io, protocol)) = negotiate(stream, options.tls.as_ref(), timeout).await else {
        return;
    };
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
