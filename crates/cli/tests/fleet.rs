//! A fleet's signaling, as real processes on loopback: `tether signal` instances (in memory,
//! or two sharing a real `redis-server`), a `tether serve` machine that answers through one of
//! them (`cloud.signaling_address`), and the Rust client calling through another.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is the test failing"
)]

mod common;
#[path = "../../signal/tests/support/redis_server.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use common::Server;
use common::client::{KEY, KEY_ID, held_past_the_window, stops_once_gone};
use common::signaling::{signaling_client, to};
use redis_server::Redis;
use tether_client::{Motor, Options, RobotClient};
use tether_proto::proto::rpc::webrtc::v1 as pb;
use tonic::Code;

/// The machine's name on the fleet's signaling service.
const ROVER: &str = "rover.fleet.test";
const ROVER_KEY: (&str, &str) = ("rover-key", "rover-secret-0123456789");
const INTRUDER_KEY: (&str, &str) = ("intruder", "intruder-secret-0123456789");
const TURN_SECRET: &str = "fleet-turn-secret";

/// A signaling config: the rover's key answers for the rover, the operator's key (the
/// machine's own API key too) calls it and a host nobody answers for, the intruder's key
/// answers for another machine only.
fn signal_config(redis: Option<&Redis>) -> std::path::PathBuf {
    let redis = redis
        .map(|r| format!(r#""redis_url": "{}","#, r.url()))
        .unwrap_or_default();
    let text = format!(
        r#"{{{redis}
          "api_keys": [
            {{"id": "{}", "key": "{}", "answer": ["{ROVER}"]}},
            {{"id": "{KEY_ID}", "key": "{KEY}", "call": ["{ROVER}", "ghost.fleet.test"]}},
            {{"id": "{}", "key": "{}", "answer": ["other.fleet.test"]}}
          ],
          "ice_servers": [{{"urls": ["stun:127.0.0.1:3478"]}}],
          "turn_rest": {{"urls": ["turn:127.0.0.1:3478"], "secret": "{TURN_SECRET}", "ttl": "1h"}}
        }}"#,
        ROVER_KEY.0, ROVER_KEY.1, INTRUDER_KEY.0, INTRUDER_KEY.1
    );
    common::unique_temp_file("signal", &text)
}

fn signal(config: &std::path::Path, bind: &str) -> Server {
    Server::start_signal(&["--config", config.to_str().unwrap(), "--bind", bind])
}

/// A machine with motor `left`, window 500 ms, the operator's API key, answering as [`ROVER`]
/// through the signaling service at `signaling`.
fn machine(signaling: &str) -> Server {
    let text = format!(
        r#"{{"components": [{{"name": "left", "api": "rdk:component:motor", "model": "fake"}}],
            {},
            "network": {{"sessions": {{"heartbeat_window": "500ms"}}}},
            "cloud": {{"signaling_address": "{signaling}", "signaling_insecure": true,
                       "fqdn": "{ROVER}", "local_fqdn": "rover.local",
                       "api_key": {{"id": "{}", "key": "{}"}}}}}}"#,
        common::api_key_auth(KEY_ID, KEY),
        ROVER_KEY.0,
        ROVER_KEY.1
    );
    let config = common::unique_temp_file("fleet-machine", &text);
    let m = Server::start(&["--config", config.to_str().unwrap()]);
    assert!(
        m.wait_for_log(
            "answering calls through the signaling service",
            Duration::from_secs(20)
        ),
        "the machine never answered through {signaling}: {}",
        m.log()
    );
    m
}

/// The operator's client, signaling through `signaling`.
fn operator(signaling: &str) -> Options {
    Options::with_api_key(KEY, KEY_ID)
        .insecure()
        .with_signaling_address(signaling)
}

/// `options` with a short dial timeout, for retrying while something comes back.
fn quick(mut options: Options) -> Options {
    options.dial_timeout = Duration::from_secs(5);
    options.backoff.max_attempts = 0;
    options
}

async fn dial_rover(signaling: &str) -> RobotClient {
    let robot = RobotClient::connect(ROVER, operator(signaling))
        .await
        .unwrap_or_else(|e| panic!("dialing {ROVER} through {signaling}: {e:?}"));
    let events = format!("{:?}", robot.first_dial_events());
    assert!(
        events.contains("Connected") && events.contains("webrtc"),
        "not over WebRTC: {events}"
    );
    robot
}

#[tokio::test]
async fn a_caller_on_one_instance_reaches_a_machine_answering_on_another() {
    let redis = Redis::start();
    let config = signal_config(Some(&redis));
    let (a, b) = (
        signal(&config, "127.0.0.1:0"),
        signal(&config, "127.0.0.1:0"),
    );
    let rover = machine(&b.addr);
    let started = Instant::now();
    let robot = dial_rover(&a.addr).await;
    eprintln!(
        "dialed {ROVER} through instance A, answered through B, in {:?}",
        started.elapsed()
    );
    let names = robot.resource_names().await.unwrap();
    assert!(names.iter().any(|n| n.name == "left"), "{names:?}");
    let mut left = Motor::from_robot(&robot, "left");
    left.set_power(0.5).await.unwrap();
    let id = robot
        .session_id()
        .expect("a monitored call starts a session");
    let mut watch = held_past_the_window(&robot, &rover.addr, &id).await;
    // The session belongs to the caller's key, as the signaling service authenticated it:
    // the same owner a direct connection with that key has.
    let sessions = robot.sessions().await.unwrap();
    assert!(sessions.iter().any(|s| s.id == id), "{sessions:?}");
    drop((left, robot));
    let gone = stops_once_gone(&mut watch).await;
    eprintln!("motor stopped {gone:?} after the client went away");
}

#[tokio::test]
async fn keys_answer_and_call_only_their_hosts_and_get_turn_credentials() {
    let redis = Redis::start();
    let server = signal(&signal_config(Some(&redis)), "127.0.0.1:0");
    // Without a token: nothing.
    let mut anon =
        pb::signaling_service_client::SignalingServiceClient::new(server.channel().await);
    let mut r = tonic::Request::new(pb::OptionalWebRtcConfigRequest {});
    r.metadata_mut().insert("rpc-host", ROVER.parse().unwrap());
    let e = anon.optional_web_rtc_config(r).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    let answer_stream = || futures::stream::pending::<pb::AnswerResponse>();
    // The intruder's key cannot register as the rover's answerer.
    let (mut intruder, token) =
        signaling_client(&server.addr, INTRUDER_KEY.0, INTRUDER_KEY.1).await;
    let e = intruder
        .answer(to(answer_stream(), ROVER, &token))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("answer for"), "{e:?}");
    // Nor call it.
    let call = pb::CallRequest {
        sdp: "offer".into(),
        disable_trickle: false,
    };
    let e = intruder
        .call(to(call.clone(), ROVER, &token))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // The operator calls, but does not answer.
    let (mut op, token) = signaling_client(&server.addr, KEY_ID, KEY).await;
    let e = op
        .answer(to(answer_stream(), ROVER, &token))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // A host nobody answers for: NOT_FOUND at once, with goutils' message.
    let started = Instant::now();
    let e = op
        .call(to(call, "ghost.fleet.test", &token))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert_eq!(
        e.message(),
        tether_signal::redis_queue::HOST_OFFLINE,
        "{e:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // ICE servers: the STUN server, and TURN credentials minted for this key, valid an hour.
    let config = op
        .optional_web_rtc_config(to(pb::OptionalWebRtcConfigRequest {}, ROVER, &token))
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    let servers = config.additional_ice_servers;
    assert_eq!(servers.len(), 2, "{servers:?}");
    let turn = &servers[1];
    let (expiry, who) = turn.username.split_once(':').unwrap();
    assert_eq!(who, KEY_ID);
    let expiry: u64 = expiry.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(expiry.abs_diff(now + 3600) < 60, "{expiry} vs {now}");
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        TURN_SECRET.as_bytes(),
    );
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD
        .encode(ring::hmac::sign(&key, turn.username.as_bytes()).as_ref());
    assert_eq!(turn.credential, expected);
}

#[tokio::test]
async fn a_machine_comes_back_when_its_instance_restarts_and_when_redis_does() {
    let mut redis = Redis::start();
    let config = signal_config(Some(&redis));
    let a = signal(&config, "127.0.0.1:0");
    let b_addr = format!("127.0.0.1:{}", common::free_port());
    let mut b = signal(&config, &b_addr);
    let rover = machine(&b.addr);
    drop(dial_rover(&a.addr).await);

    // The machine's instance dies; another takes its address (what a load balancer in front
    // of the instances gives a reconnecting machine).
    let killed = Instant::now();
    drop(b);
    b = signal(&config, &b_addr);
    let back = loop {
        match RobotClient::connect(ROVER, quick(operator(&a.addr))).await {
            Ok(r) if format!("{:?}", r.first_dial_events()).contains("webrtc") => {
                break killed.elapsed();
            }
            _ => {
                assert!(
                    killed.elapsed() < Duration::from_secs(30),
                    "the machine never came back: {}",
                    rover.log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    eprintln!("reachable again {back:?} after its signaling instance died");

    // Redis restarts empty: the instances re-register their answerers and calls work again.
    redis.restart();
    let restarted = Instant::now();
    loop {
        let attempt = RobotClient::connect(ROVER, quick(operator(&a.addr))).await;
        eprintln!(
            "{:?} after the restart: {:?}",
            restarted.elapsed(),
            attempt.as_ref().map(|r| r.first_dial_events().len())
        );
        match attempt {
            Ok(r) if format!("{:?}", r.first_dial_events()).contains("webrtc") => break,
            _ => {
                assert!(
                    restarted.elapsed() < Duration::from_secs(30),
                    "no call through a restarted Redis: {}\n{}",
                    a.log(),
                    b.log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    eprintln!("calls work {:?} after Redis restarted", restarted.elapsed());
}

#[test]
fn a_bad_signal_config_is_refused_with_the_field_named() {
    for (text, expect) in [
        (
            r#"{"api_keys": [{"id": "a", "key": "k"}]}"#,
            "grants nothing",
        ),
        (r#"{"redis": "x"}"#, "unknown field `redis`"),
        (
            r#"{"turn_rest": {"urls": ["turn:x:3478"], "secret": ""}}"#,
            "turn_rest.secret",
        ),
    ] {
        let path = common::unique_temp_file("bad-signal", text);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["signal", "--bind", "127.0.0.1:0", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(expect), "{text}: {stderr}");
    }
}
