//! Viam's official TypeScript SDK (`@viamrobotics/sdk` from npm, pinned in
//! `tests/ts/package-lock.json`, installed by `scripts/setup-node`) in Node against a real
//! `tether serve`: direct, over the connect-node transport (native gRPC, h2c). The Node process
//! is killed to play a crashed app, and the motor it drove is watched through another
//! connection.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is the test failing"
)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{Server, lines_of, unique_temp_file};

/// The machine's name (`network.fqdn`): the host the SDK asks its signaling for.
const MACHINE_NAME: &str = "tether-ts";
const KEY_ID: &str = "ts-key-id";
const KEY: &str = "ts-secret-key-0123456789";

fn ts_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/ts")
}

/// A machine with motor `left`, a 500 ms window and, if `auth`, one API key.
fn machine(auth: bool) -> Server {
    Server::start(&["--config", machine_config(auth, "").to_str().unwrap()])
}

/// Its config file; `network` is more of the network section.
fn machine_config(auth: bool, network: &str) -> std::path::PathBuf {
    let auth = if auth {
        format!(", {}", common::api_key_auth(KEY_ID, KEY))
    } else {
        String::new()
    };
    let text = format!(
        r#"{{"components": [{{"name": "left", "api": "rdk:component:motor", "model": "fake"}}],
            "network": {{"fqdn": "{MACHINE_NAME}", "sessions": {{"heartbeat_window": "500ms"}}{network}}}{auth}}}"#
    );
    unique_temp_file("ts", &text)
}

/// The SDK in Node running `scenario` against `server`; its JSON lines.
struct Node {
    child: Child,
    lines: Receiver<String>,
}

impl Node {
    fn start(server: &Server, scenario: &str, key: Option<(&str, &str)>) -> Node {
        Node::start_over(server, scenario, key, false)
    }

    /// The SDK in headless Chromium (`tests/ts/browser.mjs`), on a page of another origin.
    fn browser(server: &Server, scenario: &str, webrtc: bool) -> Node {
        Node::browser_with_key(server, scenario, webrtc, None)
    }

    /// As [`Node::browser`], dialing with these API-key credentials.
    fn browser_with_key(
        server: &Server,
        scenario: &str,
        webrtc: bool,
        key: Option<(&str, &str)>,
    ) -> Node {
        assert!(
            std::path::Path::new("/usr/bin/chromium").exists(),
            "Chromium is not installed: run scripts/setup-chromium (scripts/test does)"
        );
        let mut command = Command::new("node");
        command
            .arg(ts_dir().join("browser.mjs"))
            .args([scenario, server.addr.as_str()])
            .current_dir(ts_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if webrtc {
            command.env("TETHER_TS_WEBRTC", MACHINE_NAME);
        }
        if let Some((id, key)) = key {
            command.env("TETHER_TS_CREDENTIALS", format!("{id}:{key}"));
        }
        let mut child = command.spawn().expect("node");
        let lines = lines_of(child.stdout.take().unwrap());
        Node { child, lines }
    }

    /// As [`Node::start`]; over WebRTC (the machine its own signaling server) if `webrtc`.
    fn start_over(
        server: &Server,
        scenario: &str,
        key: Option<(&str, &str)>,
        webrtc: bool,
    ) -> Node {
        let dir = ts_dir();
        assert!(
            dir.join("node_modules/@viamrobotics/sdk").is_dir(),
            "the TypeScript SDK is not installed: run scripts/setup-node (scripts/test does)"
        );
        let mut command = Command::new("node");
        command
            .arg(dir.join("node_client.mjs"))
            .args([scenario, server.addr.as_str()])
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some((id, key)) = key {
            command.args([id, key]);
        }
        if webrtc {
            command.env("TETHER_TS_WEBRTC", MACHINE_NAME);
        }
        let mut child = command.spawn().expect("node");
        let lines = lines_of(child.stdout.take().unwrap());
        Node { child, lines }
    }

    /// The next line that has `field` or `error`, within 30 s.
    fn next(&self, field: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {field:?} line from the SDK within 30 s"));
            // The SDK logs to stdout too ("Failed to connect, attempt 1 …"): not ours.
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                println!("sdk: {line}");
                continue;
            };
            if value.get(field).is_some() || value.get("error").is_some() {
                return value;
            }
        }
    }

    /// The next line that has `field`, within 30 s; an error fails the test.
    fn wait_for(&self, field: &str) -> serde_json::Value {
        let value = self.next(field);
        assert!(value.get("error").is_none(), "the SDK failed: {value}");
        value
    }

    /// Kills the process (no goodbye: a crashed app).
    fn kill(mut self) -> Instant {
        self.child.kill().unwrap();
        let killed = Instant::now();
        self.child.wait().unwrap();
        killed
    }
}

/// SIGKILLs process `pid`; whether it was there to kill.
fn kill(pid: u64) -> bool {
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A browser process the test started, killed however the test ends (playwright's browser
/// server outlives its Node process).
struct KillOnDrop(u64);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill(self.0);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_sdk_connects_and_lists_resources() {
    let server = machine(false);
    let node = Node::start(&server, "list", None);
    let listed = node.wait_for("resources");
    let names: Vec<&str> = listed["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(names.contains(&"rdk:component:motor/left"), "{names:?}");
}

/// Runs `scenario` in Node (over WebRTC if `webrtc`) until it has commanded `left`, checks
/// that the motor runs on while the app lives, kills the app, and waits up to `limit` for the
/// stop: how long after the kill it came, and the session the app held.
async fn killed_app(
    server: &Server,
    scenario: &str,
    webrtc: bool,
    limit: Duration,
) -> (Duration, Option<String>) {
    let observer = server.channel().await;
    let node = Node::start_over(server, scenario, None, webrtc);
    let commanded = node.wait_for("commanded");
    let session = commanded["session"].as_str().map(str::to_string);
    assert_eq!(
        server.log().contains("WebRTC connection open"),
        webrtc,
        "{}",
        server.log()
    );
    // The SDK heartbeats (or its connection lives): the motor runs on for several windows.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        common::motor_moving(&observer, "left").await,
        "{scenario}: {}",
        server.log()
    );
    let killed = node.kill();
    let took = common::motor_stopped_after(&observer, "left", killed, limit)
        .await
        .unwrap_or_else(|| {
            panic!(
                "{scenario}: still moving {limit:?} after the kill: {}",
                server.log()
            )
        });
    println!("{scenario} (webrtc: {webrtc}): stopped {took:?} after the kill (W = 500 ms)");
    (took, session)
}

/// The app's session expired and stopped the motor.
fn stopped_by_its_session(server: &Server, session: Option<String>) {
    let session = session.expect("the app held a session");
    let log = server.log();
    assert!(
        log.contains("session expired") && log.contains(&session),
        "{log}"
    );
}

/// The app had no session: the safety net stopped the motor when its connection ended.
fn stopped_by_its_connection(server: &Server, session: Option<String>) {
    assert_eq!(session, None);
    let log = server.log();
    assert!(
        log.contains("a connection that commanded without a session ended"),
        "{log}"
    );
    assert!(!log.contains("session expired"), "{log}");
}

#[tokio::test]
async fn a_killed_app_with_a_session_has_its_motor_stopped_within_the_window() {
    let server = machine(false);
    let (_, session) = killed_app(&server, "session", false, Duration::from_secs(5)).await;
    stopped_by_its_session(&server, session);
}

#[tokio::test]
async fn a_killed_app_without_a_session_is_stopped_by_the_safety_net() {
    for scenario in ["nosession", "nosessions"] {
        let server = machine(false);
        let (_, session) = killed_app(&server, scenario, false, Duration::from_secs(5)).await;
        stopped_by_its_connection(&server, session);
    }
}

#[tokio::test]
async fn over_webrtc_a_killed_app_with_a_session_is_stopped_within_the_window() {
    let server = machine(false);
    let (_, session) = killed_app(&server, "session", true, Duration::from_secs(5)).await;
    stopped_by_its_session(&server, session);
}

#[tokio::test]
async fn over_webrtc_a_killed_app_without_a_session_is_stopped_once_ice_finds_it_gone() {
    let server = machine(false);
    let (_, session) = killed_app(&server, "nosession", true, Duration::from_secs(30)).await;
    stopped_by_its_connection(&server, session);
}

#[tokio::test]
async fn api_key_credentials_work_and_a_wrong_key_is_refused() {
    let server = machine(true);
    let node = Node::start(&server, "list", Some((KEY_ID, KEY)));
    node.wait_for("resources");
    // A wrong key, and no key at all, end in UNAUTHENTICATED (which the SDK does not retry),
    // not a connection.
    for (key, why) in [
        (
            Some((KEY_ID, "not-the-key")),
            "[unauthenticated] invalid credentials",
        ),
        (None, "[unauthenticated] authentication required"),
    ] {
        let node = Node::start(&server, "list", key);
        let outcome = node.next("resources");
        assert!(
            outcome["causes"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c.as_str() == Some(why))),
            "{key:?}: {outcome}"
        );
    }
}

#[tokio::test]
async fn after_a_machine_restart_the_sdk_reconnects_by_itself_and_calls_succeed() {
    let bind = format!("127.0.0.1:{}", common::free_port());
    let config = machine_config(false, &format!(r#", "bind_address": "{bind}""#));
    let mut server = Server::start_exact(&["--config", config.to_str().unwrap()]);
    let node = Node::start(&server, "reconnect", None);
    node.wait_for("resources");
    wait_for_line(&node, r#"{"call":"ok"}"#);
    // The machine goes away: calls fail, the SDK reports it disconnected.
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(5)).unwrap();
    drop(server);
    let gone = Instant::now();
    wait_for_line(&node, r#"{"event":"disconnected"}"#);
    // Back on the same address: the SDK dials again and calls succeed.
    let _server = Server::start_exact(&["--config", config.to_str().unwrap()]);
    wait_for_line(&node, r#"{"event":"connected"}"#);
    wait_for_line(&node, r#"{"call":"ok"}"#);
    println!(
        "calls succeed again {:?} after the machine went away",
        gone.elapsed()
    );
}

/// Waits (up to 60 s) for the Node process to print exactly `line`.
fn wait_for_line(node: &Node, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match node.lines.recv_timeout(left) {
            Ok(l) if l == line => return,
            Ok(_) => {}
            Err(_) => panic!("no {line} from the SDK within 60 s"),
        }
    }
}

#[tokio::test]
async fn in_chromium_over_webrtc_a_killed_browser_without_a_session_is_stopped_by_the_safety_net() {
    let server = machine(false);
    let observer = server.channel().await;
    let page = Node::browser(&server, "nosession", true);
    let pid = page.wait_for("browser_pid")["browser_pid"]
        .as_u64()
        .unwrap();
    let _browser = KillOnDrop(pid);
    let commanded = page.wait_for("commanded");
    assert_eq!(commanded["session"], serde_json::Value::Null);
    // Its peer connection lives: the motor runs on.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(common::motor_moving(&observer, "left").await);
    assert!(kill(pid));
    let killed = Instant::now();
    // No close reaches the machine from a killed browser: ICE consent finds the peer gone.
    let took = common::motor_stopped_after(&observer, "left", killed, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("still moving 30 s after the kill: {}", server.log()));
    println!("in Chromium, WebRTC, no session: stopped {took:?} after the browser was killed");
    stopped_by_its_connection(&server, None);
}

#[tokio::test]
async fn in_chromium_api_key_credentials_work_over_both_transports_and_a_wrong_key_is_refused() {
    let server = machine(true);
    for webrtc in [false, true] {
        let page = Node::browser_with_key(&server, "list", webrtc, Some((KEY_ID, KEY)));
        let _browser = KillOnDrop(
            page.wait_for("browser_pid")["browser_pid"]
                .as_u64()
                .unwrap(),
        );
        let listed = page.next("resources");
        assert!(
            listed["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|n| n == "rdk:component:motor/left")),
            "webrtc: {webrtc}: {listed}"
        );
        let page = Node::browser_with_key(&server, "list", webrtc, Some((KEY_ID, "not-the-key")));
        let _browser = KillOnDrop(
            page.wait_for("browser_pid")["browser_pid"]
                .as_u64()
                .unwrap(),
        );
        let refused = page.next("resources");
        let text = refused.to_string();
        assert!(
            refused.get("resources").is_none() && text.contains("invalid credentials"),
            "webrtc: {webrtc}: {refused}"
        );
    }
}

#[tokio::test]
async fn in_chromium_after_a_machine_restart_the_sdk_reconnects_by_itself_and_calls_succeed() {
    for webrtc in [false, true] {
        let bind = format!("127.0.0.1:{}", common::free_port());
        let config = machine_config(false, &format!(r#", "bind_address": "{bind}""#));
        let mut server = Server::start_exact(&["--config", config.to_str().unwrap()]);
        let page = Node::browser(&server, "reconnect", webrtc);
        let pid = page.wait_for("browser_pid")["browser_pid"]
            .as_u64()
            .unwrap();
        let _browser = KillOnDrop(pid);
        page.wait_for("resources");
        wait_for_line(&page, r#"{"call":"ok"}"#);
        server.signal("KILL");
        server.wait_exit(Duration::from_secs(5)).unwrap();
        drop(server);
        let gone = Instant::now();
        // Calls fail while it is gone; back on the same address, calls succeed again. Over
        // WebRTC the SDK in the page sees its peer connection go, reports `disconnected`, and
        // dials again by itself (`connected`); over gRPC-web there is no connection to lose
        // (each call is a fetch), so it reports nothing and the next fetch just works.
        if webrtc {
            wait_for_line(&page, r#"{"event":"disconnected"}"#);
        }
        wait_for_prefix(&page, r#"{"call":""#, r#"{"call":"ok"}"#);
        let _server = Server::start_exact(&["--config", config.to_str().unwrap()]);
        if webrtc {
            wait_for_line(&page, r#"{"event":"connected"}"#);
        }
        wait_for_line(&page, r#"{"call":"ok"}"#);
        println!(
            "in Chromium (webrtc: {webrtc}): calls succeed again {:?} after the machine went away",
            gone.elapsed()
        );
    }
}

/// Waits (up to 60 s) for a line that starts with `prefix` and is not `except`.
fn wait_for_prefix(node: &Node, prefix: &str, except: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = node
            .lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line starting {prefix} in 60 s"));
        if line.starts_with(prefix) && line != except {
            return;
        }
    }
}

#[tokio::test]
async fn in_chromium_a_page_of_another_origin_connects_and_a_killed_browser_has_its_motor_stopped()
{
    for webrtc in [false, true] {
        in_chromium(webrtc).await;
    }
}

/// The Chromium scenario, direct (gRPC-web over HTTP/1.1) or over WebRTC.
async fn in_chromium(webrtc: bool) {
    let transport = if webrtc { "WebRTC" } else { "gRPC-web" };
    let server = machine(false);
    let observer = server.channel().await;
    let page = Node::browser(&server, "session", webrtc);
    let pid = page.wait_for("browser_pid")["browser_pid"]
        .as_u64()
        .unwrap();
    let _browser = KillOnDrop(pid);
    let listed = page.wait_for("resources");
    assert!(
        listed["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "rdk:component:motor/left"),
        "{listed}"
    );
    let commanded = page.wait_for("commanded");
    let session = commanded["session"]
        .as_str()
        .expect("a session id")
        .to_string();
    // The page heartbeats (gRPC-web over HTTP/1.1, cross-origin): the motor runs on.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        common::motor_moving(&observer, "left").await,
        "{}",
        server.log()
    );
    // The browser crashes.
    assert!(kill(pid));
    let killed = Instant::now();
    let took = common::motor_stopped_after(&observer, "left", killed, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| {
            panic!(
                "still moving 5 s after Chromium was killed: {}",
                server.log()
            )
        });
    println!(
        "in Chromium, {transport}: stopped {took:?} after the browser was killed (W = 500 ms)"
    );
    assert_eq!(
        server.log().contains("WebRTC connection open"),
        webrtc,
        "{}",
        server.log()
    );
    // The stop may come first from the connection's end (over WebRTC the peer's close can
    // beat the window); the session's expiry is logged at its window, just after.
    assert!(
        server.wait_for_log("session expired", Duration::from_secs(3))
            && server.log().contains(&session),
        "{}",
        server.log()
    );
}
