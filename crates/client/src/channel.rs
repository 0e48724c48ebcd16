//! The transport seam: a tower service that every generated client runs over.
//!
//! Each call reads the machine's current transport (so no client is ever left holding a dead
//! connection once reconnection swaps it), adds the access token, and on safety-monitored
//! methods adds `viam-sid`, starting the session first if there is none. A response that says
//! the session expired ends the session locally and is passed to the caller as it is: never
//! retried.

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
use crate::{ApiKey, ClientError, ConnectionEvent, Options, Tls};

/// The metadata key carrying the session id.
pub(crate) const SESSION_ID_HEADER: &str = "viam-sid";

/// How the machine is reached. WebRTC joins here as a second variant.
#[derive(Clone)]
pub(crate) enum Transport {
    /// Direct gRPC over HTTP/2.
    Direct(Channel),
}

pub(crate) struct Inner {
    pub(crate) address: String,
    pub(crate) options: Options,
    transport: RwLock<Transport>,
    token: RwLock<Option<Arc<str>>>,
    /// `Bearer <token>`, built once per token rather than per call.
    bearer: RwLock<Option<http::HeaderValue>>,
    pub(crate) session: ClientSession,
    events: broadcast::Sender<ConnectionEvent>,
    suspicions: mpsc::UnboundedSender<Suspicion>,
}

/// Why the supervisor should look at the connection.
pub(crate) struct Suspicion {
    pub(crate) cause: String,
    /// Already checked: a failed probe; the supervisor need not probe again.
    pub(crate) confirmed: bool,
}

impl Inner {
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

    /// Puts a new transport (and token) in place for every client at once.
    pub(crate) fn replace_transport(&self, transport: Transport, token: Option<String>) {
        *self.transport.write().unwrap_or_else(|p| p.into_inner()) = transport;
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
}

/// A channel to one machine, shared by every typed client of a [`crate::RobotClient`].
#[derive(Clone)]
pub struct RobotChannel {
    pub(crate) inner: Arc<Inner>,
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
    endpoint.connect().await.map_err(|e| ClientError::Connect {
        address: address.to_string(),
        message: error_chain(&e),
    })
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
    format!("Bearer {}", token?).parse().ok()
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
pub(crate) const SESSION_EXPIRED: &str = "SESSION_EXPIRED";

/// Whether `status` says the session expired (INVALID_ARGUMENT `SESSION_EXPIRED`).
pub(crate) fn is_session_expired(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::InvalidArgument && status.message() == SESSION_EXPIRED
}

impl RobotChannel {
    /// Dials and authenticates within the dial timeout.
    pub(crate) async fn connect(address: &str, options: Options) -> Result<Self, ClientError> {
        let (events, _) = broadcast::channel(256);
        let _ = events.send(ConnectionEvent::Connecting);
        let _ = events.send(ConnectionEvent::Dialing {
            method: "direct".into(),
            attempt: 1,
        });
        let work = connect_authenticated(address, &options.tls, options.credentials.as_ref());
        let (channel, token) = tokio::time::timeout(options.dial_timeout, work)
            .await
            .map_err(|_| ClientError::Timeout(address.to_string(), options.dial_timeout))??;
        let _ = events.send(ConnectionEvent::Connected {
            transport: "direct gRPC (h2c)".into(),
        });
        let (suspicions, suspected) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            address: address.to_string(),
            options,
            transport: RwLock::new(Transport::Direct(channel)),
            bearer: RwLock::new(bearer_header(token.as_deref())),
            token: RwLock::new(token.map(Arc::from)),
            session: ClientSession::default(),
            events,
            suspicions,
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

/// Whether a (trailers-only) response says the session expired.
fn session_expired<B>(response: &http::Response<B>) -> bool {
    let h = response.headers();
    h.get("grpc-status").is_some_and(|v| v == "3")
        && h.get("grpc-message").is_some_and(|v| v == SESSION_EXPIRED)
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
            let response = match inner.transport() {
                Transport::Direct(channel) => match channel.oneshot(req).await {
                    Ok(r) => r,
                    Err(e) => {
                        inner.suspect(format!("call failed: {e}"));
                        return Err(e.into());
                    }
                },
            };
            if let Some(sid) = sid
                && session_expired(&response)
                && inner.session.end(&sid)
            {
                inner.emit(ConnectionEvent::SessionExpired { id: sid });
            }
            Ok(response)
        })
    }
}
