//! Sessions on the wire: the session layer and the expiry driver around the sans-IO
//! [`tether_session::SessionManager`].
//!
//! The [`SessionLayer`] sits in the one tower stack every transport uses. For a
//! safety-monitored method (decided by the `safety_heartbeat_monitored` option in the
//! descriptors) it reads the driven resource from field 1 (`name`) of the first request message
//! — generically, without knowing the message type — validates `viam-sid` (an unknown, expired
//! or foreign session fails with `INVALID_ARGUMENT` `SESSION_EXPIRED` before the handler runs),
//! counts the call as a heartbeat, and records the session (or no session) as the resource's
//! last caller before the handler runs, so it holds even if the handler fails. Other methods
//! pass through untouched.
//!
//! The expiry driver sleeps until the manager's next deadline, collects what expired, and for
//! each expired session cancels its operations and stops every actuator it last commanded — in
//! parallel, on tasks of their own, outside every lock, each under a deadline — so a hung Stop
//! delays no other stop, heartbeat or call.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use tether_rpc::grpc::{PREFIX_LEN, Prefix};
use tether_rpc::heartbeat::{Ack, udp};
use tether_session::{Expired, SessionExpired, SessionId, SessionManager, StartError, Started};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::machine::Machine;
use crate::operations::CurrentOperation;
use crate::resource::ResourceName;
use crate::sync::lock;
use crate::telemetry::{HeartbeatVia, StopCause, Telemetry};

pub use tether_rpc::vocabulary::SESSION_ID_HEADER;

pub use tether_rpc::context::{Entity, PeerInfo, PeerKind};

/// The span of one session: every log line about it says its id and owner.
pub fn session_span(id: &SessionId, owner: &str) -> tracing::Span {
    tracing::info_span!("session", id = %id, owner = %owner)
}

/// The status every client relies on when its session is unknown, expired or another
/// owner's: `INVALID_ARGUMENT` with message exactly `SESSION_EXPIRED`.
pub fn session_expired() -> tonic::Status {
    tonic::Status::invalid_argument(tether_rpc::vocabulary::SESSION_EXPIRED)
}

/// The machine's sessions: the manager behind a short lock, and what the driver needs.
pub struct Sessions {
    manager: Mutex<SessionManager<ResourceName, Option<PeerInfo>>>,
    wake: Notify,
    datagrams: Datagrams,
    telemetry: Arc<Telemetry>,
}

/// Heartbeat datagrams over UDP ([`tether_rpc::heartbeat::udp`]): the process's secret that
/// every session's key is derived from, whether the server listens for them, and the highest
/// sequence number accepted per session (so a replayed datagram is refused).
struct Datagrams {
    secret: ring::hmac::Key,
    listening: std::sync::atomic::AtomicBool,
    accepted: Mutex<std::collections::HashMap<SessionId, u64>>,
}

/// How much longer than a window a new session has for its first heartbeat: a window, and
/// at least [`MIN_FIRST_GRACE`].
fn first_grace(window: Duration) -> Duration {
    window.max(MIN_FIRST_GRACE)
}

/// The least first-heartbeat grace. The client can heartbeat a session only once
/// StartSession's answer has reached it, and on a new connection a lost answer is resent
/// after an initial retransmission timeout of 1 s that doubles with each further loss (TCP,
/// RFC 6298, and Tether's SCTP): 1 + 2 + 4 s for an answer lost three times, then a round
/// trip. With a grace of one 500 ms window the soak (5 % loss) expired sessions whose answer
/// took 4 s. A session drives nothing before its first monitored call, and every heartbeat
/// (a monitored call is one) sets its deadline to one window after it, so the grace costs no
/// safety: only an abandoned, never-used session is collected later.
const MIN_FIRST_GRACE: Duration = Duration::from_secs(8);

impl Sessions {
    /// Sessions with this window and limit, counted in `telemetry`.
    pub fn new(window: Duration, max_sessions: usize, telemetry: Arc<Telemetry>) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let secret = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| panic!("the system's random source failed"));
        Self {
            // A new session's first heartbeat can only follow StartSession's answer.
            manager: Mutex::new(
                SessionManager::new(window, max_sessions).with_first_grace(first_grace(window)),
            ),
            wake: Notify::new(),
            datagrams: Datagrams {
                secret,
                listening: Default::default(),
                accepted: Default::default(),
            },
            telemetry,
        }
    }

    /// From now on StartSession hands direct callers a heartbeat key: the server listens for
    /// heartbeat datagrams.
    pub fn listen_for_datagrams(&self) {
        self.datagrams
            .listening
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Session `id`'s heartbeat key, if the server listens for datagrams.
    pub fn datagram_key(&self, id: &SessionId) -> Option<udp::SessionKey> {
        self.datagrams
            .listening
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| udp::derive_key(&self.datagrams.secret, id.as_bytes()))
    }

    /// Applies one heartbeat datagram; the answer to send back, if it deserves one (signed
    /// with its session's key, and newer than every datagram accepted for that session).
    pub fn datagram(&self, datagram: &[u8]) -> Option<[u8; udp::ACK_LEN]> {
        let (raw_id, seq) = udp::request_fields(datagram)?;
        let key = udp::derive_key(&self.datagrams.secret, &raw_id);
        if !udp::request_is_signed_by(&key, datagram) {
            return None;
        }
        let id = Uuid::from_bytes(raw_id);
        let ack = {
            let mut accepted = lock(&self.datagrams.accepted);
            let mut manager = lock(&self.manager);
            match manager.owner(&id).map(str::to_string) {
                None => {
                    accepted.remove(&id);
                    Ack::Expired
                }
                Some(owner) => {
                    if accepted.get(&id).is_some_and(|last| seq <= *last) {
                        return None;
                    }
                    accepted.insert(id, seq);
                    // The sequence number is the client's clock at sending.
                    match self.beat(
                        &mut manager,
                        id,
                        &owner,
                        None,
                        Some(seq),
                        HeartbeatVia::udp_datagram,
                    ) {
                        Ok(()) => Ack::Alive,
                        Err(SessionExpired) => Ack::Expired,
                    }
                }
            }
        };
        Some(udp::encode_ack(&key, &raw_id, seq, ack))
    }

    /// The heartbeat window.
    pub fn window(&self) -> Duration {
        lock(&self.manager).window()
    }

    /// Starts (or resumes) a session.
    pub fn start(
        &self,
        owner: &str,
        resume: Option<SessionId>,
        peer: Option<PeerInfo>,
    ) -> Result<Started, StartError> {
        let mut m = lock(&self.manager);
        let before = m.next_deadline();
        let started = m.start(Instant::now(), owner, resume, peer);
        self.wake_if_sooner(before, m.next_deadline());
        if started.as_ref().is_ok_and(|s| !s.resumed) {
            self.telemetry.session_started();
        }
        started
    }

    /// Heartbeats a session; `sent_us` is when the client sent the heartbeat, on its own
    /// clock, if it said ([`SessionManager::heartbeat_sent`]).
    pub fn heartbeat(
        &self,
        id: SessionId,
        owner: &str,
        peer: Option<PeerInfo>,
        sent_us: Option<u64>,
        via: HeartbeatVia,
    ) -> Result<(), SessionExpired> {
        self.beat(
            &mut lock(&self.manager),
            id,
            owner,
            peer.map(Some),
            sent_us,
            via,
        )
    }

    /// Heartbeats `id` in the locked manager `m`, waking the expiry driver if that moved the
    /// earliest deadline earlier (a first heartbeat ends a new session's grace).
    fn beat(
        &self,
        m: &mut SessionManager<ResourceName, Option<PeerInfo>>,
        id: SessionId,
        owner: &str,
        peer: Option<Option<PeerInfo>>,
        sent_us: Option<u64>,
        via: HeartbeatVia,
    ) -> Result<(), SessionExpired> {
        let before = m.next_deadline();
        let now = Instant::now();
        let beat = match sent_us {
            Some(sent) => m.heartbeat_sent(now, sent, id, owner, peer),
            None => m.heartbeat(now, id, owner, peer),
        };
        self.wake_if_sooner(before, m.next_deadline());
        if beat.is_ok() {
            self.telemetry.heartbeat(via);
        }
        beat
    }

    /// Wakes the expiry driver if the earliest deadline moved earlier than the one it sleeps
    /// until: a new session, or a first heartbeat ending a new session's grace.
    fn wake_if_sooner(&self, before: Option<Instant>, after: Option<Instant>) {
        let sooner = match (before, after) {
            (Some(b), Some(a)) => a < b,
            (None, Some(_)) => true,
            _ => false,
        };
        if sooner {
            self.wake.notify_one();
        }
    }

    /// The sessions `owner` holds, with their peers.
    pub fn list_owned_by(&self, owner: &str) -> Vec<(SessionId, Option<PeerInfo>)> {
        lock(&self.manager)
            .sessions_with_owner()
            .filter(|(_, o, _)| *o == owner)
            .map(|(id, _, p)| (id, p.clone()))
            .collect()
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        lock(&self.manager).len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live session as the machine's page shows it, oldest first.
    pub fn snapshot(&self) -> Vec<SessionStatus> {
        let now = Instant::now();
        let m = lock(&self.manager);
        let mut out: Vec<_> = m
            .views()
            .map(|v| {
                let mut resources: Vec<String> =
                    v.resources.iter().map(ToString::to_string).collect();
                resources.sort();
                SessionStatus {
                    id: v.id.to_string(),
                    owner: v.owner.to_string(),
                    peer: describe_peer(v.peer.as_ref()),
                    age: now.saturating_duration_since(v.started),
                    heartbeat_age: v.last_alive.map(|t| now.saturating_duration_since(t)),
                    expires_in: v.deadline.saturating_duration_since(now),
                    resources,
                }
            })
            .collect();
        out.sort_by(|a, b| b.age.cmp(&a.age).then_with(|| a.id.cmp(&b.id)));
        out
    }

    /// For a monitored call: validates and heartbeats `session` (if any), then records it as
    /// the last caller of `resource` (if the resource exists). One lock for both.
    fn admit(
        &self,
        session: Option<SessionId>,
        owner: &str,
        resource: Option<ResourceName>,
    ) -> Result<(), SessionExpired> {
        let mut m = lock(&self.manager);
        if let Some(id) = session {
            self.beat(&mut m, id, owner, None, None, HeartbeatVia::command)?;
        }
        if let Some(resource) = resource {
            m.record_caller(resource, session);
        }
        Ok(())
    }

    /// Runs forever: sleeps until the next deadline, then stops what expired sessions last
    /// commanded.
    pub async fn run_expiry(self: Arc<Self>, machine: Arc<Machine>) {
        loop {
            let next = lock(&self.manager).next_deadline();
            match next {
                None => self.wake.notified().await,
                Some(deadline) => {
                    let deadline = tokio::time::Instant::from_std(deadline);
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        _ = self.wake.notified() => continue,
                    }
                }
            }
            let expired = lock(&self.manager).expire(Instant::now());
            if !expired.is_empty() {
                let mut accepted = lock(&self.datagrams.accepted);
                for e in &expired {
                    accepted.remove(&e.id);
                }
            }
            // Start every stop of the batch first, then log: a line written for one session
            // must not delay the stops of the next.
            let reports: Vec<_> = expired
                .into_iter()
                .map(|e| stop_expired(&machine, e))
                .collect();
            for report in reports {
                report.log();
            }
        }
    }
}

/// The safety net ([`crate::commanders`]): a session-less command makes the connection it came
/// on the resource's commander (when that connection lasts and the net is on); anything else
/// takes the resource away from whichever connection commanded it.
fn command_by_connection(
    machine: &Arc<Machine>,
    session: Option<SessionId>,
    resource: ResourceName,
    extensions: &http::Extensions,
) {
    let commanders = machine.commanders();
    match extensions.get::<crate::commanders::ConnectionLink>() {
        Some(link) if session.is_none() && commanders.enabled() => {
            if commanders.command(link, resource) {
                crate::commanders::watch(machine.clone(), link.clone());
            }
        }
        _ => commanders.release(&resource),
    }
}

/// One live session as the machine's page shows it.
#[derive(Debug, Clone)]
pub struct SessionStatus {
    /// Its id.
    pub id: String,
    /// Its owner (an API key id, or the caller's address on an open machine).
    pub owner: String,
    /// Its transport and peer address, as last known.
    pub peer: String,
    /// How long it has lived.
    pub age: Duration,
    /// How long since its client was last known alive; `None` before its first heartbeat.
    pub heartbeat_age: Option<Duration>,
    /// Time left before it expires unless a heartbeat comes.
    pub expires_in: Duration,
    /// The resources whose last caller it is.
    pub resources: Vec<String>,
}

/// A peer as the page says it: `grpc 127.0.0.1:50312`, `webrtc`.
fn describe_peer(peer: Option<&PeerInfo>) -> String {
    match peer {
        None => "unknown".into(),
        Some(p) => match p.remote {
            Some(remote) => format!("{} {remote}", p.kind.as_str()),
            None => p.kind.as_str().to_string(),
        },
    }
}

/// What one expiry did, for its log line.
struct ExpiryReport {
    span: tracing::Span,
    session: SessionId,
    owner: String,
    peer: Option<SocketAddr>,
    late: Duration,
    cancelled: usize,
    stopping: Vec<String>,
}

impl ExpiryReport {
    fn log(&self) {
        let _entered = self.span.enter();
        tracing::info!(
            session = %self.session,
            owner = %self.owner,
            peer = ?self.peer,
            late_us = self.late.as_micros() as u64,
            cancelled_operations = self.cancelled,
            stopping = ?self.stopping,
            "session expired: stopping what it last commanded"
        );
    }
}

/// Cancels an expired session's operations and starts, on tasks of their own, a Stop of every
/// actuator it last commanded.
fn stop_expired(
    machine: &Arc<Machine>,
    e: Expired<ResourceName, Option<PeerInfo>>,
) -> ExpiryReport {
    let late = Instant::now().saturating_duration_since(e.deadline);
    let cancelled = machine.operations().cancel_session(&e.id.to_string());
    // Every log line of the expiry and of its stops says which session it concerns.
    let span = session_span(&e.id, &e.owner);
    let stopping =
        span.in_scope(|| machine.spawn_stops(&e.resources, StopCause::session_expiry, e.deadline));
    let names = stopping.names.clone();
    let record = machine.telemetry().expired(
        e.id.to_string(),
        e.owner.clone(),
        describe_peer(e.peer.as_ref()),
        e.deadline,
        late,
        names.clone(),
    );
    if !names.is_empty() {
        let deadline = e.deadline;
        tokio::spawn(async move {
            let ok = stopping.finished().await;
            record.stops_returned(deadline.elapsed(), !ok);
        });
    }
    ExpiryReport {
        span,
        session: e.id,
        owner: e.owner,
        peer: e.peer.and_then(|p| p.remote),
        late,
        cancelled,
        stopping: names,
    }
}

/// The resource a monitored call drives: its API from the service in the path
/// (`/viam.component.motor.v1.MotorService/SetPower`), looked up in the registry, so every
/// registered API — component or service — is treated alike; its name from field 1.
#[cfg(test)]
fn monitored_resource(path: &str, message: &[u8]) -> Option<ResourceName> {
    Some(ResourceName::new(api_of(path)?, field1_string(message)?))
}

/// The registered API whose service `path` calls.
fn api_of(path: &str) -> Option<crate::resource::ApiName> {
    let service = path.strip_prefix('/')?.rsplit_once('/')?.0;
    Some(crate::apis::by_proto_service(service)?.api)
}

/// A forward reader over a message's bytes, wherever they lie.
trait MessageBytes {
    /// The next byte.
    fn byte(&mut self) -> Option<u8>;
    /// Skips `n` bytes; `None` past the end.
    fn skip(&mut self, n: usize) -> Option<()>;
    /// Bytes read so far.
    fn position(&self) -> usize;
    /// The message's length.
    fn len(&self) -> usize;
}

/// A message in one slice.
struct Slice<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl MessageBytes for Slice<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        let to = self.at.checked_add(n)?;
        (to <= self.bytes.len()).then(|| self.at = to)
    }
    fn position(&self) -> usize {
        self.at
    }
    fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// A message spread over body frames, read where it lies (never joined into one buffer),
/// with a forward cursor: reading is one step per byte however many frames there are.
struct Spread<'a> {
    chunks: &'a [Bytes],
    /// Where the message starts in the chunks' concatenation.
    start: usize,
    /// The message's length, and how much of it has been read.
    len: usize,
    at: usize,
    /// The cursor: a chunk, and an offset in it.
    chunk: usize,
    offset: usize,
}

impl<'a> Spread<'a> {
    /// A message of `len` bytes that starts `start` bytes into `chunks`.
    fn new(chunks: &'a [Bytes], start: usize, len: usize) -> Self {
        let mut spread = Self {
            chunks,
            start,
            len,
            at: 0,
            chunk: 0,
            offset: 0,
        };
        spread.advance(start);
        spread
    }

    /// Moves the cursor `n` bytes on across chunks.
    fn advance(&mut self, mut n: usize) {
        while let Some(c) = self.chunks.get(self.chunk) {
            let here = c.len() - self.offset;
            if n < here {
                self.offset += n;
                return;
            }
            n -= here;
            self.chunk += 1;
            self.offset = 0;
        }
    }

    /// Bytes `from..to` of the message, copied (a field's value: a resource name).
    fn copy(&self, from: usize, to: usize) -> Option<Vec<u8>> {
        let mut fresh = Spread::new(self.chunks, self.start, self.len);
        fresh.skip(from)?;
        (from..to).map(|_| fresh.byte()).collect()
    }
}

impl MessageBytes for Spread<'_> {
    fn byte(&mut self) -> Option<u8> {
        if self.at >= self.len {
            return None;
        }
        // Past the end of a chunk: on to the next non-empty one.
        while self.chunks.get(self.chunk)?.len() == self.offset {
            self.chunk += 1;
            self.offset = 0;
        }
        let b = self.chunks.get(self.chunk)?[self.offset];
        self.offset += 1;
        self.at += 1;
        Some(b)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        let to = self.at.checked_add(n)?;
        if to > self.len {
            return None;
        }
        self.advance(n);
        self.at = to;
        Some(())
    }
    fn position(&self) -> usize {
        self.at
    }
    fn len(&self) -> usize {
        self.len
    }
}

fn varint(r: &mut impl MessageBytes) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let byte = r.byte()?;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Where field 1 of a protobuf message lies, when it is length-delimited (the last occurrence
/// wins, as protobuf parsers do); `None` if the message is malformed. Reads any message
/// generically, wherever its bytes are.
fn field1_span(r: &mut impl MessageBytes) -> Option<Option<(usize, usize)>> {
    let mut found = None;
    while r.position() < r.len() {
        let key = varint(r)?;
        match key & 7 {
            0 => {
                varint(r)?;
            }
            1 => r.skip(8)?,
            2 => {
                let len = usize::try_from(varint(r)?).ok()?;
                let start = r.position();
                r.skip(len)?;
                if key >> 3 == 1 {
                    found = Some((start, start + len));
                }
            }
            5 => r.skip(4)?,
            _ => return None,
        }
    }
    Some(found)
}

/// Field 1 of a protobuf message, when it is a length-delimited UTF-8 string (the last
/// occurrence wins, as protobuf parsers do). Reads any message generically.
pub fn field1_string(msg: &[u8]) -> Option<&str> {
    let (start, end) = field1_span(&mut Slice { bytes: msg, at: 0 })??;
    std::str::from_utf8(&msg[start..end]).ok()
}

/// Field 1 of a message that starts `start` bytes into `chunks` and is `len` long, copying
/// only the field's value.
fn field1_string_spread(chunks: &[Bytes], start: usize, len: usize) -> Option<String> {
    let mut spread = Spread::new(chunks, start, len);
    let (from, to) = field1_span(&mut spread)??;
    String::from_utf8(spread.copy(from, to)?).ok()
}

/// The bytes of monitored calls' first messages one connection may hold while the session
/// layer reads them (a request extension set per connection): two messages of the largest
/// size. Beyond it a monitored call is refused with `RESOURCE_EXHAUSTED`.
#[derive(Debug, Clone)]
pub struct BufferBudget(Arc<std::sync::atomic::AtomicUsize>);

/// The bytes one connection's monitored calls may hold at once.
pub const CONNECTION_BUFFER_BUDGET: usize = 2 * crate::limits::MAX_MESSAGE_BYTES;

impl Default for BufferBudget {
    fn default() -> Self {
        Self(Arc::new(std::sync::atomic::AtomicUsize::new(
            CONNECTION_BUFFER_BUDGET,
        )))
    }
}

impl BufferBudget {
    /// A reservation of nothing yet, to grow as frames are held.
    fn reserve(&self) -> Reserved {
        Reserved {
            budget: self.clone(),
            n: 0,
        }
    }
}

/// Bytes taken from a [`BufferBudget`], given back when dropped.
struct Reserved {
    budget: BufferBudget,
    n: usize,
}

impl Reserved {
    /// Takes `n` more bytes; false (and nothing taken) if the budget has not that many.
    fn grow(&mut self, n: usize) -> bool {
        use std::sync::atomic::Ordering;
        let mut left = self.budget.0.load(Ordering::Acquire);
        loop {
            let Some(rest) = left.checked_sub(n) else {
                return false;
            };
            match self.budget.0.compare_exchange_weak(
                left,
                rest,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.n += n;
                    return true;
                }
                Err(now) => left = now,
            }
        }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget
            .0
            .fetch_add(self.n, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A request body that first replays frames already read from it.
pub struct Replay<B> {
    buffered: VecDeque<Frame<Bytes>>,
    inner: B,
    /// The connection budget the buffered frames hold, given back once they are replayed.
    reserved: Option<Reserved>,
}

impl<B> http_body::Body for Replay<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(frame) = self.buffered.pop_front() {
            if self.buffered.is_empty() {
                self.reserved = None;
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_empty() && self.inner.is_end_stream()
    }
}

/// The first message of a monitored call as the session layer read it.
struct FirstMessage {
    /// The frames read, to be replayed to the handler.
    frames: VecDeque<Frame<Bytes>>,
    /// The budget they hold.
    reserved: Reserved,
    /// Field 1 of the first message, when it is complete, uncompressed and has one.
    name: Option<String>,
}

/// Reads frames until the first gRPC message is complete (or the body ends), holding them
/// against the connection's budget and never joining them: field 1 is read where it lies.
async fn read_first_message<B>(
    body: &mut B,
    budget: &BufferBudget,
) -> Result<FirstMessage, tonic::Status>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut frames = VecDeque::new();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut reserved = budget.reserve();
    let mut total = 0usize;
    // The first message's prefix, once its five bytes are in.
    let mut prefix: Option<Prefix> = None;
    loop {
        if prefix.is_none() && total >= PREFIX_LEN {
            let mut head = Spread::new(&chunks, 0, PREFIX_LEN);
            let bytes: Option<Vec<u8>> = (0..PREFIX_LEN).map(|_| head.byte()).collect();
            prefix = bytes.as_deref().and_then(Prefix::parse);
        }
        if let Some(p) = prefix
            && total >= PREFIX_LEN + p.len
        {
            let name = if p.compressed {
                None
            } else {
                field1_string_spread(&chunks, PREFIX_LEN, p.len)
            };
            return Ok(FirstMessage {
                frames,
                reserved,
                name,
            });
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    if !reserved.grow(d.len()) {
                        return Err(tonic::Status::resource_exhausted(
                            "too many bytes of safety-monitored calls are buffered on this \
                             connection; retry when they finish",
                        ));
                    }
                    total += d.len();
                    chunks.push(d.clone());
                }
                frames.push_back(frame);
            }
            Some(Err(e)) => return Err(tonic::Status::from_error(e.into())),
            None => {
                return Ok(FirstMessage {
                    frames,
                    reserved,
                    name: None,
                });
            }
        }
    }
}

/// The tower layer applying session rules to safety-monitored methods.
#[derive(Clone)]
pub struct SessionLayer {
    machine: Arc<Machine>,
}

impl SessionLayer {
    /// A layer for this machine's sessions.
    pub fn new(machine: Arc<Machine>) -> Self {
        Self { machine }
    }
}

impl<S> tower::Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            machine: self.machine.clone(),
        }
    }
}

/// See [`SessionLayer`].
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    machine: Arc<Machine>,
}

fn status_response(status: tonic::Status) -> Response<Body> {
    status.into_http::<Body>()
}

impl<S, B> tower::Service<Request<B>> for SessionService<S>
where
    S: tower::Service<Request<Replay<B>>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let mut inner = self.inner.clone();
        std::mem::swap(&mut self.inner, &mut inner);
        if !tether_proto::is_safety_monitored(req.uri().path()) {
            return Box::pin(inner.call(req.map(|inner| Replay {
                buffered: VecDeque::new(),
                inner,
                reserved: None,
            })));
        }
        let machine = self.machine.clone();
        Box::pin(async move {
            let sids: Vec<_> = req.headers().get_all(SESSION_ID_HEADER).iter().collect();
            let session = match sids.as_slice() {
                [] => None,
                [one] => match one.to_str().ok().and_then(|s| Uuid::parse_str(s).ok()) {
                    Some(id) => Some(id),
                    None => return Ok(status_response(session_expired())),
                },
                _ => {
                    return Ok(status_response(tonic::Status::invalid_argument(format!(
                        "expected at most one {SESSION_ID_HEADER} value, got {}",
                        sids.len()
                    ))));
                }
            };
            let owner = tether_rpc::context::owner_of(req.extensions());
            let path = req.uri().path().to_string();
            let budget = req
                .extensions()
                .get::<BufferBudget>()
                .cloned()
                .unwrap_or_default();
            let (parts, mut body) = req.into_parts();
            let first = match read_first_message(&mut body, &budget).await {
                Ok(read) => read,
                Err(status) => return Ok(status_response(status)),
            };
            let resource = first
                .name
                .as_deref()
                .and_then(|name| Some(ResourceName::new(api_of(&path)?, name)))
                .filter(|r| machine.resources().get(&r.api, &r.name).is_some());
            if machine
                .sessions()
                .admit(session, &owner, resource.clone())
                .is_err()
            {
                return Ok(status_response(session_expired()));
            }
            if let Some(resource) = resource {
                command_by_connection(&machine, session, resource, &parts.extensions);
            }
            if let (Some(id), Some(op)) = (session, parts.extensions.get::<CurrentOperation>())
                && let Some(op) = machine.operations().get(op.0)
            {
                *lock(&op.session_id) = Some(id.to_string());
            }
            inner
                .call(Request::from_parts(
                    parts,
                    Replay {
                        buffered: first.frames,
                        inner: body,
                        reserved: Some(first.reserved),
                    },
                ))
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_session_has_a_window_and_at_least_eight_seconds_for_its_first_heartbeat() {
        assert_eq!(first_grace(Duration::from_millis(30)), MIN_FIRST_GRACE);
        assert_eq!(
            first_grace(Duration::from_millis(500)),
            Duration::from_secs(8)
        );
        assert_eq!(
            first_grace(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn field1_is_read_where_it_lies_across_frames() {
        let mut msg = vec![0x11];
        msg.extend_from_slice(&0.5f64.to_le_bytes());
        msg.extend_from_slice(&[0x0a, 4, b'l', b'e', b'f', b't', 0x9a, 0x06, 0x00]);
        let mut body = crate::sessions::tests::prefixed(&msg);
        // Every way of cutting the prefixed message into two or three frames reads the same.
        for a in 0..body.len() {
            for b in a..body.len() {
                let chunks = [
                    Bytes::copy_from_slice(&body[..a]),
                    Bytes::copy_from_slice(&body[a..b]),
                    Bytes::copy_from_slice(&body[b..]),
                ];
                assert_eq!(
                    field1_string_spread(&chunks, PREFIX_LEN, msg.len()).as_deref(),
                    Some("left"),
                    "cut at {a}, {b}"
                );
            }
        }
        // Truncated: no name.
        body.truncate(body.len() - 4);
        let chunks = [Bytes::from(body)];
        assert_eq!(field1_string_spread(&chunks, PREFIX_LEN, msg.len()), None);
    }

    pub(super) fn prefixed(msg: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        v.extend_from_slice(msg);
        v
    }

    #[test]
    fn the_connection_budget_is_taken_and_given_back() {
        let budget = BufferBudget::default();
        let mut a = budget.reserve();
        assert!(a.grow(CONNECTION_BUFFER_BUDGET - 10));
        let mut b = budget.reserve();
        assert!(!b.grow(11));
        assert!(b.grow(10));
        drop(a);
        assert!(budget.reserve().grow(CONNECTION_BUFFER_BUDGET - 10));
        drop(b);
    }

    #[test]
    fn field1_is_found_generically() {
        // name = "left", then power_pct (double, field 2), then extra (field 99, empty message).
        let mut msg = vec![0x0a, 4, b'l', b'e', b'f', b't', 0x11];
        msg.extend_from_slice(&0.5f64.to_le_bytes());
        msg.extend_from_slice(&[0x9a, 0x06, 0x00]);
        assert_eq!(field1_string(&msg), Some("left"));
        // Field order does not matter; the last occurrence wins.
        let mut reordered = vec![0x11];
        reordered.extend_from_slice(&1.0f64.to_le_bytes());
        reordered.extend_from_slice(&[0x0a, 1, b'a', 0x0a, 1, b'b']);
        assert_eq!(field1_string(&reordered), Some("b"));
        // Truncated, missing, or a non-string field 1.
        assert_eq!(field1_string(&[0x0a, 9, b'x']), None);
        assert_eq!(field1_string(&[0x10, 1]), None);
        assert_eq!(field1_string(&[0x08, 1]), None);
        assert_eq!(field1_string(&[]), None);
    }

    #[test]
    fn resource_comes_from_the_service_path() {
        let msg = [0x0a, 1, b'm'];
        let r = monitored_resource("/viam.component.motor.v1.MotorService/SetPower", &msg);
        assert_eq!(r, Some(ResourceName::new(crate::apis::motor::API, "m")));
        assert_eq!(
            monitored_resource("/viam.service.motion.v1.MotionService/Move", &msg),
            None
        );
    }
}
