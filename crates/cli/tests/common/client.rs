//! Support for tests of the Rust client SDK: a machine config with one motor, a session-less
//! observer over direct gRPC, and waiting for connection events.

use std::time::Duration;

use tether_client::{ConnectionEvent, Motor, Options, RobotClient};

use super::temp_file;

pub const KEY_ID: &str = "5a3a0c6e-1d52-4b8e-9c4b-6d0f2a7e9b11";
pub const KEY: &str = "client-test-key-0123456789";
/// The heartbeat window of `config(_, "500ms", _)`.
pub const W: Duration = Duration::from_millis(500);

/// A config file: motor `left`, this heartbeat window, optionally the API key above and a
/// bind address.
pub fn config(auth: bool, window: &str, bind: Option<&str>) -> std::path::PathBuf {
    let auth = if auth {
        format!("{},", super::api_key_auth(KEY_ID, KEY))
    } else {
        String::new()
    };
    let bind = bind
        .map(|b| format!(r#", "bind_address": "{b}""#))
        .unwrap_or_default();
    let text = format!(
        r#"{{"components": [{{"name": "left", "api": "rdk:component:motor", "model": "fake"}}], {auth}
            "network": {{"sessions": {{"heartbeat_window": "{window}"}}{bind}}}}}"#
    );
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    temp_file(&format!("client-{stamp}.json"), &text)
}

/// Motor `left` seen by an observer over direct gRPC that never starts a session.
pub async fn observer(addr: &str, auth: bool) -> Motor {
    let mut options = if auth {
        Options::with_api_key(KEY, KEY_ID).insecure()
    } else {
        Options::default().insecure()
    };
    options.disable_sessions = true;
    options.disable_webrtc = true;
    let robot = RobotClient::connect(addr, options).await.unwrap();
    Motor::from_robot(&robot, "left")
}

/// Collects events until `pred` matches one (or the time runs out).
pub async fn until(
    events: &mut tokio::sync::broadcast::Receiver<ConnectionEvent>,
    limit: Duration,
    pred: impl Fn(&ConnectionEvent) -> bool,
) -> Vec<ConnectionEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Ok(e)) = tokio::time::timeout_at(deadline, events.recv()).await {
        let done = pred(&e);
        seen.push(e);
        if done {
            break;
        }
    }
    seen
}

/// With `robot` holding session `id` on motor `left`, waits 4 W: the motor must keep running
/// and the session stay the same. Returns the observer's motor, for [`stops_once_gone`].
pub async fn held_past_the_window(robot: &RobotClient, addr: &str, id: &str) -> Motor {
    let mut watch = observer(addr, true).await;
    tokio::time::sleep(4 * W).await;
    assert!(
        watch.is_moving().await.unwrap(),
        "stopped while the client was alive"
    );
    assert_eq!(robot.session_id().as_deref(), Some(id));
    watch
}

/// Once the session's client is gone: the machine stops the motor within 4 W. How long it took.
pub async fn stops_once_gone(watch: &mut Motor) -> Duration {
    let gone = std::time::Instant::now();
    while watch.is_moving().await.unwrap() {
        assert!(
            gone.elapsed() < 4 * W,
            "motor still running after the client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gone.elapsed()
}

/// An application that blocks its own (single-threaded) runtime for 5 W after commanding the
/// motor: the client's heartbeats, on a thread of their own, keep the session alive. The
/// client must be connected over `transport` (`webrtc` or `direct`).
pub fn busy_application_keeps_its_session(addr: &str, options: Options, transport: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let robot = RobotClient::connect(addr, options).await.unwrap();
        assert_eq!(
            robot.transport(),
            transport,
            "{:?}",
            robot.first_dial_events()
        );
        let mut left = Motor::from_robot(&robot, "left");
        left.set_power(0.4).await.unwrap();
        std::thread::sleep(5 * W); // hogs the runtime: no task of this runtime can run
        assert!(
            left.is_moving().await.unwrap(),
            "false expiry while the application was busy"
        );
        assert!(robot.session_id().is_some());
        left.stop().await.unwrap();
    });
}
