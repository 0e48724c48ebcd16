//! Operations: every in-flight call is an operation with an id.
//!
//! The [`OperationsLayer`] registers each gRPC call when it arrives (reusing a client-supplied
//! `opid` header when it is a fresh UUID), exposes its id to handlers through a request
//! extension, answers with an `opid` response header, and removes it when the response body is
//! finished or dropped. `GetOperations` lists them, `CancelOperation` cancels one — the call then
//! ends at once with `CANCELLED` and its handler future is dropped, which halts any motion it
//! was waiting on — and `BlockForOperation` waits for one to end. `StopAll` cancels all but its
//! own.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Frame;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::sync::lock;

/// The response (and request) header carrying an operation id.
pub const OPID_HEADER: &str = tether_rpc::vocabulary::OPERATION_ID_HEADER;

/// One in-flight call.
#[derive(Debug)]
pub struct Operation {
    /// Its id.
    pub id: Uuid,
    /// The full gRPC method path.
    pub method: String,
    /// When it started.
    pub started: SystemTime,
    /// The session it runs in, if any.
    pub session_id: Mutex<Option<String>>,
    /// Who called it (see `tether_rpc::context::owner_of`): only they see and cancel it.
    pub owner: Arc<str>,
    cancel: CancellationToken,
    done: CancellationToken,
}

/// The registry of in-flight operations.
#[derive(Debug, Default)]
pub struct Operations {
    ops: Mutex<HashMap<Uuid, Arc<Operation>>>,
}

/// The id of the operation a request belongs to (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrentOperation(pub Uuid);

/// Keeps an operation registered; dropping it ends the operation.
#[derive(Debug)]
pub struct OperationGuard {
    ops: Arc<Operations>,
    op: Arc<Operation>,
}

impl Drop for OperationGuard {
    fn drop(&mut self) {
        lock(&self.ops.ops).remove(&self.op.id);
        self.op.done.cancel();
    }
}

impl Operations {
    /// Registers a new operation for `method`, with `requested` as its id if that is free.
    pub fn start(
        self: &Arc<Self>,
        method: &str,
        requested: Option<Uuid>,
        owner: Arc<str>,
    ) -> OperationGuard {
        let mut ops = lock(&self.ops);
        let id = match requested {
            Some(id) if !ops.contains_key(&id) => id,
            _ => Uuid::new_v4(),
        };
        let op = Arc::new(Operation {
            id,
            method: method.to_string(),
            started: SystemTime::now(),
            session_id: Mutex::new(None),
            owner,
            cancel: CancellationToken::new(),
            done: CancellationToken::new(),
        });
        ops.insert(id, op.clone());
        OperationGuard {
            ops: self.clone(),
            op,
        }
    }

    /// Every in-flight operation, oldest first.
    pub fn list(&self) -> Vec<Arc<Operation>> {
        let mut all: Vec<_> = lock(&self.ops).values().cloned().collect();
        all.sort_by_key(|o| o.started);
        all
    }

    /// Looks one up.
    pub fn get(&self, id: Uuid) -> Option<Arc<Operation>> {
        lock(&self.ops).get(&id).cloned()
    }

    /// Cancels one; false if there is no such operation.
    pub fn cancel(&self, id: Uuid) -> bool {
        match self.get(id) {
            Some(op) => {
                op.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Cancels every operation except `keep`; returns how many were cancelled.
    pub fn cancel_all_except(&self, keep: Option<Uuid>) -> usize {
        let ops = lock(&self.ops);
        let mut n = 0;
        for op in ops.values().filter(|o| Some(o.id) != keep) {
            op.cancel.cancel();
            n += 1;
        }
        n
    }

    /// Cancels every operation running in `session`; returns how many.
    pub fn cancel_session(&self, session: &str) -> usize {
        let ops = lock(&self.ops);
        let mut n = 0;
        for op in ops.values() {
            if lock(&op.session_id).as_deref() == Some(session) {
                op.cancel.cancel();
                n += 1;
            }
        }
        n
    }

    /// Waits until the operation has ended (at once if there is none).
    pub async fn wait(&self, id: Uuid) {
        if let Some(op) = self.get(id) {
            op.done.cancelled().await;
        }
    }

    /// How many are in flight.
    pub fn len(&self) -> usize {
        lock(&self.ops).len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether calls to this path are operations. Signaling streams, the deprecated status stream
/// and reflection are not (as in viam-server), nor is anything that is not gRPC.
fn is_recorded(path: &str) -> bool {
    path.starts_with("/viam.") || path.starts_with("/proto.rpc.v1.")
}

/// The tower layer that makes every call an operation.
#[derive(Clone)]
pub struct OperationsLayer {
    ops: Arc<Operations>,
}

impl OperationsLayer {
    /// A layer registering into `ops`.
    pub fn new(ops: Arc<Operations>) -> Self {
        Self { ops }
    }
}

impl<S> tower::Layer<S> for OperationsLayer {
    type Service = OperationsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OperationsService {
            inner,
            ops: self.ops.clone(),
        }
    }
}

/// See [`OperationsLayer`].
#[derive(Clone)]
pub struct OperationsService<S> {
    inner: S,
    ops: Arc<Operations>,
}

impl<S, B> tower::Service<Request<B>> for OperationsService<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let mut inner = self.inner.clone();
        std::mem::swap(&mut self.inner, &mut inner);
        if !is_recorded(req.uri().path()) {
            return Box::pin(inner.call(req));
        }
        let requested = req
            .headers()
            .get(OPID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Uuid::parse_str(v).ok());
        let guard = self.ops.start(
            req.uri().path(),
            requested,
            tether_rpc::context::owner_of(req.extensions()),
        );
        let id = guard.op.id;
        let cancel = guard.op.cancel.clone();
        req.extensions_mut().insert(CurrentOperation(id));
        // Every log line of the call says which call it is: its method and operation id.
        let span = tracing::info_span!(
            "call",
            method = %tether_rpc::context::Clipped(req.uri().path()),
            opid = %id
        );
        let call = {
            let _entered = span.enter();
            inner.call(req)
        };
        Box::pin(tracing::Instrument::instrument(
            async move {
                let opid = HeaderValue::from_str(&id.to_string()).ok();
                let mut response = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => {
                        drop(guard);
                        let mut r = tonic::Status::cancelled(format!("operation {id} was cancelled"))
                            .into_http::<Body>();
                        if let Some(v) = opid {
                            r.headers_mut().insert(OPID_HEADER, v);
                        }
                        return Ok(r);
                    }
                    r = call => r?,
                };
                if let Some(v) = opid {
                    response.headers_mut().insert(OPID_HEADER, v);
                }
                Ok(response.map(|body| Body::new(Holding::new(body, guard))))
            },
            span,
        ))
    }
}

/// A response body that holds something (an operation's registration, a connection's
/// in-flight count) until the body is finished or dropped.
pub(crate) struct Holding<G> {
    inner: Body,
    _held: G,
}

impl<G> Holding<G> {
    /// Holds `held` for as long as `inner` lives.
    pub(crate) fn new(inner: Body, held: G) -> Self {
        Self { inner, _held: held }
    }
}

impl<G: Send + Unpin + 'static> http_body::Body for Holding<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn registry_lifecycle() {
        let ops = Arc::new(Operations::default());
        let a = ops.start("/x/A", None, "".into());
        let wanted = Uuid::new_v4();
        let b = ops.start("/x/B", Some(wanted), "".into());
        assert_eq!(b.op.id, wanted);
        // A requested id already in use is not reused.
        let c = ops.start("/x/C", Some(wanted), "".into());
        assert_ne!(c.op.id, wanted);
        assert_eq!(ops.len(), 3);
        assert_eq!(ops.cancel_all_except(Some(a.op.id)), 2);
        assert!(b.op.cancel.is_cancelled() && c.op.cancel.is_cancelled());
        assert!(!a.op.cancel.is_cancelled());
        let waiter = {
            let ops = ops.clone();
            let id = a.op.id;
            tokio::spawn(async move { ops.wait(id).await })
        };
        drop(a);
        waiter.await.unwrap();
        assert!(!ops.cancel(Uuid::new_v4()));
        drop((b, c));
        assert!(ops.is_empty());
    }
}
