//! `proto.rpc.webrtc.v1.SignalingService`, on a machine's port or standalone.
//!
//! `rpc-host` picks the machine a call is for; the embedded service answers only for this
//! machine's own names ([`Hosts`]). `Call` queues the caller's offer and streams back the
//! answer and the answerer's candidates; `CallUpdate` carries the caller's candidates;
//! `Answer` is the answerer's side of the same exchange over gRPC (what a machine uses with a
//! standalone signaling service); `OptionalWebRTCConfig` hands out the machine's ICE servers.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tether_proto::google::rpc::Status as RpcStatus;
use tether_proto::proto::rpc::webrtc::v1 as pb;
use tether_rtc::IceServer;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use tether_rpc::address::split_host_port;
use tether_rpc::context::{PeerInfo, owner_of};

use crate::fleet::{Grants, IceServers, Role, canonical_host};
use crate::queue::{CallQueue, FromAnswerer, FromCaller, Offer};
use tether_rpc::context::Entity;

pub use tether_rpc::OFFER_DEADLINE;
/// How often a waiting `Answer` stream gets a heartbeat.
pub const ANSWER_HEARTBEAT: Duration = Duration::from_secs(15);
/// Most `rpc-host` values an answerer may answer for.
const MAX_ANSWER_HOSTS: usize = 5;

/// The names this machine answers to as `rpc-host`.
#[derive(Debug, Clone)]
pub struct Hosts {
    /// The key the machine's own answerer waits under.
    pub canonical: String,
    port: u16,
    names: HashSet<String>,
}

impl Hosts {
    /// Names for a machine listening on `port`: its FQDN (bare and with the port),
    /// `localhost:port`, and the configured bind address.
    pub fn new(port: u16, fqdn: Option<&str>, bind_address: &str) -> Self {
        let mut names = HashSet::new();
        names.insert(format!("localhost:{port}"));
        if let Some(f) = fqdn {
            names.insert(f.to_string());
            names.insert(format!("{f}:{port}"));
        }
        if let Ok((host, _)) = split_host_port(bind_address) {
            names.insert(format!("{host}:{port}"));
        }
        let canonical = fqdn.map_or_else(|| format!("localhost:{port}"), str::to_string);
        names.insert(canonical.clone());
        Self {
            canonical,
            port,
            names,
        }
    }

    /// The same names plus `aliases` (bare and with the port): the machine's names on a
    /// fleet's signaling service and on its LAN, which callers may also name it by here.
    pub fn with_aliases<'a>(mut self, aliases: impl IntoIterator<Item = &'a str>) -> Self {
        for a in aliases {
            self.names.insert(a.to_string());
            self.names.insert(format!("{a}:{}", self.port));
        }
        self
    }

    /// Whether `host` names this machine, as reached on `local` (the address the caller's
    /// connection arrived at): a configured name, or `IP:port` of this listener where the IP
    /// is the one the caller connected to, or loopback.
    pub fn accepts(&self, host: &str, local: Option<SocketAddr>) -> bool {
        if self.names.contains(host) {
            return true;
        }
        let Ok((h, port)) = split_host_port(host) else {
            return false;
        };
        if port != self.port {
            return false;
        }
        match h.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || local.is_some_and(|l| l.ip() == ip),
            Err(_) => false,
        }
    }
}

/// The signaling service.
#[derive(Clone)]
pub struct SignalingApi {
    queue: Arc<dyn CallQueue>,
    hosts: HostPolicy,
    ice: Arc<IceServers>,
    heartbeat: Duration,
    answerers: Answerers,
}

/// Which `rpc-host` values a request may name.
#[derive(Clone)]
enum HostPolicy {
    /// Embedded in a machine: only the machine's own names, all meaning its one canonical
    /// host.
    Machine(Arc<Hosts>),
    /// A standalone service listening on `port`: any host the caller's key is granted.
    Fleet { grants: Arc<Grants>, port: u16 },
}

/// Who may answer calls through the `Answer` RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answerers {
    /// Nobody: the service is embedded in a machine, whose own answerer takes the offers from
    /// the queue in process. An `Answer` stream from outside — any client that passed auth —
    /// would otherwise receive other callers' offers and answer them with its own SDP.
    Embedded,
    /// Any caller of `Answer` (a standalone service, or a test of the RPC itself).
    Open,
}

/// The largest SDP accepted in a `Call` or an `Answer`: a real one is a few kilobytes.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// The largest ICE candidate line accepted.
pub const MAX_CANDIDATE_BYTES: usize = 4 * 1024;

/// The largest signaling message a server should decode (an SDP, a candidate, some framing).
pub const MAX_SIGNALING_MESSAGE: usize = 2 * MAX_SDP_BYTES;

/// The signaling service's gRPC name, as the generated server declares it.
pub const SIGNALING_SERVICE: &str = <pb::signaling_service_server::SignalingServiceServer<
    SignalingApi,
> as tonic::server::NamedService>::NAME;

/// Refuses an SDP over [`MAX_SDP_BYTES`].
fn check_sdp(what: &str, sdp: &str) -> Result<(), Status> {
    if sdp.len() > MAX_SDP_BYTES {
        return Err(Status::invalid_argument(format!(
            "{what} SDP of {} bytes is larger than the limit of {MAX_SDP_BYTES} bytes",
            sdp.len()
        )));
    }
    Ok(())
}

/// Refuses a candidate line over [`MAX_CANDIDATE_BYTES`].
fn check_candidate(candidate: &pb::IceCandidate) -> Result<(), Status> {
    if candidate.candidate.len() > MAX_CANDIDATE_BYTES {
        return Err(Status::invalid_argument(format!(
            "ICE candidate of {} bytes is larger than the limit of {MAX_CANDIDATE_BYTES} bytes",
            candidate.candidate.len()
        )));
    }
    Ok(())
}

impl SignalingApi {
    /// The service embedded in a machine: it answers only to the machine's `hosts`.
    pub fn new(queue: Arc<dyn CallQueue>, hosts: Arc<Hosts>, ice_servers: Vec<IceServer>) -> Self {
        Self {
            queue,
            hosts: HostPolicy::Machine(hosts),
            ice: Arc::new(IceServers::fixed(ice_servers)),
            heartbeat: ANSWER_HEARTBEAT,
            answerers: Answerers::Open,
        }
    }

    /// A standalone service for a fleet: any host, as far as each caller's key is granted;
    /// answerers connect over `Answer`, and both sides get `ice` (minted per key).
    pub fn fleet(
        queue: Arc<dyn CallQueue>,
        grants: Arc<Grants>,
        ice: IceServers,
        port: u16,
    ) -> Self {
        Self {
            queue,
            hosts: HostPolicy::Fleet { grants, port },
            ice: Arc::new(ice),
            heartbeat: ANSWER_HEARTBEAT,
            answerers: Answerers::Open,
        }
    }

    /// The same service with another answerer policy ([`Answerers::Embedded`] in a machine).
    pub fn with_answerers(mut self, answerers: Answerers) -> Self {
        self.answerers = answerers;
        self
    }

    /// The same service with another interval of `Answer` heartbeats (tests).
    pub fn with_heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// The `rpc-host` values of a request, checked against this machine's names or the
    /// caller's grants for `role`: the hosts to queue under.
    fn hosts_of<T>(
        &self,
        r: &Request<T>,
        min: usize,
        max: usize,
        role: Role,
    ) -> Result<Vec<String>, Status> {
        let values: Vec<&str> = r
            .metadata()
            .get_all(tether_rpc::vocabulary::RPC_HOST_HEADER)
            .iter()
            .map(|v| v.to_str().unwrap_or(""))
            .collect();
        if values.len() < min || values.is_empty() {
            return Err(Status::invalid_argument(format!("expected {min} rpc-host")));
        }
        if values.len() > max {
            return Err(Status::invalid_argument(if max == 1 {
                "expected 1 rpc-host".to_string()
            } else {
                "too many rpc-host".to_string()
            }));
        }
        let local = r.extensions().get::<PeerInfo>().and_then(|p| p.local);
        let mut out = Vec::new();
        for v in values {
            if v.is_empty() {
                return Err(Status::invalid_argument("rpc-host must not be empty"));
            }
            let host = match &self.hosts {
                HostPolicy::Machine(hosts) => {
                    if !hosts.accepts(v, local) {
                        return Err(Status::invalid_argument("host not preconfigured"));
                    }
                    hosts.canonical.clone()
                }
                HostPolicy::Fleet { grants, port } => {
                    let host = canonical_host(v, Some(*port));
                    grants.check(&Entity::of(r.extensions()), &host, role)?;
                    host
                }
            };
            if !out.contains(&host) {
                out.push(host);
            }
        }
        Ok(out)
    }
}

fn ice_to_wire(servers: &[IceServer]) -> Vec<pb::IceServer> {
    servers
        .iter()
        .map(|s| pb::IceServer {
            urls: s.urls.clone(),
            username: s.username.clone(),
            credential: s.credential.clone(),
        })
        .collect()
}

pub(crate) fn status_to_wire(s: &Status) -> RpcStatus {
    RpcStatus {
        code: s.code() as i32,
        message: s.message().to_string(),
        details: Vec::new(),
    }
}

pub(crate) fn status_from_wire(s: Option<RpcStatus>) -> Status {
    match s {
        Some(s) => Status::new(tonic::Code::from_i32(s.code), s.message),
        None => Status::unknown("peer reported an error without a status"),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn receiver_stream<T: Send + 'static>(rx: mpsc::Receiver<Result<T, Status>>) -> BoxStream<T> {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

#[tonic::async_trait]
impl pb::signaling_service_server::SignalingService for SignalingApi {
    async fn call(
        &self,
        r: Request<pb::CallRequest>,
    ) -> Result<Response<BoxStream<pb::CallResponse>>, Status> {
        let hosts = self.hosts_of(&r, 1, 1, Role::Call)?;
        let entity = owner_of(r.extensions());
        let r = r.into_inner();
        if r.sdp.is_empty() {
            return Err(Status::invalid_argument("offer SDP is empty"));
        }
        check_sdp("offer", &r.sdp)?;
        let deadline = Instant::now() + OFFER_DEADLINE;
        let offer = Offer {
            uuid: uuid::Uuid::new_v4().to_string(),
            sdp: r.sdp,
            disable_trickle: r.disable_trickle,
            deadline,
            caller_entity: entity,
        };
        let mut side = self.queue.send_offer(&hosts[0], offer).await?;
        let (tx, rx) = mpsc::channel(16);
        let uuid = side.uuid;
        tokio::spawn(async move {
            let mut answered = false;
            loop {
                // A caller that hangs up is noticed at once, not at the next message: its
                // slot under the host's cap frees, and no answerer is handed its offer.
                let next = tokio::select! {
                    next = tokio::time::timeout_at(deadline, side.from_answerer.recv()) => next,
                    () = tx.closed() => break,
                };
                let message = match next {
                    Err(_) if !answered => Err(Status::deadline_exceeded(format!(
                        "no answer within {OFFER_DEADLINE:?}: is the machine running?"
                    ))),
                    // Answered, and the exchange ran out its time: the connection stands.
                    Err(_) => break,
                    Ok(None) if !answered => Err(Status::unavailable(
                        "the answerer went away before answering",
                    )),
                    Ok(Some(FromAnswerer::Done)) if !answered => Err(Status::unavailable(
                        "the answerer was done without an answer",
                    )),
                    Ok(None) | Ok(Some(FromAnswerer::Done)) => break,
                    Ok(Some(FromAnswerer::Error(s))) => Err(s),
                    Ok(Some(FromAnswerer::Answer(sdp))) => {
                        answered = true;
                        Ok(pb::CallResponse {
                            uuid: uuid.clone(),
                            stage: Some(pb::call_response::Stage::Init(
                                pb::CallResponseInitStage { sdp },
                            )),
                        })
                    }
                    Ok(Some(FromAnswerer::Candidate(c))) => Ok(pb::CallResponse {
                        uuid: uuid.clone(),
                        stage: Some(pb::call_response::Stage::Update(
                            pb::CallResponseUpdateStage {
                                candidate: Some(c.into()),
                            },
                        )),
                    }),
                };
                let last = message.is_err();
                // The caller hung up: dropping our end tells the answerer.
                if tx.send(message).await.is_err() || last {
                    break;
                }
            }
        });
        Ok(Response::new(receiver_stream(rx)))
    }

    async fn call_update(
        &self,
        r: Request<pb::CallUpdateRequest>,
    ) -> Result<Response<pb::CallUpdateResponse>, Status> {
        self.hosts_of(&r, 1, 1, Role::Call)?;
        let entity = owner_of(r.extensions());
        let r = r.into_inner();
        use pb::call_update_request::Update;
        let update = match r.update {
            Some(Update::Candidate(c)) => {
                check_candidate(&c)?;
                FromCaller::Candidate(c.into())
            }
            Some(Update::Done(true)) => FromCaller::Done,
            Some(Update::Done(false)) => {
                return Err(Status::invalid_argument("done must be true when set"));
            }
            Some(Update::Error(s)) => FromCaller::Error(status_from_wire(Some(s))),
            None => return Err(Status::invalid_argument("update is required")),
        };
        self.queue.caller_update(&r.uuid, &entity, update).await?;
        Ok(Response::new(pb::CallUpdateResponse {}))
    }

    async fn answer(
        &self,
        r: Request<Streaming<pb::AnswerResponse>>,
    ) -> Result<Response<BoxStream<pb::AnswerRequest>>, Status> {
        if self.answerers == Answerers::Embedded {
            return Err(Status::permission_denied(
                "this machine answers its own calls; Answer is for answerers of a standalone \
                 signaling service",
            ));
        }
        let hosts = self.hosts_of(&r, 1, MAX_ANSWER_HOSTS, Role::Answer)?;
        let heartbeats = r
            .metadata()
            .get("heartbeats-allowed")
            .is_some_and(|v| v.as_bytes() == b"true");
        // A fleet's answerer (a machine behind NAT) gets the service's ICE servers, TURN
        // credentials minted for its key when an offer arrives (a stream may wait longer than
        // they last); an embedded answerer has its machine's own.
        let ice = match &self.hosts {
            HostPolicy::Fleet { .. } => Some((self.ice.clone(), Entity::of(r.extensions()))),
            HostPolicy::Machine(_) => None,
        };
        let mut answers = r.into_inner();
        let queue = self.queue.clone();
        let every = heartbeats.then_some(self.heartbeat);
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            if let Err(status) = relay_answer(queue, hosts, ice, every, &mut answers, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(receiver_stream(rx)))
    }

    async fn optional_web_rtc_config(
        &self,
        r: Request<pb::OptionalWebRtcConfigRequest>,
    ) -> Result<Response<pb::OptionalWebRtcConfigResponse>, Status> {
        self.hosts_of(&r, 1, MAX_ANSWER_HOSTS, Role::Config)?;
        let entity = Entity::of(r.extensions());
        Ok(Response::new(pb::OptionalWebRtcConfigResponse {
            config: Some(pb::WebRtcConfig {
                additional_ice_servers: ice_to_wire(
                    &self.ice.for_entity(&entity, std::time::SystemTime::now()),
                ),
                disable_trickle: false,
            }),
        }))
    }

    async fn report_connection_metadata(
        &self,
        r: Request<pb::ReportConnectionMetadataRequest>,
    ) -> Result<Response<pb::ReportConnectionMetadataResponse>, Status> {
        let r = r.into_inner();
        tracing::debug!(
            stage = r.reached_stage,
            duration_ms = r.duration_ms,
            failure = r.failure_code,
            "caller reported connection metadata"
        );
        Ok(Response::new(pb::ReportConnectionMetadataResponse {}))
    }
}

/// What the answerer's message `m` in call `uuid` means for the caller, in the order the
/// protocol allows (goutils' messages): one `init`, then `update`s, then `done` or `error`.
/// None: nothing to relay (an update without a candidate).
fn answerer_stage(
    uuid: &str,
    m: pb::AnswerResponse,
    answered: &mut bool,
) -> Result<Option<FromAnswerer>, Status> {
    use pb::answer_response::Stage as In;
    if m.uuid != uuid {
        return Err(Status::invalid_argument(format!(
            "uuid mismatch; have={:?} want={uuid:?}",
            m.uuid
        )));
    }
    Ok(Some(match m.stage {
        Some(In::Init(i)) => {
            if *answered {
                return Err(Status::invalid_argument("got init stage more than once"));
            }
            check_sdp("answer", &i.sdp)?;
            *answered = true;
            FromAnswerer::Answer(i.sdp)
        }
        Some(In::Update(u)) => {
            if !*answered {
                return Err(Status::invalid_argument(
                    "got update stage before init stage",
                ));
            }
            match u.candidate {
                Some(c) => {
                    check_candidate(&c)?;
                    FromAnswerer::Candidate(c.into())
                }
                None => return Ok(None),
            }
        }
        Some(In::Done(_)) => FromAnswerer::Done,
        Some(In::Error(e)) => FromAnswerer::Error(status_from_wire(e.status)),
        None => return Err(Status::invalid_argument("answer without a stage")),
    }))
}

/// One `Answer` stream: heartbeats while waiting, then one offer relayed both ways until
/// both sides are done or its deadline passes.
async fn relay_answer(
    queue: Arc<dyn CallQueue>,
    hosts: Vec<String>,
    ice: Option<(Arc<IceServers>, Arc<str>)>,
    heartbeats: Option<Duration>,
    answers: &mut Streaming<pb::AnswerResponse>,
    tx: &mpsc::Sender<Result<pb::AnswerRequest, Status>>,
) -> Result<(), Status> {
    use pb::answer_request::Stage as Out;
    let offer = async {
        let wait = queue.recv_offer(&hosts);
        tokio::pin!(wait);
        let every = heartbeats.unwrap_or(ANSWER_HEARTBEAT);
        let mut beat = tokio::time::interval_at(Instant::now() + every, every);
        loop {
            tokio::select! {
                side = &mut wait => return side,
                _ = beat.tick(), if heartbeats.is_some() => {
                    let hb = pb::AnswerRequest { uuid: String::new(), stage: Some(Out::Heartbeat(pb::AnswerRequestHeartbeatStage {})) };
                    if tx.send(Ok(hb)).await.is_err() {
                        return Err(Status::cancelled("answerer went away"));
                    }
                }
                // The answerer hanging up while waiting ends the stream.
                _ = tx.closed() => return Err(Status::cancelled("answerer went away")),
            }
        }
    };
    let mut side = offer.await?;
    let uuid = side.offer.uuid.clone();
    let remaining = side
        .offer
        .deadline
        .saturating_duration_since(Instant::now());
    let deadline = std::time::SystemTime::now() + remaining;
    let init = pb::AnswerRequest {
        uuid: uuid.clone(),
        stage: Some(Out::Init(pb::AnswerRequestInitStage {
            sdp: side.offer.sdp.clone(),
            optional_config: Some(pb::WebRtcConfig {
                additional_ice_servers: ice.map_or_else(Vec::new, |(ice, entity)| {
                    ice_to_wire(&ice.for_entity(&entity, std::time::SystemTime::now()))
                }),
                disable_trickle: side.offer.disable_trickle,
            }),
            deadline: Some(prost_types::Timestamp::from(deadline)),
            caller_auth_entity: side.offer.caller_entity.to_string(),
            caller_auth_metadata: Default::default(),
        })),
    };
    if tx.send(Ok(init)).await.is_err() {
        let _ = side
            .to_caller
            .send(FromAnswerer::Error(Status::unavailable(
                "answerer went away",
            )))
            .await;
        return Ok(());
    }
    let (mut answerer_done, mut caller_done, mut answered) = (false, false, false);
    let until = side.offer.deadline;
    while !(answerer_done && caller_done) {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            msg = answers.message() => {
                let m = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) | Err(_) => {
                        if !answerer_done {
                            let _ = side.to_caller.send(FromAnswerer::Error(Status::unavailable("answerer went away"))).await;
                        }
                        return Ok(());
                    }
                };
                let relay = match answerer_stage(&uuid, m, &mut answered) {
                    Ok(Some(relay)) => relay,
                    Ok(None) => continue,
                    // A violation ends the exchange for both: the caller hears why.
                    Err(status) => {
                        let _ = side.to_caller.send(FromAnswerer::Error(status.clone())).await;
                        return Err(status);
                    }
                };
                answerer_done |= matches!(relay, FromAnswerer::Done | FromAnswerer::Error(_));
                let _ = side.to_caller.send(relay).await;
            }
            update = side.from_caller.recv(), if !caller_done => {
                let stage = match update {
                    Some(FromCaller::Candidate(c)) => Out::Update(pb::AnswerRequestUpdateStage { candidate: Some(c.into()) }),
                    Some(FromCaller::Done) | None => { caller_done = true; Out::Done(pb::AnswerRequestDoneStage {}) }
                    Some(FromCaller::Error(s)) => { caller_done = true; Out::Error(pb::AnswerRequestErrorStage { status: Some(status_to_wire(&s)) }) }
                };
                if tx.send(Ok(pb::AnswerRequest { uuid: uuid.clone(), stage: Some(stage) })).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_accept_own_names_and_the_address_reached() {
        let h = Hosts::new(8080, Some("rover.example"), "0.0.0.0:8080");
        let local: SocketAddr = "192.0.2.7:8080".parse().unwrap();
        for ok in [
            "localhost:8080",
            "rover.example",
            "rover.example:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "192.0.2.7:8080",
            "0.0.0.0:8080",
        ] {
            assert!(h.accepts(ok, Some(local)), "{ok}");
        }
        for bad in [
            "other:8080",
            "192.0.2.8:8080",
            "127.0.0.1:9090",
            "rover.example:9",
            "",
            "nonsense",
        ] {
            assert!(!h.accepts(bad, Some(local)), "{bad}");
        }
        assert!(!h.accepts("192.0.2.7:8080", None));
    }

    use crate::queue::MemoryQueue;
    use pb::signaling_service_client::SignalingServiceClient;
    use pb::signaling_service_server::SignalingServiceServer;

    /// A signaling service alone (no answerer of its own) on a loopback port.
    async fn serve() -> (String, Arc<MemoryQueue>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let queue = Arc::new(MemoryQueue::default());
        let hosts = Arc::new(Hosts::new(port, Some("rover.example"), "127.0.0.1:0"));
        let api = SignalingApi::new(queue.clone(), hosts, Vec::new())
            .with_heartbeat(Duration::from_millis(50));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SignalingServiceServer::new(api))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (format!("localhost:{port}"), queue)
    }

    type Client = SignalingServiceClient<tonic::transport::Channel>;

    /// An answerer's and a caller's client of the service at `host`.
    async fn clients(host: &str) -> (Client, Client) {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{host}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        (Client::new(channel.clone()), Client::new(channel))
    }

    /// Opens an `Answer` stream for `host`: what to send on it, and what it receives.
    async fn open_answer(
        client: &mut Client,
        host: &str,
        heartbeats: bool,
    ) -> (
        mpsc::Sender<pb::AnswerResponse>,
        Streaming<pb::AnswerRequest>,
    ) {
        let (tx, rx) = mpsc::channel::<pb::AnswerResponse>(8);
        let mut open = Request::new(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|m| (m, rx))
        }));
        to(host)(open.metadata_mut());
        if heartbeats {
            open.metadata_mut()
                .insert("heartbeats-allowed", "true".parse().unwrap());
        }
        (tx, client.answer(open).await.unwrap().into_inner())
    }

    fn to(host: &str) -> impl Fn(&mut tonic::metadata::MetadataMap) + '_ {
        move |md| {
            md.insert("rpc-host", host.parse().unwrap());
        }
    }

    fn candidate(line: &str) -> Option<pb::IceCandidate> {
        Some(pb::IceCandidate {
            candidate: line.into(),
            sdp_mid: Some("0".into()),
            sdpm_line_index: Some(0),
            username_fragment: None,
        })
    }

    /// A caller (`Call`, `CallUpdate`) and an answerer on an `Answer` stream meet through
    /// the queue, and every stage is relayed both ways.
    #[tokio::test]
    async fn answer_streams_relay_an_exchange_both_ways() {
        let (host, queue) = serve().await;
        let (mut answerer, mut caller) = clients(&host).await;

        let (answers_tx, mut offers) = open_answer(&mut answerer, "rover.example", true).await;
        // Waiting for an offer, the answerer gets heartbeats.
        let hb = offers.message().await.unwrap().unwrap();
        assert!(
            matches!(hb.stage, Some(pb::answer_request::Stage::Heartbeat(_))),
            "{hb:?}"
        );

        let mut call = Request::new(pb::CallRequest {
            sdp: "offer-sdp".into(),
            disable_trickle: false,
        });
        to(&host)(call.metadata_mut());
        let sent = std::time::SystemTime::now();
        let mut call = caller.call(call).await.unwrap().into_inner();
        let init = loop {
            let m = offers.message().await.unwrap().unwrap();
            if let Some(pb::answer_request::Stage::Init(i)) = m.stage {
                break (m.uuid, i);
            }
        };
        let (uuid, init) = init;
        assert_eq!(init.sdp, "offer-sdp");
        // The deadline crosses as a timestamp about OFFER_DEADLINE ahead.
        let deadline = std::time::SystemTime::try_from(init.deadline.unwrap()).unwrap();
        let ahead = deadline.duration_since(sent).unwrap();
        assert!(
            ahead > OFFER_DEADLINE - Duration::from_secs(2)
                && ahead < OFFER_DEADLINE + Duration::from_secs(2),
            "{ahead:?}"
        );

        use pb::answer_response::Stage as A;
        let say = |stage| pb::AnswerResponse {
            uuid: uuid.clone(),
            stage: Some(stage),
        };
        answers_tx
            .send(say(A::Init(pb::AnswerResponseInitStage {
                sdp: "answer-sdp".into(),
            })))
            .await
            .unwrap();
        let first = call.message().await.unwrap().unwrap();
        assert_eq!(first.uuid, uuid);
        assert!(
            matches!(first.stage, Some(pb::call_response::Stage::Init(ref i)) if i.sdp == "answer-sdp")
        );
        answers_tx
            .send(say(A::Update(pb::AnswerResponseUpdateStage {
                candidate: candidate("candidate:a"),
            })))
            .await
            .unwrap();
        let update = call.message().await.unwrap().unwrap();
        assert!(
            matches!(update.stage, Some(pb::call_response::Stage::Update(ref u)) if u.candidate.as_ref().unwrap().candidate == "candidate:a")
        );

        // The caller's candidate and done reach the answerer.
        for update in [
            pb::call_update_request::Update::Candidate(candidate("candidate:c").unwrap()),
            pb::call_update_request::Update::Done(true),
        ] {
            let mut r = Request::new(pb::CallUpdateRequest {
                uuid: uuid.clone(),
                update: Some(update),
            });
            to(&host)(r.metadata_mut());
            caller.call_update(r).await.unwrap();
        }
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let m = offers.message().await.unwrap().unwrap();
            match m.stage {
                Some(pb::answer_request::Stage::Update(u)) => {
                    seen.push(u.candidate.unwrap().candidate)
                }
                Some(pb::answer_request::Stage::Done(_)) => seen.push("done".into()),
                _ => {}
            }
        }
        assert_eq!(seen, ["candidate:c", "done"]);
        // The answerer's done ends the caller's stream.
        answers_tx
            .send(say(A::Done(pb::AnswerResponseDoneStage {})))
            .await
            .unwrap();
        assert!(call.message().await.unwrap().is_none());
        // Finished calls are forgotten: a late update is refused.
        let mut r = Request::new(pb::CallUpdateRequest {
            uuid: uuid.clone(),
            update: Some(pb::call_update_request::Update::Done(true)),
        });
        to(&host)(r.metadata_mut());
        assert_eq!(
            caller.call_update(r).await.unwrap_err().code(),
            tonic::Code::NotFound
        );
        assert_eq!(queue.live_calls(), 0);
    }

    /// An answerer's error reaches the caller as the Call's status.
    #[tokio::test]
    async fn an_answerer_error_is_the_callers_status() {
        let (host, _queue) = serve().await;
        let (mut answerer, mut caller) = clients(&host).await;
        let (answers_tx, mut offers) = open_answer(&mut answerer, &host, false).await;
        let mut call = Request::new(pb::CallRequest {
            sdp: "o".into(),
            disable_trickle: false,
        });
        to(&host)(call.metadata_mut());
        let mut call = caller.call(call).await.unwrap().into_inner();
        let uuid = offers.message().await.unwrap().unwrap().uuid;
        answers_tx
            .send(pb::AnswerResponse {
                uuid,
                stage: Some(pb::answer_response::Stage::Error(
                    pb::AnswerResponseErrorStage {
                        status: Some(RpcStatus {
                            code: 8,
                            message: "too busy".into(),
                            details: vec![],
                        }),
                    },
                )),
            })
            .await
            .unwrap();
        let e = call.message().await.unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (tonic::Code::ResourceExhausted, "too busy")
        );
    }
}
