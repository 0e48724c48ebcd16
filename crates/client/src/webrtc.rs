//! gRPC calls over a WebRTC data channel: [`WebRtcChannel`], a tower service that generated
//! clients run over unchanged (STACK.md §2.3).
//!
//! One connection is one peer with its open `data` channel and a dedicated runtime thread
//! ([`RtcRuntime`]) that runs everything WebRTC: the engine's own tasks, one reader task that
//! demultiplexes incoming frames to streams, one writer task that sends frames in order, and
//! one pump per call that turns the request body into frames. Because that runtime is not the
//! application's, an application that blocks its own runtime delays neither the connection
//! nor the session heartbeats sent over it.
//!
//! A call sends `headers` at once, starts its pump (client and bidi streaming work: the body
//! is read as the application produces it), and resolves when the machine's `headers` arrive,
//! as an HTTP/2 call does; the response body is fed from a channel with gRPC-framed messages
//! and then the trailers. Ownership never loops: the service holds the shared state, tasks and
//! bodies hold only `Weak` references or channel ends, so dropping the last clone closes the
//! peer and ends the runtime thread.
//!
//! Limits: at most [`MAX_CONCURRENT_STREAMS`] calls at once (beyond: `RESOURCE_EXHAUSTED`
//! locally); a response whose reader falls more than [`STREAM_UNREAD_LIMIT`] behind, or that
//! would take the connection past [`CONNECTION_UNREAD_LIMIT`] of unread data, is cancelled with
//! `RESOURCE_EXHAUSTED` rather than stalling every other call on the channel; reassembly of a
//! single message is capped at 32 MiB by the codec. Writes wait while the data channel has
//! more than 1 MiB queued, so senders are paced by the network.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;
use http_body_util::BodyExt as _;
use tether_rpc::framing::{ClientEvent, ClientStreams, MAX_MESSAGE_BYTES};
use tether_rtc::{Channel, Peer};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::wire::{self, split_status};
use tether_rpc::grpc::{MessageSplitter, message_prefix};

/// Most calls open at once on one connection (as rust-utils caps itself; the machine refuses
/// more).
pub(crate) const MAX_CONCURRENT_STREAMS: usize = tether_rpc::framing::MAX_STREAMS;
/// Most response bytes one call may hold unread before it is cancelled.
pub(crate) const STREAM_UNREAD_LIMIT: usize = 64 << 20;
/// Most response bytes the whole connection may hold unread.
pub(crate) const CONNECTION_UNREAD_LIMIT: usize = 256 << 20;
/// Frames queued for the writer before senders wait (control frames never wait).
const WRITE_QUEUE_FRAMES: usize = 64;
/// Stream ids start here (as goutils).
const FIRST_STREAM_ID: u64 = 1;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Called once when the connection is lost by itself (not when it is closed on purpose).
pub(crate) type LostHook = Arc<dyn Fn(String) + Send + Sync>;

/// A thread running a current-thread runtime for one WebRTC connection. Stopping it (or
/// dropping it) closes the peer handed over, then drops every task of the connection.
pub(crate) struct RtcRuntime {
    handle: tokio::runtime::Handle,
    stop: Mutex<Option<oneshot::Sender<Option<Arc<Peer>>>>>,
}

impl RtcRuntime {
    pub(crate) fn start() -> std::io::Result<Self> {
        let (stop, stopped) = oneshot::channel::<Option<Arc<Peer>>>();
        let handle = crate::runtime_thread("tether-webrtc", move || async move {
            if let Ok(Some(peer)) = stopped.await {
                let started = std::time::Instant::now();
                let closed = tokio::time::timeout(Duration::from_secs(2), peer.close()).await;
                tracing::debug!(took = ?started.elapsed(), timed_out = closed.is_err(), "WebRTC peer closed; its runtime ends");
            }
            // The runtime is dropped when this ends, which cancels every task of the
            // connection.
        })?;
        Ok(Self {
            handle,
            stop: Mutex::new(Some(stop)),
        })
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Closes `peer` (if any) and ends the runtime. Idempotent.
    pub(crate) fn stop(&self, peer: Option<Arc<Peer>>) {
        let stop = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(stop) = stop {
            let _ = stop.send(peer);
        }
    }
}

impl Drop for RtcRuntime {
    fn drop(&mut self) {
        self.stop(None);
    }
}

/// What a call learns first.
enum Head {
    /// The machine's response headers: the call is on.
    Headers(HeaderMap),
    /// The call ended before any message: these are its status headers.
    TrailersOnly(HeaderMap),
}

/// What a response body receives.
enum Item {
    /// One response message (without prefix), counted as unread until the body yields it.
    Message(Bytes),
    /// The call's end.
    Trailers(HeaderMap),
}

struct StreamEntry {
    head: Option<oneshot::Sender<Head>>,
    body: mpsc::UnboundedSender<Item>,
    unread: Arc<AtomicUsize>,
    /// The call's request pump and deadline timer, stopped when the call ends.
    tasks: Vec<AbortHandle>,
}

impl StreamEntry {
    fn stop_tasks(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct State {
    codec: ClientStreams,
    streams: HashMap<u64, StreamEntry>,
    /// Why the connection closed, once it has.
    closed: Option<String>,
    tasks: Vec<AbortHandle>,
}

/// What the tasks of one WebRTC peer connection share: its streams, its writer, the peer and
/// the engine's runtime, and the unread-bytes accounting.
struct PeerChannelState {
    state: Mutex<State>,
    writer: mpsc::Sender<Bytes>,
    peer: Arc<Peer>,
    runtime: RtcRuntime,
    unread_total: Arc<AtomicUsize>,
    /// [`STREAM_UNREAD_LIMIT`] and [`CONNECTION_UNREAD_LIMIT`] (smaller in tests).
    unread_limits: (AtomicUsize, AtomicUsize),
    lost: LostHook,
    /// The heartbeat datagram channel ([`tether_rpc::heartbeat`]), once open.
    datagrams: std::sync::OnceLock<Channel>,
    /// The machine's acks on it.
    acks: tokio::sync::broadcast::Sender<Bytes>,
}

/// A gRPC channel over one WebRTC data channel.
#[derive(Clone)]
pub(crate) struct WebRtcChannel {
    shared: Arc<PeerChannelState>,
}

impl WebRtcChannel {
    /// Starts serving calls over an open data channel. `closed` reports the peer's end (ICE
    /// failure, remote close); `lost` is told when the connection ends by itself.
    pub(crate) fn start(
        runtime: RtcRuntime,
        peer: Arc<Peer>,
        channel: Channel,
        mut closed: mpsc::UnboundedReceiver<&'static str>,
        lost: LostHook,
    ) -> Self {
        let (writer, queue) = mpsc::channel(WRITE_QUEUE_FRAMES);
        let shared = Arc::new(PeerChannelState {
            state: Mutex::new(State {
                codec: ClientStreams::new(FIRST_STREAM_ID),
                streams: HashMap::new(),
                closed: None,
                tasks: Vec::new(),
            }),
            writer,
            peer,
            runtime,
            unread_total: Arc::new(AtomicUsize::new(0)),
            unread_limits: (
                AtomicUsize::new(STREAM_UNREAD_LIMIT),
                AtomicUsize::new(CONNECTION_UNREAD_LIMIT),
            ),
            lost,
            datagrams: std::sync::OnceLock::new(),
            acks: tokio::sync::broadcast::channel(16).0,
        });
        let handle = shared.runtime.handle().clone();
        let weak = Arc::downgrade(&shared);
        let beats_weak = weak.clone();
        let reader = handle.spawn(read_loop(channel.clone(), weak.clone()));
        let writer = handle.spawn(write_loop(channel, queue, weak.clone()));
        let watcher = handle.spawn(async move {
            let reason = closed.recv().await.unwrap_or("peer connection closed");
            if let Some(shared) = weak.upgrade() {
                shared.lost(format!("WebRTC connection lost: {reason}"));
            }
        });
        let mut tasks = vec![
            reader.abort_handle(),
            writer.abort_handle(),
            watcher.abort_handle(),
        ];
        // Tether's heartbeat channel opens with the association, but the connection does not
        // wait for it: heartbeats go as datagrams from the moment it is open. A machine
        // without it (Viam's) never answers on it, and heartbeats still go as calls.
        let beats = {
            let (peer, weak) = (shared.peer.clone(), beats_weak);
            handle.spawn(async move {
                let Ok(channel) = peer.heartbeat_channel().await else {
                    return;
                };
                let Some(acks) = weak.upgrade().map(|shared| {
                    let _ = shared.datagrams.set(channel.clone());
                    shared.acks.clone()
                }) else {
                    return;
                };
                // What is an ack, and of which session, the heartbeat loop decides.
                while let Some(message) = channel.recv().await {
                    let _ = acks.send(message);
                }
            })
        };
        tasks.push(beats.abort_handle());
        shared.state().tasks = tasks;
        Self { shared }
    }

    /// Whether `other` is this same connection.
    pub(crate) fn same_connection(&self, other: &WebRtcChannel) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The machine's heartbeat acks from now on (none if it has no heartbeat channel).
    pub(crate) fn heartbeat_acks(&self) -> tokio::sync::broadcast::Receiver<Bytes> {
        self.shared.acks.subscribe()
    }

    /// Sends one heartbeat datagram (if the machine has the channel, and then says so); its
    /// loss costs nothing.
    pub(crate) fn send_heartbeat_datagram(&self, message: Bytes) -> bool {
        let Some(channel) = self.shared.datagrams.get() else {
            return false;
        };
        let channel = channel.clone();
        self.shared.runtime.handle().spawn(async move {
            let _ = channel.send(message).await;
        });
        true
    }

    /// The selected ICE candidate pair's route (candidate types, remote address).
    pub(crate) async fn route(&self) -> Option<tether_rtc::Route> {
        let peer = self.shared.peer.clone();
        self.shared
            .runtime
            .handle()
            .spawn(async move { peer.route().await })
            .await
            .ok()
            .flatten()
    }

    /// Closes the connection on purpose (a new transport replaced it): open calls fail with
    /// UNAVAILABLE; the supervisor is not told.
    pub(crate) fn close(&self, reason: &str) {
        self.shared.close(reason);
    }

    /// Lowers the unread-response limits (tests).
    #[cfg(test)]
    pub(crate) fn set_unread_limits(&self, stream: usize, connection: usize) {
        self.shared.unread_limits.0.store(stream, Ordering::Relaxed);
        self.shared
            .unread_limits
            .1
            .store(connection, Ordering::Relaxed);
    }

    /// Response bytes received and not yet read, on the whole connection.
    #[cfg(test)]
    pub(crate) fn unread(&self) -> usize {
        self.shared.unread_total.load(Ordering::Relaxed)
    }

    /// Calls open now.
    #[cfg(test)]
    pub(crate) fn open_streams(&self) -> usize {
        self.shared.state().streams.len()
    }
}

fn unavailable(reason: &str) -> tonic::Status {
    tonic::Status::unavailable(format!("WebRTC transport closed: {reason}"))
}

impl PeerChannelState {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn closed_reason(&self) -> String {
        self.state()
            .closed
            .clone()
            .unwrap_or_else(|| "connection closed".into())
    }

    /// Ends the connection: every open call fails with UNAVAILABLE, every task stops, the peer
    /// closes. True if this call closed it.
    fn close(&self, reason: &str) -> bool {
        let (streams, tasks) = {
            let mut s = self.state();
            if s.closed.is_some() {
                return false;
            }
            s.closed = Some(reason.to_string());
            (std::mem::take(&mut s.streams), std::mem::take(&mut s.tasks))
        };
        tracing::debug!(%reason, "closing the WebRTC connection");
        let trailers = wire::local_status_headers(&unavailable(reason));
        for (_, entry) in streams {
            entry.stop_tasks();
            // A call still waiting for headers sees its head sender dropped (UNAVAILABLE).
            if entry.head.is_none() {
                let _ = entry.body.send(Item::Trailers(trailers.clone()));
            }
        }
        for task in tasks {
            task.abort();
        }
        self.runtime.stop(Some(self.peer.clone()));
        true
    }

    /// The connection ended by itself: close it and tell the supervisor.
    fn lost(&self, reason: String) {
        if self.close(&reason) {
            tracing::debug!(%reason, "WebRTC connection lost");
            (self.lost)(reason);
        }
    }

    /// Queues a frame that must not wait (a reset): if the queue is full, a task sends it.
    fn send_control(&self, frame: Vec<u8>) {
        match self.writer.try_send(Bytes::from(frame)) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(frame)) => {
                let writer = self.writer.clone();
                self.runtime.handle().spawn(async move {
                    let _ = writer.send(frame).await;
                });
            }
        }
    }

    /// Ends call `id` on this side with `status` (the caller sees it as the call's status) and
    /// tells the machine to stop it.
    fn fail_stream(&self, id: u64, status: &tonic::Status) {
        let (entry, frame) = {
            let mut s = self.state();
            let Some(entry) = s.streams.remove(&id) else {
                return;
            };
            (entry, s.codec.reset(id))
        };
        entry.stop_tasks();
        let trailers = wire::local_status_headers(status);
        match entry.head {
            Some(head) => {
                let _ = head.send(Head::TrailersOnly(trailers));
            }
            None => {
                let _ = entry.body.send(Item::Trailers(trailers));
            }
        }
        self.send_control(frame);
    }

    /// The application gave up on call `id` (dropped its response or its future).
    fn cancel(&self, id: u64) {
        let frame = {
            let mut s = self.state();
            let Some(entry) = s.streams.remove(&id) else {
                return;
            };
            entry.stop_tasks();
            s.codec.reset(id)
        };
        self.send_control(frame);
    }

    /// Applies one incoming data-channel message.
    fn receive(&self, frame: &[u8]) {
        let mut s = self.state();
        let event = match s.codec.receive(frame) {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "dropping an undecodable frame from the machine");
                return;
            }
        };
        match event {
            ClientEvent::Headers { stream, metadata } => {
                if let Some(head) = s.streams.get_mut(&stream).and_then(|e| e.head.take()) {
                    let _ = head.send(Head::Headers(wire::metadata_headers(&metadata)));
                }
            }
            ClientEvent::Message { stream, payload } => {
                let n = payload.len();
                let over = match s.streams.get(&stream) {
                    None => return,
                    Some(entry) => {
                        let unread = entry.unread.load(Ordering::Relaxed);
                        let total = self.unread_total.load(Ordering::Relaxed);
                        let stream_limit = self.unread_limits.0.load(Ordering::Relaxed);
                        let connection_limit = self.unread_limits.1.load(Ordering::Relaxed);
                        (unread > 0 && (unread + n > stream_limit || total + n > connection_limit))
                            .then_some(unread.max(total))
                    }
                };
                if let Some(held) = over {
                    drop(s);
                    self.fail_stream(
                        stream,
                        &tonic::Status::resource_exhausted(format!(
                            "response not read: {} MiB of it already waiting",
                            held >> 20
                        )),
                    );
                    return;
                }
                let entry = &s.streams[&stream];
                entry.unread.fetch_add(n, Ordering::Relaxed);
                self.unread_total.fetch_add(n, Ordering::Relaxed);
                if entry.body.send(Item::Message(payload)).is_err() {
                    // The body is gone (its cancel is on the way).
                    entry.unread.fetch_sub(n, Ordering::Relaxed);
                    self.unread_total.fetch_sub(n, Ordering::Relaxed);
                }
            }
            ClientEvent::Trailers {
                stream,
                code,
                message,
                metadata,
            } => {
                let Some(entry) = s.streams.remove(&stream) else {
                    return;
                };
                drop(s);
                entry.stop_tasks();
                let trailers = wire::status_headers(code, &message, &metadata);
                match entry.head {
                    Some(head) => {
                        let _ = head.send(Head::TrailersOnly(trailers));
                    }
                    None => {
                        let _ = entry.body.send(Item::Trailers(trailers));
                    }
                }
            }
            ClientEvent::Violation { stream, reason } => {
                drop(s);
                tracing::warn!(stream, %reason, "the machine broke the data-channel protocol");
                self.fail_stream(
                    stream,
                    &tonic::Status::internal(format!(
                        "protocol violation by the machine: {reason}"
                    )),
                );
            }
        }
    }

    async fn start_call(
        self: Arc<Self>,
        request: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<tonic::body::Body>, BoxError> {
        let (parts, body) = request.into_parts();
        let method = parts.uri.path().to_string();
        let metadata = wire::request_metadata(&parts.headers);
        let timeout = wire::grpc_timeout(&parts.headers);
        let (head_tx, head_rx) = oneshot::channel();
        let (body_tx, body_rx) = mpsc::unbounded_channel();
        let unread = Arc::new(AtomicUsize::new(0));
        let (id, frame) = {
            let mut s = self.state();
            if let Some(reason) = &s.closed {
                return Err(Box::new(unavailable(reason)));
            }
            if s.streams.len() >= MAX_CONCURRENT_STREAMS {
                return Ok(tonic::Status::resource_exhausted(format!(
                    "too many concurrent calls on this WebRTC connection (limit {MAX_CONCURRENT_STREAMS})"
                ))
                .into_http());
            }
            let (id, frame) = s.codec.open(&method, &metadata, timeout);
            s.streams.insert(
                id,
                StreamEntry {
                    head: Some(head_tx),
                    body: body_tx,
                    unread: unread.clone(),
                    tasks: Vec::new(),
                },
            );
            (id, frame)
        };
        // From here on, dropping this future cancels the call.
        let mut guard = StreamGuard {
            id,
            shared: Arc::downgrade(&self),
            finished: false,
        };
        if self.writer.send(Bytes::from(frame)).await.is_err() {
            return Err(Box::new(unavailable(&self.closed_reason())));
        }
        let mut tasks = vec![
            self.runtime
                .handle()
                .spawn(pump(body, id, self.writer.clone(), Arc::downgrade(&self)))
                .abort_handle(),
        ];
        // The deadline holds here too, whatever the machine does with it.
        if let Some(timeout) = timeout {
            let shared = Arc::downgrade(&self);
            let timer = self.runtime.handle().spawn(async move {
                tokio::time::sleep(timeout).await;
                if let Some(shared) = shared.upgrade() {
                    shared.fail_stream(
                        id,
                        &tonic::Status::deadline_exceeded(
                            "Deadline expired before operation could complete",
                        ),
                    );
                }
            });
            tasks.push(timer.abort_handle());
        }
        match self.state().streams.get_mut(&id) {
            Some(entry) => entry.tasks = tasks,
            None => tasks.iter().for_each(AbortHandle::abort),
        }
        let head = match head_rx.await {
            Ok(head) => head,
            Err(_) => {
                guard.finished = true;
                return Err(Box::new(unavailable(&self.closed_reason())));
            }
        };
        let mut response_body = ResponseBody {
            rx: body_rx,
            pending: None,
            payload: None,
            unread,
            total: self.unread_total.clone(),
            guard,
            done: false,
        };
        let headers = match head {
            Head::TrailersOnly(status) => {
                response_body.guard.finished = true;
                return Ok(trailers_only(HeaderMap::new(), status));
            }
            Head::Headers(headers) => headers,
        };
        // Trailers right behind the headers (an error before any message, e.g. a refused
        // session): answer trailers-only, exactly as an HTTP/2 call would see it.
        match response_body.rx.try_recv() {
            Ok(Item::Trailers(status)) => {
                response_body.guard.finished = true;
                return Ok(trailers_only(headers, status));
            }
            Ok(item) => response_body.pending = Some(item),
            Err(_) => {}
        }
        let mut response = http::Response::new(tonic::body::Body::new(response_body));
        *response.headers_mut() = headers;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        Ok(response)
    }
}

impl Drop for PeerChannelState {
    fn drop(&mut self) {
        self.close("the client was dropped");
    }
}

fn trailers_only(mut headers: HeaderMap, status: HeaderMap) -> http::Response<tonic::body::Body> {
    headers.extend(status);
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    let mut response = http::Response::new(tonic::body::Body::empty());
    *response.headers_mut() = headers;
    response
}

async fn read_loop(channel: Channel, shared: Weak<PeerChannelState>) {
    while let Some(frame) = channel.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.receive(&frame);
    }
    if let Some(shared) = shared.upgrade() {
        shared.lost("the data channel closed".into());
    }
}

async fn write_loop(
    channel: Channel,
    mut queue: mpsc::Receiver<Bytes>,
    shared: Weak<PeerChannelState>,
) {
    while let Some(frame) = queue.recv().await {
        if let Err(e) = channel.send(frame).await {
            if let Some(shared) = shared.upgrade() {
                shared.lost(format!("data channel write failed: {e}"));
            }
            return;
        }
    }
}

/// Reads a call's request body as the application produces it and sends its messages; then
/// half-closes. Ends early (aborted) when the call ends.
async fn pump(
    mut body: tonic::body::Body,
    id: u64,
    writer: mpsc::Sender<Bytes>,
    shared: Weak<PeerChannelState>,
) {
    // `message` and `half_close` are pure encoders: the pump keeps its own codec so it never
    // takes the connection's lock.
    let encoder = ClientStreams::new(0);
    let mut splitter = MessageSplitter::new(MAX_MESSAGE_BYTES);
    let sent: Result<(), tonic::Status> = async {
        let closed = || tonic::Status::unavailable("WebRTC transport closed");
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue; // request trailers: gRPC has none
            };
            splitter.push(data);
            while let Some(message) = splitter.next_message().map_err(|e| split_status(&e))? {
                for packet in encoder.message(id, &message, false) {
                    writer
                        .send(Bytes::from(packet))
                        .await
                        .map_err(|_| closed())?;
                }
            }
        }
        splitter.finish().map_err(|e| split_status(&e))?;
        writer
            .send(Bytes::from(encoder.half_close(id)))
            .await
            .map_err(|_| closed())
    }
    .await;
    if let Err(status) = sent
        && let Some(shared) = shared.upgrade()
    {
        shared.fail_stream(id, &status);
    }
}

/// Cancels its call when dropped before the call ended.
struct StreamGuard {
    id: u64,
    shared: Weak<PeerChannelState>,
    finished: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.finished
            && let Some(shared) = self.shared.upgrade()
        {
            shared.cancel(self.id);
        }
    }
}

/// A call's response body: gRPC-framed messages, then trailers.
struct ResponseBody {
    rx: mpsc::UnboundedReceiver<Item>,
    pending: Option<Item>,
    /// A message whose prefix was yielded; its bytes come next.
    payload: Option<Bytes>,
    unread: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    guard: StreamGuard,
    done: bool,
}

impl ResponseBody {
    fn consumed(&self, n: usize) {
        self.unread.fetch_sub(n, Ordering::Relaxed);
        self.total.fetch_sub(n, Ordering::Relaxed);
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if let Some(payload) = self.payload.take() {
            self.consumed(payload.len());
            return Poll::Ready(Some(Ok(Frame::data(payload))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let item = match self.pending.take() {
            Some(item) => Some(item),
            None => match self.rx.poll_recv(cx) {
                Poll::Ready(item) => item,
                Poll::Pending => return Poll::Pending,
            },
        };
        Poll::Ready(Some(Ok(match item {
            Some(Item::Message(payload)) => {
                let prefix = message_prefix(payload.len());
                self.payload = Some(payload);
                Frame::data(prefix)
            }
            Some(Item::Trailers(trailers)) => {
                self.done = true;
                self.guard.finished = true;
                Frame::trailers(trailers)
            }
            // The connection went away with the stream entry.
            None => {
                self.done = true;
                self.guard.finished = true;
                Frame::trailers(wire::local_status_headers(&unavailable(
                    "connection closed",
                )))
            }
        })))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.payload.is_none()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let mut held = self.payload.take().map_or(0, |p| p.len());
        if let Some(Item::Message(p)) = self.pending.take() {
            held += p.len();
        }
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            if let Item::Message(p) = item {
                held += p.len();
            }
        }
        self.consumed(held);
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for WebRtcChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.shared.clone().start_call(request))
    }
}

#[cfg(test)]
mod tests {
    //! The channel against an in-process answerer peer on loopback that speaks the machine's
    //! side of the framing with `tether_rpc::framing::ServerStreams` and a few scripted
    //! methods. (The real machine is exercised by crates/cli/tests/webrtc_client.rs.)

    use super::*;
    use bytes::{Buf, BufMut};
    use tether_rpc::framing::{
        ServerEvent, ServerStreams, encode_response_headers, encode_response_message,
        encode_trailers,
    };
    use tether_rtc::{Interfaces, PeerConfig, PeerEvent};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default, Clone, Copy)]
    struct Raw;

    impl Codec for Raw {
        type Encode = Bytes;
        type Decode = Bytes;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }

    impl Encoder for Raw {
        type Item = Bytes;
        type Error = tonic::Status;
        fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put(item);
            Ok(())
        }
    }

    impl Decoder for Raw {
        type Item = Bytes;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
            Ok(Some(src.copy_to_bytes(src.remaining())))
        }
    }

    /// What the answerer saw.
    #[derive(Default)]
    struct Seen {
        opened: Vec<(String, tether_rpc::framing::Metadata, Option<Duration>)>,
        cancelled: Vec<u64>,
    }

    /// The scripted machine side: `/t/Echo` echoes every message as it comes and ends OK with
    /// trailer metadata on half-close; `/t/Flood` sends 40 messages of 64 KiB and never ends; `/t/Fail` answers NOT_FOUND right behind its headers;
    /// `/t/Silent` never answers; `/t/Late` sends headers only once the client half-closes.
    async fn serve(channel: tether_rtc::Channel, seen: Arc<Mutex<Seen>>) {
        let mut streams = ServerStreams::default();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let out = channel.clone();
        tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                if out.send(Bytes::from(f)).await.is_err() {
                    return;
                }
            }
        });
        let mut methods = HashMap::new();
        while let Some(frame) = channel.recv().await {
            for event in streams.receive(&frame).unwrap() {
                match event {
                    ServerEvent::Open {
                        stream,
                        method,
                        metadata,
                        timeout,
                    } => {
                        seen.lock()
                            .unwrap()
                            .opened
                            .push((method.clone(), metadata, timeout));
                        match method.as_str() {
                            "/t/Echo" => {
                                let md = vec![("opid".to_string(), vec!["op-1".to_string()])];
                                tx.send(encode_response_headers(stream, &md)).unwrap();
                            }
                            "/t/Flood" => {
                                tx.send(encode_response_headers(stream, &[])).unwrap();
                                for _ in 0..40 {
                                    for f in encode_response_message(stream, &[7u8; 64 << 10]) {
                                        tx.send(f).unwrap();
                                    }
                                }
                            }
                            "/t/Fail" => {
                                tx.send(encode_response_headers(stream, &[])).unwrap();
                                tx.send(encode_trailers(stream, 5, "no \"thing\" here", &[]))
                                    .unwrap();
                                streams.finish(stream);
                            }
                            _ => {}
                        }
                        methods.insert(stream, method);
                    }
                    ServerEvent::Message { stream, payload } => {
                        if methods.get(&stream).map(String::as_str) == Some("/t/Echo") {
                            for f in encode_response_message(stream, &payload) {
                                tx.send(f).unwrap();
                            }
                        }
                    }
                    ServerEvent::HalfClose { stream } => {
                        let method = methods.get(&stream).cloned().unwrap_or_default();
                        if method == "/t/Late" {
                            tx.send(encode_response_headers(stream, &[])).unwrap();
                            for f in encode_response_message(stream, b"late") {
                                tx.send(f).unwrap();
                            }
                        }
                        if method == "/t/Echo" || method == "/t/Late" {
                            let md = vec![("t".to_string(), vec!["1".to_string()])];
                            tx.send(encode_trailers(stream, 0, "", &md)).unwrap();
                            streams.finish(stream);
                        }
                    }
                    ServerEvent::Cancel { stream } => seen.lock().unwrap().cancelled.push(stream),
                    ServerEvent::Fail { frames, .. } => {
                        for f in frames {
                            tx.send(f).unwrap();
                        }
                    }
                }
            }
        }
    }

    struct Pair {
        channel: WebRtcChannel,
        answerer: Arc<Peer>,
        seen: Arc<Mutex<Seen>>,
        lost: mpsc::UnboundedReceiver<String>,
    }

    async fn pair() -> Pair {
        let config = PeerConfig {
            interfaces: Interfaces::LoopbackOnly,
            ..Default::default()
        };
        let runtime = RtcRuntime::start().unwrap();
        let rt = runtime.handle().clone();
        let cfg = config.clone();
        let (caller, mut caller_events) = rt
            .spawn(async move { Peer::new(&cfg).await.unwrap() })
            .await
            .unwrap();
        let caller = Arc::new(caller);
        let c = caller.clone();
        let offer = rt
            .spawn(async move { c.create_offer().await.unwrap() })
            .await
            .unwrap();
        let (answerer, mut answerer_events) = Peer::new(&config).await.unwrap();
        let answerer = Arc::new(answerer);
        let answer = answerer.accept_offer(&offer).await.unwrap();
        let c = caller.clone();
        rt.spawn(async move { c.accept_answer(&answer).await.unwrap() })
            .await
            .unwrap();
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let a = answerer.clone();
        rt.spawn(async move {
            while let Some(e) = caller_events.recv().await {
                match e {
                    PeerEvent::Candidate(cand) => {
                        let _ = a.add_remote_candidate(cand).await;
                    }
                    PeerEvent::Closed(reason) => {
                        let _ = closed_tx.send(reason);
                    }
                    _ => {}
                }
            }
        });
        let c = Arc::downgrade(&caller);
        let handle = rt.clone();
        tokio::spawn(async move {
            while let Some(e) = answerer_events.recv().await {
                if let (PeerEvent::Candidate(cand), Some(c)) = (e, c.upgrade()) {
                    handle.spawn(async move {
                        let _ = c.add_remote_candidate(cand).await;
                    });
                }
            }
        });
        let c = caller.clone();
        let opened = rt.spawn(async move { c.data_channel(Duration::from_secs(10)).await });
        let served = answerer
            .data_channel(Duration::from_secs(10))
            .await
            .unwrap();
        let opened = opened.await.unwrap().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        tokio::spawn(serve(served, seen.clone()));
        let (lost_tx, lost) = mpsc::unbounded_channel();
        let hook: LostHook = Arc::new(move |cause| {
            let _ = lost_tx.send(cause);
        });
        Pair {
            channel: WebRtcChannel::start(runtime, caller, opened, closed, hook),
            answerer,
            seen,
            lost,
        }
    }

    fn grpc(channel: &WebRtcChannel) -> tonic::client::Grpc<WebRtcChannel> {
        tonic::client::Grpc::new(channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    fn path(p: &'static str) -> http::uri::PathAndQuery {
        http::uri::PathAndQuery::from_static(p)
    }

    async fn wait_for(mut ok: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met in time"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unary_streaming_errors_limits_and_close() {
        let Pair {
            channel,
            answerer,
            seen,
            mut lost,
        } = pair().await;
        let mut g = grpc(&channel);

        // Unary, with metadata both ways and a deadline.
        let mut request = tonic::Request::new(Bytes::from_static(b"hello"));
        request.set_timeout(Duration::from_millis(1500));
        request
            .metadata_mut()
            .insert("viam-sid", "abc".parse().unwrap());
        request.metadata_mut().insert_bin(
            "trace-bin",
            tonic::metadata::MetadataValue::from_bytes(b"\x00\x01"),
        );
        let t0 = std::time::Instant::now();
        let reply = g.unary(request, path("/t/Echo"), Raw).await.unwrap();
        let unary_rtt = t0.elapsed();
        assert_eq!(reply.get_ref(), &Bytes::from_static(b"hello"));
        assert_eq!(reply.metadata().get("opid").unwrap(), "op-1");
        assert_eq!(reply.metadata().get("t").unwrap(), "1");
        {
            let seen = seen.lock().unwrap();
            let (method, md, timeout) = &seen.opened[0];
            assert_eq!(method, "/t/Echo");
            assert!(
                md.contains(&("viam-sid".into(), vec!["abc".into()])),
                "{md:?}"
            );
            assert!(
                md.contains(&("trace-bin".into(), vec!["AAE".into()])),
                "{md:?}"
            );
            assert!(!md.iter().any(|(k, _)| k == "te" || k == "grpc-timeout"));
            let timeout = timeout.expect("timeout sent");
            assert!(timeout <= Duration::from_millis(1500) && timeout > Duration::from_secs(1));
        }
        eprintln!("unary round trip over the loopback test pair: {unary_rtt:?}");

        // Bidi: each reply arrives before the next request is sent.
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let requests = tokio_stream_from(rx);
        let mut replies = g
            .streaming(tonic::Request::new(requests), path("/t/Echo"), Raw)
            .await
            .unwrap()
            .into_inner();
        for i in 0..5u8 {
            tx.send(Bytes::from(vec![i; 3])).unwrap();
            assert_eq!(replies.message().await.unwrap().unwrap(), vec![i; 3]);
        }
        drop(tx);
        assert!(replies.message().await.unwrap().is_none());

        // Headers that come only after the client half-closes (client streaming).
        let once = tokio_stream_from_iter(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        let late = g
            .client_streaming(tonic::Request::new(once), path("/t/Late"), Raw)
            .await
            .unwrap();
        assert_eq!(late.get_ref(), &Bytes::from_static(b"late"));

        // A message far larger than a data-channel message, both ways.
        let big = Bytes::from((0..8u32 << 20).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        let t0 = std::time::Instant::now();
        let echoed = g
            .unary(tonic::Request::new(big.clone()), path("/t/Echo"), Raw)
            .await
            .unwrap()
            .into_inner();
        assert!(echoed == big);
        eprintln!(
            "8 MiB each way over the loopback test pair: {:?}",
            t0.elapsed()
        );

        // An error right behind the headers surfaces as that status.
        let err = g
            .unary(tonic::Request::new(Bytes::new()), path("/t/Fail"), Raw)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert_eq!(err.message(), "no \"thing\" here");

        // 256 calls at once; the 257th is refused locally.
        let mut held = Vec::new();
        for _ in 0..MAX_CONCURRENT_STREAMS {
            let mut g = grpc(&channel);
            held.push(tokio::spawn(async move {
                g.unary(tonic::Request::new(Bytes::new()), path("/t/Silent"), Raw)
                    .await
            }));
        }
        wait_for(|| channel.open_streams() == MAX_CONCURRENT_STREAMS).await;
        let silent = || {
            let seen = seen.lock().unwrap();
            seen.opened.iter().filter(|o| o.0 == "/t/Silent").count()
        };
        wait_for(|| silent() == MAX_CONCURRENT_STREAMS).await;
        let refused = g
            .unary(tonic::Request::new(Bytes::new()), path("/t/Echo"), Raw)
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
        // Abandoning them cancels each on the machine and frees every stream.
        for h in &held {
            h.abort();
        }
        wait_for(|| channel.open_streams() == 0).await;
        wait_for(|| seen.lock().unwrap().cancelled.len() == MAX_CONCURRENT_STREAMS).await;
        g.unary(
            tonic::Request::new(Bytes::from_static(b"again")),
            path("/t/Echo"),
            Raw,
        )
        .await
        .unwrap();

        // A call in flight when the peer goes away fails UNAVAILABLE, and the loss is reported.
        let mut g2 = grpc(&channel);
        let pending = tokio::spawn(async move {
            g2.unary(tonic::Request::new(Bytes::new()), path("/t/Silent"), Raw)
                .await
        });
        wait_for(|| channel.open_streams() == 1).await;
        answerer.close().await;
        let failed = tokio::time::timeout(Duration::from_secs(15), pending)
            .await
            .expect("the pending call must fail when the peer closes")
            .unwrap()
            .unwrap_err();
        assert_eq!(failed.code(), tonic::Code::Unavailable, "{failed:?}");
        let cause = tokio::time::timeout(Duration::from_secs(5), lost.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            cause.contains("WebRTC") || cause.contains("data channel"),
            "{cause}"
        );
        let after = g
            .unary(tonic::Request::new(Bytes::new()), path("/t/Echo"), Raw)
            .await
            .unwrap_err();
        assert_eq!(after.code(), tonic::Code::Unavailable);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_a_response_cancels_the_call_and_closing_frees_everything() {
        let Pair { channel, seen, .. } = pair().await;
        let mut g = grpc(&channel);
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let mut replies = g
            .streaming(
                tonic::Request::new(tokio_stream_from(rx)),
                path("/t/Echo"),
                Raw,
            )
            .await
            .unwrap()
            .into_inner();
        tx.send(Bytes::from_static(b"x")).unwrap();
        assert_eq!(replies.message().await.unwrap().unwrap(), &b"x"[..]);
        drop(replies);
        wait_for(|| seen.lock().unwrap().cancelled.len() == 1).await;
        assert_eq!(channel.open_streams(), 0);
        // A deadline holds even if the machine never answers; the machine is told to stop.
        let mut request = tonic::Request::new(Bytes::new());
        request.set_timeout(Duration::from_millis(300));
        let t0 = std::time::Instant::now();
        let late = g.unary(request, path("/t/Silent"), Raw).await.unwrap_err();
        assert_eq!(late.code(), tonic::Code::DeadlineExceeded, "{late:?}");
        assert!(
            t0.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t0.elapsed()
        );
        wait_for(|| seen.lock().unwrap().cancelled.len() == 2).await;
        assert_eq!(channel.open_streams(), 0);
        // A response nobody reads is cut off at its limit rather than held without bound.
        channel.set_unread_limits(1 << 20, 4 << 20);
        let mut flood = g
            .server_streaming(tonic::Request::new(Bytes::new()), path("/t/Flood"), Raw)
            .await
            .unwrap()
            .into_inner();
        wait_for(|| seen.lock().unwrap().cancelled.len() == 3).await;
        assert_eq!(channel.open_streams(), 0);
        assert!(channel.unread() <= 1 << 20, "{}", channel.unread());
        let mut read = 0;
        let cut = loop {
            match flood.message().await {
                Ok(Some(m)) => read += m.len(),
                Ok(None) => panic!("the flood ended without an error"),
                Err(status) => break status,
            }
        };
        assert_eq!(cut.code(), tonic::Code::ResourceExhausted, "{cut:?}");
        assert!(read <= 1 << 20, "{read}");
        assert_eq!(channel.unread(), 0);
        drop(flood);
        g.unary(
            tonic::Request::new(Bytes::from_static(b"ok")),
            path("/t/Echo"),
            Raw,
        )
        .await
        .unwrap();
        // Closing on purpose fails what is open and reports nothing as lost.
        let weak = Arc::downgrade(&channel.shared);
        channel.close("test");
        let err = g
            .unary(tonic::Request::new(Bytes::new()), path("/t/Echo"), Raw)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(err.message().contains("test"), "{err:?}");
        drop((g, channel));
        // (A task of the connection may hold it for the instant it takes to finish a step.)
        wait_for(|| weak.upgrade().is_none()).await;
    }

    /// A request stream fed by a channel (what an application's bidi call looks like).
    fn tokio_stream_from(
        rx: mpsc::UnboundedReceiver<Bytes>,
    ) -> impl tonic::codegen::tokio_stream::Stream<Item = Bytes> + Send + 'static {
        struct S(mpsc::UnboundedReceiver<Bytes>);
        impl tonic::codegen::tokio_stream::Stream for S {
            type Item = Bytes;
            fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
                self.0.poll_recv(cx)
            }
        }
        S(rx)
    }

    fn tokio_stream_from_iter(
        items: Vec<Bytes>,
    ) -> impl tonic::codegen::tokio_stream::Stream<Item = Bytes> + Send + 'static {
        tonic::codegen::tokio_stream::iter(items)
    }
}
