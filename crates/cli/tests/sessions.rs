//! Session semantics against a real `tether serve` process on loopback, with raw gRPC calls so
//! every step is deterministic. Time bounds are loose (real processes); the tight figures are
//! in the session benchmark.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is the test failing"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Server, unique_temp_file};
use prost_types::value::Kind;
use tether_proto::viam::common::v1::DoCommandRequest;
use tether_proto::viam::component::button::v1::PushRequest;
use tether_proto::viam::component::button::v1::button_service_client::ButtonServiceClient;
use tether_proto::viam::component::motor::v1::motor_service_client::MotorServiceClient;
use tether_proto::viam::component::motor::v1::{GetPositionRequest, GoForRequest, SetPowerRequest};
use tether_proto::viam::component::switch::v1::switch_service_client::SwitchServiceClient;
use tether_proto::viam::component::switch::v1::{
    GetPositionRequest as GetSwitchPosition, SetPositionRequest,
};
use tether_proto::viam::robot::v1::robot_service_client::RobotServiceClient;
use tether_proto::viam::robot::v1::{
    GetSessionsRequest, SendSessionHeartbeatRequest, StartSessionRequest,
};
use tonic::Code;
use tonic::transport::Channel;

const W: Duration = Duration::from_millis(500);

fn config(extra_components: &str, sessions: &str) -> std::path::PathBuf {
    let text = format!(
        r#"{{"components": [
            {{"name": "left", "api": "rdk:component:motor", "model": "fake"}},
            {{"name": "right", "api": "rdk:component:motor", "model": "fake"}},
            {{"name": "switch", "api": "rdk:component:switch", "model": "fake"}},
            {{"name": "button", "api": "rdk:component:button", "model": "fake"}}{extra_components}
        ],
        "network": {{"sessions": {{"heartbeat_window": "500ms"{sessions}}}}}}}"#
    );
    unique_temp_file("sessions", &text)
}

async fn start(ch: &Channel, resume: &str) -> (String, Duration) {
    let r = RobotServiceClient::new(ch.clone())
        .start_session(StartSessionRequest {
            resume: resume.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let w = r.heartbeat_window.unwrap();
    (r.id, Duration::new(w.seconds as u64, w.nanos as u32))
}

async fn heartbeat(ch: &Channel, id: &str) -> Result<(), tonic::Status> {
    RobotServiceClient::new(ch.clone())
        .send_session_heartbeat(SendSessionHeartbeatRequest { id: id.into() })
        .await
        .map(|_| ())
}

fn with_sid<T>(msg: T, sid: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(sid) = sid {
        r.metadata_mut().insert("viam-sid", sid.parse().unwrap());
    }
    r
}

async fn set_power(
    ch: &Channel,
    motor: &str,
    power: f64,
    sid: Option<&str>,
) -> Result<(), tonic::Status> {
    let req = SetPowerRequest {
        name: motor.into(),
        power_pct: power,
        extra: None,
    };
    MotorServiceClient::new(ch.clone())
        .set_power(with_sid(req, sid))
        .await
        .map(|_| ())
}

/// The motor's recorded commands, in order.
async fn history(ch: &Channel, motor: &str) -> Vec<String> {
    let mut cmd = prost_types::Struct::default();
    cmd.fields.insert(
        "command".into(),
        prost_types::Value {
            kind: Some(Kind::StringValue("history".into())),
        },
    );
    let result = MotorServiceClient::new(ch.clone())
        .do_command(DoCommandRequest {
            name: motor.into(),
            command: Some(cmd),
        })
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    let Some(Kind::ListValue(list)) = &result.fields["history"].kind else {
        panic!("no history list in {result:?}")
    };
    list.values
        .iter()
        .map(|v| match &v.kind {
            Some(Kind::StructValue(s)) => match &s.fields["command"].kind {
                Some(Kind::StringValue(c)) => c.clone(),
                other => panic!("bad command {other:?}"),
            },
            other => panic!("bad entry {other:?}"),
        })
        .collect()
}

async fn stops(ch: &Channel, motor: &str) -> usize {
    history(ch, motor)
        .await
        .iter()
        .filter(|c| *c == "stop")
        .count()
}

/// The switch's position.
async fn switch_position(ch: &Channel) -> u32 {
    SwitchServiceClient::new(ch.clone())
        .get_position(GetSwitchPosition {
            name: "switch".into(),
            extra: None,
        })
        .await
        .unwrap()
        .into_inner()
        .position
}

/// Polls until the motor has `n` stops or `limit` passes; returns the time it took.
async fn wait_for_stops(ch: &Channel, motor: &str, n: usize, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if stops(ch, motor).await >= n {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test]
async fn start_resume_heartbeat_on_another_connection_and_list() {
    let server = Server::start(&["--config", config("", "").to_str().unwrap()]);
    let main = server.channel().await;
    let (id, window) = start(&main, "").await;
    assert_eq!(window, W);
    // Heartbeats may arrive on any connection (the Python SDK uses a second one).
    let second = server.channel().await;
    heartbeat(&second, &id).await.unwrap();
    // Resuming a live session keeps it; resuming an unknown one starts a new one.
    assert_eq!(start(&second, &id).await.0, id);
    let unknown = "7b3e1c4c-0000-4000-8000-000000000000";
    let (fresh, _) = start(&main, unknown).await;
    assert!(fresh != id && fresh != unknown);
    let sessions = RobotServiceClient::new(main.clone())
        .get_sessions(GetSessionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .sessions;
    let listed = sessions
        .iter()
        .find(|s| s.id == id)
        .expect("session listed");
    let peer = listed.peer_connection_info.as_ref().expect("peer info");
    assert_eq!(peer.r#type, 1, "PEER_CONNECTION_TYPE_GRPC");
    assert!(
        peer.remote_address
            .as_deref()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    // Unknown and malformed ids: exactly INVALID_ARGUMENT "SESSION_EXPIRED".
    for bad in [unknown, "not-a-uuid"] {
        let err = heartbeat(&main, bad).await.unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::InvalidArgument, "SESSION_EXPIRED")
        );
    }
}

#[tokio::test]
async fn expiry_stops_the_motor_and_the_stale_session_is_refused_before_the_handler() {
    let server = Server::start(&["--config", config("", "").to_str().unwrap()]);
    let ch = server.channel().await;
    let (id, _) = start(&ch, "").await;
    set_power(&ch, "left", 0.5, Some(&id)).await.unwrap();
    let t0 = Instant::now();
    let took = wait_for_stops(&ch, "left", 1, 5 * W)
        .await
        .expect("motor stopped");
    assert!(
        took >= W - W / 5 - Duration::from_millis(50),
        "stopped too early: {took:?}"
    );
    assert!(
        t0.elapsed() <= W + Duration::from_millis(400),
        "stopped late: {:?}",
        t0.elapsed()
    );
    // The stale session is refused and the handler does not run (no new set_power recorded).
    let err = set_power(&ch, "left", 0.7, Some(&id)).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "SESSION_EXPIRED")
    );
    assert_eq!(history(&ch, "left").await, ["set_power", "stop"]);
    // A new session works; nothing resumed by itself.
    let (fresh, _) = start(&ch, &id).await;
    assert_ne!(fresh, id);
    set_power(&ch, "left", 0.7, Some(&fresh)).await.unwrap();
    assert!(server.log().contains("session expired"));
}

#[tokio::test]
async fn monitored_calls_count_as_heartbeats_and_sessionless_calls_clear_monitoring() {
    let server = Server::start(&["--config", config("", "").to_str().unwrap()]);
    let ch = server.channel().await;
    let (id, _) = start(&ch, "").await;
    // Only monitored calls, every W/3, for 3 W: the session stays alive, nothing stops.
    for _ in 0..9 {
        set_power(&ch, "left", 0.3, Some(&id)).await.unwrap();
        tokio::time::sleep(W / 3).await;
    }
    assert_eq!(stops(&ch, "left").await, 0);
    heartbeat(&ch, &id).await.unwrap();
    // A session-less command clears monitoring: when the session lapses, `left` keeps going.
    set_power(&ch, "right", 0.3, Some(&id)).await.unwrap();
    set_power(&ch, "left", 0.4, None).await.unwrap();
    wait_for_stops(&ch, "right", 1, 5 * W)
        .await
        .expect("right stopped");
    tokio::time::sleep(W).await;
    assert_eq!(
        stops(&ch, "left").await,
        0,
        "left was stopped after its monitoring was cleared"
    );
}

#[tokio::test]
async fn another_sessions_command_takes_over_the_resource() {
    let server = Server::start(&["--config", config("", "").to_str().unwrap()]);
    let ch = server.channel().await;
    let (a, _) = start(&ch, "").await;
    let (b, _) = start(&ch, "").await;
    set_power(&ch, "left", 0.5, Some(&a)).await.unwrap();
    set_power(&ch, "left", 0.6, Some(&b)).await.unwrap();
    // A lapses while B heartbeats: nothing stops.
    let t0 = Instant::now();
    while t0.elapsed() < 3 * W {
        heartbeat(&ch, &b).await.unwrap();
        tokio::time::sleep(W / 5).await;
    }
    assert_eq!(stops(&ch, "left").await, 0);
    assert!(heartbeat(&ch, &a).await.is_err(), "A should have expired");
    // Then B lapses: stop.
    wait_for_stops(&ch, "left", 1, 5 * W)
        .await
        .expect("stopped when B lapsed");
}

#[tokio::test]
async fn a_hung_stop_delays_no_other_stop_heartbeat_or_call() {
    let slow = r#",
        {"name": "slow", "api": "rdk:component:motor", "model": "fake", "attributes": {"stop_delay_ms": 10000}}"#;
    let server = Server::start(&["--config", config(slow, "").to_str().unwrap()]);
    let ch = server.channel().await;
    let (a, _) = start(&ch, "").await;
    let (b, _) = start(&ch, "").await;
    set_power(&ch, "slow", 0.5, Some(&a)).await.unwrap();
    set_power(&ch, "left", 0.5, Some(&a)).await.unwrap();
    tokio::time::sleep(W / 2).await;
    set_power(&ch, "right", 0.5, Some(&b)).await.unwrap();
    let (c, _) = start(&ch, "").await;
    // A expires first: its Stop of `slow` hangs for 10 s. `left` (same session) stops at once,
    // `right` (B, expiring W/2 later) stops on time, and C's heartbeats and calls go through.
    assert!(
        wait_for_stops(&ch, "left", 1, 3 * W).await.is_some(),
        "left not stopped"
    );
    let t0 = Instant::now();
    while t0.elapsed() < W {
        let call = Instant::now();
        heartbeat(&ch, &c).await.unwrap();
        MotorServiceClient::new(ch.clone())
            .get_position(GetPositionRequest {
                name: "slow".into(),
                extra: None,
            })
            .await
            .unwrap();
        assert!(
            call.elapsed() < Duration::from_millis(300),
            "calls delayed: {:?}",
            call.elapsed()
        );
        tokio::time::sleep(W / 10).await;
    }
    assert!(
        wait_for_stops(&ch, "right", 1, 2 * W).await.is_some(),
        "right not stopped"
    );
    assert_eq!(
        stops(&ch, "slow").await,
        0,
        "the slow stop cannot have finished yet"
    );
}

#[tokio::test]
async fn switch_and_button_are_not_stopped_and_operations_of_the_session_are_cancelled() {
    let server = Server::start(&["--config", config("", "").to_str().unwrap()]);
    let ch = server.channel().await;
    let (id, _) = start(&ch, "").await;
    // Switch and button have monitored methods but nothing to stop.
    let switch = SwitchServiceClient::new(ch.clone())
        .set_position(with_sid(
            SetPositionRequest {
                name: "switch".into(),
                position: 2,
                extra: None,
            },
            Some(&id),
        ))
        .await;
    switch.unwrap();
    ButtonServiceClient::new(ch.clone())
        .push(with_sid(
            PushRequest {
                name: "button".into(),
                extra: None,
            },
            Some(&id),
        ))
        .await
        .unwrap();
    // A long monitored call in the session; the session then lapses (no heartbeats).
    let go_for = {
        let ch = ch.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let req = GoForRequest {
                name: "left".into(),
                rpm: 60.0,
                revolutions: 100.0,
                extra: None,
            };
            MotorServiceClient::new(ch)
                .go_for(with_sid(req, Some(&id)))
                .await
        })
    };
    let err = tokio::time::timeout(5 * W, go_for)
        .await
        .expect("go_for ended when its session expired")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::Cancelled, "{err:?}");
    assert!(history(&ch, "left").await.contains(&"stop".to_string()));
    let log = server.log();
    let expiry = log
        .lines()
        .find(|l| l.contains("session expired"))
        .expect("expiry logged");
    assert!(expiry.contains("cancelled_operations=1"), "{expiry}");
    assert!(
        expiry.contains(r#"stopping=["rdk:component:motor/left"]"#),
        "{expiry}"
    );
    let position = switch_position(&ch).await;
    assert_eq!(position, 2);
}

#[tokio::test]
async fn the_session_limit_answers_resource_exhausted_and_everything_keeps_working() {
    let server = Server::start(&[
        "--config",
        config("", r#", "max_sessions": 2"#).to_str().unwrap(),
    ]);
    let ch = server.channel().await;
    let (a, _) = start(&ch, "").await;
    let (_b, _) = start(&ch, "").await;
    let err = RobotServiceClient::new(ch.clone())
        .start_session(StartSessionRequest {
            resume: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("too many concurrent sessions"));
    heartbeat(&ch, &a).await.unwrap();
    set_power(&ch, "left", 0.2, Some(&a)).await.unwrap();
    // Once sessions lapse there is room again.
    tokio::time::sleep(2 * W).await;
    start(&ch, "").await;
}

#[tokio::test]
async fn a_connection_that_commanded_without_a_session_stops_what_it_drove_when_it_ends() {
    let server = Server::start(&["--config", config("", "").to_str().unwrap()]);
    let observer = server.channel().await;
    // Connection a drives both motors without a session; b then takes "right" over.
    let a = server.channel().await;
    set_power(&a, "left", 0.5, None).await.unwrap();
    set_power(&a, "right", 0.5, None).await.unwrap();
    let b = server.channel().await;
    set_power(&b, "right", 0.3, None).await.unwrap();
    // a ends (the app crashed, its socket closed): what it still commands stops at once;
    // what b took over does not.
    drop(a);
    let took = wait_for_stops(&observer, "left", 1, Duration::from_secs(3))
        .await
        .unwrap_or_else(|| panic!("left was not stopped: {}", server.log()));
    println!("stopped {took:?} after its commanding connection closed");
    tokio::time::sleep(W).await;
    assert_eq!(stops(&observer, "right").await, 0, "{}", server.log());
    // A session takes "right" over from b: b's end stops nothing, the session's lapse does.
    let (id, _) = start(&observer, "").await;
    set_power(&observer, "right", 0.2, Some(&id)).await.unwrap();
    drop(b);
    tokio::time::sleep(W / 2).await;
    assert_eq!(stops(&observer, "right").await, 0, "{}", server.log());
    assert!(wait_for_stops(&observer, "right", 1, 4 * W).await.is_some());
    assert!(
        server
            .log()
            .contains("a connection that commanded without a session ended"),
        "{}",
        server.log()
    );
    // Only actuators are stopped: a switch set without a session stays where it was put.
    let c = server.channel().await;
    SwitchServiceClient::new(c.clone())
        .set_position(SetPositionRequest {
            name: "switch".into(),
            position: 1,
            extra: None,
        })
        .await
        .unwrap();
    drop(c);
    tokio::time::sleep(W).await;
    let position = switch_position(&observer).await;
    assert_eq!(position, 1);
}

#[tokio::test]
async fn with_stop_on_disconnect_off_a_sessionless_commander_is_not_stopped() {
    let off = config("", r#", "stop_on_disconnect": false"#);
    let server = Server::start(&["--config", off.to_str().unwrap()]);
    let observer = server.channel().await;
    let a = server.channel().await;
    set_power(&a, "left", 0.5, None).await.unwrap();
    drop(a);
    tokio::time::sleep(4 * W).await;
    assert_eq!(stops(&observer, "left").await, 0, "{}", server.log());
}

/// A heartbeat call that says it was sent at `sent_us` (as Tether's client's calls do).
async fn timed_heartbeat(ch: &Channel, id: &str, sent_us: u64) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(SendSessionHeartbeatRequest { id: id.into() });
    request
        .metadata_mut()
        .insert(tether_rpc::heartbeat::SENT_HEADER, sent_us.into());
    RobotServiceClient::new(ch.clone())
        .send_session_heartbeat(request)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_heartbeat_that_says_it_was_sent_long_ago_keeps_nothing_alive() {
    let server = Server::start(&["--config", config("", "").to_str().unwrap()]);
    let ch = server.channel().await;
    let (id, _) = start(&ch, "").await;
    set_power(&ch, "left", 0.5, Some(&id)).await.unwrap();
    // Fresh timed heartbeats, and untimed ones (Viam's SDKs), keep the session for 4 windows.
    let until = Instant::now() + 4 * W;
    let mut sent = 0;
    while Instant::now() < until {
        sent = tether_rpc::heartbeat::steady_micros();
        timed_heartbeat(&ch, &id, sent).await.unwrap();
        tokio::time::sleep(W / 5).await;
        heartbeat(&ch, &id).await.unwrap();
        tokio::time::sleep(W / 5).await;
    }
    assert_eq!(stops(&ch, "left").await, 0, "{}", server.log());
    // The last one again and again, as a backlog would deliver heartbeats after their client
    // died: the session lapses one window after it was sent, though they keep arriving.
    let t0 = Instant::now();
    while timed_heartbeat(&ch, &id, sent).await.is_ok() {
        assert!(t0.elapsed() < 4 * W, "late heartbeats kept the session");
        tokio::time::sleep(W / 10).await;
    }
    assert!(wait_for_stops(&ch, "left", 1, 4 * W).await.is_some());
}

/// StartSession's answer with its headers: the session id and the UDP heartbeat key, if given.
async fn start_with_key(ch: &Channel) -> (String, Option<String>) {
    let r = RobotServiceClient::new(ch.clone())
        .start_session(StartSessionRequest { resume: "".into() })
        .await
        .unwrap();
    let key = r
        .metadata()
        .get(tether_rpc::heartbeat::udp::KEY_HEADER)
        .map(|v| v.to_str().unwrap().to_string());
    (r.into_inner().id, key)
}

#[tokio::test]
async fn udp_heartbeats_keep_a_session_alive_and_forged_or_replayed_ones_do_not() {
    use tether_rpc::heartbeat::Ack;
    use tether_rpc::heartbeat::udp::{ACK_LEN, SessionKey, decode_ack, encode_request};
    let server = Server::start(&["--config", config("", "").to_str().unwrap()]);
    let ch = server.channel().await;
    let (id, key) = start_with_key(&ch).await;
    let key = SessionKey::from_header(&key.expect("a direct caller is given a key")).unwrap();
    let raw = *uuid::Uuid::parse_str(&id).unwrap().as_bytes();
    set_power(&ch, "left", 0.5, Some(&id)).await.unwrap();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.connect(&server.addr).await.unwrap();
    // The answer to one datagram, if any comes within 300 ms.
    let exchange = |datagram: Vec<u8>| {
        let udp = &udp;
        async move {
            udp.send(&datagram).await.unwrap();
            let mut buf = [0u8; ACK_LEN + 1];
            let n = tokio::time::timeout(Duration::from_millis(300), udp.recv(&mut buf))
                .await
                .ok()?
                .unwrap();
            Some(buf[..n].to_vec())
        }
    };
    // Only datagrams, for four windows: the session, and the motor, live on. The sequence
    // number is the sender's clock (the machine counts the window from it).
    let mut seq = 0;
    let mut replay = Vec::new();
    let until = Instant::now() + 4 * W;
    while Instant::now() < until {
        seq = tether_rpc::heartbeat::steady_micros();
        let request = encode_request(&key, &raw, seq).to_vec();
        let answer = exchange(request.clone()).await.expect("an ack");
        assert_eq!(decode_ack(&key, &raw, &answer), Some((seq, Ack::Alive)));
        replay = request;
        tokio::time::sleep(W / 5).await;
    }
    assert_eq!(stops(&ch, "left").await, 0, "{}", server.log());
    // A replay, a forged tag, another key's datagram and junk are not answered and keep
    // nothing alive: the session lapses within the window.
    let forged_key = SessionKey::from_header(&"A".repeat(43)).unwrap();
    let mut forged_tag = encode_request(&key, &raw, seq + 1).to_vec();
    forged_tag[50] ^= 1;
    let t0 = Instant::now();
    while t0.elapsed() < 2 * W {
        assert_eq!(
            exchange(replay.clone()).await,
            None,
            "a replay was answered"
        );
        assert_eq!(exchange(forged_tag.clone()).await, None);
        let other = encode_request(&forged_key, &raw, seq + 2).to_vec();
        assert_eq!(exchange(other).await, None);
        assert_eq!(exchange(b"THB1 junk".to_vec()).await, None);
    }
    assert_eq!(stops(&ch, "left").await, 1, "{}", server.log());
    // The machine says so to the key's holder.
    let late = encode_request(&key, &raw, seq + 3).to_vec();
    let answer = exchange(late).await.expect("an ack");
    assert_eq!(
        decode_ack(&key, &raw, &answer),
        Some((seq + 3, Ack::Expired))
    );
    // With datagrams off, no key is handed out.
    let off = config("", r#", "disable_heartbeat_datagrams": true"#);
    let server = Server::start(&["--config", off.to_str().unwrap()]);
    assert_eq!(start_with_key(&server.channel().await).await.1, None);
}
