//! The only module that names the WebRTC engine (`webrtc` 0.17.2, the Pion port).
//!
//! A [`Peer`] is one peer connection with Viam's two pre-negotiated, ordered channels —
//! `data` (id 0, gRPC frames) and `negotiation` (id 1, renegotiation; unused until media) —
//! and trickle ICE. Everything the rest of Tether needs goes through plain types: SDPs as
//! Viam encodes them on the wire (standard base64 of the JSON `{"type","sdp"}`), candidates as
//! [`Candidate`], happenings as [`PeerEvent`]s on a channel, and the data channel as a
//! [`Channel`] with message-at-a-time `recv` and `send` that waits while too much is queued.
//!
//! Handler rules that keep a connection from leaking (the engine's callback API makes cycles
//! easy): callbacks capture only channel senders, never the peer itself; [`Peer::close`]
//! drops the handlers.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use webrtc::api::APIBuilder;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::data_channel::RTCDataChannel;
use webrtc::data_channel::data_channel_init::RTCDataChannelInit;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::policy::ice_transport_policy::RTCIceTransportPolicy;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;

#[cfg(feature = "turn-server")]
pub mod turn_server;

/// Id of the negotiated channel carrying gRPC.
pub const DATA_CHANNEL_ID: u16 = 0;
/// Id of the negotiated channel carrying renegotiation offers.
pub const NEGOTIATION_CHANNEL_ID: u16 = 1;
/// Id of Tether's own negotiated channel for session heartbeats as datagrams: unordered,
/// never retransmitted, so a lost packet delays no later heartbeat (as a lost packet on the
/// reliable `data` channel delays everything behind it). Viam's SDKs do not open it; a peer
/// that does not know it never sends on it. High, to stay clear of the ids of channels
/// opened in-band.
pub const HEARTBEAT_CHANNEL_ID: u16 = 1000;
/// The heartbeat channel's label.
pub const HEARTBEAT_CHANNEL_LABEL: &str = "tether-heartbeat";
/// How long either end waits for the heartbeat channel to open once the connection is up
/// (it opens with the association, as the `data` channel does; nothing waits on it).
pub const HEARTBEAT_CHANNEL_WAIT: Duration = Duration::from_secs(10);
/// Largest data-channel message (SCTP user message) either side sends.
pub const MAX_CHANNEL_MESSAGE: usize = 65_535;
/// `send` waits while more than this is queued on the channel (as goutils: 1 MiB)...
pub const SEND_HIGH_WATER: usize = 1 << 20;
/// ...until the queue drains below this.
pub const SEND_LOW_WATER: usize = 512 << 10;

/// What went wrong in the WebRTC engine or with what a peer sent.
#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    /// An SDP that is not base64 of `{"type","sdp"}` JSON, or of the wrong type.
    #[error("malformed session description: {0}")]
    Sdp(String),
    /// The engine refused something (a bad candidate, a failed negotiation, ...).
    #[error("webrtc: {0}")]
    Engine(#[from] webrtc::Error),
    /// The data channel did not open in time.
    #[error("data channel not open after {0:?}")]
    OpenTimeout(Duration),
    /// The connection closed or failed.
    #[error("peer connection closed")]
    Closed,
}

/// How long a relayed candidate pair waits before it may be chosen, when a direct one might
/// still succeed: goutils' answerer waits 3 s (`SetRelayAcceptanceMinWait`), and so do both
/// of Tether's ends.
pub const RELAY_ACCEPTANCE_MIN_WAIT: Duration = Duration::from_secs(3);

/// How many connectivity checks (one each 200 ms) a candidate pair is sent before it is given
/// up: 25, about 5 s, so a direct pair is still being tried when the relay becomes acceptable
/// (RELAY_ACCEPTANCE_MIN_WAIT) and after. The engine's default, 7 (about 1.6 s), gave up pairs
/// that two NATs opened late; the controlling side never retries a pair it has failed, even
/// when the peer's checks on it then arrive, so such a pair was lost to the relay (the NAT lab
/// in CI saw it) or, with relay off, the connection failed.
pub const MAX_BINDING_REQUESTS: u16 = 25;

/// An ICE server (STUN or TURN) with optional credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

impl IceServer {
    /// The server, if its URLs are `stun:`, `stuns:`, `turn:` or `turns:` URLs with a host and
    /// every TURN URL has credentials; otherwise a message starting with `at` (where a config
    /// names it).
    pub fn checked(self, at: &str) -> Result<Self, String> {
        if self.urls.is_empty() {
            return Err(format!("{at}: urls is empty"));
        }
        for url in &self.urls {
            let scheme = url.split(':').next().unwrap_or("");
            match scheme {
                "stun" | "stuns" => {}
                "turn" | "turns" => {
                    if self.username.is_empty() || self.credential.is_empty() {
                        return Err(format!("{at}: {url:?} needs a username and a credential"));
                    }
                }
                _ => {
                    return Err(format!(
                        "{at}: {url:?} is not a stun:, stuns:, turn: or turns: URL"
                    ));
                }
            }
            if url.len() <= scheme.len() + 1 {
                return Err(format!("{at}: {url:?} has no host"));
            }
        }
        Ok(Self {
            urls: self.urls.into_iter().map(with_transport).collect(),
            ..self
        })
    }
}

/// A `turn:` URL with its transport said: `?transport=udp` added where none is (a `turns:`
/// URL is TLS over TCP and stays as it is). The Python SDK's dialer (rust-utils) fails a
/// relay-only dial at once on a TURN URL without one, and Viam's own service hands them out
/// with it; every ICE server a config names, and so every one a signaling service hands out,
/// goes through here.
pub fn with_transport(url: String) -> String {
    if url.starts_with("turn:") && !url.contains("?transport=") {
        format!("{url}?transport=udp")
    } else {
        url
    }
}

/// One ICE candidate as signaling carries it (`proto.rpc.webrtc.v1.ICECandidate`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidate {
    /// The SDP `candidate:` line.
    pub candidate: String,
    pub sdp_mid: Option<String>,
    pub sdp_mline_index: Option<u32>,
    pub username_fragment: Option<String>,
}

/// The signaling protocol's form of a candidate (`proto.rpc.webrtc.v1.ICECandidate`): the one
/// conversion, used by the machine's signaling and the client's alike.
impl From<Candidate> for tether_proto::proto::rpc::webrtc::v1::IceCandidate {
    fn from(c: Candidate) -> Self {
        Self {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdpm_line_index: c.sdp_mline_index,
            username_fragment: c.username_fragment,
        }
    }
}

impl From<tether_proto::proto::rpc::webrtc::v1::IceCandidate> for Candidate {
    fn from(c: tether_proto::proto::rpc::webrtc::v1::IceCandidate) -> Self {
        Self {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdpm_line_index,
            username_fragment: c.username_fragment,
        }
    }
}

/// Which local addresses a peer gathers host candidates on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Interfaces {
    /// Every IPv4 interface, loopback included (as goutils gathers).
    #[default]
    All,
    /// Loopback only: a machine bound to localhost, or a test.
    LoopbackOnly,
}

/// How to build a peer.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub ice_servers: Vec<IceServer>,
    /// Use only relayed (TURN) candidates.
    pub force_relay: bool,
    pub interfaces: Interfaces,
    /// ICE reports `disconnected` after this long without traffic...
    pub disconnected_timeout: Duration,
    /// ...and `failed` (the connection is torn down) this long after that.
    pub failed_timeout: Duration,
    /// Consent/keepalive check interval.
    pub keepalive_interval: Duration,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            ice_servers: Vec::new(),
            force_relay: false,
            interfaces: Interfaces::All,
            disconnected_timeout: Duration::from_secs(3),
            failed_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(1),
        }
    }
}

/// Something that happened to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A local candidate to send to the other side.
    Candidate(Candidate),
    /// Local candidate gathering finished.
    GatheringDone,
    /// ICE and DTLS are up.
    Connected,
    /// The connection failed (ICE gave up) or was closed; it will not come back.
    Closed(&'static str),
}

/// The route of a connected peer ([`Peer::route`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The local candidate's type: `host`, `srflx`, `prflx` or `relay`.
    pub local_type: &'static str,
    /// The remote candidate's type, likewise: a pair is relayed if either side's is `relay`.
    pub remote_type: &'static str,
    /// The remote candidate's address.
    pub remote: Option<std::net::SocketAddr>,
}

impl Route {
    /// Whether the pair goes through a TURN relay, on either side.
    pub fn is_relayed(&self) -> bool {
        self.local_type == "relay" || self.remote_type == "relay"
    }
}

/// Encodes a session description the way Viam signaling carries it.
fn encode_sdp(desc: &RTCSessionDescription) -> Result<String, RtcError> {
    let json = serde_json::to_vec(desc).map_err(|e| RtcError::Sdp(e.to_string()))?;
    Ok(B64.encode(json))
}

/// Checks a signaled session description (`kind`: `offer` or `answer`) as the engine would
/// read it: base64 of `{"type","sdp"}` JSON, an SDP that parses. For validating input at the
/// edge (and fuzzing); a peer calls this through its own handshake.
pub fn check_signaled_sdp(encoded: &str, kind: &str) -> Result<(), RtcError> {
    decode_sdp(encoded, kind).map(|_| ())
}

/// Signaled session description `encoded` (of `kind`: `offer` or `answer`) without the
/// relayed candidates in it, for a peer that wants peer to peer only (`force_p2p`): with them,
/// ICE can pair a local host candidate with the other side's TURN relay, a relayed route.
pub fn without_relay_candidates(encoded: &str, kind: &str) -> Result<String, RtcError> {
    let mut desc = decode_sdp(encoded, kind)?;
    desc.sdp = desc
        .sdp
        .split_inclusive('\n')
        .filter(|line| !(line.starts_with("a=candidate:") && is_relay_candidate(line)))
        .collect();
    encode_sdp(&desc)
}

/// Whether an SDP candidate line (trickled, or an `a=candidate:` line) is a relayed (TURN)
/// candidate.
pub fn is_relay_candidate(line: &str) -> bool {
    let mut words = line.split_ascii_whitespace();
    while let Some(w) = words.next() {
        if w == "typ" {
            return words.next() == Some("relay");
        }
    }
    false
}

/// Decodes a signaled session description and checks its type (`offer` or `answer`).
fn decode_sdp(encoded: &str, want: &str) -> Result<RTCSessionDescription, RtcError> {
    let json = B64
        .decode(encoded.trim())
        .map_err(|e| RtcError::Sdp(format!("not base64: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| RtcError::Sdp(format!("not JSON: {e}")))?;
    let kind = value.get("type").and_then(|t| t.as_str()).unwrap_or("");
    if kind != want {
        return Err(RtcError::Sdp(format!(
            "expected an {want}, got type {kind:?}"
        )));
    }
    let sdp = value
        .get("sdp")
        .and_then(|s| s.as_str())
        .ok_or_else(|| RtcError::Sdp("no sdp field".into()))?;
    let desc = if want == "offer" {
        RTCSessionDescription::offer(sdp.to_string())
    } else {
        RTCSessionDescription::answer(sdp.to_string())
    };
    desc.map_err(|e| RtcError::Sdp(e.to_string()))
}

/// One WebRTC peer connection with Viam's two negotiated channels.
pub struct Peer {
    pc: Arc<RTCPeerConnection>,
    data: Negotiated,
    _negotiation: Arc<RTCDataChannel>,
    heartbeat: Negotiated,
}

impl Peer {
    /// Creates a peer; its events arrive on the returned receiver until it closes.
    pub async fn new(
        config: &PeerConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<PeerEvent>), RtcError> {
        let mut settings = SettingEngine::default();
        settings.detach_data_channels();
        settings.set_include_loopback_candidate(true);
        settings.set_network_types(vec![NetworkType::Udp4]);
        settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
        settings.set_ice_timeouts(
            Some(config.disconnected_timeout),
            Some(config.failed_timeout),
            Some(config.keepalive_interval),
        );
        // A relayed pair is accepted only after RELAY_ACCEPTANCE_MIN_WAIT, to give a pair
        // punched through two NATs time to succeed (the engine's default, 2 s, lost that race
        // now and then in the NAT lab); with relay forced there is nothing to wait for.
        settings.set_relay_acceptance_min_wait(Some(if config.force_relay {
            Duration::ZERO
        } else {
            RELAY_ACCEPTANCE_MIN_WAIT
        }));
        settings.set_ice_max_binding_requests(Some(MAX_BINDING_REQUESTS));
        if config.interfaces == Interfaces::LoopbackOnly {
            settings.set_ip_filter(Box::new(|ip: IpAddr| ip.is_loopback()));
        }
        let api = APIBuilder::new().with_setting_engine(settings).build();
        let rtc_config = RTCConfiguration {
            ice_servers: config
                .ice_servers
                .iter()
                .map(|s| RTCIceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone(),
                    credential: s.credential.clone(),
                })
                .collect(),
            ice_transport_policy: if config.force_relay {
                RTCIceTransportPolicy::Relay
            } else {
                RTCIceTransportPolicy::All
            },
            ..Default::default()
        };
        let pc = Arc::new(api.new_peer_connection(rtc_config).await?);
        let (events, rx) = mpsc::unbounded_channel();

        let tx = events.clone();
        pc.on_ice_candidate(Box::new(move |candidate| {
            let event = match candidate.map(|c| c.to_json()) {
                None => Some(PeerEvent::GatheringDone),
                Some(Ok(init)) => Some(PeerEvent::Candidate(Candidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_mline_index: init.sdp_mline_index.map(u32::from),
                    username_fragment: init.username_fragment,
                })),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "cannot serialize a local candidate");
                    None
                }
            };
            if let Some(event) = event {
                let _ = tx.send(event);
            }
            Box::pin(async {})
        }));
        let tx = events;
        pc.on_peer_connection_state_change(Box::new(move |state| {
            let event = match state {
                RTCPeerConnectionState::Connected => Some(PeerEvent::Connected),
                RTCPeerConnectionState::Failed => Some(PeerEvent::Closed("ICE failed")),
                RTCPeerConnectionState::Closed => Some(PeerEvent::Closed("closed")),
                _ => None,
            };
            if let Some(event) = event {
                let _ = tx.send(event);
            }
            Box::pin(async {})
        }));

        let negotiated = |id| RTCDataChannelInit {
            ordered: Some(true),
            negotiated: Some(id),
            ..Default::default()
        };
        let data = Negotiated::create(&pc, "data", negotiated(DATA_CHANNEL_ID)).await?;
        let negotiation = pc
            .create_data_channel("negotiation", Some(negotiated(NEGOTIATION_CHANNEL_ID)))
            .await?;
        let heartbeat = Negotiated::create(
            &pc,
            HEARTBEAT_CHANNEL_LABEL,
            RTCDataChannelInit {
                ordered: Some(false),
                max_retransmits: Some(0),
                negotiated: Some(HEARTBEAT_CHANNEL_ID),
                ..Default::default()
            },
        )
        .await?;
        Ok((
            Self {
                pc,
                data,
                _negotiation: negotiation,
                heartbeat,
            },
            rx,
        ))
    }

    /// Creates the offer (caller side); candidates then trickle as events.
    pub async fn create_offer(&self) -> Result<String, RtcError> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        self.local_description().await
    }

    /// Applies a caller's offer and returns the answer (answerer side). The remote DTLS
    /// fingerprint from the offer is checked by the engine during the handshake.
    pub async fn accept_offer(&self, offer: &str) -> Result<String, RtcError> {
        self.pc
            .set_remote_description(decode_sdp(offer, "offer")?)
            .await?;
        let answer = self.pc.create_answer(None).await?;
        self.pc.set_local_description(answer).await?;
        self.local_description().await
    }

    /// Applies the answerer's answer (caller side).
    pub async fn accept_answer(&self, answer: &str) -> Result<(), RtcError> {
        self.pc
            .set_remote_description(decode_sdp(answer, "answer")?)
            .await?;
        Ok(())
    }

    /// Waits until candidate gathering is complete, then returns the local description with
    /// every candidate in it (for peers that do not trickle).
    pub async fn complete_local_description(&self) -> Result<String, RtcError> {
        let mut done = self.pc.gathering_complete_promise().await;
        let _ = done.recv().await;
        self.local_description().await
    }

    async fn local_description(&self) -> Result<String, RtcError> {
        let desc = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| RtcError::Sdp("no local description".into()))?;
        encode_sdp(&desc)
    }

    /// Adds a candidate the other side sent. An empty candidate line means "no more".
    pub async fn add_remote_candidate(&self, c: Candidate) -> Result<(), RtcError> {
        if c.candidate.is_empty() {
            return Ok(());
        }
        self.pc
            .add_ice_candidate(RTCIceCandidateInit {
                candidate: c.candidate,
                sdp_mid: c.sdp_mid,
                sdp_mline_index: c.sdp_mline_index.and_then(|i| u16::try_from(i).ok()),
                username_fragment: c.username_fragment,
            })
            .await?;
        Ok(())
    }

    /// Waits (at most `timeout`) for the `data` channel to open and returns it.
    pub async fn data_channel(&self, timeout: Duration) -> Result<Channel, RtcError> {
        self.data.open(timeout).await
    }

    /// Waits (at most [`HEARTBEAT_CHANNEL_WAIT`]) for the heartbeat channel
    /// ([`HEARTBEAT_CHANNEL_ID`]) to open and returns it.
    pub async fn heartbeat_channel(&self) -> Result<Channel, RtcError> {
        self.heartbeat.open(HEARTBEAT_CHANNEL_WAIT).await
    }

    /// Whether a selected candidate pair uses a TURN relay (for reports and tests).
    pub async fn relayed(&self) -> bool {
        self.route().await.is_some_and(|r| r.is_relayed())
    }

    /// The route ICE chose: the nominated candidate pair's local candidate type and the
    /// remote candidate's address. `None` before a pair is nominated.
    pub async fn route(&self) -> Option<Route> {
        use webrtc::ice::candidate::CandidateType;
        use webrtc::stats::StatsReportType;
        let stats = self.pc.get_stats().await;
        let pair = stats.reports.values().find_map(|s| match s {
            StatsReportType::CandidatePair(p) if p.nominated => Some(p),
            _ => None,
        })?;
        let mut route = Route {
            local_type: "unknown",
            remote_type: "unknown",
            remote: None,
        };
        let type_name = |t: &CandidateType| match t {
            CandidateType::Host => "host",
            CandidateType::ServerReflexive => "srflx",
            CandidateType::PeerReflexive => "prflx",
            CandidateType::Relay => "relay",
            CandidateType::Unspecified => "unknown",
        };
        for s in stats.reports.values() {
            match s {
                StatsReportType::LocalCandidate(c) if c.id == pair.local_candidate_id => {
                    route.local_type = type_name(&c.candidate_type);
                }
                StatsReportType::RemoteCandidate(c) if c.id == pair.remote_candidate_id => {
                    route.remote_type = type_name(&c.candidate_type);
                    route.remote =
                        c.ip.parse::<std::net::IpAddr>()
                            .ok()
                            .map(|ip| std::net::SocketAddr::new(ip, c.port));
                }
                _ => {}
            }
        }
        Some(route)
    }

    /// Closes the connection and drops its handlers. Errors from the engine while closing
    /// (e.g. "sending reset packet in non-Established state") are harmless and ignored.
    pub async fn close(&self) {
        self.pc.on_ice_candidate(Box::new(|_| Box::pin(async {})));
        self.pc
            .on_peer_connection_state_change(Box::new(|_| Box::pin(async {})));
        self.data.forget_handlers();
        self.heartbeat.forget_handlers();
        if let Err(e) = self.pc.close().await {
            tracing::trace!(error = %e, "closing a peer connection");
        }
    }
}

/// A negotiated data channel, and the wake-up of its opening.
struct Negotiated {
    channel: Arc<RTCDataChannel>,
    opened: Arc<Notify>,
}

impl Negotiated {
    async fn create(
        pc: &RTCPeerConnection,
        label: &str,
        init: RTCDataChannelInit,
    ) -> Result<Self, RtcError> {
        let channel = pc.create_data_channel(label, Some(init)).await?;
        let opened = Arc::new(Notify::new());
        let signal = opened.clone();
        channel.on_open(Box::new(move || {
            signal.notify_one();
            Box::pin(async {})
        }));
        Ok(Self { channel, opened })
    }

    /// Waits (at most `timeout`) for the channel to open (woken by its open event, or
    /// re-checked every 50 ms) and detaches it.
    async fn open(&self, timeout: Duration) -> Result<Channel, RtcError> {
        use webrtc::data_channel::data_channel_state::RTCDataChannelState;
        let wait = async {
            loop {
                let notified = self.opened.notified();
                match self.channel.ready_state() {
                    RTCDataChannelState::Open => return Ok(()),
                    RTCDataChannelState::Closing | RTCDataChannelState::Closed => {
                        return Err(RtcError::Closed);
                    }
                    _ => {}
                }
                // Readiness is re-checked at least every 50 ms in case a wake-up was missed.
                let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| RtcError::OpenTimeout(timeout))??;
        let inner = self.channel.detach().await?;
        let drained = Arc::new(Notify::new());
        inner.set_buffered_amount_low_threshold(SEND_LOW_WATER);
        let signal = drained.clone();
        inner.on_buffered_amount_low(Box::new(move || {
            signal.notify_waiters();
            Box::pin(async {})
        }));
        Ok(Channel { inner, drained })
    }

    fn forget_handlers(&self) {
        self.channel.on_open(Box::new(|| Box::pin(async {})));
    }
}

/// An open data channel: whole messages in and out.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<webrtc::data::data_channel::DataChannel>,
    drained: Arc<Notify>,
}

impl Channel {
    /// The next message; `None` once the channel is closed.
    pub async fn recv(&self) -> Option<Bytes> {
        let mut buf = vec![0u8; MAX_CHANNEL_MESSAGE + 1];
        match self.inner.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some(Bytes::from(buf))
            }
            Err(e) => {
                tracing::trace!(error = %e, "data channel read ended");
                None
            }
        }
    }

    /// Sends one message, first waiting while more than [`SEND_HIGH_WATER`] bytes are queued.
    pub async fn send(&self, message: Bytes) -> Result<(), RtcError> {
        while self.inner.buffered_amount() > SEND_HIGH_WATER {
            let drained = self.drained.notified();
            if self.inner.buffered_amount() <= SEND_HIGH_WATER {
                break;
            }
            // The low-water callback wakes us; the timeout only guards a missed wake-up.
            let _ = tokio::time::timeout(Duration::from_millis(100), drained).await;
        }
        self.inner
            .write(&message)
            .await
            .map(|_| ())
            .map_err(|e| RtcError::Engine(webrtc::Error::Data(e)))
    }

    /// Bytes queued and not yet sent.
    pub fn buffered(&self) -> usize {
        self.inner.buffered_amount()
    }

    /// Closes the channel (the peer's reads end).
    pub async fn close(&self) {
        let _ = self.inner.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn force_p2p_drops_the_relayed_candidates_of_an_answer() {
        let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
                   a=candidate:1 1 udp 2130706431 192.168.1.10 5000 typ host\r\n\
                   a=candidate:2 1 udp 16777215 198.51.100.1 49331 typ relay raddr 0.0.0.0 rport 1\r\n\
                   a=candidate:3 1 udp 1694498815 198.51.100.11 5001 typ srflx raddr 0.0.0.0 rport 5000\r\n\
                   a=mid:0\r\n";
        let encoded = B64.encode(serde_json::json!({"type": "answer", "sdp": sdp}).to_string());
        let kept = without_relay_candidates(&encoded, "answer").unwrap();
        let json: serde_json::Value = serde_json::from_slice(&B64.decode(kept).unwrap()).unwrap();
        let kept = json["sdp"].as_str().unwrap();
        assert!(
            kept.contains("typ host") && kept.contains("typ srflx"),
            "{kept}"
        );
        assert!(!kept.contains("typ relay"), "{kept}");
        assert!(kept.ends_with("a=mid:0\r\n"), "{kept}");
        assert!(without_relay_candidates(&encoded, "offer").is_err());
    }

    #[tokio::test]
    async fn sdp_encoding_is_base64_json_and_checks_the_type() {
        let (peer, _events) = Peer::new(&PeerConfig::default()).await.unwrap();
        let encoded = peer.create_offer().await.unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&B64.decode(&encoded).unwrap()).unwrap();
        assert_eq!(json["type"], "offer");
        assert!(json["sdp"].as_str().unwrap().contains("webrtc-datachannel"));
        assert!(decode_sdp(&encoded, "offer").is_ok());
        assert!(matches!(
            decode_sdp(&encoded, "answer"),
            Err(RtcError::Sdp(m)) if m.contains("expected an answer")
        ));
        assert!(matches!(decode_sdp("!!", "offer"), Err(RtcError::Sdp(_))));
        assert!(matches!(
            decode_sdp(&B64.encode("[]"), "offer"),
            Err(RtcError::Sdp(_))
        ));
        let garbage = B64.encode(r#"{"type":"offer","sdp":"not an sdp"}"#);
        assert!(matches!(
            decode_sdp(&garbage, "offer"),
            Err(RtcError::Sdp(_))
        ));
        peer.close().await;
    }

    /// Two peers in one process, loopback only, trickling to each other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_peers_exchange_messages_on_the_negotiated_channel() {
        let config = PeerConfig {
            interfaces: Interfaces::LoopbackOnly,
            ..Default::default()
        };
        let (caller, caller_events) = Peer::new(&config).await.unwrap();
        let (answerer, answerer_events) = Peer::new(&config).await.unwrap();
        let offer = caller.create_offer().await.unwrap();
        let answer = answerer.accept_offer(&offer).await.unwrap();
        caller.accept_answer(&answer).await.unwrap();
        let (caller, answerer) = (Arc::new(caller), Arc::new(answerer));
        let trickle = |mut events: mpsc::UnboundedReceiver<PeerEvent>, to: Arc<Peer>| {
            tokio::spawn(async move {
                while let Some(e) = events.recv().await {
                    if let PeerEvent::Candidate(c) = e {
                        to.add_remote_candidate(c).await.unwrap();
                    }
                }
            })
        };
        let a = trickle(caller_events, answerer.clone());
        let b = trickle(answerer_events, caller.clone());
        let timeout = Duration::from_secs(10);
        let (c, s) = tokio::join!(caller.data_channel(timeout), answerer.data_channel(timeout));
        let (c, s) = (c.unwrap(), s.unwrap());
        c.send(Bytes::from_static(b"first")).await.unwrap();
        assert_eq!(s.recv().await.unwrap(), &b"first"[..]);
        let big = Bytes::from(vec![7u8; MAX_CHANNEL_MESSAGE]);
        s.send(big.clone()).await.unwrap();
        assert_eq!(c.recv().await.unwrap(), big);
        caller.close().await;
        answerer.close().await;
        a.abort();
        b.abort();
    }
}
