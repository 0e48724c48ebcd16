//! The machine's answerer: takes offers for this machine from the call queue, answers each
//! with its own WebRTC peer, trickles candidates both ways, and once the `data` channel opens
//! serves it with [`dispatch::serve`](super::dispatch::serve).
//!
//! Every peer is bounded in time: the exchange must finish within the offer's deadline, a
//! connection whose ICE fails (no consent for `failed_timeout`) or whose channel closes is
//! torn down, its calls cancelled and its tasks aborted. The number of peers at once is
//! bounded (`network.max_webrtc_peers`): a call beyond it is refused with
//! RESOURCE_EXHAUSTED.

use std::sync::Arc;
use std::time::Duration;

use tether_rtc::{Peer, PeerConfig, PeerEvent};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;

use super::dispatch::{self, ConnectionContext};
use crate::server::Stack;
use crate::sessions::{PeerInfo, PeerKind};
use tether_signal::queue::{AnswererSide, FromAnswerer, FromCaller, MIN_EXCHANGE, OfferSource};

/// Answers offers for `hosts` until `stop`.
pub struct Answerer<S> {
    /// Where offers come from: the embedded signaling service's queue, or `Answer` streams to
    /// a fleet's signaling service.
    pub offers: Arc<dyn OfferSource>,
    pub hosts: Vec<String>,
    pub peer_config: PeerConfig,
    pub service: S,
    /// The peer slots (`network.max_webrtc_peers`), shared by every answerer of the machine.
    pub slots: Arc<Semaphore>,
    /// The size of `slots`, for the refusal's message.
    pub max_peers: usize,
    pub telemetry: Arc<crate::telemetry::Telemetry>,
}

impl<S> Answerer<S>
where
    S: Stack,
{
    pub async fn run(self, stop: CancellationToken) {
        let this = Arc::new(self);
        let slots = this.slots.clone();
        let tracker = TaskTracker::new();
        loop {
            let side = tokio::select! {
                _ = stop.cancelled() => break,
                side = this.offers.recv_offer(&this.hosts) => side,
            };
            let side = match side {
                Ok(side) => side,
                Err(e) => {
                    tracing::warn!(error = %e, "call queue failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::warn!(
                    max = this.max_peers,
                    "WebRTC peer limit reached; refusing a call"
                );
                let _ = side
                    .to_caller
                    .send(FromAnswerer::Error(Status::resource_exhausted(format!(
                        "this machine serves at most {} WebRTC connections at once",
                        this.max_peers
                    ))))
                    .await;
                continue;
            };
            let (this, stop) = (this.clone(), stop.clone());
            // Every log line of the peer, and of each call on its data channel, says which
            // peer it is: its call's id and the entity it authenticated as.
            let span = tracing::info_span!(
                "webrtc_peer",
                call = %side.offer.uuid,
                entity = %side.offer.caller_entity,
                transport = "webrtc"
            );
            tracker.spawn(tracing::Instrument::instrument(
                async move {
                    this.answer(side, stop).await;
                    drop(permit);
                },
                span,
            ));
        }
        tracker.close();
        tracker.wait().await;
    }

    async fn answer(&self, side: AnswererSide, stop: CancellationToken) {
        let uuid = side.offer.uuid.clone();
        let entity = side.offer.caller_entity.clone();
        // A fleet's service may hand this call TURN credentials of its own.
        let config = if side.ice_servers.is_empty() {
            std::borrow::Cow::Borrowed(&self.peer_config)
        } else {
            let mut c = self.peer_config.clone();
            c.ice_servers.extend(side.ice_servers.iter().cloned());
            std::borrow::Cow::Owned(c)
        };
        let (peer, events) = match Peer::new(&config).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a WebRTC peer");
                let _ = side
                    .to_caller
                    .send(FromAnswerer::Error(Status::internal(e.to_string())))
                    .await;
                return;
            }
        };
        let peer = Arc::new(peer);
        let result = self
            .exchange_and_serve(&peer, events, side, entity, &stop)
            .await;
        if let Err(reason) = result {
            tracing::debug!(%uuid, %reason, "WebRTC call ended");
        }
        peer.close().await;
    }

    async fn exchange_and_serve(
        &self,
        peer: &Arc<Peer>,
        mut events: tokio::sync::mpsc::UnboundedReceiver<PeerEvent>,
        side: AnswererSide,
        entity: Arc<str>,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let AnswererSide {
            offer,
            ice_servers: _,
            to_caller,
            mut from_caller,
        } = side;
        let deadline = offer.deadline.max(Instant::now() + MIN_EXCHANGE);
        let refuse = |status: Status| {
            let to_caller = to_caller.clone();
            async move {
                let _ = to_caller.send(FromAnswerer::Error(status)).await;
            }
        };
        let answer = match peer.accept_offer(&offer.sdp).await {
            Ok(a) => a,
            Err(e) => {
                refuse(Status::invalid_argument(e.to_string())).await;
                return Err(format!("bad offer: {e}"));
            }
        };
        let answer = if offer.disable_trickle {
            match tokio::time::timeout_at(deadline, peer.complete_local_description()).await {
                Ok(Ok(a)) => a,
                _ => {
                    refuse(Status::deadline_exceeded(
                        "candidate gathering did not finish",
                    ))
                    .await;
                    return Err("gathering timed out".into());
                }
            }
        } else {
            answer
        };
        if to_caller.send(FromAnswerer::Answer(answer)).await.is_err() {
            return Err("caller went away before the answer".into());
        }
        if offer.disable_trickle {
            let _ = to_caller.send(FromAnswerer::Done).await;
        }
        // Signaling until the data channel opens.
        let mut caller_open = true;
        let mut done_sent = offer.disable_trickle;
        let open = peer.data_channel(deadline.saturating_duration_since(Instant::now()));
        tokio::pin!(open);
        let channel = loop {
            tokio::select! {
                _ = stop.cancelled() => return Err("shutting down".into()),
                opened = &mut open => match opened {
                    Ok(c) => break c,
                    Err(e) => {
                        if !done_sent {
                            refuse(Status::deadline_exceeded(format!("connection not established: {e}"))).await;
                        }
                        return Err(e.to_string());
                    }
                },
                event = events.recv() => match event {
                    Some(PeerEvent::Candidate(c)) if !done_sent => {
                        tracing::debug!(candidate = %c.candidate, "local candidate");
                        let _ = to_caller.send(FromAnswerer::Candidate(c)).await;
                    }
                    Some(PeerEvent::GatheringDone) if !done_sent => {
                        done_sent = true;
                        let _ = to_caller.send(FromAnswerer::Done).await;
                    }
                    Some(PeerEvent::Closed(why)) => return Err(why.into()),
                    None => return Err("peer events ended".into()),
                    _ => {}
                },
                update = from_caller.recv(), if caller_open => match update {
                    Some(FromCaller::Candidate(c)) => {
                        tracing::debug!(candidate = %tether_rpc::context::Clipped(&c.candidate), "caller candidate");
                        if let Err(e) = peer.add_remote_candidate(c).await {
                            tracing::debug!(error = %e, "ignoring a bad remote candidate");
                        }
                    }
                    Some(FromCaller::Done) | None => caller_open = false,
                    Some(FromCaller::Error(s)) => return Err(format!("caller gave up: {s}")),
                },
            }
        };
        if !done_sent {
            let _ = to_caller.send(FromAnswerer::Done).await;
        }
        drop(to_caller);
        let opened = Instant::now();
        // The route ICE chose, counted by its kind. (The remote address stays out of the
        // peer's info: through a relay it is the relay's, and on an open machine an address
        // names a caller.)
        let route = peer.route().await;
        let (local, remote) = route
            .as_ref()
            .map_or(("unknown", "unknown"), |r| (r.local_type, r.remote_type));
        tracing::info!(uuid = %offer.uuid, entity = %entity, %local, %remote, "WebRTC connection open");
        // Ended when this returns: the peer connection closed, failed ICE, or shut down.
        let (link, _link_guard) = crate::commanders::ConnectionLink::new("webrtc");
        let _counted = self.telemetry.webrtc_peer(local);
        let context = ConnectionContext {
            link,
            info: PeerInfo {
                kind: PeerKind::WebRtc,
                remote: None,
                local: None,
            },
            entity,
            budget: crate::sessions::BufferBudget::default(),
        };
        // Serve until the channel ends, ICE fails or the peer closes, or shutdown.
        let mut reason = "data channel closed";
        let closed = async {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => { reason = "shutting down"; return }
                    event = events.recv() => match event {
                        Some(PeerEvent::Closed(why)) => { reason = why; return }
                        None => return,
                        _ => {}
                    },
                    // Late caller candidates still help ICE (e.g. a relay after a host pair).
                    update = from_caller.recv(), if caller_open => match update {
                        Some(FromCaller::Candidate(c)) => { let _ = peer.add_remote_candidate(c).await; }
                        _ => caller_open = false,
                    },
                }
            }
        };
        // Heartbeat datagrams, if the caller is a Tether client (the channel opens with the
        // association either way; only Tether's client sends on it).
        let beats = {
            let (peer, service, context) = (peer.clone(), self.service.clone(), context.clone());
            tokio::spawn(tracing::Instrument::in_current_span(async move {
                match peer.heartbeat_channel().await {
                    Ok(beats) => super::heartbeats::serve(beats, service, context).await,
                    Err(e) => tracing::debug!(error = %e, "no heartbeat channel"),
                }
            }))
        };
        dispatch::serve(channel.clone(), self.service.clone(), context, closed).await;
        beats.abort();
        let _ = beats.await;
        channel.close().await;
        tracing::info!(
            uuid = %offer.uuid,
            reason,
            after = ?opened.elapsed(),
            "WebRTC connection closed; its calls are cancelled"
        );
        Ok(())
    }
}
