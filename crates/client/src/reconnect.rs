//! The reconnect supervisor: one task per client, woken when the connection is suspected lost.
//!
//! Suspicion comes from failed heartbeats (each gets a quarter window; with the heartbeat period
//! and a probe of half a window, a dead link is reported within about one window), from
//! transport errors on application calls, and — already confirmed — from a WebRTC peer
//! connection that ended by itself. The supervisor probes the current transport (whichever it
//! is); if it is really gone, it reports `Disconnected`, then dials again on the
//! [`crate::backoff`] schedule with the same methods in the same order as the first dial,
//! reporting each step. On success the new transport
//! replaces the old one for every typed client at once, and the session is resumed
//! (`StartSession{resume}`) — or reported expired if the machine has already stopped what it
//! drove. After the last attempt it reports `ReconnectionFailed` and waits: the application
//! decides what happens next; the library never exits the process.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tether_proto::viam::robot::v1::ResourceNamesRequest;
use tether_proto::viam::robot::v1::robot_service_client::RobotServiceClient;
use tokio::sync::mpsc;

use crate::backoff::{Backoff, Failure, Next, jitter_sample};
use crate::channel::{ClientState, RobotChannel, Suspicion, authorized};
use crate::session::HeartbeatPolicy;
use crate::{ClientError, ConnectionEvent};

/// How long a probe of a suspect connection may take.
fn probe_timeout(inner: &ClientState) -> Duration {
    HeartbeatPolicy::for_window(inner.session.window()).probe_timeout()
}

/// A cheap call on the current transport, bypassing sessions.
async fn probe(inner: &ClientState) -> Result<(), String> {
    probe_within(inner, probe_timeout(inner)).await
}

async fn probe_within(inner: &ClientState, timeout: Duration) -> Result<(), String> {
    let request = authorized(ResourceNamesRequest {}, inner.token().as_deref());
    match tokio::time::timeout(
        timeout,
        RobotServiceClient::new(inner.transport()).resource_names(request),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        // Every stream of the connection is busy: it is alive.
        Ok(Err(status)) if status.code() == tonic::Code::ResourceExhausted => Ok(()),
        Ok(Err(status)) => Err(status.message().to_string()),
        Err(_) => Err("no answer to a probe".into()),
    }
}

/// Probes the connection within `timeout`; on failure, hands it to the supervisor.
pub(crate) async fn check(inner: &Arc<ClientState>, timeout: Duration) -> bool {
    match probe_within(inner, timeout).await {
        Ok(()) => true,
        Err(cause) => {
            inner.lost(format!("connection check failed: {cause}"));
            false
        }
    }
}

/// Which dial failures can never succeed by retrying.
fn classify(e: &ClientError) -> Failure {
    if e.is_permanent() {
        Failure::Permanent
    } else {
        Failure::Transient
    }
}

/// Runs until the client is dropped. It holds the client only while it looks at it, never
/// across a backoff or a dial: a client dropped while reconnecting is gone at once (its
/// heartbeats stop, so its session lapses within the window), not after the reconnection.
pub(crate) async fn supervise(
    client: Weak<ClientState>,
    mut suspicions: mpsc::UnboundedReceiver<Suspicion>,
) {
    while let Some(Suspicion { cause, confirmed }) = suspicions.recv().await {
        let mut confirmed = confirmed;
        while let Ok(more) = suspicions.try_recv() {
            confirmed |= more.confirmed;
        }
        {
            let Some(inner) = client.upgrade() else {
                return;
            };
            if !confirmed && probe(&inner).await.is_ok() {
                continue;
            }
            inner.emit(ConnectionEvent::Disconnected { cause });
            if inner.reconnect_disabled() {
                continue;
            }
        }
        reconnect(&client).await;
        // Suspicions raised while reconnecting are about the old transport.
        while suspicions.try_recv().is_ok() {}
    }
}

/// Dials on the backoff schedule until connected, out of attempts, or the client is dropped.
pub(crate) async fn reconnect(client: &Weak<ClientState>) -> bool {
    let Some(policy) = client.upgrade().map(|i| i.options.backoff.clone()) else {
        return false;
    };
    let emit = |event| ClientState::emit_to(client, event);
    let mut backoff = Backoff::new(policy);
    let mut last = None;
    loop {
        let (attempt, delay) = match backoff.next(last, jitter_sample()) {
            Next::GiveUp { attempts } => {
                emit(ConnectionEvent::ReconnectionFailed { attempts });
                return false;
            }
            Next::RetryAfter { attempt, delay } => (attempt, delay),
        };
        if !emit(ConnectionEvent::Reconnecting { attempt, delay }) {
            return false;
        }
        tokio::time::sleep(delay).await;
        // The same methods in the same order as the first dial; each within the dial timeout.
        match ClientState::redial(client, attempt).await {
            None => return false,
            Some(Ok((transport, token))) => {
                let Some(inner) = client.upgrade() else {
                    transport.close();
                    return false;
                };
                let name = transport.name();
                inner.replace_transport(transport, token);
                inner.emit(ConnectionEvent::Connected {
                    transport: name.into(),
                });
                resume_session(&inner).await;
                return true;
            }
            Some(Err(e)) => {
                tracing::debug!(attempt, error = %e, "reconnection attempt failed");
                last = Some(classify(&e));
            }
        }
    }
}

/// After a reconnection: keep the session if the machine still has it, else say it expired.
async fn resume_session(inner: &Arc<ClientState>) {
    let Some(id) = inner.session.current_id() else {
        return;
    };
    let channel = RobotChannel {
        inner: inner.clone(),
    };
    match inner.session.resume(&channel, &id).await {
        Ok(true) => inner.emit(ConnectionEvent::SessionResumed { id }),
        Ok(false) => {}
        Err(status) => tracing::debug!(%status, "resuming the session failed"),
    }
}
