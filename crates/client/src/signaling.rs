//! Dialing a machine over WebRTC through its signaling service (PROTOCOL.md §7.2).
//!
//! Signaling runs on plain gRPC to the signaling address — by default the machine's own
//! address, which serves `proto.rpc.webrtc.v1.SignalingService` itself — with `rpc-host` set to
//! the machine address exactly as the application gave it and, with credentials, the access
//! token from `Authenticate` on that connection:
//!
//! 1. `OptionalWebRTCConfig`: extra ICE servers. `UNIMPLEMENTED`, or `INVALID_ARGUMENT "host not
//!    preconfigured"`, means there is no signaler for this host: the dial falls back to direct.
//! 2. `Call` with our offer (trickle on). Its first answer carries the call's uuid and the
//!    machine's SDP answer; later answers carry the machine's candidates.
//! 3. Our candidates go out with `CallUpdate{uuid, candidate}` in the order they are gathered
//!    (those found before the uuid is known wait in the peer's event queue), then
//!    `CallUpdate{uuid, done}` once gathering is over.
//! 4. The `data` channel opens, within the dial timeout, and answers a first call
//!    (`ResourceNames`, what SDKs call first anyway) within [`FIRST_CALL_TIMEOUT`]; if it does
//!    not, one more peer connection is tried before the dial fails.
//!
//! The signaling connection is dropped once both sides are done trickling (or after
//! [`SIGNALING_LINGER`]), unless the dial falls back to direct gRPC and it is reused for that.

use std::sync::Arc;
use std::time::Duration;
use tether_rpc::vocabulary::{AUTHORIZATION_HEADER, BEARER_PREFIX, RPC_HOST_HEADER};

use tether_proto::proto::rpc::webrtc::v1 as signaling;
use tether_proto::proto::rpc::webrtc::v1::signaling_service_client::SignalingServiceClient;
use tether_proto::viam::robot::v1::robot_service_client::RobotServiceClient;
use tether_rtc::{IceServer, Interfaces, Peer, PeerConfig, PeerEvent};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use crate::channel::connect_authenticated;
use crate::webrtc::{LostHook, RtcRuntime, WebRtcChannel};
use crate::{ClientError, Options};

/// How long the signaling connection may stay open after the data channel opened, for late
/// candidates and the final `done`.
const SIGNALING_LINGER: Duration = Duration::from_secs(30);
/// Bound on each `CallUpdate`.
const CALL_UPDATE_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed WebRTC dial, with the authenticated connection to the machine address if the
/// signaling connection was one (the direct fallback then reuses it instead of dialing again).
pub(crate) struct WebRtcFailure {
    pub(crate) error: ClientError,
    pub(crate) direct: Option<(Channel, Option<String>)>,
    /// The signaling connection itself (dial and authenticate) failed.
    pub(crate) unreachable: bool,
}

/// The metadata every signaling call carries.
#[derive(Clone)]
struct SignalingMetadata {
    host: AsciiMetadataValue,
    bearer: Option<AsciiMetadataValue>,
}

impl SignalingMetadata {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let md = request.metadata_mut();
        md.insert(RPC_HOST_HEADER, self.host.clone());
        if let Some(bearer) = &self.bearer {
            md.insert(AUTHORIZATION_HEADER, bearer.clone());
        }
        request
    }
}

/// Whether `address` (`host:port`) names this machine's loopback: 127.0.0.0/8, `::1`, or
/// `localhost`. Peers then gather loopback candidates only, so nothing leaves the host.
pub(crate) fn is_loopback_address(address: &str) -> bool {
    let host = match address.rsplit_once(':') {
        // `[::1]:8080` or `host:port`; a bare IPv6 address has more colons.
        Some((host, port))
            if port.bytes().all(|b| b.is_ascii_digit())
                && (host.starts_with('[') || !host.contains(':')) =>
        {
            host
        }
        _ => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// For `force_p2p`: the STUN part of the ICE servers only (no TURN, so no relay candidates).
pub(crate) fn without_turn(servers: Vec<IceServer>) -> Vec<IceServer> {
    servers
        .into_iter()
        .filter_map(|mut s| {
            s.urls.retain(|u| {
                let u = u.to_ascii_lowercase();
                !(u.starts_with("turn:") || u.starts_with("turns:"))
            });
            (!s.urls.is_empty()).then_some(s)
        })
        .collect()
}

use tether_rtc::is_relay_candidate;

/// Whether an `OptionalWebRTCConfig` error means "no signaler for this host here".
fn no_signaler(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unimplemented
        || (status.code() == tonic::Code::InvalidArgument
            && status.message() == "host not preconfigured")
}

fn connect_error(address: &str, message: impl Into<String>) -> ClientError {
    ClientError::Connect {
        address: address.to_string(),
        failure: crate::ConnectFailure::Transport,
        message: message.into(),
    }
}

/// Dials `address` over WebRTC within `deadline`. `lost` is told if the connection later ends
/// by itself.
pub(crate) async fn dial(
    address: &str,
    options: &Options,
    deadline: Instant,
    lost: LostHook,
) -> Result<(WebRtcChannel, Option<String>), WebRtcFailure> {
    let signaling_address = options.signaling_address.as_deref().unwrap_or(address);
    let connected = tokio::time::timeout_at(
        deadline,
        connect_authenticated(
            signaling_address,
            &options.tls,
            options.credentials.as_ref(),
        ),
    )
    .await
    .unwrap_or_else(|_| {
        Err(ClientError::Timeout(
            signaling_address.into(),
            options.dial_timeout,
        ))
    });
    let (channel, token) = connected.map_err(|error| WebRtcFailure {
        error,
        direct: None,
        unreachable: true,
    })?;
    let reusable = (signaling_address == address).then(|| (channel.clone(), token.clone()));
    let fail = |error: ClientError| WebRtcFailure {
        error,
        direct: reusable.clone(),
        unreachable: false,
    };
    let metadata = SignalingMetadata {
        host: address
            .parse()
            .map_err(|_| fail(ClientError::Address(address.into(), "not ASCII".into())))?,
        bearer: match &token {
            Some(t) => Some(
                format!("{BEARER_PREFIX}{t}")
                    .parse()
                    .map_err(|_| fail(connect_error(address, "unusable access token")))?,
            ),
            None => None,
        },
    };
    let mut client = SignalingServiceClient::new(channel);
    let config = tokio::time::timeout_at(
        deadline,
        client.optional_web_rtc_config(metadata.request(signaling::OptionalWebRtcConfigRequest {})),
    )
    .await
    .map_err(|_| fail(ClientError::Timeout(address.into(), options.dial_timeout)))?;
    let extra = match config {
        Ok(r) => r
            .into_inner()
            .config
            .map(|c| c.additional_ice_servers)
            .unwrap_or_default(),
        Err(status) if no_signaler(&status) => {
            return Err(fail(connect_error(
                address,
                format!(
                    "no WebRTC signaling for this machine at {signaling_address}: {}",
                    status.message()
                ),
            )));
        }
        Err(status) => {
            return Err(fail(connect_error(
                address,
                format!("OptionalWebRTCConfig failed: {status}"),
            )));
        }
    };
    let mut ice_servers = options.ice_servers.clone();
    ice_servers.extend(extra.into_iter().map(|s| IceServer {
        urls: s.urls,
        username: s.username,
        credential: s.credential,
    }));
    if options.force_p2p {
        ice_servers = without_turn(ice_servers);
    }
    let config = PeerConfig {
        ice_servers,
        force_relay: options.force_relay,
        interfaces: if is_loopback_address(address) {
            Interfaces::LoopbackOnly
        } else {
            Interfaces::All
        },
        ..PeerConfig::default()
    };
    let mut last_error = String::new();
    for attempt in 1..=PEER_ATTEMPTS {
        let attempt_deadline = deadline.min(Instant::now() + PEER_ATTEMPT_LIMIT);
        match connect_peer(
            &client,
            &metadata,
            &config,
            options.force_p2p,
            attempt_deadline,
            &lost,
        )
        .await
        {
            Ok(channel) => return Ok((channel, token)),
            Err(e) => {
                tracing::debug!(attempt, error = %e, "WebRTC peer connection failed");
                last_error = e;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Err(fail(connect_error(address, last_error)))
}

/// Peer connections tried per dial: a data channel that opens on our side but never starts
/// serving (see [`FIRST_CALL_TIMEOUT`]) gets one more try before the dial falls back.
const PEER_ATTEMPTS: u32 = 2;
/// Bound on one peer connection attempt: the offer deadline signalers enforce; the machine
/// gives the call up after it anyway.
const PEER_ATTEMPT_LIMIT: Duration = tether_rpc::OFFER_DEADLINE;
/// How long the first call on a fresh data channel may take to be answered. The engine can
/// (rarely, under load) open the channel on our side while the machine's side never opens;
/// calls then get no answer until the machine gives the connection up. Any answer — even an
/// error status — proves the channel works.
const FIRST_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// One peer connection: signal, wait for the data channel, check it answers a first call.
async fn connect_peer(
    client: &SignalingServiceClient<Channel>,
    metadata: &SignalingMetadata,
    config: &PeerConfig,
    force_p2p: bool,
    deadline: Instant,
    lost: &LostHook,
) -> Result<WebRtcChannel, String> {
    let runtime = RtcRuntime::start().map_err(|e| format!("cannot start WebRTC: {e}"))?;
    let Negotiated {
        peer,
        channel,
        closed,
    } = runtime
        .handle()
        .spawn(negotiate(
            client.clone(),
            metadata.clone(),
            config.clone(),
            force_p2p,
            deadline,
        ))
        .await
        .map_err(|e| format!("WebRTC dial task failed: {e}"))??;
    let channel = WebRtcChannel::start(runtime, peer, channel, closed, lost.clone());
    let mut robot = RobotServiceClient::new(channel.clone());
    let first = robot.resource_names(tether_proto::viam::robot::v1::ResourceNamesRequest {});
    let limit = FIRST_CALL_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
    match tokio::time::timeout(limit, first).await {
        Ok(Ok(_)) => Ok(channel),
        // The machine answered: the channel works (the status is the application's concern).
        Ok(Err(status)) if !status.message().starts_with("WebRTC transport closed") => Ok(channel),
        Ok(Err(status)) => {
            channel.close("the first call failed");
            Err(format!(
                "the data channel closed at once: {}",
                status.message()
            ))
        }
        Err(_) => {
            channel.close("the first call got no answer");
            Err(format!(
                "the data channel opened but the first call got no answer within {limit:?}"
            ))
        }
    }
}

struct Negotiated {
    peer: Arc<Peer>,
    channel: tether_rtc::Channel,
    closed: mpsc::UnboundedReceiver<&'static str>,
}

/// Creates the peer, signals, and waits for the data channel. Runs on the connection's own
/// runtime, so the engine's tasks live there.
async fn negotiate(
    client: SignalingServiceClient<Channel>,
    metadata: SignalingMetadata,
    config: PeerConfig,
    force_p2p: bool,
    deadline: Instant,
) -> Result<Negotiated, String> {
    let (peer, events) = Peer::new(&config)
        .await
        .map_err(|e| format!("cannot create a WebRTC peer: {e}"))?;
    let peer = Arc::new(peer);
    let mut tasks = Vec::new();
    let result = signal(
        &peer, client, metadata, events, force_p2p, deadline, &mut tasks,
    )
    .await;
    match result {
        Ok((channel, closed)) => Ok(Negotiated {
            peer,
            channel,
            closed,
        }),
        Err(e) => {
            for task in tasks {
                task.abort();
            }
            peer.close().await;
            Err(e)
        }
    }
}

async fn signal(
    peer: &Arc<Peer>,
    mut client: SignalingServiceClient<Channel>,
    metadata: SignalingMetadata,
    events: mpsc::UnboundedReceiver<PeerEvent>,
    force_p2p: bool,
    deadline: Instant,
    tasks: &mut Vec<tokio::task::AbortHandle>,
) -> Result<(tether_rtc::Channel, mpsc::UnboundedReceiver<&'static str>), String> {
    let timed_out = || "WebRTC signaling did not finish within the dial timeout".to_string();
    let offer = peer
        .create_offer()
        .await
        .map_err(|e| format!("cannot create an offer: {e}"))?;
    let call = metadata.request(signaling::CallRequest {
        sdp: offer,
        disable_trickle: false,
    });
    let mut answers = tokio::time::timeout_at(deadline, client.call(call))
        .await
        .map_err(|_| timed_out())?
        .map_err(|s| format!("Call failed: {s}"))?
        .into_inner();
    let first = tokio::time::timeout_at(deadline, answers.message())
        .await
        .map_err(|_| timed_out())?
        .map_err(|s| format!("Call failed: {s}"))?
        .ok_or("the machine ended the call without an answer")?;
    let uuid = first.uuid;
    let Some(signaling::call_response::Stage::Init(init)) = first.stage else {
        return Err("the machine's first Call answer was not its SDP".into());
    };
    // Peer to peer only: the machine's relayed candidates go, in its answer as when trickled.
    let sdp = if force_p2p {
        tether_rtc::without_relay_candidates(&init.sdp, "answer")
            .map_err(|e| format!("cannot read the machine's answer: {e}"))?
    } else {
        init.sdp
    };
    peer.accept_answer(&sdp)
        .await
        .map_err(|e| format!("cannot apply the machine's answer: {e}"))?;
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    tasks.push(
        tokio::spawn(send_candidates(
            events, client, metadata, uuid, force_p2p, closed_tx,
        ))
        .abort_handle(),
    );
    tasks.push(
        tokio::spawn(add_candidates(answers, Arc::downgrade(peer), force_p2p)).abort_handle(),
    );
    let wait = deadline.saturating_duration_since(Instant::now());
    tokio::select! {
        opened = peer.data_channel(wait) => match opened {
            Ok(channel) => Ok((channel, closed)),
            Err(e) => Err(format!("the data channel did not open: {e}")),
        },
        reason = closed.recv() => Err(format!(
            "the peer connection ended before the data channel opened: {}",
            reason.unwrap_or("closed")
        )),
    }
}

/// Forwards our candidates with `CallUpdate`, then `done`; afterwards keeps watching the peer
/// and reports its end on `closed` (this task lives as long as the peer's event stream).
async fn send_candidates(
    mut events: mpsc::UnboundedReceiver<PeerEvent>,
    client: SignalingServiceClient<Channel>,
    metadata: SignalingMetadata,
    uuid: String,
    force_p2p: bool,
    closed: mpsc::UnboundedSender<&'static str>,
) {
    let mut client = Some(client);
    let linger = tokio::time::sleep(SIGNALING_LINGER);
    tokio::pin!(linger);
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = &mut linger, if client.is_some() => {
                client = None; // stop signaling; keep watching
                continue;
            }
        };
        let update = match event {
            None => return,
            Some(PeerEvent::Closed(reason)) => {
                let _ = closed.send(reason);
                return;
            }
            Some(PeerEvent::Connected) => continue,
            Some(PeerEvent::Candidate(c)) if force_p2p && is_relay_candidate(&c.candidate) => {
                continue;
            }
            Some(PeerEvent::Candidate(c)) => {
                signaling::call_update_request::Update::Candidate(c.into())
            }
            Some(PeerEvent::GatheringDone) => signaling::call_update_request::Update::Done(true),
        };
        let done = matches!(update, signaling::call_update_request::Update::Done(_));
        let Some(c) = client.as_mut() else {
            continue;
        };
        let request = metadata.request(signaling::CallUpdateRequest {
            uuid: uuid.clone(),
            update: Some(update),
        });
        match tokio::time::timeout(CALL_UPDATE_TIMEOUT, c.call_update(request)).await {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => {
                tracing::debug!(%status, "CallUpdate failed; no more candidates are sent");
                client = None;
            }
            Err(_) => {
                tracing::debug!("CallUpdate timed out; no more candidates are sent");
                client = None;
            }
        }
        if done {
            client = None;
        }
    }
}

/// Adds the machine's candidates until it ends the call (or [`SIGNALING_LINGER`] passes).
async fn add_candidates(
    mut answers: tonic::Streaming<signaling::CallResponse>,
    peer: std::sync::Weak<Peer>,
    force_p2p: bool,
) {
    let work = async {
        while let Ok(Some(answer)) = answers.message().await {
            let Some(signaling::call_response::Stage::Update(update)) = answer.stage else {
                continue;
            };
            let Some(candidate) = update.candidate else {
                continue;
            };
            if force_p2p && is_relay_candidate(&candidate.candidate) {
                continue;
            }
            let Some(peer) = peer.upgrade() else {
                return;
            };
            if let Err(e) = peer.add_remote_candidate(candidate.into()).await {
                tracing::debug!(error = %e, "ignoring a candidate the machine sent");
            }
        }
    };
    let _ = tokio::time::timeout(SIGNALING_LINGER, work).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for a in [
            "localhost:8080",
            "LOCALHOST:1",
            "127.0.0.1:8080",
            "127.5.6.7:1",
            "[::1]:8080",
            "::1",
            "localhost",
            "robot.localhost:80",
        ] {
            assert!(is_loopback_address(a), "{a}");
        }
        for a in [
            "192.168.1.2:8080",
            "robot.local:8080",
            "[2001:db8::1]:8080",
            "example.com",
            "localhost.example.com:8080",
        ] {
            assert!(!is_loopback_address(a), "{a}");
        }
    }

    #[test]
    fn force_p2p_keeps_only_stun() {
        let servers = vec![
            IceServer {
                urls: vec!["stun:a:3478".into(), "turn:a:3478".into()],
                ..Default::default()
            },
            IceServer {
                urls: vec!["TURNS:b:443".into()],
                username: "u".into(),
                credential: "p".into(),
            },
        ];
        let kept = without_turn(servers);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].urls, ["stun:a:3478"]);
    }

    #[test]
    fn relay_candidates_are_recognised() {
        assert!(is_relay_candidate(
            "candidate:1 1 udp 16777215 127.0.0.1 50000 typ relay raddr 0.0.0.0 rport 0"
        ));
        assert!(!is_relay_candidate(
            "candidate:2 1 udp 2130706431 127.0.0.1 50001 typ host"
        ));
        assert!(!is_relay_candidate(
            "candidate:3 1 udp 1694498815 1.2.3.4 5 typ srflx raddr 127.0.0.1 rport 6"
        ));
        assert!(!is_relay_candidate(""));
    }

    #[test]
    fn only_the_documented_answers_mean_no_signaler() {
        assert!(no_signaler(&tonic::Status::unimplemented("x")));
        assert!(no_signaler(&tonic::Status::invalid_argument(
            "host not preconfigured"
        )));
        assert!(!no_signaler(&tonic::Status::invalid_argument("other")));
        assert!(!no_signaler(&tonic::Status::unavailable("x")));
    }
}
