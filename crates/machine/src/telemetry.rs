//! What the machine counts, for `/metrics` (Prometheus' text format, from
//! `prometheus-client`) and the machine's page: sessions and their expiries, how late each
//! stop came, heartbeats by the path they came on, calls by method and status code, and open
//! connections and WebRTC peers by transport.
//!
//! Labels come from closed sets only — method paths the machine serves (anything else is
//! `unknown`), gRPC code names, transport names — so no caller can grow the registry.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::sync::lock;

/// How many expiries the page lists.
pub const RECENT_EXPIRIES: usize = 20;

/// Why the machine stopped an actuator on its own.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, reason = "label values as Prometheus shows them")]
pub enum StopCause {
    /// The session that last commanded it expired.
    session_expiry,
    /// The connection that last commanded it without a session ended.
    connection_end,
}

impl StopCause {
    /// What the logs say the stop followed.
    pub fn describe(self) -> &'static str {
        match self {
            StopCause::session_expiry => "session expiry",
            StopCause::connection_end => "its connection ended",
        }
    }
}

/// How a session's liveness arrived.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types, reason = "label values as Prometheus shows them")]
pub enum HeartbeatVia {
    /// A `SendSessionHeartbeat` call.
    call,
    /// A heartbeat datagram on a WebRTC peer's heartbeat channel.
    webrtc_datagram,
    /// A heartbeat datagram over UDP.
    udp_datagram,
    /// A safety-monitored command with the session (it counts as a heartbeat).
    command,
}

/// A request extension on calls that a WebRTC heartbeat datagram stands for.
#[derive(Debug, Clone, Copy)]
pub struct FromDatagram;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: StopCause,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViaLabel {
    via: HeartbeatVia,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn stop_lateness_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// One session expiry, as the page lists it.
#[derive(Debug)]
pub struct ExpiryRecord {
    /// The session.
    pub session: String,
    /// Its owner.
    pub owner: String,
    /// Its transport and peer address, as last known.
    pub peer: String,
    /// When it expired, on the wall clock.
    pub expired_at: SystemTime,
    /// How long after its deadline the machine noticed.
    pub noticed_late: Duration,
    /// The actuators it stopped.
    pub stopped: Vec<String>,
    /// Once every stop returned: from the deadline to the last of them, and whether one
    /// failed or did not answer. `None` while they run, or with nothing to stop.
    stops: Mutex<Option<(Duration, bool)>>,
}

impl ExpiryRecord {
    /// Every stop returned, the last `late` after the deadline; `failed` if one failed.
    pub fn stops_returned(&self, late: Duration, failed: bool) {
        *lock(&self.stops) = Some((late, failed));
    }

    /// From the deadline to the last stop returning, once they all did.
    pub fn stop_late(&self) -> Option<Duration> {
        lock(&self.stops).map(|(late, _)| late)
    }

    /// Whether a stop failed.
    pub fn stop_failed(&self) -> bool {
        lock(&self.stops).is_some_and(|(_, failed)| failed)
    }
}

/// The machine's counters.
pub struct Telemetry {
    registry: Registry,
    sessions_live: Gauge,
    sessions_started: Counter,
    expiries: Counter,
    stop_lateness: HistogramFamily<CauseLabel>,
    stop_failures: Family<CauseLabel, Counter>,
    heartbeats: Family<ViaLabel, Counter>,
    calls: Family<CallLabels, Counter>,
    connections_open: Family<TransportLabel, Gauge>,
    connections: Family<TransportLabel, Counter>,
    peers_open: Family<RouteLabel, Gauge>,
    recent: Mutex<VecDeque<Arc<ExpiryRecord>>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tether");
        let sessions_live = Gauge::default();
        let sessions_started = Counter::default();
        let expiries = Counter::default();
        let stop_lateness: HistogramFamily<CauseLabel> =
            Family::new_with_constructor(stop_lateness_buckets);
        let stop_failures = Family::<CauseLabel, Counter>::default();
        let heartbeats = Family::<ViaLabel, Counter>::default();
        let calls = Family::<CallLabels, Counter>::default();
        let connections_open = Family::<TransportLabel, Gauge>::default();
        let connections = Family::<TransportLabel, Counter>::default();
        let peers_open = Family::<RouteLabel, Gauge>::default();
        registry.register("sessions", "Live sessions", sessions_live.clone());
        registry.register(
            "sessions_started",
            "Sessions started (resumed ones not counted)",
            sessions_started.clone(),
        );
        registry.register(
            "session_expiries",
            "Sessions that expired (their heartbeats stopped)",
            expiries.clone(),
        );
        registry.register(
            "stop_lateness_seconds",
            "From a session's deadline (or its commanding connection's end) to the stop of \
             what it commanded returning, per actuator",
            stop_lateness.clone(),
        );
        registry.register(
            "stop_failures",
            "Stops the machine made on its own that failed or did not answer in time",
            stop_failures.clone(),
        );
        registry.register(
            "heartbeats",
            "Session heartbeats accepted, by the path they came on",
            heartbeats.clone(),
        );
        registry.register(
            "grpc_calls",
            "gRPC calls finished, by method and status code (methods the machine does not \
             serve are counted as unknown)",
            calls.clone(),
        );
        registry.register(
            "connections_open",
            "Open connections by transport (a WebRTC peer connection is one)",
            connections_open.clone(),
        );
        registry.register(
            "connections",
            "Connections opened, by transport",
            connections.clone(),
        );
        registry.register(
            "webrtc_peers_open",
            "Open WebRTC peer connections by the route ICE chose (the local candidate's type)",
            peers_open.clone(),
        );
        // Every cause and path shows from the start, at zero, not only once it happens.
        for cause in [StopCause::session_expiry, StopCause::connection_end] {
            let _ = stop_lateness.get_or_create(&CauseLabel { cause });
            let _ = stop_failures.get_or_create(&CauseLabel { cause });
        }
        for via in [
            HeartbeatVia::call,
            HeartbeatVia::webrtc_datagram,
            HeartbeatVia::udp_datagram,
            HeartbeatVia::command,
        ] {
            let _ = heartbeats.get_or_create(&ViaLabel { via });
        }
        Self {
            registry,
            sessions_live,
            sessions_started,
            expiries,
            stop_lateness,
            stop_failures,
            heartbeats,
            calls,
            connections_open,
            connections,
            peers_open,
            recent: Mutex::default(),
        }
    }
}

/// Counts one open connection until dropped.
#[derive(Debug)]
pub struct OpenConnection {
    open: Gauge,
    peer: Option<Gauge>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.dec();
        if let Some(p) = &self.peer {
            p.dec();
        }
    }
}

impl Telemetry {
    /// A session started.
    pub fn session_started(&self) {
        self.sessions_started.inc();
    }

    /// A heartbeat was accepted.
    pub fn heartbeat(&self, via: HeartbeatVia) {
        self.heartbeats.get_or_create(&ViaLabel { via }).inc();
    }

    /// A gRPC call on `method` (a path the machine serves, or `unknown`) finished with `code`.
    pub fn call(&self, method: &'static str, code: tonic::Code) {
        self.calls
            .get_or_create(&CallLabels {
                method,
                code: code_name(code),
            })
            .inc();
    }

    /// A connection over `transport` opened; it counts as open until the guard drops.
    pub fn connection(&self, transport: &'static str) -> OpenConnection {
        let label = TransportLabel { transport };
        self.connections.get_or_create(&label).inc();
        let open = self.connections_open.get_or_create(&label).clone();
        open.inc();
        OpenConnection { open, peer: None }
    }

    /// A WebRTC peer connection opened over `route` (`host`, `srflx`, `prflx`, `relay`).
    pub fn webrtc_peer(&self, route: &'static str) -> OpenConnection {
        let mut guard = self.connection("webrtc");
        let peer = self.peers_open.get_or_create(&RouteLabel { route }).clone();
        peer.inc();
        guard.peer = Some(peer);
        guard
    }

    /// A stop made for `cause` returned after `late` (from the deadline or the connection's
    /// end); `ok` unless it failed or timed out.
    pub fn stopped(&self, cause: StopCause, late: Duration, ok: bool) {
        let label = CauseLabel { cause };
        if ok {
            self.stop_lateness
                .get_or_create(&label)
                .observe(late.as_secs_f64());
        } else {
            self.stop_failures.get_or_create(&label).inc();
        }
    }

    /// A session expired: counted, and listed among the recent ones. The record to complete
    /// when its stops return ([`ExpiryRecord::stops_returned`]).
    pub fn expired(
        &self,
        session: String,
        owner: String,
        peer: String,
        deadline: Instant,
        noticed_late: Duration,
        stopped: Vec<String>,
    ) -> Arc<ExpiryRecord> {
        self.expiries.inc();
        let ago = Instant::now().saturating_duration_since(deadline);
        let record = Arc::new(ExpiryRecord {
            session,
            owner,
            peer,
            expired_at: SystemTime::now()
                .checked_sub(ago)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            noticed_late,
            stopped,
            stops: Mutex::new(None),
        });
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT_EXPIRIES {
            recent.pop_back();
        }
        recent.push_front(record.clone());
        record
    }

    /// The most recent expiries, newest first.
    pub fn recent_expiries(&self) -> Vec<Arc<ExpiryRecord>> {
        lock(&self.recent).iter().cloned().collect()
    }

    /// Open connections by transport.
    pub fn open_connections(&self) -> Vec<(&'static str, i64)> {
        let mut out = Vec::new();
        for transport in TRANSPORTS {
            let open = self
                .connections_open
                .get_or_create(&TransportLabel { transport })
                .get();
            out.push((transport, open));
        }
        out
    }

    /// Everything in Prometheus' (OpenMetrics) text format, with `live_sessions` as the
    /// session gauge.
    pub fn render(&self, live_sessions: usize) -> String {
        self.sessions_live
            .set(i64::try_from(live_sessions).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The reflection services' paths (served, but not in the machine's descriptor set).
const REFLECTION_METHODS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// A call's method as a label: its path if the machine serves it, `unknown` otherwise.
pub fn method_label(path: &str) -> &'static str {
    tether_proto::known_method(path)
        .or_else(|| REFLECTION_METHODS.into_iter().find(|m| *m == path))
        .unwrap_or("unknown")
}

/// Counts every gRPC call by method and final status: from the response headers of a
/// trailers-only answer, else from the trailers; a response dropped before its trailers (the
/// caller went away) counts as `CANCELLED`.
#[derive(Clone, Debug)]
pub struct CallsLayer(Arc<Telemetry>);

impl CallsLayer {
    /// Counting into `telemetry`.
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        Self(telemetry)
    }
}

impl<S> tower::Layer<S> for CallsLayer {
    type Service = Calls<S>;

    fn layer(&self, inner: S) -> Calls<S> {
        Calls {
            inner,
            telemetry: self.0.clone(),
        }
    }
}

/// The service of [`CallsLayer`].
#[derive(Clone, Debug)]
pub struct Calls<S> {
    inner: S,
    telemetry: Arc<Telemetry>,
}

impl<S> tower::Service<http::Request<Body>> for Calls<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| crate::origin::is_grpc_content_type(v.as_bytes()));
        let method = method_label(req.uri().path());
        let future = self.inner.call(req);
        if !grpc {
            return Box::pin(future);
        }
        let telemetry = self.telemetry.clone();
        Box::pin(async move {
            let response = future.await?;
            if let Some(code) = grpc_code(response.headers()) {
                telemetry.call(method, code);
                return Ok(response);
            }
            Ok(response.map(|body| {
                Body::new(CountedBody {
                    inner: body,
                    counted: Some((telemetry, method)),
                })
            }))
        })
    }
}

/// The status code in `headers` (response headers or trailers), if they carry one.
fn grpc_code(headers: &http::HeaderMap) -> Option<tonic::Code> {
    tonic::Status::from_header_map(headers).map(|s| s.code())
}

/// A response body that counts its call when its trailers pass (or it ends or is dropped
/// without them).
struct CountedBody {
    inner: Body,
    counted: Option<(Arc<Telemetry>, &'static str)>,
}

impl CountedBody {
    fn count(&mut self, code: tonic::Code) {
        if let Some((telemetry, method)) = self.counted.take() {
            telemetry.call(method, code);
        }
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        self.count(tonic::Code::Cancelled);
    }
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = grpc_code(trailers).unwrap_or(tonic::Code::Unknown);
                    self.count(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.count(tonic::Code::Internal),
            Poll::Ready(None) => self.count(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Every transport a connection is counted under.
pub const TRANSPORTS: [&str; 5] = ["h2", "h2+tls", "http1", "http1+tls", "webrtc"];

/// The transport a TCP connection is counted under: one of [`TRANSPORTS`].
pub fn tcp_transport(http2: bool, tls: bool) -> &'static str {
    let [h2, h2_tls, http1, http1_tls, _] = TRANSPORTS;
    match (http2, tls) {
        (true, false) => h2,
        (true, true) => h2_tls,
        (false, false) => http1,
        (false, true) => http1_tls,
    }
}

/// A gRPC code as the protocol names it (`OK`, `INVALID_ARGUMENT`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_carries_every_family_with_its_labels() {
        let t = Telemetry::default();
        t.session_started();
        t.heartbeat(HeartbeatVia::udp_datagram);
        t.call("/viam.robot.v1.RobotService/StopAll", tonic::Code::Ok);
        t.call("unknown", tonic::Code::Unimplemented);
        t.stopped(StopCause::session_expiry, Duration::from_millis(3), true);
        t.stopped(StopCause::connection_end, Duration::from_secs(1), false);
        let open = t.connection("h2");
        let peer = t.webrtc_peer("relay");
        let text = t.render(2);
        for line in [
            "tether_sessions 2",
            "tether_sessions_started_total 1",
            "tether_heartbeats_total{via=\"udp_datagram\"} 1",
            "tether_grpc_calls_total{method=\"/viam.robot.v1.RobotService/StopAll\",code=\"OK\"} 1",
            "tether_grpc_calls_total{method=\"unknown\",code=\"UNIMPLEMENTED\"} 1",
            "tether_stop_lateness_seconds_bucket{le=\"0.005\",cause=\"session_expiry\"} 1",
            "tether_stop_lateness_seconds_count{cause=\"session_expiry\"} 1",
            "tether_stop_failures_total{cause=\"connection_end\"} 1",
            "tether_connections_open{transport=\"h2\"} 1",
            "tether_connections_open{transport=\"webrtc\"} 1",
            "tether_webrtc_peers_open{route=\"relay\"} 1",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        drop((open, peer));
        let text = t.render(0);
        assert!(text.contains("tether_connections_open{transport=\"h2\"} 0\n"));
        assert!(text.contains("tether_webrtc_peers_open{route=\"relay\"} 0\n"));
        assert!(text.contains("tether_connections_total{transport=\"h2\"} 1\n"));
    }

    #[test]
    fn recent_expiries_are_bounded_newest_first() {
        let t = Telemetry::default();
        for i in 0..RECENT_EXPIRIES + 5 {
            let r = t.expired(
                format!("s{i}"),
                "o".into(),
                "grpc".into(),
                Instant::now(),
                Duration::ZERO,
                vec![],
            );
            r.stops_returned(Duration::from_millis(i as u64), false);
        }
        let recent = t.recent_expiries();
        assert_eq!(recent.len(), RECENT_EXPIRIES);
        assert_eq!(recent[0].session, format!("s{}", RECENT_EXPIRIES + 4));
        assert_eq!(
            recent[0].stop_late(),
            Some(Duration::from_millis(RECENT_EXPIRIES as u64 + 4))
        );
    }
}
