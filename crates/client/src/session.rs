//! The client's session: started lazily, heartbeated from a thread of its own, ended when the
//! machine says it expired.
//!
//! The heartbeat thread owns a current-thread runtime, so nothing the application does to its
//! own runtime — a blocking task, a busy loop — can delay a heartbeat. It exits when the
//! session ends or the client is dropped; the machine then stops what the session drove once
//! the window lapses.
//!
//! Where heartbeats go is chosen so that a session lives only while the path the commands
//! take is healthy:
//!
//! - On **direct gRPC**, over a second authenticated connection of the thread's own (as the
//!   official SDKs do) to the same address — the same network path as the commanding
//!   connection — so a heartbeat is never queued behind application calls on that runtime;
//!   and, the same heartbeat, over the commanding connection as well. On a lossy link a lost
//!   segment stalls a TCP connection (everything behind it waits for the retransmission),
//!   and the machine hears from whichever connection is not stalled. Until the thread's own
//!   connection is up, the commanding one carries them alone. When the machine hands out a
//!   heartbeat key (StartSession's `tether-heartbeat-key` header), also as authenticated UDP
//!   datagrams to the same address every W/10 ([`tether_rpc::heartbeat::udp`]), which no
//!   lost segment holds back — but only while heartbeat calls still get through (within
//!   [`HeartbeatPolicy::datagram_grace`]), so UDP alone never keeps a session whose
//!   commanding path is gone.
//! - On **WebRTC**, over the commanding peer connection itself: as a datagram on Tether's
//!   heartbeat channel ([`tether_rpc::heartbeat`]) every W/10 and, whenever the machine has
//!   acked none for two periods (at first, after a stall, or always on a machine without the
//!   channel, as Viam's), as a call on its reliable channel every W/5. A separate TCP
//!   connection would take a different path (TCP to the signaling address rather than the
//!   ICE-selected UDP pair): it could keep a session — and a motor — alive after the data
//!   channel died, or let it lapse while the data channel is fine. The peer connection's
//!   engine, reader and writer run on a runtime thread of their own, so the application still
//!   cannot starve them.
//!
//! Every heartbeat says when it was sent ([`tether_rpc::heartbeat::steady_micros`]); the
//! machine counts the window from then, so heartbeats held up in a backlog keep a dead
//! client's session alive no longer than one window after it sent its last.

use std::sync::{Mutex, Weak};
use std::time::Duration;

use tether_proto::viam::robot::v1::robot_service_client::RobotServiceClient;
use tether_proto::viam::robot::v1::{
    SendSessionHeartbeatRequest, StartSessionRequest, StartSessionResponse,
};

use crate::ConnectionEvent;
use crate::webrtc::WebRtcChannel;
use bytes::Bytes;
use tether_rpc::heartbeat::udp::{self, SessionKey};
use tether_rpc::heartbeat::{Ack, decode_datagram, encode_datagram, steady_micros};
use tokio::sync::broadcast;
use tonic::transport::Channel;

use crate::channel::{
    ClientState, RobotChannel, Transport, authorized, connect_authenticated, is_session_expired,
};

#[derive(Default)]
struct State {
    /// The live session.
    id: Option<String>,
    /// The last session, for `resume` after a reconnection.
    last: Option<String>,
    /// The machine has no sessions (StartSession is UNIMPLEMENTED).
    unsupported: bool,
    /// The live session's window.
    window: Option<Duration>,
}

/// The heartbeat key a StartSession answer carries in its headers, if the machine takes
/// heartbeat datagrams over UDP.
fn datagram_key(metadata: &tonic::metadata::MetadataMap) -> Option<SessionKey> {
    SessionKey::from_header(metadata.get(udp::KEY_HEADER)?.to_str().ok()?)
}

/// The client side of one machine's session.
#[derive(Default)]
pub(crate) struct ClientSession {
    state: Mutex<State>,
    starting: tokio::sync::Mutex<()>,
}

impl ClientSession {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn current_id(&self) -> Option<String> {
        self.state().id.clone()
    }

    /// The live session's heartbeat window.
    pub(crate) fn window(&self) -> Option<Duration> {
        let s = self.state();
        s.id.as_ref().and(s.window)
    }

    /// After a reconnection: asks the machine to resume `id`. True if it did; if it answered
    /// with another session, `id` expired: that is reported and the new session adopted.
    pub(crate) async fn resume(
        &self,
        channel: &RobotChannel,
        id: &str,
    ) -> Result<bool, tonic::Status> {
        let _starting = self.starting.lock().await;
        if !self.is_current(id) {
            return Ok(false);
        }
        let response = RobotServiceClient::new(channel.clone())
            .start_session(StartSessionRequest { resume: id.into() })
            .await?;
        let key = datagram_key(response.metadata());
        let response = response.into_inner();
        if response.id == id {
            return Ok(true);
        }
        let window = window_of(&response).unwrap_or(HeartbeatPolicy::FALLBACK_WINDOW);
        {
            let mut s = self.state();
            s.id = Some(response.id.clone());
            s.last = Some(response.id.clone());
            s.window = Some(window);
        }
        let inner = &channel.inner;
        inner.emit(ConnectionEvent::SessionExpired { id: id.into() });
        inner.emit(ConnectionEvent::SessionStarted {
            id: response.id.clone(),
        });
        spawn_heartbeats(std::sync::Arc::downgrade(inner), response.id, window, key);
        Ok(false)
    }

    fn is_current(&self, id: &str) -> bool {
        self.state().id.as_deref() == Some(id)
    }

    /// Ends session `id` if it is the live one; true if it was.
    pub(crate) fn end(&self, id: &str) -> bool {
        let mut s = self.state();
        if s.id.as_deref() == Some(id) {
            s.id = None;
            true
        } else {
            false
        }
    }

    /// The live session's id, starting one (once, however many calls race) if there is none.
    pub(crate) async fn ensure(
        &self,
        channel: &RobotChannel,
    ) -> Result<Option<String>, tonic::Status> {
        {
            let s = self.state();
            if s.unsupported {
                return Ok(None);
            }
            if let Some(id) = &s.id {
                return Ok(Some(id.clone()));
            }
        }
        let _starting = self.starting.lock().await;
        let resume = {
            let s = self.state();
            if let Some(id) = &s.id {
                return Ok(Some(id.clone()));
            }
            s.last.clone().unwrap_or_default()
        };
        let started = RobotServiceClient::new(channel.clone())
            .start_session(StartSessionRequest {
                resume: resume.clone(),
            })
            .await;
        let (response, key) = match started {
            Ok(r) => {
                let key = datagram_key(r.metadata());
                (r.into_inner(), key)
            }
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                self.state().unsupported = true;
                return Ok(None);
            }
            Err(status) => return Err(status),
        };
        let window = window_of(&response).ok_or_else(|| {
            tonic::Status::internal("the machine answered StartSession without a window")
        })?;
        let id = response.id;
        {
            let mut s = self.state();
            s.id = Some(id.clone());
            s.last = Some(id.clone());
            s.window = Some(window);
        }
        let inner = &channel.inner;
        inner.emit(if id == resume {
            ConnectionEvent::SessionResumed { id: id.clone() }
        } else {
            ConnectionEvent::SessionStarted { id: id.clone() }
        });
        spawn_heartbeats(std::sync::Arc::downgrade(inner), id.clone(), window, key);
        Ok(Some(id))
    }
}

/// Every heartbeat timing of the client, derived from the session's window `W` in one place.
///
/// Heartbeats go every W/5 on a fixed schedule, each on its own stream: a slow answer never
/// holds back the next heartbeat, so the machine keeps receiving them as long as the path
/// delivers anything within the window. The client gives up on the path when the machine
/// would give up on the session: when no heartbeat has been answered for a whole window. It
/// then redials its heartbeat connection and tells the supervisor the connection is lost (no
/// further probe: every path the heartbeats took went unanswered). A single heartbeat that
/// takes longer than W/5 is not a lost link: on a link with jitter that is ordinary, and
/// redialing would cost the handshakes during which no heartbeat flows. Before the machine has said its window (no session yet) the client assumes the
/// protocol's default, [`HeartbeatPolicy::FALLBACK_WINDOW`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatPolicy {
    window: Duration,
}

impl HeartbeatPolicy {
    /// The window the client assumes while it knows no other (viam-server's default).
    pub const FALLBACK_WINDOW: Duration = Duration::from_secs(2);
    /// The shortest probe: below this a loaded host times out probes of healthy links.
    pub const MIN_PROBE: Duration = Duration::from_millis(50);
    /// The shortest dial of the heartbeat connection.
    pub const MIN_DIAL: Duration = Duration::from_secs(5);

    /// The policy for a session with this window.
    pub fn new(window: Duration) -> Self {
        Self { window }
    }

    /// The policy for a window the machine may not have said yet.
    pub fn for_window(window: Option<Duration>) -> Self {
        Self::new(window.unwrap_or(Self::FALLBACK_WINDOW))
    }

    /// The session's window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// How often a heartbeat is sent: W/5.
    pub fn period(&self) -> Duration {
        self.window / 5
    }

    /// How often a heartbeat datagram is sent (over UDP on direct gRPC, on the heartbeat
    /// channel on WebRTC): W/10. A datagram is cheap, and a lost one is simply not there, so
    /// twice as many of them make a window without one as rare as five lost in a row would
    /// not: at 5 % loss with jitter, a session sees a gap of a whole window once in tens of
    /// thousands of heartbeats at W/5, and practically never at W/10.
    pub fn datagram_period(&self) -> Duration {
        self.window / 10
    }

    /// How long UDP heartbeats go on without a heartbeat call answered: 4 W, at least 2 s.
    /// They keep a session alive through TCP stalls, but not once the connections the
    /// commands take are gone (UDP may pass where TCP no longer does): then the session
    /// lapses as it would without them.
    pub fn datagram_grace(&self) -> Duration {
        (self.window * 4).max(Duration::from_secs(2))
    }

    /// How long after the machine last acked a WebRTC heartbeat datagram the heartbeat calls
    /// stay off: two periods (2 W/5). While datagrams are acked they are the heartbeats; a
    /// call as well would double the machine's work per heartbeat (each message on a data
    /// channel costs it an SCTP chunk and a DTLS record), and on a busy machine that work is
    /// what delays heartbeats. A machine without the channel (Viam's) never acks one, so it
    /// still gets a call every period.
    pub fn datagram_acks_replace_calls_for(&self) -> Duration {
        2 * self.period()
    }

    /// How long one heartbeat is waited for: W. By then the machine has either had a later
    /// one or expired the session, so its answer no longer matters.
    pub fn heartbeat_timeout(&self) -> Duration {
        self.window
    }

    /// How long without any heartbeat answered before the path counts as lost: W, the time
    /// the machine allows between heartbeats.
    pub fn silence_limit(&self) -> Duration {
        self.window
    }

    /// How long a probe of a suspect connection may take: W/2, at least [`Self::MIN_PROBE`].
    pub fn probe_timeout(&self) -> Duration {
        (self.window / 2).max(Self::MIN_PROBE)
    }

    /// How long the heartbeat thread may take to dial its own connection: W, at least
    /// [`Self::MIN_DIAL`]. The commanding connection carries the heartbeats meanwhile, so a
    /// slow dial costs nothing, while a short limit fails every dial whose first packet is
    /// lost (TCP resends a SYN after a second).
    pub fn dial_timeout(&self) -> Duration {
        self.window.max(Self::MIN_DIAL)
    }
}

#[cfg(test)]
#[test]
fn heartbeat_timings_follow_the_window() {
    let p = HeartbeatPolicy::new(Duration::from_secs(2));
    assert_eq!(p.period(), Duration::from_millis(400));
    assert_eq!(p.heartbeat_timeout(), Duration::from_secs(2));
    assert_eq!(p.silence_limit(), Duration::from_secs(2));
    assert_eq!(p.probe_timeout(), Duration::from_secs(1));
    assert_eq!(p.datagram_period(), Duration::from_millis(200));
    assert_eq!(p.datagram_grace(), Duration::from_secs(8));
    assert_eq!(
        HeartbeatPolicy::new(Duration::from_millis(100)).datagram_grace(),
        Duration::from_secs(2)
    );
    assert_eq!(
        HeartbeatPolicy::new(Duration::from_millis(30)).probe_timeout(),
        HeartbeatPolicy::MIN_PROBE
    );
    assert_eq!(
        HeartbeatPolicy::for_window(None).window(),
        HeartbeatPolicy::FALLBACK_WINDOW
    );
}

/// The positive heartbeat window a StartSession answer carries, if any.
fn window_of(response: &StartSessionResponse) -> Option<Duration> {
    response
        .heartbeat_window
        .and_then(|w| Duration::try_from(w).ok())
        .filter(|w| !w.is_zero())
}

/// Heartbeats session `id` every `window / 5` from a dedicated thread until the session ends
/// or the client is gone.
fn spawn_heartbeats(
    client: Weak<ClientState>,
    id: String,
    window: Duration,
    key: Option<SessionKey>,
) {
    let Some(gone) = client.upgrade().map(|c| c.lifetime.subscribe()) else {
        return;
    };
    let spawned = crate::runtime_thread("tether-heartbeat", move || {
        heartbeat_loop(client, id, window, key, gone)
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the heartbeat thread and its runtime");
    }
}

/// How one heartbeat ended.
enum Answer {
    /// The machine answered: the path works.
    Alive,
    /// The machine no longer has the session.
    Expired,
    /// The call failed on the way: the connection it used is broken.
    Failed(String),
    /// No answer within the heartbeat timeout.
    Unanswered,
}

async fn send_heartbeat(
    via: Transport,
    id: String,
    token: Option<String>,
    timeout: Duration,
) -> Answer {
    let mut request = authorized(SendSessionHeartbeatRequest { id }, token.as_deref());
    // When it was sent: the machine counts the window from then, not from its arrival.
    request.metadata_mut().insert(
        tether_rpc::heartbeat::SENT_HEADER,
        tonic::metadata::MetadataValue::from(steady_micros()),
    );
    let sent = tokio::time::timeout(
        timeout,
        RobotServiceClient::new(via).send_session_heartbeat(request),
    )
    .await;
    match sent {
        Ok(Ok(_)) => Answer::Alive,
        Ok(Err(status)) if is_session_expired(&status) => Answer::Expired,
        // The machine answered, but every stream of the connection is taken: the path works.
        // If it lasts a window the session lapses (the machine stops what it drove), as it
        // must when heartbeats cannot get through.
        Ok(Err(status)) if status.code() == tonic::Code::ResourceExhausted => {
            tracing::debug!(%status, "heartbeat refused: the connection is saturated");
            Answer::Alive
        }
        Ok(Err(status)) => Answer::Failed(status.message().to_string()),
        Err(_) => Answer::Unanswered,
    }
}

async fn heartbeat_loop(
    client: Weak<ClientState>,
    id: String,
    window: Duration,
    key: Option<SessionKey>,
    mut gone: tokio::sync::watch::Receiver<()>,
) {
    let session = id.clone();
    tokio::select! {
        // The client was dropped: not one heartbeat more.
        _ = gone.changed() => tracing::debug!(%session, "heartbeats end: the client is gone"),
        () = heartbeats(client, id, window, key) => {
            tracing::debug!(%session, "heartbeats end: the session ended");
        }
    }
}

/// The thread's own connection: a direct channel and its token.
struct Own {
    channel: Channel,
    token: Option<String>,
}

/// Dials the thread's own connection to `address`.
async fn dial_own(
    address: String,
    tls: crate::Tls,
    credentials: Option<crate::ApiKey>,
    timeout: Duration,
) -> Result<Own, String> {
    let dialed = tokio::time::timeout(
        timeout,
        connect_authenticated(&address, &tls, credentials.as_ref()),
    )
    .await;
    let (channel, token) = match dialed {
        Ok(dialed) => dialed.map_err(|e| e.to_string())?,
        Err(_) => return Err(format!("no connection within {timeout:?}")),
    };
    Ok(Own { channel, token })
}

/// A UDP socket connected to the machine's `host:port`.
async fn udp_socket(address: &str) -> std::io::Result<tokio::net::UdpSocket> {
    let target = tokio::net::lookup_host(address)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    let local: std::net::SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    socket.connect(target).await?;
    Ok(socket)
}

/// Heartbeat datagram sequence numbers: the steady clock ([`steady_micros`]), always rising,
/// so a session's numbers keep rising across heartbeat threads (the machine refuses any
/// number not above the last it accepted) and say when each datagram was sent.
#[derive(Default)]
struct Sequence(u64);

impl Sequence {
    fn next(&mut self) -> u64 {
        self.0 = (self.0 + 1).max(steady_micros());
        self.0
    }
}

/// Heartbeats sent since the last answer, for the debug record of a late or missing one.
#[derive(Debug, Default)]
struct SentSinceAnswer {
    /// Datagrams handed to the socket or the heartbeat channel.
    datagrams: u32,
    /// Datagram ticks with no heartbeat channel open yet.
    unsent: u32,
    /// Heartbeat calls.
    calls: u32,
}

/// Whether a heartbeat datagram (echoed in an ack) is session `id`'s.
fn names_session(datagram: &[u8], id: &str) -> bool {
    decode_datagram(datagram).is_some_and(|(named, _)| named == id)
}

/// Sends one heartbeat datagram of `session` (its key and raw id) over UDP; whether it left.
fn send_udp(
    socket: &tokio::net::UdpSocket,
    (key, raw_id): &(SessionKey, [u8; 16]),
    sequence: &mut Sequence,
) -> bool {
    socket
        .try_send(&udp::encode_request(key, raw_id, sequence.next()))
        .is_ok()
}

async fn heartbeats(
    client: Weak<ClientState>,
    id: String,
    window: Duration,
    key: Option<SessionKey>,
) {
    let policy = HeartbeatPolicy::new(window);
    let mut tick = tokio::time::interval(policy.period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut datagram_tick = tokio::time::interval(policy.datagram_period());
    datagram_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // UDP heartbeats need the key and the id as bytes.
    let udp_session = key.zip(uuid::Uuid::parse_str(&id).ok().map(|u| *u.as_bytes()));
    let mut sequence = Sequence::default();
    let mut ack_buf = [0u8; udp::ACK_LEN + 1];
    // The thread's own direct connection, while the client's transport is direct. Until it is
    // up (first dialed, or redialed), heartbeats take the commanding connection: a handshake
    // takes round trips the window may not have.
    let mut connection: Option<Own> = None;
    // The UDP socket for heartbeat datagrams, set up at once (it needs no handshake: the
    // first seconds of a session, while the heartbeat connection is dialed, are covered too).
    let mut udp: Option<std::sync::Arc<tokio::net::UdpSocket>> = None;
    let mut udp_setup: Option<tokio::task::JoinHandle<std::io::Result<tokio::net::UdpSocket>>> =
        None;
    let mut udp_failed = false;
    let mut dialing: Option<tokio::task::JoinHandle<Result<Own, String>>> = None;
    let mut in_flight = tokio::task::JoinSet::new();
    // Over WebRTC: the connection whose heartbeat acks are read, and its acks.
    let mut datagram_acks: Option<(WebRtcChannel, broadcast::Receiver<Bytes>)> = None;
    // When a heartbeat was last answered, or the path last (re)started.
    let mut last_answer = tokio::time::Instant::now();
    // When a heartbeat call was last answered: UDP datagrams go only while calls get through.
    let mut last_call_answer = tokio::time::Instant::now();
    // When the machine last acked a datagram on the WebRTC heartbeat channel.
    let mut datagram_acked: Option<tokio::time::Instant> = None;
    // Since the last answer (for the record when a window passes without one).
    let mut sent = SentSinceAnswer::default();
    loop {
        // What answered: a heartbeat call, or the machine's ack of a datagram.
        let answer = tokio::select! {
            _ = tick.tick() => None,
            _ = datagram_tick.tick() => {
                let Some(inner) = client.upgrade() else {
                    return;
                };
                match inner.transport() {
                    Transport::WebRtc(rtc) => {
                        if datagram_acks
                            .as_ref()
                            .is_none_or(|(held, _)| !held.same_connection(&rtc))
                        {
                            datagram_acks = Some((rtc.clone(), rtc.heartbeat_acks()));
                        }
                        if rtc.send_heartbeat_datagram(encode_datagram(&id, steady_micros())) {
                            sent.datagrams += 1;
                        } else {
                            sent.unsent += 1;
                        }
                    }
                    Transport::Direct(_) => match (&udp_session, &udp) {
                        (Some(session), Some(socket))
                            if last_call_answer.elapsed() < policy.datagram_grace() =>
                        {
                            sent.datagrams += u32::from(send_udp(socket, session, &mut sequence));
                        }
                        (Some(_), None) if udp_setup.is_none() && !udp_failed => {
                            let address = inner.address.clone();
                            udp_setup =
                                Some(tokio::spawn(async move { udp_socket(&address).await }));
                        }
                        _ => {}
                    },
                }
                continue;
            }
            Some(done) = in_flight.join_next() => {
                let answer = done.unwrap_or(Answer::Failed("the heartbeat task failed".into()));
                if matches!(answer, Answer::Alive) {
                    last_call_answer = tokio::time::Instant::now();
                }
                Some(answer)
            }
            Some(ack) = async { Some(datagram_acks.as_mut()?.1.recv().await) } => match ack {
                Ok(message) => match tether_rpc::heartbeat::decode_ack(&message) {
                    Some((ack, request)) if names_session(request, &id) => match ack {
                        Ack::Alive => {
                            datagram_acked = Some(tokio::time::Instant::now());
                            Some(Answer::Alive)
                        }
                        Ack::Expired => Some(Answer::Expired),
                        Ack::Refused => continue,
                    },
                    _ => continue,
                },
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => {
                    datagram_acks = None;
                    continue;
                }
            },
            Some(set_up) = async { Some(udp_setup.as_mut()?.await) } => {
                udp_setup = None;
                match set_up {
                    Ok(Ok(socket)) => {
                        // The first datagram at once, not a tick later.
                        if let Some(session) = &udp_session
                            && send_udp(&socket, session, &mut sequence)
                        {
                            sent.datagrams += 1;
                        }
                        udp = Some(std::sync::Arc::new(socket));
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "no heartbeat datagrams: heartbeats over TCP only");
                        udp_failed = true;
                    }
                    Err(_) => udp_failed = true,
                }
                continue;
            }
            Some(received) = async {
                let socket = udp.as_ref()?;
                Some(socket.recv(&mut ack_buf).await)
            } => match (received, &udp_session) {
                (Ok(n), Some((key, raw_id))) => match udp::decode_ack(key, raw_id, &ack_buf[..n]) {
                    Some((_, Ack::Alive)) => Some(Answer::Alive),
                    Some((_, Ack::Expired)) => Some(Answer::Expired),
                    _ => continue,
                },
                (Ok(_), None) => continue,
                // Nothing listens for datagrams there (ICMP port unreachable): TCP only.
                (Err(e), _) => {
                    tracing::debug!(error = %e, "heartbeat datagram socket failed");
                    udp = None;
                    udp_failed = true;
                    continue;
                }
            },
            Some(dialed) = async { Some(dialing.as_mut()?.await) } => {
                dialing = None;
                match dialed {
                    Ok(Ok(own)) => connection = Some(own),
                    // Not a sign that the commanding connection is lost: it carries the
                    // heartbeats meanwhile, and a real loss shows as a silent window. The next
                    // tick dials again.
                    Ok(Err(cause)) => {
                        tracing::debug!(%cause, "heartbeat connection failed");
                    }
                    Err(_) => {}
                }
                continue;
            }
        };
        match answer {
            None => {}
            Some(Answer::Alive) => {
                let gap = last_answer.elapsed();
                let sent = std::mem::take(&mut sent);
                if gap > policy.silence_limit() / 2 {
                    tracing::debug!(?gap, ?sent, "heartbeat answered after a long gap");
                }
                last_answer = tokio::time::Instant::now();
                continue;
            }
            Some(Answer::Expired) => {
                if let Some(inner) = client.upgrade()
                    && inner.session.end(&id)
                {
                    inner.emit(ConnectionEvent::SessionExpired { id: id.clone() });
                }
                return;
            }
            Some(Answer::Failed(cause)) => {
                tracing::debug!(%cause, "heartbeat failed; redialing");
                connection = None;
                if let Some(inner) = client.upgrade() {
                    inner.suspect(format!("heartbeat failed: {cause}"));
                }
                continue;
            }
            Some(Answer::Unanswered) => continue,
        }
        if last_answer.elapsed() >= policy.silence_limit() {
            let sent = std::mem::take(&mut sent);
            tracing::debug!(limit = ?policy.silence_limit(), ?sent, "no heartbeat answered for a window; redialing");
            // Heartbeats still on the old connection may yet arrive: they finish on their own.
            connection = None;
            last_answer = tokio::time::Instant::now();
            // Every path the heartbeats took (both connections and datagrams, or the peer's
            // channel and its datagrams) went unanswered for a window: that is the probe,
            // already failed.
            if let Some(inner) = client.upgrade() {
                inner.lost("no heartbeat answered for a whole window".into());
            }
        }
        let (address, credentials, tls, transport, token) = {
            let Some(inner) = client.upgrade() else {
                return;
            };
            if !inner.session.is_current(&id) {
                return;
            }
            (
                inner.address.clone(),
                inner.options.credentials.clone(),
                inner.options.tls.clone(),
                inner.transport(),
                inner.token(),
            )
        };
        let token = token.map(|t| t.to_string());
        if let Transport::WebRtc(_) = &transport {
            udp = None;
            connection = None;
            // While the machine acks datagrams they are the heartbeats.
            if datagram_acked
                .is_some_and(|at| at.elapsed() < policy.datagram_acks_replace_calls_for())
            {
                continue;
            }
        }
        let (via, token) = match (transport, &connection) {
            // The datagram tick sends the same heartbeat as a datagram too: a lost packet on
            // the reliable channel holds back everything behind it until it is retransmitted;
            // a lost datagram holds back nothing.
            (Transport::WebRtc(rtc), _) => (Transport::WebRtc(rtc), token),
            (commanding @ Transport::Direct(_), Some(own)) => {
                // The same heartbeat on the commanding connection too: a lost segment stalls
                // a TCP connection for about a round trip and a reorder window, and with two
                // connections the machine hears from whichever is not stalled.
                in_flight.spawn(send_heartbeat(
                    commanding,
                    id.clone(),
                    token.clone(),
                    policy.heartbeat_timeout(),
                ));
                (Transport::Direct(own.channel.clone()), own.token.clone())
            }
            (commanding @ Transport::Direct(_), None) => {
                if dialing.is_none() {
                    dialing = Some(tokio::spawn(dial_own(
                        address,
                        tls,
                        credentials,
                        policy.dial_timeout(),
                    )));
                }
                (commanding, token)
            }
        };
        sent.calls += 1;
        in_flight.spawn(send_heartbeat(
            via,
            id.clone(),
            token,
            policy.heartbeat_timeout(),
        ));
    }
}
