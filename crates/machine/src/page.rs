//! The machine's own page, its status, and `/metrics`: plain HTTP beside the gRPC services,
//! through the same stack (the Host check, auth).
//!
//! - `GET /`: to a browser (`Accept: text/html`) the page, embedded in the binary; to
//!   anything else (readiness probes) `ready`, as before.
//! - `GET /page.js`, `GET /page.css`: the page's script and style, served from this origin
//!   only (the page's Content-Security-Policy allows nothing else, and forbids framing, so no
//!   other site can put the StopAll button under a user's click).
//! - `GET /status`: what the page shows, as JSON: the machine, its resources and their state,
//!   live sessions, connections commanding without a session, recent expiries with their stop
//!   lateness, open connections by transport. With API keys configured it needs a bearer
//!   token (the page asks for a key and calls `AuthService.Authenticate` over gRPC-web): it
//!   names sessions and owners.
//! - `GET /metrics`: [`crate::telemetry`] in Prometheus' text format. Counts only — no
//!   session ids, owners or addresses — so it is open, for a scraper.
//!
//! The page's StopAll button calls `RobotService.StopAll` over gRPC-web, as any web app does.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::machine::Machine;

const ROOT: &str = "/";
const SCRIPT: &str = "/page.js";
const STYLE: &str = "/page.css";
const STATUS: &str = "/status";
const METRICS: &str = "/metrics";

/// Whether `path` is one of the plain-HTTP paths beside the gRPC ones.
pub fn is_plain_http(path: &str) -> bool {
    is_static(path) || path == STATUS || path == METRICS
}

/// Whether `path` is static: the probe (and the page's HTML) and the page's script and style.
/// They reveal nothing, so they answer any `Host`: a page opened by a name the machine does
/// not know still loads and says why it shows nothing.
pub fn is_static(path: &str) -> bool {
    [ROOT, SCRIPT, STYLE].contains(&path)
}

/// Whether `path` needs no credentials even with API keys configured: the static files and
/// the counters.
pub fn is_open(path: &str) -> bool {
    is_static(path) || path == METRICS
}

/// How long one resource's state may take before the page shows it as not answering.
const STATE_TIMEOUT: Duration = Duration::from_millis(250);

const PAGE_HTML: &str = include_str!("page/index.html");
const PAGE_JS: &str = include_str!("page/page.js");
const PAGE_CSS: &str = include_str!("page/page.css");

/// What the page needs beyond the machine.
#[derive(Clone)]
pub struct PageState {
    /// The machine.
    pub machine: Arc<Machine>,
    /// Its name (its FQDN, or `localhost:port`).
    pub name: Arc<str>,
    /// Whether API keys are configured.
    pub auth: bool,
}

/// Adds the page's routes to `router`.
pub fn routes(router: axum::Router, state: PageState) -> axum::Router {
    use axum::routing::get;
    router.merge(
        axum::Router::new()
            .route(ROOT, get(root))
            .route(SCRIPT, get(|| async { asset(PAGE_JS, "text/javascript") }))
            .route(STYLE, get(|| async { asset(PAGE_CSS, "text/css") }))
            .route(STATUS, get(status))
            .route(METRICS, get(metrics))
            .with_state(state),
    )
}

/// Whether a request asks for HTML (a browser navigating), by its `Accept`.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| crate::origin::media_type(t.as_bytes()).eq_ignore_ascii_case(b"text/html"))
}

/// The headers every page response carries: only this origin's script and style, no framing,
/// no sniffing.
fn hardened(mut response: Response, content_type: &'static str) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
             form-action 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn root(headers: HeaderMap) -> Response {
    let mut response = if wants_html(&headers) {
        hardened(PAGE_HTML.into_response(), "text/html; charset=utf-8")
    } else {
        "ready\n".into_response()
    };
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

fn asset(text: &'static str, content_type: &'static str) -> Response {
    hardened(text.into_response(), content_type)
}

async fn metrics(State(state): State<PageState>) -> Response {
    let text = state
        .machine
        .telemetry()
        .render(state.machine.sessions().len());
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_millis(t: SystemTime) -> u64 {
    millis(t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default())
}

/// One resource's state: whether it moves (actuators) and its model's status, each under
/// [`STATE_TIMEOUT`].
async fn resource_state(name: String, resource: crate::resource::Resource) -> Value {
    let moving = match resource.actuator() {
        None => Value::Null,
        Some(a) => match tokio::time::timeout(STATE_TIMEOUT, a.is_moving()).await {
            Ok(Ok(m)) => json!(m),
            Ok(Err(e)) => json!(format!("error: {e}")),
            Err(_) => json!("not answering"),
        },
    };
    let status = match tokio::time::timeout(STATE_TIMEOUT, resource.component().status()).await {
        Ok(Ok(o)) => Value::Object(o),
        Ok(Err(e)) => json!({ "error": e.to_string() }),
        Err(_) => json!({ "error": "not answering" }),
    };
    json!({ "name": name, "moving": moving, "status": status })
}

async fn status(State(state): State<PageState>) -> Response {
    let machine = &state.machine;
    let resources = futures::future::join_all(
        machine
            .resources()
            .iter()
            .map(|(name, r)| resource_state(name.to_string(), r.clone())),
    )
    .await;
    let sessions: Vec<Value> = machine
        .sessions()
        .snapshot()
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id,
                "owner": s.owner,
                "peer": s.peer,
                "age_ms": millis(s.age),
                "heartbeat_age_ms": s.heartbeat_age.map(millis),
                "expires_in_ms": millis(s.expires_in),
                "resources": s.resources,
            })
        })
        .collect();
    let commanders: Vec<Value> = machine
        .commanders()
        .snapshot()
        .into_iter()
        .map(|(id, transport, resources)| {
            let mut names: Vec<String> = resources.iter().map(ToString::to_string).collect();
            names.sort();
            json!({ "connection": id, "transport": transport, "resources": names })
        })
        .collect();
    let expiries: Vec<Value> = machine
        .telemetry()
        .recent_expiries()
        .iter()
        .map(|e| {
            json!({
                "session": e.session,
                "owner": e.owner,
                "peer": e.peer,
                "expired_at_ms": unix_millis(e.expired_at),
                "noticed_late_ms": e.noticed_late.as_secs_f64() * 1e3,
                "stop_late_ms": e.stop_late().map(|d| d.as_secs_f64() * 1e3),
                "stop_failed": e.stop_failed(),
                "stopped": e.stopped,
            })
        })
        .collect();
    let connections: serde_json::Map<String, Value> = machine
        .telemetry()
        .open_connections()
        .into_iter()
        .map(|(t, n)| (t.to_string(), json!(n)))
        .collect();
    let uptime = SystemTime::now()
        .duration_since(machine.started())
        .unwrap_or_default();
    let body = json!({
        "machine": {
            "name": &*state.name,
            "version": env!("CARGO_PKG_VERSION"),
            "revision": machine.revision(),
            "started_at_ms": unix_millis(machine.started()),
            "uptime_ms": millis(uptime),
            "heartbeat_window_ms": millis(machine.sessions().window()),
            "stop_on_disconnect": machine.commanders().enabled(),
            "auth": state.auth,
        },
        "resources": resources,
        "sessions": sessions,
        "commanders": commanders,
        "expiries": expiries,
        "connections": connections,
    });
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn only_a_browser_navigating_gets_the_page() {
        // Chromium's navigation Accept.
        assert!(wants_html(&accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
        )));
        assert!(wants_html(&accept("TEXT/HTML; q=1")));
        // curl, probes, kubelet.
        assert!(!wants_html(&accept("*/*")));
        assert!(!wants_html(&HeaderMap::new()));
        assert!(!wants_html(&accept("application/json")));
    }
}
