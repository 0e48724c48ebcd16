//! What a browser sends, against a real `tether serve`: CORS preflights, gRPC-web over
//! HTTP/1.1 and HTTP/2 (binary and `-text`), a session held by gRPC-web heartbeats, and bad
//! gRPC-web input. The bytes are built by hand, as a page's gRPC-web transport builds them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is the test failing"
)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::{Buf, Bytes};
use common::Server;
use common::raw::{RawBody, full, grpc_frame, h1, h2};
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prost::Message;
use tether_proto::viam::component::motor::v1 as motor;
use tether_proto::viam::robot::v1 as robot;

const PAGE: &str = "http://page.example:5173";
const GET_VERSION: &str = "/viam.robot.v1.RobotService/GetVersion";

/// A gRPC-web POST from the page at [`PAGE`].
fn web_request(
    addr: &str,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Request<RawBody> {
    let mut r = Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("host", addr)
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .header("origin", PAGE);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(full(body)).unwrap()
}

/// A gRPC-web answer: HTTP status, headers, messages and the trailers from the body's last
/// frame.
#[derive(Debug)]
struct WebReply {
    status: http::StatusCode,
    headers: HeaderMap,
    messages: Vec<Bytes>,
    trailers: Vec<(String, String)>,
}

impl WebReply {
    /// `grpc-status`, from the trailer frame or (a trailers-only answer) the headers.
    fn code(&self) -> Option<i32> {
        self.trailers
            .iter()
            .find(|(k, _)| k == "grpc-status")
            .map(|(_, v)| v.parse().unwrap())
            .or_else(|| {
                self.headers
                    .get("grpc-status")
                    .map(|v| v.to_str().unwrap().parse().unwrap())
            })
    }
}

async fn read_web(response: Response<Incoming>, text: bool) -> WebReply {
    let (parts, body) = response.into_parts();
    let mut body = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the answer within 10 s")
        .expect("a body")
        .to_bytes();
    if text {
        body = base64::engine::general_purpose::STANDARD
            .decode(&body)
            .expect("a -text answer is base64")
            .into();
    }
    let (mut messages, mut trailers) = (Vec::new(), Vec::new());
    while body.remaining() >= 5 {
        let flag = body.get_u8();
        let len = body.get_u32() as usize;
        let payload = body.split_to(len);
        if flag & 0x80 != 0 {
            for line in std::str::from_utf8(&payload).unwrap().split("\r\n") {
                if let Some((k, v)) = line.split_once(':') {
                    trailers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
        } else {
            messages.push(payload);
        }
    }
    assert!(body.is_empty(), "trailing bytes in a gRPC-web body");
    WebReply {
        status: parts.status,
        headers: parts.headers,
        messages,
        trailers,
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).map_or("", |v| v.to_str().unwrap())
}

/// A page's connection to the machine at `addr`: HTTP/1.1 or HTTP/2, each request sent once
/// the connection is ready for it.
enum Page {
    H1(String, hyper::client::conn::http1::SendRequest<RawBody>),
    H2(String, hyper::client::conn::http2::SendRequest<RawBody>),
}

impl Page {
    async fn h1(addr: &str) -> Page {
        Page::H1(addr.to_string(), h1(addr).await)
    }

    async fn h2(addr: &str) -> Page {
        Page::H2(addr.to_string(), h2(addr).await)
    }

    fn addr(&self) -> &str {
        match self {
            Page::H1(a, _) | Page::H2(a, _) => a,
        }
    }

    async fn send(&mut self, req: Request<RawBody>) -> Response<Incoming> {
        match self {
            Page::H1(_, c) => {
                c.ready().await.unwrap();
                c.send_request(req).await.unwrap()
            }
            Page::H2(_, c) => {
                c.ready().await.unwrap();
                c.send_request(req).await.unwrap()
            }
        }
    }

    /// A gRPC-web POST of `body` to `path` from [`PAGE`]; the raw answer.
    async fn post(
        &mut self,
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Response<Incoming> {
        let req = web_request(self.addr(), path, content_type, headers, body);
        self.send(req).await
    }

    /// [`Self::post`], its answer read as gRPC-web (`text`: base64).
    async fn call(
        &mut self,
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        text: bool,
    ) -> WebReply {
        read_web(self.post(path, content_type, headers, body).await, text).await
    }

    /// The CORS preflight a browser sends from `origin` before a call to GetVersion.
    async fn preflight(&mut self, origin: &str, request_headers: &str) -> Response<Incoming> {
        let addr = self.addr().to_string();
        let req = Request::builder()
            .method("OPTIONS")
            .uri(format!("http://{addr}{GET_VERSION}"))
            .header("host", &addr)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", request_headers)
            .body(full(Bytes::new()))
            .unwrap();
        self.send(req).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_works_over_tls_on_http1_and_http2() {
    let dir = std::env::temp_dir().join(format!("tether-web-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = common::raw::generate_cert(&dir);
    let config = common::temp_file(
        "web-tls.json",
        &format!(
            r#"{{"network": {{"tls_cert_file": "{}", "tls_key_file": "{}"}}}}"#,
            cert.display(),
            key.display()
        ),
    );
    let server = Server::start(&["--config", config.to_str().unwrap()]);
    let addr = server.addr.clone();
    let empty = grpc_frame(&robot::GetVersionRequest {}.encode_to_vec());
    for mut page in [
        Page::H1(addr.clone(), common::raw::h1_tls(&addr, &cert).await),
        Page::H2(addr.clone(), common::raw::h2_tls(&addr, &cert).await),
    ] {
        let reply = page
            .call(
                GET_VERSION,
                "application/grpc-web+proto",
                &[],
                empty.clone(),
                false,
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.code(), Some(0), "{reply:?}");
        assert_eq!(header(&reply.headers, "access-control-allow-origin"), PAGE);
        let version = robot::GetVersionResponse::decode(reply.messages[0].clone()).unwrap();
        assert!(!version.version.is_empty(), "{version:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_are_answered_by_cors_and_calls_work_over_http1_and_http2() {
    let server = Server::start(&["--no-tls"]);
    let addr = server.addr.clone();
    // The preflight Chromium sends before a gRPC-web call from another origin.
    let mut page = Page::h1(&addr).await;
    let r = page
        .preflight(
            PAGE,
            "content-type,x-grpc-web,x-user-agent,authorization,rpc-host,viam-sid,grpc-timeout",
        )
        .await;
    let h = r.headers().clone();
    assert!(r.status().is_success(), "{:?} {h:?}", r.status());
    assert_eq!(header(&h, "access-control-allow-origin"), PAGE);
    assert_eq!(header(&h, "access-control-allow-credentials"), "true");
    let allowed = header(&h, "access-control-allow-headers").to_ascii_lowercase();
    for needed in [
        "content-type",
        "x-grpc-web",
        "authorization",
        "viam-sid",
        "grpc-timeout",
    ] {
        assert!(allowed.contains(needed), "{needed} not allowed: {allowed}");
    }
    assert!(
        h.get("grpc-status").is_none(),
        "the preflight reached gRPC: {h:?}"
    );

    // The call itself, binary, over HTTP/1.1 and HTTP/2.
    let empty = grpc_frame(&robot::GetVersionRequest {}.encode_to_vec());
    let reply = page
        .call(
            GET_VERSION,
            "application/grpc-web+proto",
            &[],
            empty.clone(),
            false,
        )
        .await;
    let reply2 = Page::h2(&addr)
        .await
        .call(
            GET_VERSION,
            "application/grpc-web",
            &[],
            empty.clone(),
            false,
        )
        .await;
    for reply in [&reply, &reply2] {
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.code(), Some(0), "{reply:?}");
        assert!(header(&reply.headers, "content-type").starts_with("application/grpc-web"));
        assert_eq!(header(&reply.headers, "access-control-allow-origin"), PAGE);
        let exposed = header(&reply.headers, "access-control-expose-headers").to_ascii_lowercase();
        assert!(
            exposed.contains("grpc-status") && exposed.contains("opid"),
            "{exposed}"
        );
        let v = robot::GetVersionResponse::decode(reply.messages[0].clone()).unwrap();
        assert!(!v.version.is_empty());
    }

    // -text: base64 both ways.
    let text = base64::engine::general_purpose::STANDARD.encode(&empty);
    let reply = page
        .call(
            GET_VERSION,
            "application/grpc-web-text",
            &[("accept", "application/grpc-web-text")],
            Bytes::from(text),
            true,
        )
        .await;
    assert_eq!(reply.code(), Some(0), "{reply:?}");
    assert_eq!(reply.messages.len(), 1);

    // The readiness probe still answers plain HTTP/1.1.
    assert!(common::http_get(&addr, "/").starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_over_grpc_web_drives_the_motor_until_its_heartbeats_stop() {
    let config = common::client::config(false, "500ms", None);
    let server = Server::start(&["--no-tls", "--config", config.to_str().unwrap()]);
    let addr = server.addr.clone();
    let mut page = Page::h1(&addr).await;
    let call = async |page: &mut Page, path: &str, message: Vec<u8>, sid: Option<&str>| {
        let headers: Vec<(&str, &str)> = sid.map(|s| ("viam-sid", s)).into_iter().collect();
        page.call(
            path,
            "application/grpc-web+proto",
            &headers,
            grpc_frame(&message),
            false,
        )
        .await
    };
    let started = call(
        &mut page,
        "/viam.robot.v1.RobotService/StartSession",
        robot::StartSessionRequest::default().encode_to_vec(),
        None,
    )
    .await;
    assert_eq!(started.code(), Some(0), "{started:?}");
    let sid = robot::StartSessionResponse::decode(started.messages[0].clone())
        .unwrap()
        .id;
    let set = motor::SetPowerRequest {
        name: "left".into(),
        power_pct: 0.5,
        extra: None,
    };
    let r = call(
        &mut page,
        "/viam.component.motor.v1.MotorService/SetPower",
        set.encode_to_vec(),
        Some(&sid),
    )
    .await;
    assert_eq!(r.code(), Some(0), "{r:?}");
    let mut watch = common::client::observer(&addr, false).await;
    // Heartbeats over gRPC-web keep it running for several windows.
    let beat = robot::SendSessionHeartbeatRequest { id: sid.clone() }.encode_to_vec();
    let t0 = Instant::now();
    while t0.elapsed() < common::client::W * 4 {
        let r = call(
            &mut page,
            "/viam.robot.v1.RobotService/SendSessionHeartbeat",
            beat.clone(),
            None,
        )
        .await;
        assert_eq!(r.code(), Some(0), "{r:?}");
        tokio::time::sleep(common::client::W / 5).await;
    }
    assert!(
        watch.is_powered().await.unwrap().0,
        "stopped while heartbeats came"
    );
    // The page goes away: the machine stops the motor within the window (loosely bounded).
    let gone = Instant::now();
    while watch.is_powered().await.unwrap().0 {
        assert!(
            gone.elapsed() < Duration::from_secs(5),
            "still powered 5 s after the heartbeats stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.log().contains("session expired"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_grpc_web_input_gets_a_precise_answer_and_the_server_keeps_serving() {
    let server = Server::start(&["--no-tls"]);
    let mut page = Page::h2(&server.addr).await;
    // A message cut short: the prefix promises 100 bytes, 3 arrive.
    let cut = Bytes::from_static(&[0, 0, 0, 0, 100, 1, 2, 3]);
    let reply = page
        .call(GET_VERSION, "application/grpc-web+proto", &[], cut, false)
        .await;
    assert!(matches!(reply.code(), Some(c) if c != 0), "{reply:?}");
    // A method that does not exist.
    let empty = grpc_frame(&[]);
    let reply = page
        .call(
            "/nope.Service/Missing",
            "application/grpc-web",
            &[],
            empty.clone(),
            false,
        )
        .await;
    assert_eq!(reply.code(), Some(12));
    // Not base64 on -text.
    let not_base64 = Bytes::from_static(b"%%%");
    let reply = page
        .call(
            GET_VERSION,
            "application/grpc-web-text",
            &[],
            not_base64,
            false,
        )
        .await;
    assert!(reply.status != 200 || reply.code() != Some(0), "{reply:?}");
    // A page's "simple" request is still refused before any service.
    let r = page
        .post(GET_VERSION, "text/plain", &[], empty.clone())
        .await;
    assert_eq!(r.status(), 415);
    // And everyone else is still served.
    let reply = page
        .call(GET_VERSION, "application/grpc-web", &[], empty, false)
        .await;
    assert_eq!(reply.code(), Some(0));
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_allowed_origins_leaves_other_pages_out() {
    let config = common::temp_file(
        "cors-list.json",
        r#"{"components": [{"name": "left", "api": "rdk:component:motor", "model": "fake"}],
            "network": {"cors": {"allowed_origins": ["http://good.example"]}}}"#,
    );
    let server = Server::start(&["--no-tls", "--config", config.to_str().unwrap()]);
    let mut page = Page::h1(&server.addr).await;
    for (origin, allowed) in [("http://good.example", true), (PAGE, false)] {
        let r = page.preflight(origin, "content-type,x-grpc-web").await;
        let got = header(r.headers(), "access-control-allow-origin").to_string();
        if allowed {
            assert_eq!(got, origin);
        } else {
            assert!(got.is_empty(), "{origin} allowed: {got}");
        }
        let _ = r.into_body().collect().await;
    }
}
