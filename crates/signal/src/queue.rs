//! The call queue between callers (`Call`/`CallUpdate`) and answerers (the machine's own
//! answerer, or `Answer` streams), behind a trait a shared backend (Redis, for a fleet of
//! signaling instances) can implement.
//!
//! An offer carries a deadline as a local monotonic instant; it crosses hosts only as a
//! duration (see the `Answer` stream), never as a wall-clock comparison.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tether_rpc::sync::lock;
use tether_rtc::Candidate;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;

/// The least time an answerer gives an exchange, whatever the offer's deadline says (a
/// deadline that crossed hosts as wall-clock time may be cut short by a skewed clock).
pub const MIN_EXCHANGE: std::time::Duration = std::time::Duration::from_secs(5);

/// Most offers waiting for an answerer of one host.
pub const MAX_PENDING_PER_HOST: usize = 64;
/// Messages buffered each way in one exchange.
const EXCHANGE_BUFFER: usize = 64;

/// What a caller gets when no answerer for its host is around (goutils' words).
pub const HOST_OFFLINE: &str = "host appears to be offline; ensure machine is online and try again";

/// What a caller update for a call that is not in progress (or not the caller's) gets.
pub fn no_such_call(uuid: &str) -> Status {
    Status::not_found(format!("no active offer for {uuid:?}"))
}

/// A caller's offer.
#[derive(Debug, Clone)]
pub struct Offer {
    pub uuid: String,
    /// The encoded SDP (base64 of the JSON session description).
    pub sdp: String,
    pub disable_trickle: bool,
    /// When the exchange must be finished by.
    pub deadline: Instant,
    /// Who the caller authenticated as at signaling ("" without authentication).
    pub caller_entity: Arc<str>,
}

/// From the answerer to the caller.
#[derive(Debug, Clone)]
pub enum FromAnswerer {
    Answer(String),
    Candidate(Candidate),
    Done,
    Error(Status),
}

/// From the caller to the answerer.
#[derive(Debug, Clone)]
pub enum FromCaller {
    Candidate(Candidate),
    Done,
    Error(Status),
}

/// The caller's end of an exchange.
pub struct CallerSide {
    pub uuid: String,
    pub from_answerer: mpsc::Receiver<FromAnswerer>,
}

/// The answerer's end of an exchange.
pub struct AnswererSide {
    pub offer: Offer,
    /// ICE servers the signaling service gave the answerer for this call (TURN credentials
    /// from a fleet's service), on top of its own; none from an in-process queue.
    pub ice_servers: Vec<tether_rtc::IceServer>,
    pub to_caller: mpsc::Sender<FromAnswerer>,
    pub from_caller: mpsc::Receiver<FromCaller>,
}

/// Where an answerer takes offers from: the call queue itself (in process), or `Answer`
/// streams to a standalone signaling service ([`crate::answer_client`]).
#[tonic::async_trait]
pub trait OfferSource: Send + Sync + 'static {
    /// Waits for the next live offer for any of `hosts`.
    async fn recv_offer(&self, hosts: &[String]) -> Result<AnswererSide, Status>;
}

/// Where offers wait for answerers.
#[tonic::async_trait]
pub trait CallQueue: OfferSource {
    /// Queues `offer` for an answerer of `host`.
    async fn send_offer(&self, host: &str, offer: Offer) -> Result<CallerSide, Status>;
    /// Passes a caller's update to the answerer of call `uuid`, if `entity` made that call.
    async fn caller_update(
        &self,
        uuid: &str,
        entity: &str,
        update: FromCaller,
    ) -> Result<(), Status>;
}

type Handoff = oneshot::Sender<AnswererSide>;

/// An answerer waiting, listed under each of its hosts.
struct Waiter {
    /// Where its offer goes; taken by the first offer for any of its hosts.
    tx: Option<Handoff>,
    /// When it took that offer: it is answering, and back soon, for all of its hosts.
    taken: Option<Instant>,
}

impl Waiter {
    /// Whether it waits still, or took an offer recently enough to be in that exchange.
    fn around(&self, now: Instant) -> bool {
        self.tx.as_ref().is_some_and(|tx| !tx.is_closed()) || in_exchange(self.taken, now)
    }
}

/// Whether an answerer that took an offer at `taken` may still be in that exchange (and come
/// back for the next): within the offer deadline.
fn in_exchange(taken: Option<Instant>, now: Instant) -> bool {
    taken.is_some_and(|t| now.saturating_duration_since(t) < tether_rpc::OFFER_DEADLINE)
}

#[derive(Default)]
struct HostQueue {
    offers: VecDeque<AnswererSide>,
    /// Answerers waiting; one waiter may be listed under several hosts.
    waiters: VecDeque<Arc<Mutex<Waiter>>>,
    /// When an answerer last took one of this host's offers (it may still be answering it).
    last_taken: Option<Instant>,
}

impl HostQueue {
    /// Whether an answerer may take an offer soon: one is waiting, or one took an offer (of
    /// this host, or of another it answers for too) recently enough to be still in that
    /// exchange (and come back for the next).
    fn answerer_around(&self, now: Instant) -> bool {
        self.waiters.iter().any(|w| lock(w).around(now)) || in_exchange(self.last_taken, now)
    }
}

struct CallEntry {
    entity: Arc<str>,
    deadline: Instant,
    to_answerer: mpsc::Sender<FromCaller>,
}

#[derive(Default)]
struct State {
    hosts: HashMap<String, HostQueue>,
    calls: HashMap<String, CallEntry>,
}

/// The in-process queue (one machine, or one signaling instance).
#[derive(Default)]
pub struct MemoryQueue {
    state: Mutex<State>,
    /// Refuse offers for a host no answerer is around for (a standalone service; a machine's
    /// own answerer is always around, though it may not be waiting yet at start).
    offline_check: bool,
}

impl MemoryQueue {
    /// The queue of a standalone service: an offer for a host that no answerer is around for
    /// gets `NOT_FOUND` ([`HOST_OFFLINE`]) at once, as on Redis, instead of waiting out its
    /// deadline.
    pub fn standalone() -> Self {
        Self {
            offline_check: true,
            ..Self::default()
        }
    }

    /// Calls whose caller updates are still routable (for tests and leak checks).
    pub fn live_calls(&self) -> usize {
        lock(&self.state).calls.len()
    }
}

#[tonic::async_trait]
impl CallQueue for MemoryQueue {
    async fn send_offer(&self, host: &str, offer: Offer) -> Result<CallerSide, Status> {
        let (to_caller, from_answerer) = mpsc::channel(EXCHANGE_BUFFER);
        let (to_answerer, from_caller) = mpsc::channel(EXCHANGE_BUFFER);
        let uuid = offer.uuid.clone();
        let side = AnswererSide {
            ice_servers: Vec::new(),
            offer,
            to_caller,
            from_caller,
        };
        let entry = CallEntry {
            entity: side.offer.caller_entity.clone(),
            deadline: side.offer.deadline,
            to_answerer,
        };
        let now = Instant::now();
        let mut state = lock(&self.state);
        state.calls.retain(|_, c| c.deadline > now);
        let queue = state.hosts.entry(host.to_string()).or_default();
        if self.offline_check && !queue.answerer_around(now) {
            return Err(Status::not_found(HOST_OFFLINE));
        }
        // Hand over to a waiting answerer if one is still there; otherwise queue the offer.
        let mut pending = Some(side);
        while let Some(waiter) = queue.waiters.pop_front() {
            let next = {
                let mut w = lock(&waiter);
                w.tx.take().ok_or(w.taken)
            };
            let tx = match next {
                Ok(tx) => tx,
                // Taken through another of its hosts: it still counts here until it is back.
                Err(taken) => {
                    queue.last_taken = queue.last_taken.max(taken);
                    continue;
                }
            };
            let Some(offer) = pending.take() else {
                break;
            };
            match tx.send(offer) {
                Ok(()) => {
                    lock(&waiter).taken = Some(now);
                    queue.last_taken = Some(now);
                    break;
                }
                Err(back) => pending = Some(back),
            }
        }
        if let Some(side) = pending {
            queue
                .offers
                .retain(|o| o.offer.deadline > now && !o.to_caller.is_closed());
            if queue.offers.len() >= MAX_PENDING_PER_HOST {
                return Err(Status::resource_exhausted(format!(
                    "too many calls waiting for {host}; try again later"
                )));
            }
            queue.offers.push_back(side);
        }
        state.calls.insert(uuid.clone(), entry);
        Ok(CallerSide {
            uuid,
            from_answerer,
        })
    }

    async fn caller_update(
        &self,
        uuid: &str,
        entity: &str,
        update: FromCaller,
    ) -> Result<(), Status> {
        let finished = matches!(update, FromCaller::Done | FromCaller::Error(_));
        let (tx, deadline) = {
            let mut state = lock(&self.state);
            let now = Instant::now();
            let Some(call) = state
                .calls
                .get(uuid)
                .filter(|c| &*c.entity == entity && c.deadline > now)
            else {
                return Err(no_such_call(uuid));
            };
            let found = (call.to_answerer.clone(), call.deadline);
            if finished {
                state.calls.remove(uuid);
            }
            found
        };
        match tokio::time::timeout_at(deadline, tx.send(update)).await {
            Ok(Ok(())) => Ok(()),
            // The answerer has finished with this call; late updates change nothing.
            Ok(Err(_)) => Ok(()),
            Err(_) => Err(Status::deadline_exceeded("call deadline passed")),
        }
    }
}

#[tonic::async_trait]
impl OfferSource for MemoryQueue {
    async fn recv_offer(&self, hosts: &[String]) -> Result<AnswererSide, Status> {
        loop {
            let rx = {
                let now = Instant::now();
                let mut state = lock(&self.state);
                for host in hosts {
                    if let Some(queue) = state.hosts.get_mut(host) {
                        while let Some(side) = queue.offers.pop_front() {
                            if side.offer.deadline > now && !side.to_caller.is_closed() {
                                queue.last_taken = Some(now);
                                return Ok(side);
                            }
                        }
                    }
                }
                let (tx, rx) = oneshot::channel();
                let waiter = Arc::new(Mutex::new(Waiter {
                    tx: Some(tx),
                    taken: None,
                }));
                for host in hosts {
                    let queue = state.hosts.entry(host.clone()).or_default();
                    queue.waiters.retain(|w| lock(w).around(now));
                    queue.waiters.push_back(waiter.clone());
                }
                rx
            };
            if let Ok(side) = rx.await
                && !side.to_caller.is_closed()
            {
                return Ok(side);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn offer(uuid: &str, entity: &str, ttl: Duration) -> Offer {
        Offer {
            uuid: uuid.into(),
            sdp: "sdp".into(),
            disable_trickle: false,
            deadline: Instant::now() + ttl,
            caller_entity: Arc::from(entity),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn offers_meet_answerers_of_their_host_only_while_live() {
        let q = Arc::new(MemoryQueue::default());
        let hosts = vec!["a:1".to_string()];
        let ttl = Duration::from_secs(10);
        // Queued before anyone answers; picked up later.
        let _c1 = q.send_offer("a:1", offer("u1", "", ttl)).await.unwrap();
        assert_eq!(q.recv_offer(&hosts).await.unwrap().offer.uuid, "u1");
        // An expired offer is skipped; another host's offer is not ours.
        let _stale = q
            .send_offer("a:1", offer("old", "", Duration::from_millis(10)))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_millis(20)).await;
        let _other = q.send_offer("b:2", offer("b", "", ttl)).await.unwrap();
        let waiter = {
            let (q, hosts) = (q.clone(), hosts.clone());
            tokio::spawn(async move { q.recv_offer(&hosts).await.unwrap() })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        // A new offer goes straight to the waiting answerer.
        let mut caller = q
            .send_offer("a:1", offer("u2", "key-a", ttl))
            .await
            .unwrap();
        let mut side = waiter.await.unwrap();
        assert_eq!(side.offer.uuid, "u2");
        // Caller updates reach it only from the entity that made the call.
        let e = q
            .caller_update("u2", "key-b", FromCaller::Done)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        q.caller_update("u2", "key-a", FromCaller::Done)
            .await
            .unwrap();
        assert!(matches!(
            side.from_caller.recv().await,
            Some(FromCaller::Done)
        ));
        side.to_caller
            .send(FromAnswerer::Answer("ans".into()))
            .await
            .unwrap();
        assert!(
            matches!(caller.from_answerer.recv().await, Some(FromAnswerer::Answer(a)) if a == "ans")
        );
        // After its deadline a call cannot be updated.
        let _c3 = q.send_offer("a:1", offer("u3", "", ttl)).await.unwrap();
        tokio::time::advance(ttl).await;
        let e = q
            .caller_update("u3", "", FromCaller::Done)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answerer_of_several_hosts_busy_with_one_keeps_the_others_online() {
        let q = Arc::new(MemoryQueue::standalone());
        let hosts = vec!["rover".to_string(), "rover.local".to_string()];
        let answerer = {
            let (q, hosts) = (q.clone(), hosts.clone());
            tokio::spawn(async move { q.recv_offer(&hosts).await })
        };
        tokio::task::yield_now().await;
        let ttl = Duration::from_secs(10);
        let _first = q
            .send_offer("rover", offer("a", "alice", ttl))
            .await
            .unwrap();
        let side = answerer.await.unwrap().unwrap();
        assert_eq!(side.offer.uuid, "a");
        // Its other name is not offline while it answers: the offer waits for its next stream.
        let _second = q
            .send_offer("rover.local", offer("b", "bob", ttl))
            .await
            .unwrap();
        assert_eq!(q.recv_offer(&hosts).await.unwrap().offer.uuid, "b");
    }

    #[tokio::test(start_paused = true)]
    async fn a_standalone_queue_says_at_once_that_no_answerer_is_around() {
        let q = Arc::new(MemoryQueue::standalone());
        let e = q
            .send_offer("rover", offer("a", "alice", Duration::from_secs(10)))
            .await
            .err()
            .unwrap();
        assert_eq!(
            (e.code(), e.message()),
            (tonic::Code::NotFound, HOST_OFFLINE)
        );
        // An answerer waiting: the offer is taken.
        let answerer = {
            let q = q.clone();
            tokio::spawn(async move { q.recv_offer(&["rover".to_string()]).await })
        };
        tokio::task::yield_now().await;
        let _caller = q
            .send_offer("rover", offer("b", "alice", Duration::from_secs(10)))
            .await
            .unwrap();
        let side = answerer.await.unwrap().unwrap();
        // While it answers (and for the offer deadline after), the host counts as around.
        q.send_offer("rover", offer("c", "alice", Duration::from_secs(10)))
            .await
            .unwrap();
        drop(side);
        tokio::time::advance(tether_rpc::OFFER_DEADLINE + Duration::from_millis(1)).await;
        let e = q
            .send_offer("rover", offer("d", "alice", Duration::from_secs(10)))
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), tonic::Code::NotFound);
        // A machine's own queue never refuses: its answerer may not be waiting yet at start.
        MemoryQueue::default()
            .send_offer("rover", offer("e", "alice", Duration::from_secs(10)))
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_holds_a_bounded_number_of_waiting_offers() {
        let q = MemoryQueue::default();
        let mut callers = Vec::new();
        for i in 0..MAX_PENDING_PER_HOST {
            callers.push(
                q.send_offer("a:1", offer(&i.to_string(), "", Duration::from_secs(10)))
                    .await
                    .unwrap(),
            );
        }
        let e = q
            .send_offer("a:1", offer("one-too-many", "", Duration::from_secs(10)))
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        // Offers whose caller hung up do not count.
        callers.clear();
        q.send_offer("a:1", offer("again", "", Duration::from_secs(10)))
            .await
            .unwrap();
    }
}
