//! Idle tracking: which connections do no work, so they can be closed (or, when the table is
//! full, given up to a new client), and the deadline of a request body that stalls.
//!
//! A connection is *working* while one of its calls has its whole request and is being
//! handled or answered; a call whose request body is still open is only waiting. Progress is
//! bytes moving the call forward: request data, a request's end, response frames. A connection
//! that has no working call and has made no progress for the idle timeout is idle — so a peer
//! that opens calls and never finishes them (HEADERS without END_STREAM, a Content-Length it
//! never sends) holds its slot no longer than an idle one. A unary call's request must also
//! arrive whole within the request deadline, or the call ends with `DEADLINE_EXCEEDED`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Calls and progress on one connection. A call costs a few atomic updates; the watcher polls.
pub(crate) struct Activity {
    opened: Instant,
    /// Calls whose request is whole and whose answer is not finished.
    working: AtomicUsize,
    /// Milliseconds since `opened` of the last progress.
    progress_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            opened: Instant::now(),
            working: AtomicUsize::new(0),
            progress_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// Notes progress now.
    pub(crate) fn progress(&self) {
        self.progress_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// How long since the last progress, if no call is working; `None` while one is.
    pub(crate) fn quiet(&self) -> Option<Duration> {
        if self.working.load(Ordering::Acquire) != 0 {
            return None;
        }
        let since = self
            .now_ms()
            .saturating_sub(self.progress_ms.load(Ordering::Relaxed));
        Some(Duration::from_millis(since))
    }

    /// Resolves once the connection has been idle for `timeout` (checked every `timeout / 4`).
    pub(crate) async fn idle_for(&self, timeout: Duration) {
        let mut tick = tokio::time::interval((timeout / 4).max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.quiet().is_some_and(|q| q >= timeout) {
                return;
            }
        }
    }
}

/// One call's share of a connection's activity: working from the end of its request until
/// dropped (with its response body).
pub(crate) struct CallActivity {
    activity: Arc<Activity>,
    working: std::sync::atomic::AtomicBool,
}

impl CallActivity {
    pub(crate) fn new(activity: &Arc<Activity>) -> Arc<Self> {
        Arc::new(Self {
            activity: activity.clone(),
            working: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The request is whole: the call is working.
    fn request_done(&self) {
        self.activity.progress();
        if !self.working.swap(true, Ordering::AcqRel) {
            self.activity.working.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// A frame of the answer went out.
    pub(crate) fn responded(&self) {
        self.activity.progress();
    }
}

impl Drop for CallActivity {
    fn drop(&mut self) {
        self.activity.progress();
        if self.working.load(Ordering::Acquire) {
            self.activity.working.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A request body that reports progress and, for a unary call, must end by a deadline.
pub(crate) struct TrackedBody {
    inner: Incoming,
    call: Arc<CallActivity>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    limit: Duration,
    ended: bool,
}

impl TrackedBody {
    /// Tracks `inner`; `deadline` bounds a unary call's whole request.
    pub(crate) fn new(
        inner: Incoming,
        call: Arc<CallActivity>,
        deadline: Option<Duration>,
    ) -> Self {
        let ended = inner.is_end_stream();
        if ended {
            call.request_done();
        }
        Self {
            inner,
            call,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep(d))),
            limit: deadline.unwrap_or_default(),
            ended,
        }
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let end = frame.is_none() || self.inner.is_end_stream();
                if end {
                    self.ended = frame.is_none();
                    self.call.request_done();
                    self.deadline = None;
                } else {
                    self.call.activity.progress();
                }
                if frame.is_none() {
                    self.ended = true;
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if let Some(deadline) = self.deadline.as_mut()
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    self.ended = true;
                    let status = tonic::Status::deadline_exceeded(format!(
                        "the request did not arrive whole within {:?}",
                        self.limit
                    ));
                    return Poll::Ready(Some(Err(Box::new(status))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that reports each frame as progress and keeps its call counted until done.
pub(crate) struct TrackedResponse {
    inner: axum::body::Body,
    call: Arc<CallActivity>,
}

impl TrackedResponse {
    pub(crate) fn new(inner: axum::body::Body, call: Arc<CallActivity>) -> Self {
        Self { inner, call }
    }
}

impl Body for TrackedResponse {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if frame.is_some() {
            self.call.responded();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
