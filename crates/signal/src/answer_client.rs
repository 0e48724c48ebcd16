//! The answerer's side of a standalone signaling service: how a machine behind NAT takes its
//! calls. It keeps [`STREAMS`] `Answer` streams open to the service (so a second caller need
//! not wait for the first one's handshake), each naming the machine's hosts as `rpc-host` with
//! `heartbeats-allowed: true`; every offer that arrives becomes an [`AnswererSide`] that the
//! machine's answerer takes with [`OfferSource::recv_offer`], exactly as it takes offers from
//! its embedded queue. After each call a stream is replaced by a new one.
//!
//! A stream that breaks, a service that restarts or cannot be reached: the worker reconnects
//! with exponential backoff (1 s doubling to 15 s, with jitter; reset once a stream is open),
//! re-authenticating with its API key when the service no longer knows its token. A stream
//! silent for [`SILENCE`] (the service sends a heartbeat every 15 s) counts as broken, so a
//! half-open path is found in well under a minute, not left to TCP.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tether_proto::proto::rpc::v1 as rpc;
use tether_proto::proto::rpc::webrtc::v1 as pb;
use tether_rpc::backoff::{Backoff, BackoffPolicy, Next, jitter_sample};
use tether_rpc::sync::lock;
use tether_rtc::IceServer;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::queue::{AnswererSide, FromAnswerer, FromCaller, MIN_EXCHANGE, Offer, OfferSource};

/// `Answer` streams kept open at once (goutils' answerer keeps two).
pub const STREAMS: usize = 2;

/// A waiting stream that has heard nothing (not even a heartbeat) for this long is broken:
/// two of the service's heartbeats missed, and a margin.
pub const SILENCE: Duration =
    Duration::from_secs(2 * crate::service::ANSWER_HEARTBEAT.as_secs() + 10);

/// The most time an exchange gets: the offer deadline.
const MAX_EXCHANGE: Duration = crate::service::OFFER_DEADLINE;

/// Where and as whom a machine answers.
#[derive(Clone)]
pub struct RemoteSignaling {
    /// The service's `host:port`.
    pub address: String,
    /// Plaintext (h2c) instead of TLS.
    pub insecure: bool,
    /// The `rpc-host` values callers reach this machine by.
    pub hosts: Vec<String>,
    /// The API key (id, key) the machine authenticates with, if the service wants one.
    pub api_key: Option<(String, String)>,
}

impl std::fmt::Debug for RemoteSignaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSignaling")
            .field("address", &self.address)
            .field("insecure", &self.insecure)
            .field("hosts", &self.hosts)
            .field("api_key_id", &self.api_key.as_ref().map(|(id, _)| id))
            .finish()
    }
}

/// Offers arriving on `Answer` streams to a standalone service.
pub struct RemoteOffers {
    offers: tokio::sync::Mutex<mpsc::Receiver<AnswererSide>>,
}

impl RemoteOffers {
    /// Starts the workers; they run until `stop`.
    pub fn start(config: RemoteSignaling, stop: CancellationToken) -> Result<Arc<Self>, String> {
        let scheme = if config.insecure { "http" } else { "https" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", config.address))
            .map_err(|e| format!("signaling address {:?}: {e}", config.address))?
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        if !config.insecure {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(|e| format!("signaling TLS: {e}"))?;
        }
        // One connection for every stream, made when first needed and remade by tonic when it
        // breaks.
        // A host that cannot travel as metadata fails here, once, not every stream with backoff.
        let hosts = config
            .hosts
            .iter()
            .map(|h| {
                h.parse()
                    .map_err(|_| format!("host {h:?} cannot be sent as rpc-host"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let channel = endpoint.connect_lazy();
        let (tx, rx) = mpsc::channel(STREAMS);
        let shared = Arc::new(Worker {
            config,
            hosts,
            channel,
            token: Mutex::new(None),
            offers: tx,
        });
        for n in 0..STREAMS {
            tokio::spawn(shared.clone().run(n, stop.clone()));
        }
        Ok(Arc::new(Self {
            offers: tokio::sync::Mutex::new(rx),
        }))
    }
}

#[tonic::async_trait]
impl OfferSource for RemoteOffers {
    /// The next offer from any stream (the hosts are the streams', fixed at start).
    async fn recv_offer(&self, _hosts: &[String]) -> Result<AnswererSide, Status> {
        self.offers
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| Status::cancelled("the signaling streams have stopped"))
    }
}

struct Worker {
    config: RemoteSignaling,
    /// `config.hosts` as `rpc-host` values.
    hosts: Vec<tonic::metadata::AsciiMetadataValue>,
    channel: Channel,
    /// The access token, shared by the streams; cleared when the service refuses it.
    token: Mutex<Option<String>>,
    offers: mpsc::Sender<AnswererSide>,
}

/// How a stream ended.
enum Ended {
    /// After a call, or cut by the service the way proxies and restarts do: open the next one
    /// at once.
    Again,
    /// Failed: wait (backoff) before the next.
    Failed(Status),
}

impl Worker {
    async fn run(self: Arc<Self>, n: usize, stop: CancellationToken) {
        let policy = BackoffPolicy {
            first_delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(15),
            max_attempts: u32::MAX,
            jitter: 0.2,
        };
        let mut backoff = Backoff::new(policy.clone());
        let mut announced = false;
        loop {
            let ended = tokio::select! {
                _ = stop.cancelled() => return,
                e = self.stream_once(&mut backoff, &policy, &mut announced) => e,
            };
            let status = match ended {
                Ended::Again => continue,
                Ended::Failed(status) => status,
            };
            if status.code() == tonic::Code::Unauthenticated {
                *lock(&self.token) = None;
            }
            let Next::RetryAfter { delay, attempt } = backoff.next(None, jitter_sample()) else {
                return;
            };
            tracing::warn!(
                stream = n,
                signaling = %self.config.address,
                code = ?status.code(),
                error = %status.message(),
                attempt,
                retry_in = ?delay,
                "cannot answer through the signaling service; retrying"
            );
            announced = false;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// The access token: the one held, or a new one from `Authenticate`.
    async fn token(&self) -> Result<Option<String>, Status> {
        let Some((id, key)) = &self.config.api_key else {
            return Ok(None);
        };
        if let Some(t) = lock(&self.token).clone() {
            return Ok(Some(t));
        }
        let reply = rpc::auth_service_client::AuthServiceClient::new(self.channel.clone())
            .authenticate(rpc::AuthenticateRequest {
                entity: id.clone(),
                credentials: Some(rpc::Credentials {
                    r#type: "api-key".into(),
                    payload: key.clone(),
                }),
            })
            .await?;
        let token = reply.into_inner().access_token;
        *lock(&self.token) = Some(token.clone());
        Ok(Some(token))
    }

    /// One `Answer` stream: open it, wait past heartbeats, and carry at most one call.
    async fn stream_once(
        &self,
        backoff: &mut Backoff,
        policy: &BackoffPolicy,
        announced: &mut bool,
    ) -> Ended {
        let token = match self.token().await {
            Ok(t) => t,
            Err(s) => return Ended::Failed(s),
        };
        let (out_tx, out_rx) = mpsc::channel::<pb::AnswerResponse>(32);
        let mut request = tonic::Request::new(futures::stream::unfold(out_rx, |mut rx| async {
            rx.recv().await.map(|m| (m, rx))
        }));
        for host in &self.hosts {
            request
                .metadata_mut()
                .append(tether_rpc::vocabulary::RPC_HOST_HEADER, host.clone());
        }
        request.metadata_mut().insert(
            "heartbeats-allowed",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        if let Some(token) = token {
            match format!("{}{token}", tether_rpc::vocabulary::BEARER_PREFIX).parse() {
                Ok(v) => {
                    request
                        .metadata_mut()
                        .insert(tether_rpc::vocabulary::AUTHORIZATION_HEADER, v);
                }
                Err(_) => return Ended::Failed(Status::internal("unusable access token")),
            }
        }
        let mut client =
            pb::signaling_service_client::SignalingServiceClient::new(self.channel.clone())
                .max_decoding_message_size(crate::service::MAX_SIGNALING_MESSAGE);
        let mut incoming = match client.answer(request).await {
            Ok(r) => r.into_inner(),
            Err(s) => return Ended::Failed(s),
        };
        // Open: the service took our hosts and our key.
        *backoff = Backoff::new(policy.clone());
        if !*announced {
            tracing::info!(
                signaling = %self.config.address,
                hosts = ?self.config.hosts,
                "answering calls through the signaling service"
            );
            *announced = true;
        }
        let init = loop {
            match tokio::time::timeout(SILENCE, incoming.message()).await {
                Err(_) => {
                    return Ended::Failed(Status::unavailable(format!(
                        "no word from the signaling service for {SILENCE:?}"
                    )));
                }
                Ok(Err(s)) => return Ended::Failed(s),
                // The service (or a proxy before it) ended the stream: open the next.
                Ok(Ok(None)) => return Ended::Again,
                Ok(Ok(Some(m))) => match m.stage {
                    Some(pb::answer_request::Stage::Heartbeat(_)) => continue,
                    Some(pb::answer_request::Stage::Init(init)) => break (m.uuid, init),
                    other => {
                        let _ = out_tx
                            .send(error_response(
                                &m.uuid,
                                Status::invalid_argument(format!(
                                    "expected first stage to be init or heartbeat; got {}",
                                    stage_name(other.as_ref())
                                )),
                            ))
                            .await;
                        return Ended::Again;
                    }
                },
            }
        };
        let (uuid, init) = init;
        // The deadline crossed as wall-clock time; from here on it is this host's monotonic
        // clock, clamped so a skewed clock neither cuts an exchange short nor stretches it.
        let remaining = init
            .deadline
            .and_then(|d| SystemTime::try_from(d).ok())
            .and_then(|d| d.duration_since(SystemTime::now()).ok())
            .unwrap_or(MAX_EXCHANGE)
            .clamp(MIN_EXCHANGE, MAX_EXCHANGE);
        let deadline = Instant::now() + remaining;
        let config = init.optional_config.unwrap_or_default();
        let (to_caller, mut from_answerer) = mpsc::channel(64);
        let (to_answerer, from_caller) = mpsc::channel(64);
        let side = AnswererSide {
            offer: Offer {
                uuid: uuid.clone(),
                sdp: init.sdp,
                disable_trickle: config.disable_trickle,
                deadline,
                caller_entity: Arc::from(init.caller_auth_entity),
            },
            ice_servers: config
                .additional_ice_servers
                .into_iter()
                .map(|s| IceServer {
                    urls: s.urls,
                    username: s.username,
                    credential: s.credential,
                })
                .collect(),
            to_caller,
            from_caller,
        };
        if self.offers.send(side).await.is_err() {
            let _ = out_tx
                .send(error_response(
                    &uuid,
                    Status::unavailable("the machine is shutting down"),
                ))
                .await;
            return Ended::Again;
        }
        let (mut answerer_done, mut caller_done) = (false, false);
        while !(answerer_done && caller_done) {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                m = from_answerer.recv(), if !answerer_done => {
                    use pb::answer_response::Stage;
                    let stage = match m {
                        Some(FromAnswerer::Answer(sdp)) => Stage::Init(pb::AnswerResponseInitStage { sdp }),
                        Some(FromAnswerer::Candidate(c)) => Stage::Update(pb::AnswerResponseUpdateStage { candidate: Some(c.into()) }),
                        Some(FromAnswerer::Done) | None => { answerer_done = true; Stage::Done(pb::AnswerResponseDoneStage {}) }
                        Some(FromAnswerer::Error(s)) => { answerer_done = true; Stage::Error(pb::AnswerResponseErrorStage { status: Some(crate::service::status_to_wire(&s)) }) }
                    };
                    if out_tx.send(pb::AnswerResponse { uuid: uuid.clone(), stage: Some(stage) }).await.is_err() {
                        break;
                    }
                }
                m = incoming.message(), if !caller_done => {
                    use pb::answer_request::Stage;
                    let update = match m {
                        Ok(Some(m)) if m.uuid.is_empty() || m.uuid == uuid => match m.stage {
                            Some(Stage::Update(u)) => match u.candidate {
                                Some(c) => FromCaller::Candidate(c.into()),
                                None => continue,
                            },
                            Some(Stage::Done(_)) => { caller_done = true; FromCaller::Done }
                            Some(Stage::Error(e)) => { caller_done = true; FromCaller::Error(crate::service::status_from_wire(e.status)) }
                            Some(Stage::Heartbeat(_)) | None => continue,
                            Some(Stage::Init(_)) => { caller_done = true; FromCaller::Error(Status::invalid_argument("got init stage more than once")) }
                        },
                        Ok(Some(m)) => {
                            caller_done = true;
                            FromCaller::Error(Status::invalid_argument(format!("uuid mismatch; have={:?} want={uuid:?}", m.uuid)))
                        }
                        // The service ended the stream: the caller's side is over.
                        Ok(None) | Err(_) => { caller_done = true; FromCaller::Done }
                    };
                    let _ = to_answerer.send(update).await;
                }
            }
        }
        Ended::Again
    }
}

fn error_response(uuid: &str, status: Status) -> pb::AnswerResponse {
    pb::AnswerResponse {
        uuid: uuid.to_string(),
        stage: Some(pb::answer_response::Stage::Error(
            pb::AnswerResponseErrorStage {
                status: Some(crate::service::status_to_wire(&status)),
            },
        )),
    }
}

fn stage_name(stage: Option<&pb::answer_request::Stage>) -> &'static str {
    use pb::answer_request::Stage;
    match stage {
        None => "nothing",
        Some(Stage::Init(_)) => "init",
        Some(Stage::Update(_)) => "update",
        Some(Stage::Done(_)) => "done",
        Some(Stage::Error(_)) => "error",
        Some(Stage::Heartbeat(_)) => "heartbeat",
    }
}
