//! Machine configuration: a JSON file in viam-server's shape.
//!
//! Loading is all-or-nothing: the file is parsed, every component's API, model and attributes
//! are checked, and only a fully valid [`Config`] comes out — the server never starts
//! half-configured. Errors say where (`components[2] "left"`), what (`attributes: unknown field
//! `maxrpm``) and what was expected. Unknown keys are errors, not silently ignored; sections
//! viam-server has but this build does not run (services, modules, remotes, ...) are accepted
//! only when empty, and auth settings this build cannot honour are refused rather than ignored,
//! so a machine meant to be locked is never served open.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::apis::{Dependency, Model, Registration};
use crate::resource::{ApiName, ResourceKind};

/// The default listen address, as viam-server's.
pub const DEFAULT_BIND_ADDRESS: &str = "localhost:8080";
/// The default session heartbeat window.
pub const DEFAULT_HEARTBEAT_WINDOW: Duration = Duration::from_secs(2);
/// The shortest heartbeat window accepted.
pub const MIN_HEARTBEAT_WINDOW: Duration = Duration::from_millis(30);
/// The longest heartbeat window accepted.
pub const MAX_HEARTBEAT_WINDOW: Duration = Duration::from_secs(60);
/// The default per-actuator deadline for a Stop after a session expires.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on WebRTC peer connections at once.
pub const DEFAULT_MAX_WEBRTC_PEERS: usize = 128;
/// The connection defaults are the serving crate's: the signaling service shares them.
pub use tether_serve::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, default_per_address};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The content is invalid; the message says where and why.
    #[error("invalid config {source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
}

/// A validated machine configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The components, in file order.
    pub components: Vec<ResourceConfig>,
    /// The services, in file order.
    pub services: Vec<ResourceConfig>,
    /// Network settings.
    pub network: NetworkConfig,
    /// The config's revision, if it names one.
    pub revision: String,
    /// Authentication; `None` serves an open machine.
    pub auth: Option<AuthConfig>,
    /// A fleet's signaling service the machine also answers through (`cloud`).
    pub cloud: Option<CloudConfig>,
}

/// The `cloud` section, in viam-server's names, limited to what a machine needs to answer
/// calls through a standalone signaling service. Nothing here makes the machine cloud-managed:
/// its config stays this file.
#[derive(Clone)]
pub struct CloudConfig {
    /// The signaling service's `host:port`.
    pub signaling_address: String,
    /// Plaintext (h2c) to the signaling service instead of TLS.
    pub signaling_insecure: bool,
    /// The name callers reach the machine by through the service (its `rpc-host`).
    pub fqdn: String,
    /// The machine's name on its LAN, which its own signaling also answers to.
    pub local_fqdn: Option<String>,
    /// The API key (id, key) the machine authenticates to the service with.
    pub api_key: Option<(String, String)>,
}

impl std::fmt::Debug for CloudConfig {
    /// The key id, never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudConfig")
            .field("signaling_address", &self.signaling_address)
            .field("signaling_insecure", &self.signaling_insecure)
            .field("fqdn", &self.fqdn)
            .field("local_fqdn", &self.local_fqdn)
            .field("api_key_id", &self.api_key.as_ref().map(|(id, _)| id))
            .finish()
    }
}

/// The `cloud` members Tether takes.
const CLOUD_FIELDS: &[&str] = &[
    "signaling_address",
    "signaling_insecure",
    "fqdn",
    "local_fqdn",
    "api_key",
];

/// Validates the `cloud` section.
fn validate_cloud(value: Value) -> Result<CloudConfig, String> {
    let Value::Object(map) = value else {
        return Err("cloud: must be an object".into());
    };
    for key in map.keys() {
        if !CLOUD_FIELDS.contains(&key.as_str()) {
            return Err(format!(
                "cloud.{key}: cloud-managed machines are not supported (Tether does not fetch \
                 its config from an app); the cloud section takes only {}, to answer calls \
                 through a fleet's signaling service",
                CLOUD_FIELDS.join(", ")
            ));
        }
    }
    let text = |name: &str| -> Result<Option<String>, String> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(format!("cloud.{name}: must be a non-empty string")),
        }
    };
    let signaling_address = text("signaling_address")?.ok_or(
        "cloud.signaling_address: required (host:port of the signaling service to answer \
         through)",
    )?;
    split_host_port(&signaling_address).map_err(|e| format!("cloud.signaling_address: {e}"))?;
    let signaling_insecure = match map.get("signaling_insecure") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("cloud.signaling_insecure: must be true or false".into()),
    };
    let fqdn =
        text("fqdn")?.ok_or("cloud.fqdn: required (the name callers reach this machine by)")?;
    let local_fqdn = text("local_fqdn")?;
    for (name, v) in [("fqdn", Some(&fqdn)), ("local_fqdn", local_fqdn.as_ref())] {
        if let Some(v) = v
            && !tether_rpc::address::is_host_name(v)
        {
            return Err(format!("cloud.{name}: {v:?} is not a host name"));
        }
    }
    let api_key = match map.get("api_key") {
        None | Some(Value::Null) => None,
        Some(Value::Object(k)) => {
            if let Some(extra) = k.keys().find(|n| *n != "id" && *n != "key") {
                return Err(format!(
                    "cloud.api_key.{extra}: unknown field (expected id, key)"
                ));
            }
            match (k.get("id"), k.get("key")) {
                (Some(Value::String(id)), Some(Value::String(key)))
                    if !id.is_empty() && !key.is_empty() =>
                {
                    Some((id.clone(), key.clone()))
                }
                _ => {
                    return Err("cloud.api_key: needs a non-empty \"id\" and \"key\"".into());
                }
            }
        }
        Some(_) => return Err("cloud.api_key: must be {\"id\": ..., \"key\": ...}".into()),
    };
    Ok(CloudConfig {
        signaling_address,
        signaling_insecure,
        fqdn,
        local_fqdn,
        api_key,
    })
}

impl Config {
    /// Every configured resource: the components, then the services.
    pub fn resources(&self) -> impl Iterator<Item = &ResourceConfig> {
        self.components.iter().chain(&self.services)
    }
}

/// Validated authentication settings.
#[derive(Clone)]
pub struct AuthConfig {
    /// API keys, id → key.
    pub api_keys: HashMap<String, String>,
}

impl std::fmt::Debug for AuthConfig {
    /// Key ids only: keys never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("api_key_ids", &self.api_keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One validated component or service.
#[derive(Debug, Clone)]
pub struct ResourceConfig {
    /// Its short name.
    pub name: String,
    /// Its API.
    pub api: ApiName,
    /// Its model.
    pub model: &'static Model,
    /// Its attributes, checked by the model.
    pub attributes: Value,
    /// The resources it needs built first (the model's, and `depends_on`).
    pub dependencies: Vec<Dependency>,
}

/// Validated network settings.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Where to listen, `host:port` (`:port` means every interface).
    pub bind_address: String,
    /// Serve plaintext even if certificates are configured.
    pub no_tls: bool,
    /// Session heartbeat window, in [30 ms, 1 min].
    pub heartbeat_window: Duration,
    /// Most connections served at once; more are refused with an explicit error (after the
    /// longest-idle connection, if one has been idle a while, is closed to make room).
    pub max_connections: usize,
    /// Most connections from one address (IPv4, or an IPv6 /64) at once; by default a quarter
    /// of `max_connections`, so no single host can take every slot.
    pub max_connections_per_address: usize,
    /// Most concurrent sessions; more are refused with RESOURCE_EXHAUSTED.
    pub max_sessions: usize,
    /// Deadline of each Stop started by a session's expiry.
    pub stop_timeout: Duration,
    /// Direct clients may also heartbeat over UDP at the port number (Tether's own addition;
    /// `network.sessions.disable_heartbeat_datagrams` turns it off).
    pub heartbeat_datagrams: bool,
    /// A connection that commanded a resource without a session stops it when it ends
    /// (`network.sessions.stop_on_disconnect`, default true; [`crate::commanders`]).
    pub stop_on_disconnect: bool,
    /// Certificate and key files (PEM), when configured.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// A connection with no call in flight for this long is closed.
    pub idle_timeout: Duration,
    /// The machine's name, used as the access tokens' audience.
    pub fqdn: Option<String>,
    /// STUN/TURN servers the machine's WebRTC answerer gathers candidates with (none by
    /// default: on a LAN, host candidates suffice).
    pub ice_servers: Vec<tether_rtc::IceServer>,
    /// Serve no WebRTC (no signaling service, no answerer).
    pub disable_webrtc: bool,
    /// Most WebRTC peer connections at once; more calls are refused with RESOURCE_EXHAUSTED.
    pub max_webrtc_peers: usize,
    /// Which web pages' origins may call from a browser (`network.cors.allowed_origins`).
    pub allowed_origins: crate::web::AllowedOrigins,
}

impl NetworkConfig {
    /// The certificate and key to serve with: none when plaintext was asked for.
    pub fn tls(&self) -> Option<&(PathBuf, PathBuf)> {
        self.tls_files.as_ref().filter(|_| !self.no_tls)
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            bind_address: DEFAULT_BIND_ADDRESS.into(),
            no_tls: false,
            heartbeat_window: DEFAULT_HEARTBEAT_WINDOW,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: default_per_address(DEFAULT_MAX_CONNECTIONS),
            max_sessions: tether_session::DEFAULT_MAX_SESSIONS,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            heartbeat_datagrams: true,
            stop_on_disconnect: true,
            tls_files: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            fqdn: None,
            ice_servers: Vec::new(),
            disable_webrtc: false,
            max_webrtc_peers: DEFAULT_MAX_WEBRTC_PEERS,
            allowed_origins: crate::web::AllowedOrigins::Any,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    components: Vec<RawComponent>,
    #[serde(default)]
    services: Vec<Value>,
    #[serde(default)]
    modules: Vec<Value>,
    #[serde(default)]
    remotes: Vec<Value>,
    #[serde(default)]
    processes: Vec<Value>,
    #[serde(default)]
    packages: Vec<Value>,
    #[serde(default)]
    jobs: Vec<Value>,
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    cloud: Option<Value>,
    #[serde(default)]
    debug: bool,
    #[serde(default)]
    disable_partial_start: bool,
    #[serde(default)]
    revision: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    name: String,
    #[serde(default)]
    api: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    model: String,
    #[serde(default)]
    attributes: Option<Value>,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    frame: Option<Value>,
    #[serde(default)]
    service_configs: Option<Value>,
    #[serde(default)]
    log_configuration: Option<Value>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    #[serde(default)]
    bind_address: Option<String>,
    #[serde(default)]
    no_tls: bool,
    #[serde(default)]
    tls_cert_file: Option<String>,
    #[serde(default)]
    tls_key_file: Option<String>,
    #[serde(default)]
    fqdn: Option<String>,
    #[serde(default)]
    sessions: RawSessions,
    #[serde(default)]
    max_connections: Option<usize>,
    #[serde(default)]
    max_connections_per_address: Option<usize>,
    #[serde(default)]
    idle_timeout: Option<String>,
    #[serde(default)]
    ice_servers: Vec<RawIceServer>,
    #[serde(default)]
    disable_webrtc: bool,
    #[serde(default)]
    max_webrtc_peers: Option<usize>,
    #[serde(default)]
    cors: RawCors,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCors {
    /// `["*"]` or absent: any origin.
    #[serde(default)]
    allowed_origins: Option<Vec<String>>,
}

impl RawCors {
    fn validate(self) -> Result<crate::web::AllowedOrigins, String> {
        let Some(list) = self.allowed_origins else {
            return Ok(crate::web::AllowedOrigins::Any);
        };
        if list.iter().any(|o| o == "*") {
            return Ok(crate::web::AllowedOrigins::Any);
        }
        for (i, origin) in list.iter().enumerate() {
            if !crate::web::AllowedOrigins::is_origin(origin) {
                return Err(format!(
                    "network.cors.allowed_origins[{i}]: {origin:?} is not an origin \
                     (scheme://host[:port], as a browser sends it, or \"*\")"
                ));
            }
        }
        Ok(crate::web::AllowedOrigins::List(list))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIceServer {
    urls: OneOrMany,
    #[serde(default)]
    username: String,
    #[serde(default)]
    credential: String,
}

/// `"url"` or `["url", ...]`, as WebRTC configurations write `urls`.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl RawIceServer {
    fn validate(self, index: usize) -> Result<tether_rtc::IceServer, String> {
        let urls = match self.urls {
            OneOrMany::One(u) => vec![u],
            OneOrMany::Many(u) => u,
        };
        tether_rtc::IceServer {
            urls,
            username: self.username,
            credential: self.credential,
        }
        .checked(&format!("network.ice_servers[{index}]"))
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSessions {
    #[serde(default)]
    heartbeat_window: Option<String>,
    #[serde(default)]
    max_sessions: Option<usize>,
    #[serde(default)]
    stop_timeout: Option<String>,
    #[serde(default)]
    disable_heartbeat_datagrams: bool,
    #[serde(default)]
    stop_on_disconnect: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHandler {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    config: Value,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    handlers: Vec<RawHandler>,
    #[serde(default)]
    tls_auth_entities: Vec<String>,
    #[serde(default)]
    external_auth_config: Option<Value>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Validates config text; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            source_name: source_name.to_string(),
            message,
        };
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        raw.validate().map_err(invalid)
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, String> {
        if !self.services.is_empty() && crate::apis::subtypes(ResourceKind::Service).is_empty() {
            return Err(format!(
                "services: this build of Tether does not run services ({} configured); \
                 remove them or leave the list empty",
                self.services.len()
            ));
        }
        for (section, items) in [
            ("modules", &self.modules),
            ("remotes", &self.remotes),
            ("processes", &self.processes),
            ("packages", &self.packages),
            ("jobs", &self.jobs),
        ] {
            if !items.is_empty() {
                return Err(format!(
                    "{section}: this build of Tether does not run {section} ({} configured); \
                     remove them or leave the list empty",
                    items.len()
                ));
            }
        }
        let cloud = self.cloud.map(validate_cloud).transpose()?;
        let _ = (self.debug, self.disable_partial_start);
        let auth = self.auth.validate()?;
        let network = self.network.validate()?;
        if cloud.is_some() && network.disable_webrtc {
            return Err(
                "cloud: answering through a signaling service is WebRTC; remove \
                        network.disable_webrtc or the cloud section"
                    .into(),
            );
        }
        let mut components = Vec::with_capacity(self.components.len());
        for (i, c) in self.components.into_iter().enumerate() {
            let at = format!("components[{i}] {:?}", c.name);
            components.push(
                c.validate(ResourceKind::Component)
                    .map_err(|e| format!("{at}: {e}"))?,
            );
        }
        let mut services = Vec::with_capacity(self.services.len());
        for (i, c) in self.services.into_iter().enumerate() {
            let c = RawComponent::deserialize(c).map_err(|e| format!("services[{i}]: {e}"))?;
            let at = format!("services[{i}] {:?}", c.name);
            services.push(
                c.validate(ResourceKind::Service)
                    .map_err(|e| format!("{at}: {e}"))?,
            );
        }
        check_names_and_dependencies(&components, &services)?;
        Ok(Config {
            components,
            services,
            network,
            revision: self.revision,
            auth,
            cloud,
        })
    }
}

/// Every resource name is unique among its kind (viam-server's rule: a component and a service
/// may share a name), every dependency exists with the model it must have, and the
/// dependencies form no cycle.
fn check_names_and_dependencies(
    components: &[ResourceConfig],
    services: &[ResourceConfig],
) -> Result<(), String> {
    let mut by_name: HashMap<(ApiName, &str), &ResourceConfig> = HashMap::new();
    for (section, list) in [("components", components), ("services", services)] {
        let mut seen = HashSet::new();
        for (i, c) in list.iter().enumerate() {
            if !seen.insert(c.name.as_str()) {
                return Err(format!(
                    "{section}[{i}] {:?}: duplicate name {:?}; every resource needs a unique name",
                    c.name, c.name
                ));
            }
            by_name.insert((c.api, c.name.as_str()), c);
        }
    }
    for c in components.iter().chain(services) {
        for d in &c.dependencies {
            let Some(dep) = by_name.get(&(d.name.api, d.name.name.as_str())) else {
                return Err(format!(
                    "{} {:?}: needs {}, which is not configured",
                    c.api, c.name, d.name
                ));
            };
            if let Some(model) = d.model
                && dep.model.name != model
            {
                return Err(format!(
                    "{} {:?}: needs {} to be of model {model:?}, but it is {:?}",
                    c.api, c.name, d.name, dep.model.name
                ));
            }
        }
    }
    // A depth-first walk finds cycles.
    fn visit<'a>(
        node: &'a ResourceConfig,
        by_name: &HashMap<(ApiName, &str), &'a ResourceConfig>,
        state: &mut HashMap<(ApiName, &'a str), bool>,
    ) -> Result<(), String> {
        let key = (node.api, node.name.as_str());
        match state.get(&key) {
            Some(true) => return Ok(()),
            Some(false) => {
                return Err(format!(
                    "{} {:?}: its dependencies form a cycle",
                    node.api, node.name
                ));
            }
            None => {}
        }
        state.insert(key, false);
        for d in &node.dependencies {
            if let Some(dep) = by_name.get(&(d.name.api, d.name.name.as_str())) {
                visit(dep, by_name, state)?;
            }
        }
        state.insert(key, true);
        Ok(())
    }
    let mut state = HashMap::new();
    for c in components.iter().chain(services) {
        visit(c, &by_name, &mut state)?;
    }
    Ok(())
}

impl RawNetwork {
    fn validate(self) -> Result<NetworkConfig, String> {
        let mut net = NetworkConfig::default();
        if let Some(bind) = self.bind_address {
            split_host_port(&bind).map_err(|e| format!("network.bind_address: {e}"))?;
            net.bind_address = bind;
        }
        net.no_tls = self.no_tls;
        match (self.tls_cert_file, self.tls_key_file) {
            (None, None) => {}
            (Some(cert), Some(key)) => net.tls_files = Some((cert.into(), key.into())),
            _ => {
                return Err(
                    "network: tls_cert_file and tls_key_file must be given together".into(),
                );
            }
        }
        net.fqdn = self.fqdn.filter(|f| !f.is_empty());
        if let Some(idle) = self.idle_timeout {
            let d = parse_go_duration(&idle).map_err(|e| format!("network.idle_timeout: {e}"))?;
            if d.is_zero() {
                return Err("network.idle_timeout must be positive".into());
            }
            net.idle_timeout = d;
        }
        if let Some(window) = self.sessions.heartbeat_window {
            let d = parse_go_duration(&window)
                .map_err(|e| format!("network.sessions.heartbeat_window: {e}"))?;
            if !(MIN_HEARTBEAT_WINDOW..=MAX_HEARTBEAT_WINDOW).contains(&d) {
                return Err(format!(
                    "network.sessions.heartbeat_window: heartbeat_window must be between \
                     [30ms, 1m], got {window:?}"
                ));
            }
            net.heartbeat_window = d;
        }
        if let Some(max) = self.sessions.max_sessions {
            if max == 0 {
                return Err("network.sessions.max_sessions must be at least 1".into());
            }
            net.max_sessions = max;
        }
        net.heartbeat_datagrams = !self.sessions.disable_heartbeat_datagrams;
        net.stop_on_disconnect = self.sessions.stop_on_disconnect.unwrap_or(true);
        if let Some(timeout) = self.sessions.stop_timeout {
            let d = parse_go_duration(&timeout)
                .map_err(|e| format!("network.sessions.stop_timeout: {e}"))?;
            if d.is_zero() {
                return Err("network.sessions.stop_timeout must be positive".into());
            }
            net.stop_timeout = d;
        }
        if let Some(max) = self.max_connections {
            if max == 0 {
                return Err("network.max_connections must be at least 1".into());
            }
            net.max_connections = max;
        }
        net.max_connections_per_address = match self.max_connections_per_address {
            Some(0) => {
                return Err("network.max_connections_per_address must be at least 1".into());
            }
            Some(n) => n.min(net.max_connections),
            None => default_per_address(net.max_connections),
        };
        net.ice_servers = self
            .ice_servers
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.validate(i))
            .collect::<Result<_, _>>()?;
        net.disable_webrtc = self.disable_webrtc;
        if let Some(max) = self.max_webrtc_peers {
            if max == 0 {
                return Err("network.max_webrtc_peers must be at least 1".into());
            }
            net.max_webrtc_peers = max;
        }
        net.allowed_origins = self.cors.validate()?;
        Ok(net)
    }
}

impl RawAuth {
    fn validate(self) -> Result<Option<AuthConfig>, String> {
        if !self.tls_auth_entities.is_empty() {
            return Err(
                "auth.tls_auth_entities: client-certificate authentication is not \
                        supported; use API keys"
                    .into(),
            );
        }
        if self.external_auth_config.is_some() {
            return Err(
                "auth.external_auth_config: external token issuers are not supported; \
                        use API keys"
                    .into(),
            );
        }
        if self.handlers.is_empty() {
            return Ok(None);
        }
        let mut api_keys = HashMap::new();
        for (i, h) in self.handlers.into_iter().enumerate() {
            let at = format!("auth.handlers[{i}]");
            if h.kind != "api-key" {
                return Err(format!(
                    "{at}: credential type {:?} is not supported; this build supports \"api-key\"",
                    h.kind
                ));
            }
            let Value::Object(entries) = h.config else {
                return Err(format!(
                    "{at}.config must be an object of \"<key id>\": \"<key>\" entries"
                ));
            };
            for (id, key) in entries {
                // viam-server ignores these legacy entries; so do we.
                if id == "key" || id == "keys" {
                    continue;
                }
                let Value::String(key) = key else {
                    return Err(format!("{at}.config[{id:?}]: the key must be a string"));
                };
                if id.is_empty() || key.is_empty() {
                    return Err(format!("{at}.config: key ids and keys must not be empty"));
                }
                if api_keys.insert(id.clone(), key).is_some() {
                    return Err(format!("{at}.config: key id {id:?} appears twice"));
                }
            }
        }
        if api_keys.is_empty() {
            return Err("auth.handlers: an api-key handler needs at least one \
                        \"<key id>\": \"<key>\" entry"
                .into());
        }
        Ok(Some(AuthConfig { api_keys }))
    }
}

impl RawComponent {
    fn validate(self, kind: ResourceKind) -> Result<ResourceConfig, String> {
        if !valid_name(&self.name) {
            return Err(format!(
                "name {:?} is invalid: use letters, digits, '-' and '_', starting with a letter \
                 or digit",
                self.name
            ));
        }
        let registration = self.registration(kind)?;
        let api = registration.api;
        let mut dependencies = Vec::new();
        for dep in &self.depends_on {
            if dep.is_empty() {
                return Err("depends_on: empty resource name".into());
            }
        }
        let _ = (&self.frame, &self.service_configs, &self.log_configuration);
        let short = self
            .model
            .strip_prefix("rdk:builtin:")
            .unwrap_or(&self.model);
        let Some(model) = registration.models.iter().find(|m| m.name == short) else {
            let names: Vec<String> = registration
                .models
                .iter()
                .map(|m| format!("{:?} (also written \"rdk:builtin:{}\")", m.name, m.name))
                .collect();
            return Err(format!(
                "unknown model {:?} for {api}; this build provides {}",
                self.model,
                names.join(", ")
            ));
        };
        let attributes = match self.attributes {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(v @ Value::Object(_)) => v,
            Some(other) => {
                return Err(format!(
                    "attributes must be a JSON object, got {}",
                    json_kind(&other)
                ));
            }
        };
        dependencies.extend((model.check)(&attributes).map_err(|e| format!("attributes: {e}"))?);
        Ok(ResourceConfig {
            name: self.name,
            api,
            model,
            attributes,
            dependencies,
        })
    }

    /// The registered API this entry names, by `api` or by `type` (and `namespace`).
    fn registration(&self, kind: ResourceKind) -> Result<&'static Registration, String> {
        let what = kind.as_str();
        let supported = || crate::apis::subtypes(kind);
        let unsupported = |named: String| match kind {
            ResourceKind::Component => format!(
                "{named}: unsupported component API; supported: {}",
                supported()
            ),
            ResourceKind::Service => format!(
                "{named}: this build does not run services of that API; supported: {}",
                match supported().as_str() {
                    "" => "none".to_string(),
                    s => s.to_string(),
                }
            ),
        };
        let from_api = match &self.api {
            Some(api) => {
                let parts: Vec<&str> = api.split(':').collect();
                let [namespace, k, subtype] = parts[..] else {
                    return Err(format!(
                        "api {api:?} is not of the form \"namespace:{what}:subtype\" \
                         (e.g. \"rdk:component:motor\")"
                    ));
                };
                if namespace != "rdk" || k != what {
                    return Err(format!(
                        "api {api:?} is not supported; this build serves rdk:{what} APIs here"
                    ));
                }
                Some(
                    crate::apis::find(namespace, k, subtype)
                        .ok_or_else(|| unsupported(format!("api {api:?}")))?,
                )
            }
            None => None,
        };
        let from_type = match &self.kind {
            Some(t) => {
                if let Some(ns) = &self.namespace
                    && ns != "rdk"
                {
                    return Err(format!("namespace {ns:?} is not supported; use \"rdk\""));
                }
                Some(crate::apis::find("rdk", what, t).ok_or_else(|| {
                    unsupported(format!("type {t:?}")).replacen(" API;", " type;", 1)
                })?)
            }
            None => None,
        };
        match (from_api, from_type) {
            (Some(a), Some(t)) if a.api != t.api => Err(format!(
                "api {} and type {:?} disagree; give one of them",
                a.api, t.api.subtype
            )),
            (Some(a), _) => Ok(a),
            (None, Some(t)) => Ok(t),
            (None, None) => Err(format!(
                "missing \"api\" (e.g. \"rdk:{what}:{}\") or \"type\"",
                if kind == ResourceKind::Component {
                    "motor"
                } else {
                    "motion"
                }
            )),
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Resource names: a letter or digit, then letters, digits, `-` and `_`, at most 200 bytes.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.len() <= 200
}

pub use tether_rpc::address::split_host_port;

pub use tether_rpc::duration::{DurationError, parse_go_duration};

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "test.json").unwrap_err().to_string()
    }

    #[test]
    fn a_cloud_section_names_a_signaling_service_and_nothing_cloud_managed() {
        let c = Config::parse(
            r#"{"cloud": {"signaling_address": "signal.fleet.test:8089",
                          "signaling_insecure": true, "fqdn": "rover.fleet.test",
                          "local_fqdn": "rover.local",
                          "api_key": {"id": "rover-key", "key": "k"}}}"#,
            "test.json",
        )
        .unwrap()
        .cloud
        .unwrap();
        assert_eq!(c.signaling_address, "signal.fleet.test:8089");
        assert!(c.signaling_insecure);
        assert_eq!(c.local_fqdn.as_deref(), Some("rover.local"));
        assert_eq!(c.api_key, Some(("rover-key".into(), "k".into())));
        assert!(
            !format!("{c:?}").contains("\"k\""),
            "the key stays out of logs"
        );
        for (text, expect) in [
            (
                r#"{"cloud": {"id": "x", "secret": "y"}}"#,
                "cloud.id: cloud-managed machines are not supported",
            ),
            (
                r#"{"cloud": {"app_address": "https://app.viam.com"}}"#,
                "cloud.app_address",
            ),
            (
                r#"{"cloud": {"fqdn": "r"}}"#,
                "cloud.signaling_address: required",
            ),
            (
                r#"{"cloud": {"signaling_address": "nonsense"}}"#,
                "cloud.signaling_address",
            ),
            (
                r#"{"cloud": {"signaling_address": "s:1"}}"#,
                "cloud.fqdn: required",
            ),
            (
                r#"{"cloud": {"signaling_address": "s:1", "fqdn": "r", "signaling_insecure": "yes"}}"#,
                "cloud.signaling_insecure",
            ),
            (
                r#"{"cloud": {"signaling_address": "s:1", "fqdn": "r", "api_key": {"id": "a"}}}"#,
                "cloud.api_key: needs",
            ),
            (
                r#"{"cloud": {"signaling_address": "s:1", "fqdn": "r", "api_key": {"id": "a", "key": "k", "x": 1}}}"#,
                "cloud.api_key.x",
            ),
            (
                r#"{"cloud": {"signaling_address": "s:1", "fqdn": "two words"}}"#,
                "cloud.fqdn",
            ),
            (
                r#"{"cloud": {"signaling_address": "s:1", "fqdn": "r"}, "network": {"disable_webrtc": true}}"#,
                "network.disable_webrtc",
            ),
        ] {
            let e = err(text);
            assert!(e.contains(expect), "{text}: {e}");
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(
            parse_go_duration("30ms").unwrap(),
            Duration::from_millis(30)
        );
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            parse_go_duration("250us").unwrap(),
            Duration::from_micros(250)
        );
        for bad in ["", "2", "s", "2 s", "2x", "-1s", "1..2s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn both_api_forms_and_full_model_name() {
        let c = Config::parse(
            r#"{"components": [
                {"name": "a", "api": "rdk:component:motor", "model": "fake"},
                {"name": "b", "type": "motor", "namespace": "rdk", "model": "rdk:builtin:fake",
                 "attributes": {"max_rpm": 50, "encoder": "e", "pins": {"pwm": "1"}}}
            ]}"#,
            "t",
        )
        .unwrap();
        assert_eq!(c.components.len(), 2);
        assert!(
            c.components
                .iter()
                .all(|c| c.api == crate::apis::motor::API)
        );
        assert_eq!(c.network.bind_address, DEFAULT_BIND_ADDRESS);
        assert_eq!(c.network.heartbeat_window, DEFAULT_HEARTBEAT_WINDOW);
    }

    #[test]
    fn precise_errors() {
        let e = err(r#"{"components": [], "colour": 1}"#);
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = err(
            r#"{"components": [{"name": "m", "type": "motor", "model": "fake"},
                                        {"name": "m", "type": "base", "model": "fake"}]}"#,
        );
        assert!(e.contains(r#"components[1] "m": duplicate name"#), "{e}");
        let e = err(r#"{"components": [{"name": "m", "type": "motor", "model": "gpio"}]}"#);
        assert!(
            e.contains(r#"unknown model "gpio" for rdk:component:motor"#),
            "{e}"
        );
        let e = err(
            r#"{"components": [{"name": "m", "type": "motor", "model": "fake",
                                         "attributes": {"maxrpm": 5}}]}"#,
        );
        assert!(
            e.contains(r#"components[0] "m": attributes: unknown field `maxrpm`"#),
            "{e}"
        );
        let e = err(
            r#"{"components": [{"name": "m", "type": "motor", "model": "fake",
                                         "attributes": {"max_rpm": -5}}]}"#,
        );
        assert!(e.contains("max_rpm must be a positive number"), "{e}");
        let e = err(
            r#"{"components": [{"name": "m", "api": "rdk:component:board", "model": "fake"}]}"#,
        );
        assert!(e.contains("unsupported component API"), "{e}");
        let e = err(
            r#"{"components": [{"name": "m", "api": "rdk:component:motor", "type": "base", "model": "fake"}]}"#,
        );
        assert!(e.contains("disagree"), "{e}");
        let e = err(r#"{"components": [{"name": "bad name", "type": "motor", "model": "fake"}]}"#);
        assert!(e.contains("is invalid"), "{e}");
        let e = err(r#"{"components": [{"name": "m", "model": "fake"}]}"#);
        assert!(e.contains("missing \"api\""), "{e}");
        let e = err(r#"{"services": [{"name": "x"}]}"#);
        assert!(e.contains("does not run services"), "{e}");
        let e = err(r#"{"auth": {"handlers": [{"type": "api-key", "config": {}}]}}"#);
        assert!(e.contains("at least one"), "{e}");
        let e = err(r#"{"auth": {"handlers": [{"type": "robot-location-secret", "config": {}}]}}"#);
        assert!(
            e.contains(r#"auth.handlers[0]: credential type "robot-location-secret""#),
            "{e}"
        );
        let e = err(r#"{"auth": {"handlers": [{"type": "api-key", "config": {"id": 5}}]}}"#);
        assert!(e.contains("must be a string"), "{e}");
        let ok = Config::parse(
            r#"{"auth": {"handlers": [{"type": "api-key", "config": {"id1": "k1", "id2": "k2", "key": "legacy"}}]}}"#,
            "t",
        )
        .unwrap();
        assert_eq!(ok.auth.unwrap().api_keys.len(), 2);
        let e = err(r#"{"components": [ {"name": "m", "type": "motor", "model": "fake"} "#);
        assert!(e.contains("EOF"), "{e}");
    }

    #[test]
    fn heartbeat_window_bounds_are_inclusive() {
        let with = |w: &str| {
            Config::parse(
                &format!(r#"{{"network": {{"sessions": {{"heartbeat_window": "{w}"}}}}}}"#),
                "t",
            )
        };
        assert_eq!(
            with("30ms").unwrap().network.heartbeat_window,
            MIN_HEARTBEAT_WINDOW
        );
        assert_eq!(
            with("1m").unwrap().network.heartbeat_window,
            MAX_HEARTBEAT_WINDOW
        );
        for bad in ["29ms", "61s", "0s"] {
            let e = with(bad).unwrap_err().to_string();
            assert!(
                e.contains("heartbeat_window must be between [30ms, 1m]"),
                "{e}"
            );
        }
        assert!(
            with("soon")
                .unwrap_err()
                .to_string()
                .contains("not a duration")
        );
    }

    #[test]
    fn tls_and_bind_address() {
        let tls = r#"{"network": {"tls_cert_file": "c.pem", "tls_key_file": "k.pem"}}"#;
        let mut c = Config::parse(tls, "t").unwrap();
        assert!(c.network.tls().is_some());
        c.network.no_tls = true;
        assert!(c.network.tls().is_none());
        assert!(err(r#"{"network": {"tls_cert_file": "c.pem"}}"#).contains("together"));
        assert_eq!(split_host_port(":8080").unwrap(), ("0.0.0.0".into(), 8080));
        assert_eq!(split_host_port("[::1]:9").unwrap(), ("::1".into(), 9));
        assert!(err(r#"{"network": {"bind_address": "localhost"}}"#).contains("bind_address"));
        assert!(err(r#"{"network": {"bind_address": "h:99999"}}"#).contains("port"));
    }

    #[test]
    fn webrtc_settings() {
        let c = Config::parse("{}", "t").unwrap();
        assert!(c.network.ice_servers.is_empty() && !c.network.disable_webrtc);
        let c = Config::parse(
            r#"{"network": {"ice_servers": [
                {"urls": "stun:stun.example:3478"},
                {"urls": ["turn:turn.example:3478?transport=udp", "turns:turn.example:5349"],
                 "username": "u", "credential": "p"}],
              "disable_webrtc": true, "max_webrtc_peers": 7}}"#,
            "t",
        )
        .unwrap();
        assert_eq!(c.network.ice_servers.len(), 2);
        assert_eq!(c.network.ice_servers[1].urls.len(), 2);
        assert_eq!(c.network.ice_servers[1].username, "u");
        assert!(c.network.disable_webrtc);
        assert_eq!(c.network.max_webrtc_peers, 7);
        let e = err(r#"{"network": {"ice_servers": [{"urls": "turn:t.example"}]}}"#);
        assert!(
            e.contains("ice_servers[0]") && e.contains("username and a credential"),
            "{e}"
        );
        let e = err(r#"{"network": {"ice_servers": [{"urls": "http://x"}]}}"#);
        assert!(e.contains("not a stun:"), "{e}");
        let e = err(r#"{"network": {"ice_servers": [{"urls": []}]}}"#);
        assert!(e.contains("urls is empty"), "{e}");
        let e = err(r#"{"network": {"ice_servers": [{"urls": "stun:"}]}}"#);
        assert!(e.contains("no host"), "{e}");
        assert!(err(r#"{"network": {"max_webrtc_peers": 0}}"#).contains("at least 1"));
    }

    #[test]
    fn cors_origins_are_any_by_default_or_a_checked_list() {
        use crate::web::AllowedOrigins;
        let c = Config::parse("{}", "t").unwrap();
        assert_eq!(c.network.allowed_origins, AllowedOrigins::Any);
        let c = Config::parse(r#"{"network": {"cors": {"allowed_origins": ["*"]}}}"#, "t").unwrap();
        assert_eq!(c.network.allowed_origins, AllowedOrigins::Any);
        let c = Config::parse(
            r#"{"network": {"cors": {"allowed_origins": ["https://app.example", "http://localhost:5173"]}}}"#,
            "t",
        )
        .unwrap();
        assert_eq!(
            c.network.allowed_origins,
            AllowedOrigins::List(vec![
                "https://app.example".into(),
                "http://localhost:5173".into()
            ])
        );
        for bad in [
            "app.example",
            "https://app.example/path",
            "https://",
            "ftp://x",
        ] {
            let e = err(&format!(
                r#"{{"network": {{"cors": {{"allowed_origins": ["{bad}"]}}}}}}"#
            ));
            assert!(
                e.contains("allowed_origins[0]") && e.contains("not an origin"),
                "{e}"
            );
        }
        assert!(err(r#"{"network": {"cors": {"origins": []}}}"#).contains("origins"));
    }
}
