//! `tether signal`: the signaling service on its own, for a fleet.
//!
//! One port serves `SignalingService` (native gRPC and gRPC-web, TLS or plaintext) and
//! `AuthService.Authenticate` for API keys, with the machine's own hardened serving code
//! (`tether-serve`: connection limits, idle closing, message limits, deadlines). Every key
//! carries its grants ([`crate::fleet::Grants`]): the hosts it answers for and the hosts it
//! calls. Without `redis_url` the call queue is in memory (one instance); with it, any number
//! of instances share one Redis ([`crate::RedisQueue`]).
//!
//! The config is a JSON file, validated as strictly as a machine's: an unknown field, a bad
//! value or a missing pair is refused with a message naming the field.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tether_proto::proto::rpc::v1::auth_service_server::AuthServiceServer;
use tether_proto::proto::rpc::webrtc::v1::signaling_service_server::SignalingServiceServer;
use tether_rtc::IceServer;
use tether_serve::auth::{AuthApi, AuthLayer, Authenticator};
use tether_serve::deadline::DeadlineLayer;
use tether_serve::limits::{MAX_MESSAGE_BYTES, MessageLimitLayer};
use tether_serve::web::AllowedOrigins;
use tether_serve::{ConnectionOptions, NoHook};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;

use crate::fleet::{Grant, Grants, IceServers, TurnRest};
use crate::queue::{CallQueue, MAX_PENDING_PER_HOST, MemoryQueue};
use crate::service::{MAX_SIGNALING_MESSAGE, SIGNALING_SERVICE, SignalingApi};

/// The default listen address.
pub const DEFAULT_BIND_ADDRESS: &str = "localhost:8089";

/// Default time TURN REST credentials are valid.
pub const DEFAULT_TURN_TTL: Duration = Duration::from_secs(24 * 3600);

/// A validated `tether signal` config.
#[derive(Clone)]
pub struct SignalConfig {
    pub bind_address: String,
    /// Certificate and key files (PEM), when the port serves TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The Redis the instances share; none: in memory, one instance.
    pub redis_url: Option<String>,
    /// API keys by id; empty: no authentication (allowed on loopback only).
    pub keys: HashMap<String, String>,
    pub grants: Grants,
    pub ice: IceServers,
    pub allowed_origins: AllowedOrigins,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub idle_timeout: Duration,
    /// Most calls in progress to one host.
    pub max_callers_per_host: usize,
}

impl std::fmt::Debug for SignalConfig {
    /// Nothing secret: key ids, not keys; TURN URLs, not the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalConfig")
            .field("bind_address", &self.bind_address)
            .field("tls", &self.tls.is_some())
            .field("redis", &self.redis_url.is_some())
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("ice", &self.ice.fixed.len())
            .field("turn_rest", &self.ice.turn_rest)
            .finish_non_exhaustive()
    }
}

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    bind_address: Option<String>,
    #[serde(default)]
    tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    tls_key_file: Option<PathBuf>,
    #[serde(default)]
    redis_url: Option<String>,
    #[serde(default)]
    api_keys: Vec<RawKey>,
    #[serde(default)]
    ice_servers: Vec<RawIceServer>,
    #[serde(default)]
    turn_rest: Option<RawTurnRest>,
    #[serde(default)]
    allowed_origins: Option<Vec<String>>,
    #[serde(default)]
    max_connections: Option<usize>,
    #[serde(default)]
    max_connections_per_address: Option<usize>,
    #[serde(default)]
    idle_timeout: Option<String>,
    #[serde(default)]
    max_callers_per_host: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: String,
    key: String,
    #[serde(default)]
    answer: Vec<String>,
    #[serde(default)]
    call: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIceServer {
    urls: Vec<String>,
    #[serde(default)]
    username: String,
    #[serde(default)]
    credential: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTurnRest {
    urls: Vec<String>,
    secret: String,
    #[serde(default)]
    ttl: Option<String>,
}

impl SignalConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Validates config text; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            source_name: source_name.to_string(),
            message,
        };
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        raw.validate().map_err(invalid)
    }
}

/// A host name as a grant may hold it: non-empty, no spaces or control characters.
fn check_host(at: &str, host: &str) -> Result<(), String> {
    if !tether_rpc::address::is_host_name(host) {
        return Err(format!("{at}: {host:?} is not a host name"));
    }
    Ok(())
}

impl RawConfig {
    fn validate(self) -> Result<SignalConfig, String> {
        let bind_address = self
            .bind_address
            .unwrap_or_else(|| DEFAULT_BIND_ADDRESS.to_string());
        tether_rpc::address::split_host_port(&bind_address)
            .map_err(|e| format!("bind_address: {e}"))?;
        let tls = match (self.tls_cert_file, self.tls_key_file) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(
                    "tls_cert_file and tls_key_file: give both (TLS) or neither (plaintext)".into(),
                );
            }
        };
        if let Some(url) = &self.redis_url
            && redis::Client::open(url.as_str()).is_err()
        {
            return Err(format!(
                "redis_url: {url:?} is not a Redis URL (redis://host:port/)"
            ));
        }
        let mut keys = HashMap::new();
        let mut grants = HashMap::new();
        for (i, k) in self.api_keys.into_iter().enumerate() {
            let at = format!("api_keys[{i}]");
            if k.id.is_empty() || k.key.is_empty() {
                return Err(format!("{at}: id and key must not be empty"));
            }
            if k.answer.is_empty() && k.call.is_empty() {
                return Err(format!(
                    "{at} {:?}: grants nothing; list the hosts it may \"answer\" for and \"call\"",
                    k.id
                ));
            }
            for (field, hosts) in [("answer", &k.answer), ("call", &k.call)] {
                for (j, h) in hosts.iter().enumerate() {
                    check_host(&format!("{at}.{field}[{j}]"), h)?;
                }
            }
            if keys.insert(k.id.clone(), k.key).is_some() {
                return Err(format!("{at}: key id {:?} appears twice", k.id));
            }
            grants.insert(
                k.id,
                Grant {
                    answer: k.answer.into_iter().collect::<HashSet<_>>(),
                    call: k.call.into_iter().collect::<HashSet<_>>(),
                },
            );
        }
        let grants = if keys.is_empty() {
            Grants::open()
        } else {
            Grants::new(grants)
        };
        let mut fixed = Vec::new();
        for (i, s) in self.ice_servers.into_iter().enumerate() {
            fixed.push(
                IceServer {
                    urls: s.urls,
                    username: s.username,
                    credential: s.credential,
                }
                .checked(&format!("ice_servers[{i}]"))?,
            );
        }
        let turn_rest = match self.turn_rest {
            None => None,
            Some(t) => {
                if t.secret.is_empty() {
                    return Err("turn_rest.secret: must not be empty".into());
                }
                if t.urls.is_empty()
                    || t.urls.iter().any(|u| {
                        !(u.starts_with("turn:") || u.starts_with("turns:")) || u.len() < 7
                    })
                {
                    return Err(
                        "turn_rest.urls: one or more turn: or turns: URLs (the TURN server \
                         sharing the secret)"
                            .into(),
                    );
                }
                let ttl = match t.ttl {
                    None => DEFAULT_TURN_TTL,
                    Some(text) => tether_rpc::duration::parse_go_duration(&text)
                        .map_err(|e| format!("turn_rest.ttl: {e}"))?,
                };
                if ttl < Duration::from_secs(60) {
                    return Err(
                        "turn_rest.ttl: at least 1m (a call must outlive its credentials' \
                                first use)"
                            .into(),
                    );
                }
                Some(TurnRest {
                    urls: t.urls.into_iter().map(tether_rtc::with_transport).collect(),
                    secret: t.secret,
                    ttl,
                })
            }
        };
        let allowed_origins = match self.allowed_origins {
            None => AllowedOrigins::Any,
            Some(list) if list.iter().any(|o| o == "*") => AllowedOrigins::Any,
            Some(list) => {
                for (i, origin) in list.iter().enumerate() {
                    if !AllowedOrigins::is_origin(origin) {
                        return Err(format!(
                            "allowed_origins[{i}]: {origin:?} is not an origin \
                             (scheme://host[:port], as a browser sends it, or \"*\")"
                        ));
                    }
                }
                AllowedOrigins::List(list)
            }
        };
        let max_connections = self
            .max_connections
            .unwrap_or(tether_serve::DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err("max_connections: must be at least 1".into());
        }
        let max_connections_per_address = self
            .max_connections_per_address
            .unwrap_or_else(|| tether_serve::default_per_address(max_connections));
        if max_connections_per_address == 0 || max_connections_per_address > max_connections {
            return Err(format!(
                "max_connections_per_address: between 1 and max_connections ({max_connections})"
            ));
        }
        let idle_timeout = match self.idle_timeout {
            None => tether_serve::DEFAULT_IDLE_TIMEOUT,
            Some(text) => tether_rpc::duration::parse_go_duration(&text)
                .map_err(|e| format!("idle_timeout: {e}"))?,
        };
        if idle_timeout < Duration::from_secs(20) {
            return Err(
                "idle_timeout: at least 20s (an answerer's stream waits with heartbeats every 15s)"
                    .into(),
            );
        }
        let max_callers_per_host = self.max_callers_per_host.unwrap_or(MAX_PENDING_PER_HOST);
        if max_callers_per_host == 0 {
            return Err("max_callers_per_host: must be at least 1".into());
        }
        Ok(SignalConfig {
            bind_address,
            tls,
            redis_url: self.redis_url,
            keys,
            grants,
            ice: IceServers { fixed, turn_rest },
            allowed_origins,
            max_connections,
            max_connections_per_address,
            idle_timeout,
            max_callers_per_host,
        })
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] tether_serve::BindError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot reach Redis at {url}: {source}")]
    Redis {
        url: String,
        source: redis::RedisError,
    },
    #[error(
        "no api_keys configured and listening on {0:?}, which is not loopback: anyone could \
         answer for any machine; configure api_keys with their grants, or bind to localhost"
    )]
    OpenOffLoopback(Vec<std::net::SocketAddr>),
    #[error("cannot generate a token signing key")]
    SigningKey,
}

/// A started service: its addresses, and the task serving it until shutdown.
pub struct Started {
    pub addresses: Vec<std::net::SocketAddr>,
    /// The Redis instance id, when on Redis.
    pub instance: Option<String>,
}

/// Binds and serves `config` until `shutdown` resolves; `on_listening` hears the addresses
/// once bound (before any call is served, so a caller may connect at once).
pub async fn serve(
    config: SignalConfig,
    shutdown: impl Future<Output = ()>,
    on_listening: impl FnOnce(&Started),
) -> Result<(), StartError> {
    let listeners = tether_serve::bind(&config.bind_address).await?;
    let addresses: Vec<_> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    if config.keys.is_empty() && addresses.iter().any(|a| !a.ip().is_loopback()) {
        return Err(StartError::OpenOffLoopback(addresses));
    }
    let tls = match &config.tls {
        Some((cert, key)) => {
            Some(tether_serve::tls::server_config(cert, key).map_err(StartError::Tls)?)
        }
        None => None,
    };
    let (queue, instance): (Arc<dyn CallQueue>, _) = match &config.redis_url {
        Some(url) => {
            let q = crate::RedisQueue::connect(url, config.max_callers_per_host)
                .await
                .map_err(|source| StartError::Redis {
                    url: url.clone(),
                    source,
                })?;
            let id = q.instance().to_string();
            (q, Some(id))
        }
        None => (Arc::new(MemoryQueue::standalone()), None),
    };
    let auth = if config.keys.is_empty() {
        None
    } else {
        Some(Arc::new(
            Authenticator::new("tether-signal", &config.keys)
                .map_err(|_| StartError::SigningKey)?,
        ))
    };
    on_listening(&Started {
        addresses,
        instance,
    });
    run(listeners, queue, auth, config, tls, shutdown).await;
    Ok(())
}

async fn run(
    listeners: Vec<TcpListener>,
    queue: Arc<dyn CallQueue>,
    auth: Option<Arc<Authenticator>>,
    config: SignalConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let port = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .map_or(0, |a| a.port());
    let api = SignalingApi::fleet(
        queue,
        Arc::new(config.grants.clone()),
        config.ice.clone(),
        port,
    );
    let mut routes = tonic::service::Routes::builder();
    routes.add_service(
        SignalingServiceServer::new(api)
            .max_decoding_message_size(MAX_SIGNALING_MESSAGE)
            .max_encoding_message_size(MAX_SIGNALING_MESSAGE),
    );
    if let Some(auth) = &auth {
        routes.add_service(AuthServiceServer::new(AuthApi::new(auth.clone())));
    }
    // `GET /`: the readiness probe, as on a machine.
    let router = routes
        .routes()
        .into_axum_router()
        .route("/", axum::routing::get(|| async { "ready\n" }));
    let service = ServiceBuilder::new()
        .layer(
            MessageLimitLayer::new(MAX_MESSAGE_BYTES)
                .with_service_limit(SIGNALING_SERVICE, MAX_SIGNALING_MESSAGE),
        )
        .layer(DeadlineLayer)
        .option_layer(auth.map(|a| AuthLayer::new(a).with_open_paths(|path| path == "/")))
        .service(router);
    let web = tether_serve::web::WebLayer::new(config.allowed_origins.clone()).wrap(service);
    let options = ConnectionOptions {
        max_connections: config.max_connections,
        max_connections_per_address: config.max_connections_per_address,
        idle_timeout: config.idle_timeout,
        tls,
        ..ConnectionOptions::default()
    };
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let options =
        tether_serve::accept_all(listeners, web, options, Arc::new(NoHook), &stop, &tracker);
    tracker.close();
    shutdown.await;
    tracing::info!("shutting down: no new connections; finishing the open ones");
    stop.cancel();
    if tokio::time::timeout(options.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match SignalConfig::parse(text, "signal.json") {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_full_config_is_accepted() {
        let c = SignalConfig::parse(
            r#"{
              "bind_address": "127.0.0.1:0",
              "redis_url": "redis://127.0.0.1:6379/",
              "api_keys": [
                {"id": "rover", "key": "k1", "answer": ["rover.fleet.test"]},
                {"id": "operator", "key": "k2", "call": ["rover.fleet.test"]}
              ],
              "ice_servers": [{"urls": ["stun:198.51.100.1:3478"]}],
              "turn_rest": {"urls": ["turn:198.51.100.1:3478"], "secret": "s", "ttl": "1h"},
              "allowed_origins": ["http://localhost:5173"],
              "idle_timeout": "2m"
            }"#,
            "signal.json",
        )
        .unwrap();
        assert_eq!(c.keys.len(), 2);
        assert_eq!(
            c.ice.turn_rest.as_ref().unwrap().urls,
            ["turn:198.51.100.1:3478?transport=udp"]
        );
        assert_eq!(
            c.ice.turn_rest.as_ref().unwrap().ttl,
            Duration::from_secs(3600)
        );
        c.grants
            .check("operator", "rover.fleet.test", crate::fleet::Role::Call)
            .unwrap();
        let empty = SignalConfig::parse("{}", "x").unwrap();
        assert_eq!(empty.bind_address, DEFAULT_BIND_ADDRESS);
        assert!(empty.redis_url.is_none() && empty.keys.is_empty());
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (text, expect) in [
            (r#"{"bind":"x"}"#, "unknown field `bind`"),
            (r#"{"bind_address":"nonsense"}"#, "bind_address"),
            (
                r#"{"tls_cert_file":"c.pem"}"#,
                "tls_cert_file and tls_key_file",
            ),
            (r#"{"redis_url":"http://x"}"#, "redis_url"),
            (
                r#"{"api_keys":[{"id":"a","key":""}]}"#,
                "api_keys[0]: id and key",
            ),
            (r#"{"api_keys":[{"id":"a","key":"k"}]}"#, "grants nothing"),
            (
                r#"{"api_keys":[{"id":"a","key":"k","call":["x"]},{"id":"a","key":"j","call":["x"]}]}"#,
                "api_keys[1]: key id \"a\" appears twice",
            ),
            (
                r#"{"api_keys":[{"id":"a","key":"k","answer":["two words"]}]}"#,
                "api_keys[0].answer[0]",
            ),
            (
                r#"{"api_keys":[{"id":"a","key":"k","calls":["x"]}]}"#,
                "unknown field `calls`",
            ),
            (
                r#"{"ice_servers":[{"urls":["http://x"]}]}"#,
                "ice_servers[0]",
            ),
            (
                r#"{"ice_servers":[{"urls":["turn:x"]}]}"#,
                "needs a username",
            ),
            (
                r#"{"turn_rest":{"urls":["turn:x:3478"],"secret":""}}"#,
                "turn_rest.secret",
            ),
            (
                r#"{"turn_rest":{"urls":["stun:x"],"secret":"s"}}"#,
                "turn_rest.urls",
            ),
            (
                r#"{"turn_rest":{"urls":["turn:x:1"],"secret":"s","ttl":"5s"}}"#,
                "turn_rest.ttl",
            ),
            (r#"{"allowed_origins":["localhost"]}"#, "allowed_origins[0]"),
            (r#"{"max_connections":0}"#, "max_connections"),
            (
                r#"{"max_connections":10,"max_connections_per_address":11}"#,
                "max_connections_per_address",
            ),
            (r#"{"idle_timeout":"5s"}"#, "idle_timeout"),
            (r#"{"idle_timeout":"soon"}"#, "idle_timeout"),
            (r#"{"max_callers_per_host":0}"#, "max_callers_per_host"),
        ] {
            let e = err(text);
            assert!(e.contains(expect), "{text}: {e}");
            assert!(e.starts_with("signal.json: "), "{e}");
        }
    }
}
