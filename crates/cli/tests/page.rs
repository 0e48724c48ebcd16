//! The machine's own page, `/status` and `/metrics`, against a real `tether serve`: the page
//! in headless Chromium (Debian's, driven by `tests/ts/machine_page.mjs`) read through its DOM
//! while real clients hold sessions, with a screenshot written by the test; the plain-HTTP
//! endpoints over raw HTTP/1.1.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is the test failing"
)]

mod common;

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::client::{KEY, KEY_ID};
use common::{Server, lines_of, unique_temp_file};
use serde_json::{Value, json};
use tether_client::{Motor, Options, RobotClient};

/// A machine with motors `left` and `right`, a 1 s window and, if `auth`, the API key.
fn machine(auth: bool) -> Server {
    let auth = if auth {
        format!(", {}", common::api_key_auth(KEY_ID, KEY))
    } else {
        String::new()
    };
    let text = format!(
        r#"{{"components": [{{"name": "left", "api": "rdk:component:motor", "model": "fake"}},
                            {{"name": "right", "api": "rdk:component:motor", "model": "fake"}}],
            "network": {{"fqdn": "page-test-rover", "sessions": {{"heartbeat_window": "1s"}}}}{auth}}}"#
    );
    Server::start(&[
        "--config",
        unique_temp_file("page", &text).to_str().unwrap(),
    ])
}

/// `GET path` over plain HTTP/1.1 with `Host` and more headers; the status code, the
/// headers (lowercased names) and the body.
fn get(addr: &str, path: &str, host: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head.to_ascii_lowercase(), body.to_string())
}

/// The value of sample `name` (with its labels, as written) in a metrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn client_options(webrtc: bool) -> Options {
    let mut options = Options::with_api_key(KEY, KEY_ID).insecure();
    options.disable_webrtc = !webrtc;
    options
}

/// The page in Chromium, driven line by line.
struct Page {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Page {
    fn open(server: &Server) -> (Page, Value) {
        assert!(
            std::path::Path::new("/usr/bin/chromium").exists(),
            "Chromium is not installed: run scripts/setup-chromium (scripts/test does)"
        );
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/ts");
        assert!(
            dir.join("node_modules/playwright-core").is_dir(),
            "playwright-core is not installed: run scripts/setup-node (scripts/test does)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("machine_page.mjs"))
            .arg(&server.addr)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node");
        let stdin = child.stdin.take();
        let lines = lines_of(child.stdout.take().unwrap());
        let mut page = Page {
            child,
            stdin,
            lines,
        };
        let loaded = page.read();
        (page, loaded)
    }

    fn read(&mut self) -> Value {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .expect("the page driver answers");
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                assert!(v.get("error").is_none(), "page driver: {v}");
                return v;
            }
        }
    }

    fn ask(&mut self, command: Value) -> Value {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        self.read()
    }

    /// What the page shows, once `pred` holds of it (within 20 s).
    fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let answer = self.ask(json!({"op": "state"}));
            assert_eq!(answer["errors"], json!([]), "the page logged errors");
            let state = answer["state"].clone();
            if pred(&state) {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "page never showed {what}: {state:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // End of input closes the browser; a stuck driver is killed.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn session_ids(state: &Value) -> Vec<String> {
    let mut ids: Vec<String> = state["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn resource_moving(state: &Value, name: &str) -> Option<String> {
    state["resources"]
        .as_array()?
        .iter()
        .find(|r| r["id"] == format!("rdk:component:motor/{name}"))
        .and_then(|r| r["moving"].as_str().map(str::to_string))
}

/// Where the test writes the page's screenshot: `target/screenshots/`.
fn screenshot_path(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_signs_in_shows_live_sessions_and_expiries_and_its_stop_all_stops_everything() {
    let server = machine(true);
    // Two commanders: one direct (HTTP/2), one over WebRTC, each with its session.
    let direct = RobotClient::connect(&server.addr, client_options(false))
        .await
        .unwrap();
    let webrtc = RobotClient::connect(&server.addr, client_options(true))
        .await
        .unwrap();
    assert_eq!(
        (direct.transport(), webrtc.transport()),
        ("direct", "webrtc")
    );
    Motor::from_robot(&direct, "left")
        .set_power(0.5)
        .await
        .unwrap();
    Motor::from_robot(&webrtc, "right")
        .set_power(0.3)
        .await
        .unwrap();
    let mut expected = vec![direct.session_id().unwrap(), webrtc.session_id().unwrap()];
    expected.sort();

    let (mut page, loaded) = Page::open(&server);
    assert_eq!(loaded["loaded"], 200);
    assert_eq!(loaded["content_type"], "text/html; charset=utf-8");
    assert!(
        loaded["csp"]
            .as_str()
            .unwrap()
            .contains("frame-ancestors 'none'"),
        "{loaded}"
    );
    // API keys configured: the page asks for one before it shows anything.
    page.until("the sign-in form", |s| s["login_visible"] == true);
    page.ask(json!({"op": "login", "id": KEY_ID, "key": "wrong-key"}));
    let refused = page.until("a refusal", |s| s["login_result"] != "");
    assert!(refused["login_visible"] == true && refused["sessions"] == json!([]));
    page.ask(json!({"op": "login", "id": KEY_ID, "key": KEY}));
    let state = page.until("two live sessions", |s| {
        s["live"] == "true" && s["sessions"].as_array().is_some_and(|a| a.len() == 2)
    });
    assert_eq!(session_ids(&state), expected);
    assert_eq!(state["machine"], "page-test-rover");
    assert!(
        state["facts"]
            .as_str()
            .unwrap()
            .contains("API keys required")
    );
    // Each session says its owner, transport and what it commands.
    for row in state["sessions"].as_array().unwrap() {
        let cells: Vec<&str> = row["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(cells[1], KEY_ID, "{cells:?}");
        let (peer, commands) = if row["id"] == direct.session_id().unwrap() {
            ("grpc 127.0.0.1:", "rdk:component:motor/left")
        } else {
            ("webrtc", "rdk:component:motor/right")
        };
        assert!(cells[2].starts_with(peer), "{cells:?}");
        assert_eq!(cells[6], commands, "{cells:?}");
        assert!(cells[4].ends_with(" ago"), "a heartbeat age: {cells:?}");
    }
    assert_eq!(resource_moving(&state, "left").as_deref(), Some("true"));
    assert_eq!(resource_moving(&state, "right").as_deref(), Some("true"));
    assert_eq!(state["connections"]["webrtc"], 1, "{state:#}");
    assert!(
        state["connections"]["h2"].as_i64().unwrap() >= 1,
        "{state:#}"
    );
    assert!(
        state["connections"]["http1"].as_i64().unwrap() >= 1,
        "the page's own"
    );

    let shot = screenshot_path("machine-page-two-sessions.png");
    let _ = std::fs::remove_file(&shot);
    page.ask(json!({"op": "screenshot", "path": shot}));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    eprintln!("screenshot: {}", shot.display());

    // The direct client goes away: its session expires, the page lists the expiry with how
    // late the stop came, and the other session lives on.
    let gone = direct.session_id().unwrap();
    drop(direct);
    let state = page.until("the expiry", |s| {
        s["expiries"].as_array().is_some_and(|a| {
            a.iter()
                .any(|e| e["id"] == gone.as_str() && e["cells"][5].as_str() != Some("stopping…"))
        })
    });
    let expiry = state["expiries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == gone.as_str())
        .unwrap();
    assert_eq!(expiry["cells"][6], "rdk:component:motor/left", "{expiry}");
    assert!(
        expiry["cells"][5].as_str().unwrap().ends_with(" ms"),
        "{expiry}"
    );
    assert_eq!(
        session_ids(&state),
        vec![webrtc.session_id().unwrap()],
        "{state:#}"
    );
    assert_eq!(resource_moving(&state, "left").as_deref(), Some("false"));
    assert_eq!(resource_moving(&state, "right").as_deref(), Some("true"));

    // Stop all, from the page: a gRPC-web call with the page's token.
    page.ask(json!({"op": "stop_all"}));
    let state = page.until("StopAll's answer", |s| {
        s["stop_all_result"] == "stopped everything"
    });
    let (powered, _) = Motor::from_robot(&webrtc, "right")
        .is_powered()
        .await
        .unwrap();
    assert!(!powered, "{state:#}");
    page.until("right at rest", |s| {
        resource_moving(s, "right").as_deref() == Some("false")
    });
    // The WebRTC client's session is not touched by a stop.
    assert_eq!(
        session_ids(&page.until("one session", |_| true)),
        vec![webrtc.session_id().unwrap()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_tell_what_happened_and_stay_behind_the_host_and_key_checks() {
    let server = machine(true);
    let name = "page-test-rover";
    let robot = RobotClient::connect(&server.addr, client_options(false))
        .await
        .unwrap();
    Motor::from_robot(&robot, "left")
        .set_power(0.5)
        .await
        .unwrap();
    let session = robot.session_id().unwrap();
    drop(robot);
    // The session expires (1 s window) and its motor is stopped.
    let observer = RobotClient::connect(&server.addr, {
        let mut o = client_options(false);
        o.disable_sessions = true;
        o
    })
    .await
    .unwrap();
    let mut left = Motor::from_robot(&observer, "left");
    let t0 = Instant::now();
    while left.is_powered().await.unwrap().0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "never stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A call to a method nobody serves, counted as `unknown`.
    let _ = common::raw_unary(
        &server.channel().await,
        "/no.such.Service/Method",
        bytes::Bytes::new(),
    )
    .await;

    // The probe: any Host, no key, no HTML.
    let (code, head, body) = get(&server.addr, "/", "whatever", &[]);
    assert_eq!((code, body.as_str()), (200, "ready\n"), "{head}");
    // The page itself: static, hardened, for any Host (it reveals nothing; what it fetches
    // is checked).
    let (code, head, body) = get(
        &server.addr,
        "/",
        "rover.local:80",
        &[("Accept", "text/html")],
    );
    assert_eq!(code, 200);
    assert!(body.contains("<script src=\"/page.js\">"), "{body}");
    assert!(head.contains("x-frame-options: deny") && head.contains("content-security-policy"));
    let (code, head, _) = get(&server.addr, "/page.js", "rover.local:80", &[]);
    assert_eq!(code, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");

    // Status: names sessions and owners, so it takes the key's token.
    let (code, head, _) = get(&server.addr, "/status", name, &[]);
    assert_eq!(code, 200);
    assert!(head.contains("grpc-status: 16"), "unauthenticated: {head}");
    // And a Host the machine does not answer to (DNS rebinding) is refused outright.
    let (code, _, _) = get(&server.addr, "/status", "evil.example:80", &[]);
    assert_eq!(code, 421);
    let (code, _, _) = get(&server.addr, "/metrics", "evil.example:80", &[]);
    assert_eq!(code, 421);

    let token = common::authenticate(&server.channel().await, KEY_ID, KEY)
        .await
        .unwrap();
    let bearer = format!("Bearer {token}");
    // The record of the expiry is completed when its stop has returned.
    let t0 = Instant::now();
    let status = loop {
        let (code, head, body) = get(
            &server.addr,
            "/status",
            name,
            &[("Authorization", bearer.as_str())],
        );
        assert_eq!(code, 200, "{head}");
        let status: Value = serde_json::from_str(&body).unwrap();
        if !status["expiries"][0]["stop_late_ms"].is_null() || t0.elapsed() > Duration::from_secs(5)
        {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["machine"]["name"], name);
    assert_eq!(status["machine"]["heartbeat_window_ms"], 1000);
    assert_eq!(status["sessions"], json!([]), "{status:#}");
    let expiry = &status["expiries"][0];
    assert_eq!(expiry["session"], session.as_str());
    assert_eq!(expiry["owner"], KEY_ID);
    assert_eq!(expiry["stopped"], json!(["rdk:component:motor/left"]));
    let stop_late = expiry["stop_late_ms"].as_f64().expect("the stop returned");
    assert!(stop_late < 1000.0, "{expiry}");
    assert!(expiry["expired_at_ms"].as_u64().unwrap() > 1_700_000_000_000);

    // Metrics: open (counts only), in the text format.
    let (code, head, text) = get(&server.addr, "/metrics", name, &[]);
    assert_eq!(code, 200);
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(sample(&text, "tether_sessions"), Some(0.0));
    assert_eq!(sample(&text, "tether_sessions_started_total"), Some(1.0));
    assert_eq!(sample(&text, "tether_session_expiries_total"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "tether_stop_lateness_seconds_count{cause=\"session_expiry\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "tether_stop_lateness_seconds_bucket{le=\"1.0\",cause=\"session_expiry\"}"
        ),
        Some(1.0),
        "{text}"
    );
    // The command with the session counted as one; the client's heartbeats as calls or UDP
    // datagrams, whichever came before it went.
    assert!(sample(&text, "tether_heartbeats_total{via=\"command\"}").unwrap() >= 1.0);
    assert_eq!(
        sample(&text, "tether_heartbeats_total{via=\"webrtc_datagram\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "tether_grpc_calls_total{method=\"/viam.component.motor.v1.MotorService/SetPower\",code=\"OK\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "tether_grpc_calls_total{method=\"unknown\",code=\"UNAUTHENTICATED\"}"
        ),
        Some(1.0),
        "the unknown method, refused without a token: {text}"
    );
    assert!(sample(&text, "tether_connections_total{transport=\"h2\"}").unwrap() >= 2.0);
    assert!(sample(&text, "tether_connections_open{transport=\"http1\"}").unwrap() >= 1.0);
    // Nothing in it names a session or an owner.
    assert!(!text.contains(&session) && !text.contains(KEY_ID), "{text}");
}
