//! The Rust client SDK dialing a real `tether serve` process over WebRTC: signaling at the
//! machine's own address, ICE on loopback only, gRPC over the data channel. Figures (connect
//! time, round trips, 8 MiB transfers) are printed with `--nocapture`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step is the test failing"
)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::client::{
    KEY, KEY_ID, busy_application_keeps_its_session, config, held_past_the_window, stops_once_gone,
    until,
};
use common::{RawCodec, Server, temp_file};
use prost_types::{Struct, Value, value::Kind};
use tether_client::{
    ClientError, ConnectionEvent, Generic, Motor, Options, RobotChannel, RobotClient,
};
use tether_proto::viam::common::v1::DoCommandRequest;
use tether_proto::viam::component::generic::v1::generic_service_client::GenericServiceClient;
use tether_proto::viam::robot::v1 as robot;
use tonic::Code;

fn dialing(method: &str) -> ConnectionEvent {
    ConnectionEvent::Dialing {
        method: method.into(),
        attempt: 1,
    }
}

fn connected(transport: &str) -> ConnectionEvent {
    ConnectionEvent::Connected {
        transport: transport.into(),
    }
}

/// A client that must have connected over WebRTC.
async fn over_webrtc(addr: &str, options: Options) -> RobotClient {
    let robot = RobotClient::connect(addr, options).await.unwrap();
    assert_eq!(
        robot.transport(),
        "webrtc",
        "{:?}",
        robot.first_dial_events()
    );
    robot
}

/// A unary call with raw bytes over the client's channel.
async fn raw_unary(
    channel: &RobotChannel,
    path: &str,
    body: Bytes,
) -> Result<Bytes, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::try_from(path).unwrap();
    Ok(grpc
        .unary(tonic::Request::new(body), path, RawCodec)
        .await?
        .into_inner())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

async fn round_trips(robot: &RobotClient, n: usize) -> Duration {
    let client = robot.robot();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = client.clone();
        let t0 = Instant::now();
        c.get_version(robot::GetVersionRequest {}).await.unwrap();
        samples.push(t0.elapsed());
    }
    median(samples)
}

#[tokio::test]
async fn dials_over_webrtc_by_default_and_unary_calls_work() {
    let server = Server::start(&[]);
    let t0 = Instant::now();
    let robot = over_webrtc(&server.addr, Options::default().insecure()).await;
    let connect = t0.elapsed();
    assert_eq!(
        robot.first_dial_events(),
        [
            ConnectionEvent::Connecting,
            dialing("webrtc"),
            connected("webrtc")
        ]
    );
    assert!(!robot.is_relayed().await, "no relay was configured");
    let names = robot.resource_names().await.unwrap();
    assert!(
        names
            .iter()
            .any(|n| n.subtype == "motor" && n.name == "left"),
        "{names:?}"
    );
    let mut left = Motor::from_robot(&robot, "left");
    assert_eq!(left.position().await.unwrap(), 0.0);
    let webrtc_rtt = round_trips(&robot, 200).await;

    let t0 = Instant::now();
    let direct = RobotClient::connect(&server.addr, Options::default().insecure().disable_webrtc())
        .await
        .unwrap();
    let direct_connect = t0.elapsed();
    assert_eq!(direct.transport(), "direct");
    assert_eq!(
        direct.first_dial_events(),
        [
            ConnectionEvent::Connecting,
            dialing("direct"),
            connected("direct")
        ]
    );
    let direct_rtt = round_trips(&direct, 200).await;
    eprintln!(
        "connect: webrtc {connect:?}, direct {direct_connect:?}; \
         GetVersion median round trip: webrtc {webrtc_rtt:?}, direct {direct_rtt:?}"
    );
    assert!(connect < Duration::from_secs(5), "{connect:?}");
}

#[tokio::test]
async fn errors_arrive_as_their_statuses() {
    let server = Server::start(&[]);
    let robot = over_webrtc(&server.addr, Options::default().insecure()).await;
    let err = Motor::from_robot(&robot, "no-such-motor")
        .position()
        .await
        .unwrap_err();
    let ClientError::Status(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("no-such-motor"), "{status:?}");
    let status = raw_unary(
        robot.channel(),
        "/viam.robot.v1.RobotService/NoSuchMethod",
        Bytes::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let status = raw_unary(robot.channel(), "/no.such.Service/Method", Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    // The channel keeps serving after errors.
    robot.resource_names().await.unwrap();
}

/// The error of a server stream that fails before its first message. Over the data channel
/// the machine always sends headers first, so the client sees the error either at once or as
/// the stream's first item, depending on whether the trailers arrived with the headers.
async fn stream_error<T>(
    started: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
) -> tonic::Status {
    match started {
        Err(e) => e,
        Ok(r) => r
            .into_inner()
            .message()
            .await
            .err()
            .expect("the stream fails"),
    }
}

#[tokio::test]
#[allow(deprecated)] // StreamStatus is deprecated in Viam's API, and the only server stream served
async fn server_streaming() {
    // StreamStatus: a status of the named resource every 100 ms until the caller stops.
    let server = Server::start(&[]);
    let robot = over_webrtc(&server.addr, Options::default().insecure()).await;
    let left = tether_proto::viam::common::v1::ResourceName {
        namespace: "rdk".into(),
        r#type: "component".into(),
        subtype: "motor".into(),
        name: "left".into(),
    };
    let every = Some(prost_types::Duration {
        seconds: 0,
        nanos: 100_000_000,
    });
    let mut stream = robot
        .robot()
        .stream_status(robot::StreamStatusRequest {
            resource_names: vec![left.clone()],
            every,
        })
        .await
        .unwrap()
        .into_inner();
    let started = std::time::Instant::now();
    for _ in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a status every 100 ms")
            .unwrap()
            .expect("the stream goes on");
        assert_eq!(m.status.len(), 1);
        assert_eq!(m.status[0].name.as_ref().unwrap().name, "left");
    }
    // Three ticks: immediately, then 100 ms apart.
    assert!(
        started.elapsed() >= Duration::from_millis(180),
        "{:?}",
        started.elapsed()
    );
    drop(stream);
    // Errors: an unknown resource, a zero interval.
    let mut wheel = left.clone();
    wheel.name = "wheel-9".into();
    let e = stream_error(
        robot
            .robot()
            .stream_status(robot::StreamStatusRequest {
                resource_names: vec![wheel],
                every,
            })
            .await,
    )
    .await;
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = stream_error(
        robot
            .robot()
            .stream_status(robot::StreamStatusRequest {
                resource_names: vec![],
                every: None,
            })
            .await,
    )
    .await;
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    robot.resource_names().await.unwrap();
}

/// `ServerReflectionRequest { list_services (7) = "*" }` and
/// `{ file_containing_symbol (4) = "viam.robot.v1.RobotService" }`.
const LIST_SERVICES: &[u8] = b"\x3a\x01*";

fn file_containing(symbol: &str) -> Bytes {
    let mut m = vec![0x22, symbol.len() as u8];
    m.extend_from_slice(symbol.as_bytes());
    Bytes::from(m)
}

#[tokio::test]
async fn bidi_streaming_gets_each_answer_before_the_next_request_is_sent() {
    let server = Server::start(&[]);
    let robot = over_webrtc(&server.addr, Options::default().insecure()).await;
    let mut grpc = tonic::client::Grpc::new(robot.channel().clone());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let requests = tonic::codegen::tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
    tx.send(Bytes::from_static(LIST_SERVICES)).unwrap();
    let path = http::uri::PathAndQuery::from_static(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    );
    let mut replies = grpc
        .streaming(tonic::Request::new(requests), path, RawCodec)
        .await
        .unwrap()
        .into_inner();
    let first = replies.message().await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&first).into_owned();
    assert!(
        text.contains("viam.component.motor.v1.MotorService"),
        "{text}"
    );
    // The request stream is still open: the second question goes out only now.
    tx.send(file_containing("viam.robot.v1.RobotService"))
        .unwrap();
    let second = replies.message().await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&second).contains("robot.proto"),
        "{second:?}"
    );
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());
}

fn text(s: String) -> Value {
    Value {
        kind: Some(Kind::StringValue(s)),
    }
}

#[tokio::test]
async fn eight_mib_both_ways() {
    let server = Server::start(&[]);
    let payload: String = (0..8 << 20)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let request = DoCommandRequest {
        name: "generic".into(),
        command: Some(Struct {
            fields: [("payload".to_string(), text(payload.clone()))].into(),
        }),
    };
    let mut figures = Vec::new();
    for options in [
        Options::default().insecure(),
        Options::default().insecure().disable_webrtc(),
    ] {
        let robot = RobotClient::connect(&server.addr, options).await.unwrap();
        let mut client = GenericServiceClient::new(robot.channel().clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let t0 = Instant::now();
        let reply = client
            .do_command(request.clone())
            .await
            .unwrap()
            .into_inner();
        let took = t0.elapsed();
        let echo = reply.result.unwrap().fields.remove("echo").unwrap();
        let Some(Kind::StructValue(echo)) = echo.kind else {
            panic!("no echo")
        };
        let Some(Kind::StringValue(back)) = echo.fields["payload"].kind.clone() else {
            panic!("no payload")
        };
        assert!(back == payload, "the 8 MiB payload came back altered");
        figures.push(format!("{}: {took:?}", robot.transport()));
        // The channel is still fine for small calls.
        Generic::from_robot(&robot, "generic")
            .do_command(Struct::default())
            .await
            .unwrap();
    }
    eprintln!(
        "8 MiB DoCommand echo (8 MiB each way): {}",
        figures.join(", ")
    );
}

#[tokio::test]
async fn two_hundred_fifty_six_calls_at_once_and_the_next_is_refused_locally() {
    let server = Server::start(&["--config", config(false, "2s", None).to_str().unwrap()]);
    // No session: its heartbeats would take a stream of their own now and then.
    let options = Options {
        disable_sessions: true,
        ..Options::default().insecure()
    };
    let robot = over_webrtc(&server.addr, options).await;
    // 256 quick calls at once all succeed.
    let calls: Vec<_> = (0..256)
        .map(|_| {
            let mut client = robot.robot();
            tokio::spawn(async move { client.get_version(robot::GetVersionRequest {}).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    // Hold 256 calls open: one long GoFor and 255 calls blocking for it. (Operations are
    // looked up and cancelled from a direct client: the WebRTC one will be full.)
    let side = RobotClient::connect(&server.addr, Options::default().insecure().disable_webrtc())
        .await
        .unwrap();
    let mut left = Motor::from_robot(&robot, "left");
    let mover = tokio::spawn(async move { left.go_for(10.0, 1000.0).await });
    let op = loop {
        let ops = side.robot_ops().await;
        if let Some(op) = ops.into_iter().find(|o| o.method.ends_with("/GoFor")) {
            break op.id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let blocked: Vec<_> = (0..255)
        .map(|_| {
            let mut client = robot.robot();
            let id = op.clone();
            tokio::spawn(async move {
                client
                    .block_for_operation(robot::BlockForOperationRequest { id })
                    .await
            })
        })
        .collect();
    // Once the machine runs all 256, the next call is refused here, not sent.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ops = side.robot_ops().await;
        let blocking = ops
            .iter()
            .filter(|o| o.method.ends_with("/BlockForOperation"))
            .count();
        if blocking == 255 {
            break;
        }
        let ended = blocked.iter().filter(|b| b.is_finished()).count();
        assert!(
            Instant::now() < deadline && ended == 0,
            "only {blocking} calls block ({ended} ended)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = robot
        .robot()
        .get_version(robot::GetVersionRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("256"), "{refused:?}");
    // Cancelling the operation ends all of them, and the connection serves again.
    side.robot()
        .cancel_operation(robot::CancelOperationRequest { id: op })
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), mover)
        .await
        .expect("GoFor ends when cancelled");
    for b in blocked {
        tokio::time::timeout(Duration::from_secs(10), b)
            .await
            .expect("blocked calls end with the operation")
            .unwrap()
            .unwrap();
    }
    robot.resource_names().await.unwrap();
}

trait Ops {
    async fn robot_ops(&self) -> Vec<robot::Operation>;
}

impl Ops for RobotClient {
    async fn robot_ops(&self) -> Vec<robot::Operation> {
        self.robot()
            .get_operations(robot::GetOperationsRequest {})
            .await
            .unwrap()
            .into_inner()
            .operations
    }
}

#[tokio::test]
async fn sessions_over_webrtc_are_webrtc_peers_stay_alive_and_lapse_when_the_client_goes() {
    let server = Server::start(&["--config", config(true, "500ms", None).to_str().unwrap()]);
    let robot = over_webrtc(&server.addr, Options::with_api_key(KEY, KEY_ID).insecure()).await;
    let mut left = Motor::from_robot(&robot, "left");
    if let Err(e) = left.set_power(0.5).await {
        panic!(
            "set_power over WebRTC failed: {e:?}\nmachine log:\n{}",
            server.log()
        );
    }
    let id = robot
        .session_id()
        .expect("a monitored call starts a session");
    let sessions = robot.robot_sessions().await;
    let ours = sessions
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("{sessions:?}"));
    assert_eq!(
        ours.peer_connection_info.as_ref().map(|p| p.r#type),
        Some(robot::PeerConnectionType::Webrtc as i32),
        "{ours:?}"
    );
    // Heartbeats (over the peer connection) keep it alive well past the window.
    let mut watch = held_past_the_window(&robot, &server.addr, &id).await;
    let sessions = robot.robot_sessions().await;
    let ours = sessions.iter().find(|s| s.id == id).unwrap();
    assert_eq!(
        ours.peer_connection_info.as_ref().map(|p| p.r#type),
        Some(robot::PeerConnectionType::Webrtc as i32),
        "heartbeats must come over WebRTC too: {ours:?}"
    );
    // Dropping the client ends heartbeats and the peer; the machine stops the motor.
    drop((left, robot));
    let gone = stops_once_gone(&mut watch).await;
    eprintln!("motor stopped {gone:?} after the WebRTC client was dropped");
}

trait Sessions {
    async fn robot_sessions(&self) -> Vec<robot::Session>;
}

impl Sessions for RobotClient {
    async fn robot_sessions(&self) -> Vec<robot::Session> {
        self.robot()
            .get_sessions(robot::GetSessionsRequest {})
            .await
            .unwrap()
            .into_inner()
            .sessions
    }
}

#[test]
fn a_busy_application_does_not_starve_heartbeats_over_webrtc() {
    let server = Server::start(&["--config", config(false, "500ms", None).to_str().unwrap()]);
    busy_application_keeps_its_session(&server.addr, Options::default().insecure(), "webrtc");
}

#[tokio::test]
async fn a_restarted_machine_is_redialed_over_webrtc_with_a_new_session() {
    let port = common::free_port();
    let bind = format!("127.0.0.1:{port}");
    let cfg = config(true, "500ms", Some(&bind));
    let mut server = Server::start_exact(&["--config", cfg.to_str().unwrap()]);
    let robot = over_webrtc(&bind, Options::with_api_key(KEY, KEY_ID).insecure()).await;
    let mut left = Motor::from_robot(&robot, "left");
    left.set_power(0.5).await.unwrap();
    let first = robot.session_id().unwrap();
    let mut events = robot.events();
    server.signal("KILL");
    server.wait_exit(Duration::from_secs(5)).unwrap();
    let killed = Instant::now();
    let _server = Server::start_exact(&["--config", cfg.to_str().unwrap()]);
    let seen = until(&mut events, Duration::from_secs(15), |e| {
        matches!(e, ConnectionEvent::Connected { .. })
    })
    .await;
    let reconnected = killed.elapsed();
    assert!(
        seen.iter()
            .any(|e| matches!(e, ConnectionEvent::Disconnected { .. })),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, ConnectionEvent::Dialing { method, .. } if method == "webrtc")),
        "{seen:?}"
    );
    assert_eq!(seen.last(), Some(&connected("webrtc")), "{seen:?}");
    eprintln!("machine killed → reconnected over WebRTC in {reconnected:?}: {seen:?}");
    // The new process never saw the old session: the next command starts a new one.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match left.set_power(0.4).await {
            Ok(()) => break,
            Err(ClientError::Status(s)) if s.message() == "SESSION_EXPIRED" => {}
            Err(e) => panic!("{e:?}"),
        }
        assert!(Instant::now() < deadline);
    }
    assert_ne!(robot.session_id().unwrap(), first);
    assert!(left.is_moving().await.unwrap());
    assert_eq!(robot.transport(), "webrtc");
}

#[tokio::test]
async fn through_a_turn_relay_with_force_relay() {
    let turn = tether_rtc::turn_server::TurnServer::start("tether", "relay-secret")
        .await
        .unwrap();
    let server = Server::start(&[]);
    let options = Options::default()
        .insecure()
        .with_ice_servers([turn.ice_server()])
        .force_relay();
    let t0 = Instant::now();
    let robot = over_webrtc(&server.addr, options).await;
    let connect = t0.elapsed();
    assert!(
        robot.is_relayed().await,
        "force_relay must select a relayed pair"
    );
    robot.resource_names().await.unwrap();
    let rtt = round_trips(&robot, 100).await;
    eprintln!("relayed: connect {connect:?}, GetVersion median round trip {rtt:?}");
    drop(robot);
    // force_p2p never relays, even with a TURN server offered.
    let p2p = over_webrtc(
        &server.addr,
        Options::default()
            .insecure()
            .with_ice_servers([turn.ice_server()])
            .force_p2p(),
    )
    .await;
    assert!(!p2p.is_relayed().await);
    p2p.resource_names().await.unwrap();
    drop(p2p);
    turn.close().await;
}

#[tokio::test]
async fn contradictory_options_are_refused() {
    let err = RobotClient::connect(
        "127.0.0.1:1",
        Options::default().insecure().force_relay().force_p2p(),
    )
    .await
    .err()
    .expect("force_relay with force_p2p must be refused");
    assert!(matches!(err, ClientError::InvalidOptions(_)), "{err:?}");
}

#[tokio::test]
async fn api_keys_over_webrtc_and_a_wrong_key_is_refused_once() {
    let server = Server::start(&["--config", config(true, "2s", None).to_str().unwrap()]);
    let robot = over_webrtc(&server.addr, Options::with_api_key(KEY, KEY_ID).insecure()).await;
    robot.resource_names().await.unwrap();
    let err = RobotClient::connect(
        &server.addr,
        Options::with_api_key("wrong-key", KEY_ID).insecure(),
    )
    .await
    .err()
    .expect("a wrong key must be refused");
    assert!(matches!(err, ClientError::Auth(_)), "{err:?}");
    // Without credentials, signaling refuses the caller: the client falls back to direct,
    // where every call is refused.
    let anonymous = RobotClient::connect(&server.addr, Options::default().insecure())
        .await
        .unwrap();
    assert_eq!(anonymous.transport(), "direct");
    let err = anonymous.resource_names().await.unwrap_err();
    let ClientError::Status(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn direct_is_used_when_asked_for_or_when_the_machine_has_no_webrtc() {
    let server = Server::start(&[]);
    let robot = RobotClient::connect(&server.addr, Options::default().insecure().prefer_direct())
        .await
        .unwrap();
    assert_eq!(
        robot.first_dial_events(),
        [
            ConnectionEvent::Connecting,
            dialing("direct"),
            connected("direct")
        ]
    );
    let no_webrtc = temp_file(
        "webrtc-client-disabled.json",
        r#"{"components": [{"name": "left", "api": "rdk:component:motor", "model": "fake"}],
            "network": {"disable_webrtc": true}}"#,
    );
    let server = Server::start(&["--config", no_webrtc.to_str().unwrap()]);
    let robot = RobotClient::connect(&server.addr, Options::default().insecure())
        .await
        .unwrap();
    assert_eq!(
        robot.first_dial_events(),
        [
            ConnectionEvent::Connecting,
            dialing("webrtc"),
            dialing("direct"),
            connected("direct")
        ]
    );
    robot.resource_names().await.unwrap();
}

/// Dials racing each other (and the machine's engine) all end on WebRTC. Those that needed a
/// second peer connection (the first call on the first one went unanswered) take seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_dials_all_end_on_webrtc() {
    let server = Server::start(&[]);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let addr = server.addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut took = Vec::new();
            for _ in 0..5 {
                let t0 = Instant::now();
                let robot = over_webrtc(&addr, Options::default().insecure()).await;
                took.push(t0.elapsed());
                robot.resource_names().await.unwrap();
            }
            took
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let slow = all.iter().filter(|d| **d > Duration::from_secs(2)).count();
    eprintln!(
        "{} concurrent dials: median {:?}, max {:?}, {slow} over 2 s",
        all.len(),
        all[all.len() / 2],
        all.last().unwrap()
    );
}
