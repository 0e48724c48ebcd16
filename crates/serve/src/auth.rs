//! Authentication: API keys, signed access tokens, the auth layer, and `AuthService`.
//!
//! A client proves it holds an API key once, with `proto.rpc.v1.AuthService/Authenticate`
//! (credential type `api-key`, entity = the key's id), and gets an access token: an EdDSA JWT
//! signed with a key generated when the process starts (claims as goutils mints them: `sub` =
//! key id, `aud`, `iss`, `iat`, `jti`, `rpc_creds_type`). Every other call, on every
//! transport, must carry `authorization: Bearer <token>`; the [`AuthLayer`] checks it before
//! anything else runs and puts the token's subject in the request as the [`Entity`] that owns
//! sessions. Restarting revokes every token (new signing key), and a token whose key id is no
//! longer configured is refused even before that.
//!
//! Verifying an Ed25519 signature costs tens of microseconds, more than a whole cheap call, so
//! verified tokens are remembered (bounded); a known token costs one hash-map lookup.
//!
//! Failed Authenticate attempts are rate-limited per peer address by a token bucket
//! ([`FailureLimiter`], time as an input): a client that mistypes a key a few times is never
//! slowed, one that keeps guessing gets `RESOURCE_EXHAUSTED` with a retry hint, and other
//! addresses are unaffected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use http::{Request, Response};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use tether_proto::proto::rpc::v1 as rpc;
use tonic::Status;

use tether_rpc::context::{Entity, PeerInfo};
use tether_rpc::sync::lock;

/// The one method callable without a token.
pub const AUTHENTICATE_PATH: &str = "/proto.rpc.v1.AuthService/Authenticate";
/// The credential type of API keys.
pub const API_KEY: &str = "api-key";
/// How many verified tokens are remembered.
const TOKEN_CACHE: usize = 4096;

/// Why a token was refused (the message after `unauthenticated: `).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("unsupported signing algorithm {0:?}")]
    Algorithm(String),
    #[error("token was signed by an unknown key")]
    UnknownSigningKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("invalid audience {0:?}")]
    Audience(Vec<String>),
    #[error("expected entity (sub) in claims")]
    NoSubject,
    #[error("credential type {0:?} is not accepted")]
    CredentialType(String),
    #[error("API key {0:?} is not configured")]
    UnknownKeyId(String),
}

/// The configured API keys (id → key), compared in constant time.
pub struct ApiKeys {
    digests: HashMap<String, ring::digest::Digest>,
}

fn sha256(bytes: &[u8]) -> ring::digest::Digest {
    ring::digest::digest(&ring::digest::SHA256, bytes)
}

/// Equal-length comparison whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ApiKeys {
    /// Keys from `id → key`.
    pub fn new(keys: &HashMap<String, String>) -> Self {
        Self {
            digests: keys
                .iter()
                .map(|(id, key)| (id.clone(), sha256(key.as_bytes())))
                .collect(),
        }
    }

    /// Whether `key` is the key of `id`. Keys are compared as SHA-256 digests in constant
    /// time, and an unknown id costs the same as a wrong key.
    pub fn check(&self, id: &str, key: &str) -> bool {
        let offered = sha256(key.as_bytes());
        match self.digests.get(id) {
            Some(expected) => constant_time_eq(expected.as_ref(), offered.as_ref()),
            None => {
                let _ = constant_time_eq(sha256(b"").as_ref(), offered.as_ref());
                false
            }
        }
    }

    /// Whether `id` is configured.
    pub fn contains(&self, id: &str) -> bool {
        self.digests.contains_key(id)
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    aud: Audience,
    #[serde(default)]
    iss: String,
    #[serde(default)]
    iat: u64,
    #[serde(default)]
    jti: String,
    #[serde(default)]
    rpc_creds_type: String,
}

/// `aud` may be a string or an array of strings.
#[derive(Serialize, Deserialize, Default)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
    #[default]
    None,
}

impl Audience {
    fn values(&self) -> Vec<String> {
        match self {
            Audience::One(a) => vec![a.clone()],
            Audience::Many(v) => v.clone(),
            Audience::None => vec![],
        }
    }
}

/// The process's token signing key could not be made (the system's random source failed).
#[derive(Debug, thiserror::Error)]
#[error("cannot generate the token signing key")]
pub struct SigningKeyError;

/// Issues and verifies access tokens.
pub struct TokenAuthority {
    key_pair: Ed25519KeyPair,
    kid: String,
    audience: String,
    keys: ApiKeys,
    verified: RwLock<HashMap<String, Arc<str>>>,
}

impl TokenAuthority {
    /// A new signing key for this process, for tokens with this audience, accepting these keys.
    pub fn new(audience: &str, keys: ApiKeys) -> Result<Self, SigningKeyError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| SigningKeyError)?;
        let key_pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| SigningKeyError)?;
        let kid = B64.encode(key_pair.public_key().as_ref());
        Ok(Self {
            key_pair,
            kid,
            audience: audience.to_string(),
            keys,
            verified: RwLock::new(HashMap::new()),
        })
    }

    /// The configured API keys.
    pub fn keys(&self) -> &ApiKeys {
        &self.keys
    }

    /// A signed token for `subject`, authenticated with `creds_type`.
    pub fn issue(&self, subject: &str, creds_type: &str) -> String {
        let header = Header {
            alg: "EdDSA".into(),
            typ: Some("JWT".into()),
            kid: Some(self.kid.clone()),
        };
        let claims = Claims {
            sub: subject.into(),
            aud: Audience::Many(vec![self.audience.clone()]),
            iss: self.audience.clone(),
            iat: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
            rpc_creds_type: creds_type.into(),
        };
        // Serializing these plain structs cannot fail.
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let claims = serde_json::to_vec(&claims).unwrap_or_default();
        let signing_input = format!("{}.{}", B64.encode(header), B64.encode(claims));
        let signature = self.key_pair.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(signature.as_ref()))
    }

    /// The subject of a valid token.
    pub fn verify(&self, token: &str) -> Result<Arc<str>, TokenError> {
        let known = self
            .verified
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned();
        if let Some(subject) = known {
            return Ok(subject);
        }
        let subject: Arc<str> = self.verify_uncached(token)?.into();
        let mut cache = self.verified.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= TOKEN_CACHE {
            cache.clear();
        }
        cache.insert(token.to_string(), subject.clone());
        Ok(subject)
    }

    fn verify_uncached(&self, token: &str) -> Result<String, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |s: &str| B64.decode(s).map_err(|_| TokenError::Malformed);
        let h: Header =
            serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
        if h.alg != "EdDSA" {
            return Err(TokenError::Algorithm(h.alg));
        }
        if h.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(TokenError::UnknownSigningKey);
        }
        let public = UnparsedPublicKey::new(&ED25519, self.key_pair.public_key().as_ref());
        let signing_input = &token[..header.len() + 1 + claims.len()];
        public
            .verify(signing_input.as_bytes(), &decode(signature)?)
            .map_err(|_| TokenError::BadSignature)?;
        let c: Claims =
            serde_json::from_slice(&decode(claims)?).map_err(|_| TokenError::Malformed)?;
        let audience = c.aud.values();
        if !audience.contains(&self.audience) {
            return Err(TokenError::Audience(audience));
        }
        if c.sub.is_empty() {
            return Err(TokenError::NoSubject);
        }
        if c.rpc_creds_type != API_KEY {
            return Err(TokenError::CredentialType(c.rpc_creds_type));
        }
        if !self.keys.contains(&c.sub) {
            return Err(TokenError::UnknownKeyId(c.sub));
        }
        Ok(c.sub)
    }
}

/// Failed attempts on one key id, from every address together, allowed at once...
pub const KEY_FAILURE_BURST: u32 = 30;
/// ...and refilled per second.
pub const KEY_FAILURE_RATE: f64 = 3.0;

/// Token buckets of failed authentication attempts, per key (an address, a key id). Time is
/// an argument.
#[derive(Debug)]
pub struct FailureLimiter<K = IpAddr> {
    burst: f64,
    per_second: f64,
    max_peers: usize,
    peers: HashMap<K, (f64, Instant)>,
}

impl<K: std::hash::Hash + Eq + Clone> FailureLimiter<K> {
    /// `burst` failures allowed at once, refilled at `per_second`; at most `max_peers` tracked.
    pub fn new(burst: u32, per_second: f64, max_peers: usize) -> Self {
        Self {
            burst: f64::from(burst),
            per_second,
            max_peers,
            peers: HashMap::new(),
        }
    }

    fn tokens(&self, ip: &K, now: Instant) -> f64 {
        match self.peers.get(ip) {
            Some((tokens, at)) => (tokens
                + now.saturating_duration_since(*at).as_secs_f64() * self.per_second)
                .min(self.burst),
            None => self.burst,
        }
    }

    /// Whether `ip` may try now; if not, how long until it may.
    pub fn check(&self, ip: &K, now: Instant) -> Result<(), Duration> {
        let tokens = self.tokens(ip, now);
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_second))
        }
    }

    /// Counts a failed attempt from `ip`.
    pub fn record_failure(&mut self, ip: &K, now: Instant) {
        let tokens = (self.tokens(ip, now) - 1.0).max(0.0);
        if self.peers.len() >= self.max_peers && !self.peers.contains_key(ip) {
            // Forget addresses whose buckets have refilled; if none have, the oldest.
            let (burst, rate) = (self.burst, self.per_second);
            self.peers.retain(|_, (t, at)| {
                *t + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
            if self.peers.len() >= self.max_peers
                && let Some(oldest) = self
                    .peers
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
            {
                self.peers.remove(&oldest);
            }
        }
        self.peers.insert(ip.clone(), (tokens, now));
    }
}

/// Authentication for one machine.
pub struct Authenticator {
    tokens: TokenAuthority,
    failures: Mutex<FailureLimiter>,
    key_failures: Mutex<FailureLimiter<String>>,
}

impl std::fmt::Debug for Authenticator {
    /// Nothing secret: the audience and the configured key ids.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("audience", &self.tokens.audience)
            .field(
                "key_ids",
                &self.tokens.keys.digests.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Authenticator {
    /// An authenticator accepting `keys`, minting tokens for `audience`.
    pub fn new(audience: &str, keys: &HashMap<String, String>) -> Result<Self, SigningKeyError> {
        Ok(Self {
            tokens: TokenAuthority::new(audience, ApiKeys::new(keys))?,
            failures: Mutex::new(FailureLimiter::new(10, 1.0, 65_536)),
            key_failures: Mutex::new(FailureLimiter::new(
                KEY_FAILURE_BURST,
                KEY_FAILURE_RATE,
                65_536,
            )),
        })
    }

    /// The token authority.
    pub fn tokens(&self) -> &TokenAuthority {
        &self.tokens
    }

    /// Checks a request's `authorization` header; returns the authenticated entity.
    pub fn check_header<B>(&self, req: &Request<B>) -> Result<Arc<str>, Status> {
        let mut values = req.headers().get_all(http::header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(Status::unauthenticated("authentication required"));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix(tether_rpc::vocabulary::BEARER_PREFIX))
            .ok_or_else(|| {
                Status::unauthenticated("expected authorization header with prefix: Bearer ")
            })?;
        self.tokens
            .verify(token)
            .map_err(|e| Status::unauthenticated(format!("unauthenticated: {e}")))
    }

    /// `Authenticate`: checks the credentials under the per-address failure limit.
    fn authenticate(
        &self,
        peer: Option<IpAddr>,
        entity: &str,
        credentials: Option<rpc::Credentials>,
    ) -> Result<String, Status> {
        let credentials =
            credentials.ok_or_else(|| Status::invalid_argument("credentials required"))?;
        if credentials.r#type != API_KEY {
            return Err(Status::invalid_argument(format!(
                "do not know how to handle credential type {:?}",
                credentials.r#type
            )));
        }
        let now = Instant::now();
        // Per address (an IPv6 host owns a whole /64, so that is one address here).
        let peer = peer.map(tether_rpc::context::address_key);
        if let Some(ip) = peer
            && let Err(wait) = lock(&self.failures).check(&ip, now)
        {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut status = Status::resource_exhausted(format!(
                "too many failed authentication attempts from {ip}; retry in {secs} s"
            ));
            if let Ok(v) = secs.to_string().parse() {
                status.metadata_mut().insert("retry-after", v);
            }
            return Err(status);
        }
        // And per configured key id, from every address together: many addresses (50 loopback
        // ones gave 500 guesses in 0.36 s) share one ceiling. A flood against one key id can
        // delay its holder's next Authenticate; tokens already issued keep working.
        let configured = self.tokens.keys().contains(entity);
        if configured && let Err(wait) = lock(&self.key_failures).check(&entity.to_string(), now) {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut status = Status::resource_exhausted(format!(
                "too many failed authentication attempts for this key id; retry in {secs} s"
            ));
            if let Ok(v) = secs.to_string().parse() {
                status.metadata_mut().insert("retry-after", v);
            }
            return Err(status);
        }
        if self.tokens.keys().check(entity, &credentials.payload) {
            Ok(self.tokens.issue(entity, API_KEY))
        } else {
            if let Some(ip) = peer {
                lock(&self.failures).record_failure(&ip, now);
            }
            if configured {
                lock(&self.key_failures).record_failure(&entity.to_string(), now);
            }
            tracing::warn!(?peer, key_id = %tether_rpc::context::Clipped(entity), "failed authentication");
            Err(Status::unauthenticated("invalid credentials"))
        }
    }
}

/// `proto.rpc.v1.AuthService`.
#[derive(Clone)]
pub struct AuthApi {
    auth: Arc<Authenticator>,
}

impl AuthApi {
    /// The service for this authenticator.
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

#[tonic::async_trait]
impl rpc::auth_service_server::AuthService for AuthApi {
    async fn authenticate(
        &self,
        r: tonic::Request<rpc::AuthenticateRequest>,
    ) -> Result<tonic::Response<rpc::AuthenticateResponse>, Status> {
        if r.metadata()
            .get(tether_rpc::vocabulary::AUTHORIZATION_HEADER)
            .is_some()
        {
            return Err(Status::invalid_argument(
                "already authenticated; cannot re-authenticate",
            ));
        }
        let peer = r
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.remote)
            .map(|a| a.ip());
        let r = r.into_inner();
        let access_token = self.auth.authenticate(peer, &r.entity, r.credentials)?;
        Ok(tonic::Response::new(rpc::AuthenticateResponse {
            access_token,
        }))
    }
}

/// Marks a request from a WebRTC data channel whose caller authenticated at signaling. Only
/// the server sets request extensions, so a peer cannot forge it.
#[derive(Debug, Clone, Copy)]
pub struct ChannelAuthenticated;

/// The tower layer requiring a valid token on every call but Authenticate (and the plain
/// `GET` paths the server says are open).
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    open: fn(&str) -> bool,
}

impl AuthLayer {
    /// A layer checking tokens with `auth`; no `GET` path is open.
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self {
            auth,
            open: |_| false,
        }
    }

    /// The same layer letting a `GET` of the paths `open` accepts through without a token.
    pub fn with_open_paths(mut self, open: fn(&str) -> bool) -> Self {
        self.open = open;
        self
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
            open: self.open,
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
    open: fn(&str) -> bool,
}

impl<S, B> tower::Service<Request<B>> for AuthService<S>
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
        let path = req.uri().path();
        let open = path == AUTHENTICATE_PATH
            || (req.method() == http::Method::GET && (self.open)(path))
            // A WebRTC data channel: its caller authenticated at signaling, and the channel's
            // dispatcher has put that entity in the request.
            || req.extensions().get::<ChannelAuthenticated>().is_some();
        if !open {
            match self.auth.check_header(&req) {
                Ok(subject) => {
                    req.extensions_mut().insert(Entity(subject));
                }
                Err(status) => {
                    return Box::pin(async move { Ok(status.into_http::<Body>()) });
                }
            }
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority() -> TokenAuthority {
        let keys = HashMap::from([("key-a".to_string(), "secret-a".to_string())]);
        TokenAuthority::new("tether-test", ApiKeys::new(&keys)).unwrap()
    }

    #[test]
    fn keys_are_checked() {
        let keys = HashMap::from([("id".to_string(), "k".to_string())]);
        let k = ApiKeys::new(&keys);
        assert!(k.check("id", "k"));
        assert!(!k.check("id", "K") && !k.check("id", "") && !k.check("other", "k"));
    }

    #[test]
    fn issued_tokens_verify_and_tampering_is_refused() {
        let a = authority();
        let token = a.issue("key-a", API_KEY);
        assert_eq!(&*a.verify(&token).unwrap(), "key-a");
        assert_eq!(&*a.verify(&token).unwrap(), "key-a", "cached");
        let parts: Vec<&str> = token.split('.').collect();
        // alg none, unsigned.
        let none = format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        assert_eq!(a.verify(&none), Err(TokenError::Algorithm("none".into())));
        // Claims swapped for another subject: signature no longer matches.
        let forged_claims = B64.encode(
            serde_json::to_vec(&serde_json::json!({"sub": "key-b", "aud": ["tether-test"], "rpc_creds_type": "api-key"})).unwrap(),
        );
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert_eq!(a.verify(&forged), Err(TokenError::BadSignature));
        // Another process's key (another authority) is an unknown signing key.
        let other = authority().issue("key-a", API_KEY);
        assert_eq!(a.verify(&other), Err(TokenError::UnknownSigningKey));
        assert_eq!(a.verify("a.b"), Err(TokenError::Malformed));
        assert_eq!(a.verify("!!.!!.!!"), Err(TokenError::Malformed));
        // A token for a key id that is not configured.
        assert_eq!(
            a.verify(&a.issue("key-z", API_KEY)),
            Err(TokenError::UnknownKeyId("key-z".into()))
        );
    }

    #[test]
    fn failure_limiter_allows_a_burst_then_refills() {
        let mut l = FailureLimiter::new(3, 1.0, 2);
        let (ip, other): (IpAddr, IpAddr) =
            ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            l.check(&ip, t0).unwrap();
            l.record_failure(&ip, t0);
        }
        let wait = l.check(&ip, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        l.check(&other, t0).unwrap();
        l.check(&ip, t0 + Duration::from_millis(999)).unwrap_err();
        l.check(&ip, t0 + Duration::from_secs(1)).unwrap();
        // Bounded: a third address evicts one whose bucket refilled, or the oldest.
        l.record_failure(&other, t0);
        l.record_failure(&"127.0.0.3".parse().unwrap(), t0 + Duration::from_secs(1));
        assert!(l.peers.len() <= 2);
    }
}
