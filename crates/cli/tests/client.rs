//! The Rust client SDK against a real `tether serve` process.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is the test failing"
)]

mod common;

use std::time::{Duration, Instant};

use common::client::{
    KEY, KEY_ID, W, busy_application_keeps_its_session, config, held_past_the_window, observer,
    stops_once_gone, until,
};
use common::{Server, temp_file};
use tether_client::{ConnectionEvent, Motor, Options, RobotClient};

#[tokio::test]
async fn sessions_start_lazily_heartbeat_on_their_own_and_lapse_when_the_client_goes() {
    let server = Server::start(&["--config", config(true, "500ms", None).to_str().unwrap()]);
    let t0 = Instant::now();
    let robot = RobotClient::connect(&server.addr, Options::with_api_key(KEY, KEY_ID).insecure())
        .await
        .unwrap();
    let mut events = robot.events();
    assert_eq!(robot.resource_names().await.unwrap().len(), 1);
    let connect_and_first_call = t0.elapsed();
    let mut left = Motor::from_robot(&robot, "left");
    left.position().await.unwrap();
    assert_eq!(
        robot.session_id(),
        None,
        "a non-monitored call must not start a session"
    );
    left.set_power(0.5).await.unwrap();
    let id = robot
        .session_id()
        .expect("a monitored call starts a session");
    assert_eq!(
        events.recv().await.unwrap(),
        ConnectionEvent::SessionStarted { id: id.clone() }
    );
    // Heartbeats (from the client's own thread) keep it alive well past the window.
    let mut watch = held_past_the_window(&robot, &server.addr, &id).await;
    // Dropping the client ends the heartbeats; the machine stops the motor within the window.
    drop((left, robot));
    let gone = stops_once_gone(&mut watch).await;
    assert!(
        gone >= W / 2,
        "stopped before the window could lapse: {gone:?}"
    );
    assert!(connect_and_first_call < Duration::from_secs(2));
}

#[test]
fn a_busy_application_does_not_starve_heartbeats() {
    let server = Server::start(&["--config", config(false, "500ms", None).to_str().unwrap()]);
    busy_application_keeps_its_session(
        &server.addr,
        Options::default().insecure().disable_webrtc(),
        "direct",
    );
}

#[tokio::test]
async fn a_monitored_call_with_an_expired_session_fails_once_and_is_not_retried() {
    // A long window, so the client's heartbeat thread (every W/5 = 1 s) is unlikely to notice
    // the restart before the application's next call does.
    let port = common::free_port();
    let bind = format!("127.0.0.1:{port}");
    let cfg = config(false, "5s", Some(&bind));
    let mut server = Server::start_exact(&["--config", cfg.to_str().unwrap()]);
    // Direct gRPC: its HTTP/2 channel redials the restarted machine by itself, so the
    // application's next call reaches it with the stale session. (Over WebRTC nothing reaches
    // the machine until the supervisor has redialed and resumed — or replaced — the session.)
    let robot = RobotClient::connect(&bind, Options::default().insecure().disable_webrtc())
        .await
        .unwrap();
    let mut events = robot.events();
    let mut left = Motor::from_robot(&robot, "left");
    left.set_power(0.3).await.unwrap();
    let first = robot.session_id().unwrap();
    let _ = events.recv().await; // SessionStarted
    // The machine restarts: it has never heard of the client's session.
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(5)).unwrap();
    let _server = Server::start_exact(&["--config", cfg.to_str().unwrap()]);
    let err = loop {
        match left.set_power(0.6).await {
            // The old connection is dead: calls fail with a transport error until the transport
            // has redialed the restarted machine. (Transport errors, not SESSION_EXPIRED.)
            Err(tether_client::ClientError::Status(s))
                if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
                    && s.message().contains("transport") =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => break other.expect_err("the stale session must be refused"),
        }
    };
    let tether_client::ClientError::Status(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::InvalidArgument, "SESSION_EXPIRED")
    );
    assert_eq!(
        events.recv().await.unwrap(),
        ConnectionEvent::SessionExpired { id: first.clone() }
    );
    assert!(
        !left.is_moving().await.unwrap(),
        "the refused command must not have run (no retry)"
    );
    // The next monitored call starts a new session and runs.
    left.set_power(0.6).await.unwrap();
    let second = robot.session_id().unwrap();
    assert_ne!(first, second);
    assert!(left.is_moving().await.unwrap());
}

use common::Proxy;
use tether_client::backoff::BackoffPolicy;

/// A client driving the motor through a proxy the test can cut, and an observer that reaches
/// the machine directly.
struct Driving {
    server: Server,
    proxy: Proxy,
    robot: RobotClient,
    left: Motor,
    id: String,
    events: tokio::sync::broadcast::Receiver<ConnectionEvent>,
    watch: Motor,
}

async fn driving_through_a_proxy(window: &str) -> Driving {
    let server = Server::start(&["--config", config(true, window, None).to_str().unwrap()]);
    let proxy = Proxy::start(&server.addr).await;
    let robot = RobotClient::connect(&proxy.addr, Options::with_api_key(KEY, KEY_ID).insecure())
        .await
        .unwrap();
    let mut left = Motor::from_robot(&robot, "left");
    left.set_power(0.5).await.unwrap();
    let id = robot.session_id().unwrap();
    let events = robot.events();
    let watch = observer(&server.addr, true).await;
    Driving {
        server,
        proxy,
        robot,
        left,
        id,
        events,
        watch,
    }
}

#[tokio::test]
async fn a_cut_shorter_than_the_window_reconnects_and_resumes_without_a_stop() {
    let Driving {
        server: _server,
        proxy,
        robot,
        mut left,
        id,
        mut events,
        mut watch,
    } = driving_through_a_proxy("2s").await;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(600)).await;
    proxy.restore();
    let seen = until(&mut events, Duration::from_secs(5), |e| {
        matches!(e, ConnectionEvent::SessionResumed { .. })
    })
    .await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, ConnectionEvent::Disconnected { .. })),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, ConnectionEvent::Reconnecting { .. })),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, ConnectionEvent::Connected { .. })),
        "{seen:?}"
    );
    assert_eq!(
        seen.last(),
        Some(&ConnectionEvent::SessionResumed { id: id.clone() }),
        "{seen:?}"
    );
    assert!(
        watch.is_moving().await.unwrap(),
        "the motor was stopped by a short cut"
    );
    // The same typed client works over the new transport, in the same session.
    left.set_power(0.6).await.unwrap();
    assert_eq!(robot.session_id(), Some(id));
}

#[tokio::test]
async fn a_cut_longer_than_the_window_stops_the_motor_and_the_client_says_so() {
    let Driving {
        server: _server,
        proxy,
        robot,
        mut left,
        id,
        mut events,
        mut watch,
    } = driving_through_a_proxy("500ms").await;
    proxy.cut();
    tokio::time::sleep(4 * W).await;
    assert!(
        !watch.is_moving().await.unwrap(),
        "the machine must stop a motor whose commander vanished"
    );
    proxy.restore();
    let seen = until(&mut events, Duration::from_secs(5), |e| {
        matches!(e, ConnectionEvent::SessionExpired { .. })
    })
    .await;
    assert!(
        seen.contains(&ConnectionEvent::SessionExpired { id: id.clone() }),
        "{seen:?}"
    );
    assert!(
        !watch.is_moving().await.unwrap(),
        "nothing may restart by itself"
    );
    left.set_power(0.5).await.unwrap();
    assert_ne!(robot.session_id().unwrap(), id);
    assert!(watch.is_moving().await.unwrap());
}

#[tokio::test]
async fn a_machine_gone_for_good_ends_in_reconnection_failed_on_schedule() {
    let mut server = Server::start(&["--config", config(false, "500ms", None).to_str().unwrap()]);
    let options = Options {
        backoff: BackoffPolicy {
            first_delay: Duration::from_millis(50),
            multiplier: 2.0,
            max_delay: Duration::from_secs(1),
            max_attempts: 4,
            jitter: 0.0,
        },
        ..Options::default().insecure()
    };
    let robot = RobotClient::connect(&server.addr, options).await.unwrap();
    let mut left = Motor::from_robot(&robot, "left");
    left.set_power(0.5).await.unwrap();
    let mut events = robot.events();
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(5)).unwrap();
    let t0 = Instant::now();
    let seen = until(&mut events, Duration::from_secs(10), |e| {
        matches!(e, ConnectionEvent::ReconnectionFailed { .. })
    })
    .await;
    let delays: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            ConnectionEvent::Reconnecting { delay, .. } => Some(delay.as_millis()),
            _ => None,
        })
        .collect();
    assert_eq!(delays, [50, 100, 200, 400], "{seen:?}");
    assert_eq!(
        seen.last(),
        Some(&ConnectionEvent::ReconnectionFailed { attempts: 4 })
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(750),
        "{:?}",
        t0.elapsed()
    );
    // The client is still usable: calls fail with a clear error instead of hanging or exiting.
    assert!(left.position().await.is_err());
}

#[tokio::test]
async fn a_restarted_machine_is_reconnected_with_a_new_session() {
    let port = common::free_port();
    let bind = format!("127.0.0.1:{port}");
    let cfg = config(true, "500ms", Some(&bind));
    let mut server = Server::start_exact(&["--config", cfg.to_str().unwrap()]);
    let robot = RobotClient::connect(&bind, Options::with_api_key(KEY, KEY_ID).insecure())
        .await
        .unwrap();
    let mut left = Motor::from_robot(&robot, "left");
    left.set_power(0.5).await.unwrap();
    let first = robot.session_id().unwrap();
    let mut events = robot.events();
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(5)).unwrap();
    let _server = Server::start_exact(&["--config", cfg.to_str().unwrap()]);
    // The heartbeat thread may reach the new process (and learn the session is gone) before
    // or after the supervisor reconnects the main transport: wait for both, in either order.
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.extend(
            until(&mut events, Duration::from_secs(10), |e| {
                matches!(
                    e,
                    ConnectionEvent::SessionExpired { .. } | ConnectionEvent::Connected { .. }
                )
            })
            .await,
        );
    }
    assert!(
        seen.iter()
            .any(|e| matches!(e, ConnectionEvent::Connected { .. })),
        "{seen:?}"
    );
    assert!(
        seen.contains(&ConnectionEvent::SessionExpired { id: first.clone() }),
        "{seen:?}"
    );
    // The new machine process never saw the old token or session; the client re-authenticated.
    left.set_power(0.4).await.unwrap();
    assert_ne!(robot.session_id().unwrap(), first);
    assert!(left.is_moving().await.unwrap());
}

#[test]
fn tether_connect_prints_resources_and_live_events() {
    let server = Server::start(&[]);
    let mut connect = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args([
            "connect",
            &server.addr,
            "--insecure",
            "--json",
            "--check-interval",
            "200ms",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = connect.stdout.take().unwrap();
    let rx = common::lines_of(stdout);
    let next_event = |want: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if line.contains(&format!(r#""event":"{want}""#)) {
                return line;
            }
        }
        panic!("no {want} event");
    };
    next_event("connected");
    let resources = next_event("resources");
    assert!(
        resources.contains("rdk:component:motor/left"),
        "{resources}"
    );
    // The machine goes away: the connection loss and the reconnection attempts are reported.
    server.signal("KILL");
    next_event("disconnected");
    let reconnecting = next_event("reconnecting");
    assert!(reconnecting.contains(r#""attempt":1"#), "{reconnecting}");
    let status = std::process::Command::new("kill")
        .args(["-INT", &connect.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = connect.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tether connect did not exit on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn tls_with_a_given_ca_works_and_unverifiable_or_plaintext_dials_fail_clearly() {
    let dir = std::env::temp_dir().join(format!("tether-client-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["cert", "--name", "robot.local", "--force", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let tls = format!(
        r#", "tls_cert_file": "{}", "tls_key_file": "{}""#,
        cert.display(),
        key.display()
    );
    let text = format!(
        r#"{{"components": [{{"name": "left", "api": "rdk:component:motor", "model": "fake"}}],
            {},
            "network": {{"sessions": {{"heartbeat_window": "500ms"}}{tls}}}}}"#,
        common::api_key_auth(KEY_ID, KEY)
    );
    let cfg = temp_file(&format!("client-tls-{}.json", std::process::id()), &text);
    let server = Server::start(&["--config", cfg.to_str().unwrap()]);
    let port = server.addr.rsplit(':').next().unwrap();
    let address = format!("localhost:{port}");
    // Verified against the machine's own certificate: works, sessions included.
    let robot = RobotClient::connect(&address, Options::with_api_key(KEY, KEY_ID).with_ca(&cert))
        .await
        .unwrap();
    let mut left = Motor::from_robot(&robot, "left");
    left.set_power(0.3).await.unwrap();
    robot.send_heartbeat().await.unwrap();
    left.stop().await.unwrap();
    // The system's roots do not trust a self-signed certificate; plaintext is not TLS.
    let quick = |o: Options| Options {
        dial_timeout: Duration::from_secs(5),
        ..o
    };
    let untrusted = RobotClient::connect(&address, quick(Options::with_api_key(KEY, KEY_ID))).await;
    assert!(untrusted.is_err());
    let plain = RobotClient::connect(
        &address,
        quick(Options::with_api_key(KEY, KEY_ID).insecure()),
    )
    .await;
    assert!(plain.is_err());
    // A wrong key is an authentication error, not a timeout.
    let wrong = RobotClient::connect(
        &address,
        Options::with_api_key("nope", KEY_ID).with_ca(&cert),
    )
    .await;
    assert!(
        matches!(wrong, Err(tether_client::ClientError::Auth(_))),
        "{:?}",
        wrong.err()
    );
}

/// What a new user does first: `tether serve` (plaintext, like the demo), then `tether connect`
/// without `--insecure`. The TLS dial gets a plaintext answer; the error says so and names the
/// fix, and it is permanent (no retry can help), where it used to read "received corrupt
/// message of type InvalidContentType".
#[tokio::test]
async fn a_tls_dial_to_a_plaintext_machine_says_so_and_names_the_fix() {
    let server = Server::start(&[]);
    let err = match RobotClient::connect(&server.addr, Options::default()).await {
        Ok(_) => panic!("a TLS dial to a plaintext machine connected"),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(
        matches!(
            err,
            tether_client::ClientError::Connect {
                failure: tether_client::ConnectFailure::PlaintextMachine,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_permanent());
    assert!(text.contains("plaintext"), "{text}");
    assert!(
        text.contains("--insecure") && text.contains("Options::insecure()"),
        "{text}"
    );
    assert!(!text.contains("InvalidContentType"), "{text}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["connect", &server.addr])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let printed =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{printed}");
    assert!(printed.contains("answered in plaintext"), "{printed}");
    assert!(printed.contains("--insecure"), "{printed}");
}
