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
        format!(
            r#""auth": {{"handlers": [{{"type": "api-key", "config": {{"{KEY_ID}": "{KEY}"}}}}]}},"#
        )
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
