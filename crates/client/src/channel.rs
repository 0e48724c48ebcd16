//! The transport seam: a tower service that every generated client runs over.
//!
//! Each call reads the machine's current transport (so no client is ever left holding a dead
//! connection once reconnection swaps it), adds the access token, and on safety-monitored
//! methods adds `viam-sid`, starting the session first if there is none. A response that says
//! the session expired — in its headers (trailers-only) or in its trailers — ends the session
//! locally and is passed to the caller as it is: never retried.
//!
//! [`dial_transport`] makes a transport: WebRTC and direct gRPC in the order the options say,
//! the second as the fallback of the first.

use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tether_proto::proto::rpc::v1::auth_service_client::AuthServiceClient;
use tether_proto::proto::rpc::v1::{AuthenticateRequest, Credentials};
use tokio::sync::{broadcast, mpsc};
use tonic::transport::Channel;
use tower::ServiceExt;

use crate::session::ClientSession;
use crate::webrtc::{LostHook, WebRtcChannel};
use crate::{ApiKey, ClientError, ConnectFailure, ConnectionEvent, DialMethod, Options, Tls};

/// The metadata key carrying the session id.
pub(crate) use tether_rpc::vocabulary::SESSION_ID_HEADER;

/// How the machine is reached.
#[derive(Clone)]
pub(crate) enum Transport {
    /// Direct gRPC over HTTP/2.
    Direct(Channel),
    /// gRPC over a WebRTC data channel.
    WebRtc(WebRtcChannel),
}

impl Transport {
    /// `webrtc` or `direct`, as events name it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Direct(_) => DialMethod::Direct.name(),
            Self::WebRtc(_) => DialMethod::WebRtc.name(),
        }
    }

    /// Ends the transport on purpose (it was replaced). A direct channel just goes when its
    /// last clone does; a WebRTC connection is closed now, failing its open calls.
    pub(crate) fn close(&self) {
        if let Self::WebRtc(rtc) = self {
            rtc.close("replaced by a new connection");
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Request<tonic::body::Body>> for Transport {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call drives its own readiness (`oneshot`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        match self.clone() {
            Self::Direct(channel) => {
                Box::pin(async move { channel.oneshot(req).await.map_err(Into::into) })
            }
            Self::WebRtc(rtc) => Box::pin(rtc.oneshot(req)),
        }
    }
}

/// Everything one [`RobotChannel`] (and so one `RobotClient`) holds: the machine's address and
/// the options, the current transport and token, the session, the event stream, and the
/// supervisor's inbox.
pub(crate) struct ClientState {
    pub(crate) address: String,
    pub(crate) options: Options,
    transport: RwLock<Transport>,
    token: RwLock<Option<Arc<str>>>,
    /// `Bearer <token>`, built once per token rather than per call.
    bearer: RwLock<Option<http::HeaderValue>>,
    pub(crate) session: ClientSession,
    events: broadcast::Sender<ConnectionEvent>,
    /// The events of the first dial, sent before anyone could subscribe.
    pub(crate) first_dial: Vec<ConnectionEvent>,
    suspicions: mpsc::UnboundedSender<Suspicion>,
    /// Dropped with the client: the heartbeat thread, holding a receiver, learns at once that
    /// the client is gone and sends nothing more.
    pub(crate) lifetime: tokio::sync::watch::Sender<()>,
}

/// Why the supervisor should look at the connection.
pub(crate) struct Suspicion {
    pub(crate) cause: String,
    /// Already checked: a failed probe; the supervisor need not probe again.
    pub(crate) confirmed: bool,
}

impl ClientState {
    pub(crate) fn emit(&self, event: ConnectionEvent) {
        tracing::debug!(?event, "connection event");
        let _ = self.events.send(event);
    }

    /// Tells the supervisor the connection may be lost.
    pub(crate) fn suspect(&self, cause: String) {
        let _ = self.suspicions.send(Suspicion {
            cause,
            confirmed: false,
        });
    }

    /// Tells the supervisor the connection is lost (a probe already failed).
    pub(crate) fn lost(&self, cause: String) {
        let _ = self.suspicions.send(Suspicion {
            cause,
            confirmed: true,
        });
    }

    /// Whether the application turned reconnection off.
    pub(crate) fn reconnect_disabled(&self) -> bool {
        self.options.backoff.max_attempts == 0
    }

    /// Puts a new transport (and token) in place for every client at once; closes the old one.
    pub(crate) fn replace_transport(&self, transport: Transport, token: Option<String>) {
        let old = std::mem::replace(
            &mut *self.transport.write().unwrap_or_else(|p| p.into_inner()),
            transport,
        );
        old.close();
        *self.bearer.write().unwrap_or_else(|p| p.into_inner()) = bearer_header(token.as_deref());
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = token.map(Arc::from);
    }

    fn bearer(&self) -> Option<http::HeaderValue> {
        self.bearer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn transport(&self) -> Transport {
        self.transport
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn token(&self) -> Option<Arc<str>> {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Dials the client's machine again, as the options say, without keeping the client
    /// alive meanwhile: `None` if every handle of it was dropped before the dial began.
    pub(crate) async fn redial(
        client: &std::sync::Weak<Self>,
        attempt: u32,
    ) -> Option<Result<(Transport, Option<String>), ClientError>> {
        let (address, options, suspicions) = {
            let inner = client.upgrade()?;
            (
                inner.address.clone(),
                inner.options.clone(),
                inner.suspicions.clone(),
            )
        };
        let emit = |e: ConnectionEvent| {
            Self::emit_to(client, e);
        };
        Some(dial_transport(&address, &options, attempt, &emit, lost_hook(&suspicions)).await)
    }

    /// Emits `event` if the client still exists; whether it does.
    pub(crate) fn emit_to(client: &std::sync::Weak<Self>, event: ConnectionEvent) -> bool {
        client.upgrade().map(|inner| inner.emit(event)).is_some()
    }
}

/// What a WebRTC connection calls when it ends by itself: a confirmed loss for the supervisor.
fn lost_hook(suspicions: &mpsc::UnboundedSender<Suspicion>) -> LostHook {
    let suspicions = suspicions.clone();
    Arc::new(move |cause| {
        let _ = suspicions.send(Suspicion {
            cause,
            confirmed: true,
        });
    })
}

/// Dials by each method in the options' order until one connects; each gets the dial timeout
/// and a `Dialing` event. If every method fails, the direct error is returned (it is the one
/// that says most about reaching the machine at all).
///
/// With signaling at the machine address (the default) both methods start with the same
/// authenticated connection to it: if that connection cannot be made (refused, TLS, timeout,
/// credentials), the second method reports the same failure instead of dialing it again — a
/// black-holed machine costs one dial timeout per attempt, not two. If it can be made and
/// WebRTC fails later, direct gRPC reuses it.
pub(crate) async fn dial_transport(
    address: &str,
    options: &Options,
    attempt: u32,
    emit: &(dyn Fn(ConnectionEvent) + Sync),
    lost: LostHook,
) -> Result<(Transport, Option<String>), ClientError> {
    let same_address = options
        .signaling_address
        .as_deref()
        .is_none_or(|s| s == address);
    let mut reusable = None;
    let mut unreachable: Option<ClientError> = None;
    let mut webrtc_error = None;
    let mut direct_error = None;
    for method in options.dial_order() {
        emit(ConnectionEvent::Dialing {
            method: method.name().into(),
            attempt,
        });
        let timeout = options.dial_timeout;
        match method {
            DialMethod::WebRtc if unreachable.is_some() => webrtc_error = unreachable.take(),
            DialMethod::Direct if unreachable.is_some() => direct_error = unreachable.take(),
            DialMethod::WebRtc => {
                let deadline = tokio::time::Instant::now() + timeout;
                let dialed = tokio::time::timeout(
                    timeout + Duration::from_millis(500),
                    crate::signaling::dial(address, options, deadline, lost.clone()),
                )
                .await;
                match dialed {
                    Ok(Ok((rtc, token))) => return Ok((Transport::WebRtc(rtc), token)),
                    Ok(Err(failure)) => {
                        tracing::debug!(error = %failure.error, "WebRTC dial failed");
                        reusable = failure.direct;
                        if same_address && failure.unreachable {
                            unreachable = Some(failure.error);
                        } else {
                            webrtc_error = Some(failure.error);
                        }
                    }
                    Err(_) => webrtc_error = Some(ClientError::Timeout(address.into(), timeout)),
                }
            }
            DialMethod::Direct => {
                let dialed = match reusable.take() {
                    Some(connection) => Ok(Ok(connection)),
                    None => {
                        tokio::time::timeout(
                            timeout,
                            connect_authenticated(
                                address,
                                &options.tls,
                                options.credentials.as_ref(),
                            ),
                        )
                        .await
                    }
                };
                let error = match dialed {
                    Ok(Ok((channel, token))) => return Ok((Transport::Direct(channel), token)),
                    Ok(Err(e)) => e,
                    Err(_) => ClientError::Timeout(address.into(), timeout),
                };
                if same_address {
                    unreachable = Some(error);
                } else {
                    direct_error = Some(error);
                }
            }
        }
    }
    Err(direct_error
        .or(webrtc_error)
        .or(unreachable)
        .unwrap_or_else(|| ClientError::Address(address.into(), "no dial method".into())))
}

/// A channel to one machine, shared by every typed client of a [`crate::RobotClient`].
#[derive(Clone)]
pub struct RobotChannel {
    pub(crate) inner: Arc<ClientState>,
}

/// Opens an HTTP/2 connection to `address`, with TLS unless `tls` says otherwise.
pub(crate) async fn dial(address: &str, tls: &Tls) -> Result<Channel, ClientError> {
    let bad = |e: String| ClientError::Address(address.to_string(), e);
    let scheme = if *tls == Tls::Insecure {
        "http"
    } else {
        "https"
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|e| bad(e.to_string()))?;
    if *tls != Tls::Insecure {
        let host = address
            .rsplit_once(':')
            .map_or(address, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let mut config = tonic::transport::ClientTlsConfig::new().domain_name(host);
        config = match tls {
            Tls::CaFile(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| bad(format!("cannot read CA file {}: {e}", path.display())))?;
                config.ca_certificate(tonic::transport::Certificate::from_pem(pem))
            }
            _ => config.with_native_roots(),
        };
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| bad(e.to_string()))?;
    }
    let endpoint = endpoint
        .tcp_nodelay(true)
        // Pings no more often than every 10 s: Go servers answer faster pings with GOAWAY.
        // Dead links are found sooner by failed session heartbeats.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    endpoint
        .connect()
        .await
        .map_err(|e| connect_failure(address, &e))
}

/// A dial error as a [`ClientError::Connect`] with its kind, read from the error's source
/// chain: rustls' own error for TLS (a TLS dial answered in plaintext shows as a record of an
/// invalid content type), the resolver's failure for names.
fn connect_failure(address: &str, e: &(dyn std::error::Error + 'static)) -> ClientError {
    let mut failure = ConnectFailure::Transport;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        // rustls' error arrives wrapped in an io::Error, whose `source` skips it.
        let tls = s.downcast_ref::<rustls::Error>().or_else(|| {
            s.downcast_ref::<std::io::Error>()?
                .get_ref()?
                .downcast_ref::<rustls::Error>()
        });
        if let Some(tls) = tls {
            failure = match tls {
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
                    ConnectFailure::PlaintextMachine
                }
                _ => ConnectFailure::Tls,
            };
            break;
        }
        // getaddrinfo's failure reaches us only as an io::Error with this text.
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.to_string().contains("failed to lookup address"))
        {
            failure = ConnectFailure::NameResolution;
            break;
        }
        source = s.source();
    }
    let message = match failure {
        ConnectFailure::PlaintextMachine => "the machine answered in plaintext, not TLS (it \
             serves without TLS, e.g. `tether serve --no-tls` or the demo); dial it in \
             plaintext with `--insecure` (tether connect) or `Options::insecure()`"
            .to_string(),
        _ => error_chain(e),
    };
    ClientError::Connect {
        address: address.to_string(),
        failure,
        message,
    }
}

/// Authenticates with an API key on `channel`; returns the access token.
pub(crate) async fn authenticate(channel: &Channel, key: &ApiKey) -> Result<String, ClientError> {
    AuthServiceClient::new(channel.clone())
        .authenticate(AuthenticateRequest {
            entity: key.id.clone(),
            credentials: Some(Credentials {
                r#type: "api-key".into(),
                payload: key.key.clone(),
            }),
        })
        .await
        .map(|r| r.into_inner().access_token)
        .map_err(ClientError::Auth)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

fn bearer_header(token: Option<&str>) -> Option<http::HeaderValue> {
    format!("{}{}", tether_rpc::vocabulary::BEARER_PREFIX, token?)
        .parse()
        .ok()
}

/// A request carrying the bearer token, for calls made outside [`RobotChannel`] (heartbeats on
/// their own connection, probes).
pub(crate) fn authorized<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut headers = http::HeaderMap::new();
    if let Some(bearer) = bearer_header(token) {
        headers.insert(http::header::AUTHORIZATION, bearer);
    }
    tonic::Request::from_parts(
        tonic::metadata::MetadataMap::from_headers(headers),
        Default::default(),
        message,
    )
}

/// Dials `address` and, with credentials, authenticates on the new connection.
pub(crate) async fn connect_authenticated(
    address: &str,
    tls: &Tls,
    credentials: Option<&ApiKey>,
) -> Result<(Channel, Option<String>), ClientError> {
    let channel = dial(address, tls).await?;
    let token = match credentials {
        Some(key) => Some(authenticate(&channel, key).await?),
        None => None,
    };
    Ok((channel, token))
}

/// The message clients rely on when a session is unknown, expired or another owner's.
pub(crate) use tether_rpc::vocabulary::SESSION_EXPIRED;

/// Whether `status` says the session expired (INVALID_ARGUMENT `SESSION_EXPIRED`).
pub(crate) fn is_session_expired(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::InvalidArgument && status.message() == SESSION_EXPIRED
}

impl RobotChannel {
    /// Dials (WebRTC and/or direct, as the options say) and authenticates.
    pub(crate) async fn connect(address: &str, options: Options) -> Result<Self, ClientError> {
        options.validate()?;
        let (events, _) = broadcast::channel(256);
        let first_dial = std::sync::Mutex::new(vec![ConnectionEvent::Connecting]);
        let (suspicions, suspected) = mpsc::unbounded_channel();
        let emit = |e: ConnectionEvent| {
            tracing::debug!(event = ?e, "connection event");
            first_dial.lock().unwrap_or_else(|p| p.into_inner()).push(e);
        };
        let (transport, token) =
            dial_transport(address, &options, 1, &emit, lost_hook(&suspicions)).await?;
        emit(ConnectionEvent::Connected {
            transport: transport.name().into(),
        });
        let first_dial = first_dial.into_inner().unwrap_or_else(|p| p.into_inner());
        let inner = Arc::new(ClientState {
            address: address.to_string(),
            options,
            transport: RwLock::new(transport),
            bearer: RwLock::new(bearer_header(token.as_deref())),
            token: RwLock::new(token.map(Arc::from)),
            session: ClientSession::default(),
            events,
            first_dial,
            suspicions,
            lifetime: tokio::sync::watch::Sender::new(()),
        });
        tokio::spawn(crate::reconnect::supervise(
            Arc::downgrade(&inner),
            suspected,
        ));
        Ok(Self { inner })
    }

    pub(crate) fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.inner.events.subscribe()
    }

    pub(crate) fn session_id(&self) -> Option<String> {
        self.inner.session.current_id()
    }

    /// The session id to put on a monitored call, starting a session if needed (`None` when
    /// sessions are disabled or the machine does not offer them).
    pub(crate) async fn ensure_session(&self) -> Result<String, tonic::Status> {
        self.inner
            .session
            .ensure(self)
            .await?
            .ok_or_else(|| tonic::Status::failed_precondition("sessions are disabled"))
    }
}

/// Whether headers (trailers-only) or trailers say the session expired.
fn session_expired(h: &http::HeaderMap) -> bool {
    h.get("grpc-status").is_some_and(|v| v == "3")
        && h.get("grpc-message").is_some_and(|v| v == SESSION_EXPIRED)
}

/// A monitored call's response body, passed through; trailers saying the session expired end
/// the session.
struct SessionWatch {
    body: tonic::body::Body,
    sid: Option<String>,
    inner: std::sync::Weak<ClientState>,
}

impl http_body::Body for SessionWatch {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && session_expired(trailers)
            && let Some(sid) = self.sid.take()
            && let Some(inner) = self.inner.upgrade()
            && inner.session.end(&sid)
        {
            inner.emit(ConnectionEvent::SessionExpired { id: sid });
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for RobotChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is the current transport's, checked per call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let inner = &this.inner;
            if let Some(bearer) = inner.bearer() {
                req.headers_mut()
                    .insert(http::header::AUTHORIZATION, bearer);
            }
            let monitored = !inner.options.disable_sessions
                && tether_proto::is_safety_monitored(req.uri().path());
            let sid = if monitored {
                inner.session.ensure(&this).await?
            } else {
                None
            };
            if let Some(sid) = &sid {
                req.headers_mut().insert(SESSION_ID_HEADER, sid.parse()?);
            }
            let response = match inner.transport().oneshot(req).await {
                Ok(r) => r,
                Err(e) => {
                    inner.suspect(format!("call failed: {e}"));
                    return Err(e);
                }
            };
            let Some(sid) = sid else {
                return Ok(response);
            };
            if session_expired(response.headers()) {
                if inner.session.end(&sid) {
                    inner.emit(ConnectionEvent::SessionExpired { id: sid });
                }
                return Ok(response);
            }
            // The refusal may also come in the trailers (after the headers, as it does over a
            // data channel when frames arrive apart): watch them.
            Ok(response.map(|body| {
                tonic::body::Body::new(SessionWatch {
                    body,
                    sid: Some(sid),
                    inner: Arc::downgrade(&this.inner),
                })
            }))
        })
    }
}
