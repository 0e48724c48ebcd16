//! What a standalone signaling service decides that an embedded one does not: which hosts each
//! API key may answer for and call ([`Grants`]), and the ICE servers it hands out, with
//! time-limited TURN credentials minted from a shared secret ([`IceServers`]).
//!
//! An embedded service answers only for its own machine's names. A fleet's service brokers
//! calls for every machine, so the key decides: a machine's key answers only for the hosts it
//! is given (it can never register as another machine's answerer and receive its callers'
//! offers), and a caller's key reaches only the hosts it is given.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use tether_rtc::IceServer;
use tonic::Status;

/// What a request names a host for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `Call`, `CallUpdate`: reaching the host.
    Call,
    /// `Answer`: taking the host's calls.
    Answer,
    /// `OptionalWebRTCConfig`: asked by either side.
    Config,
}

/// The hosts one key may answer for and call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub answer: HashSet<String>,
    pub call: HashSet<String>,
}

/// Who may do what, by key id.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    by_key: HashMap<String, Grant>,
    /// No keys configured: everyone may do everything (a service on loopback only).
    open: bool,
}

/// A host as a grant and the queue know it: `rpc-host` compared without regard to case, and
/// without a port of 443 or of the service's own (`own_port`): a caller dialing the service
/// as `rover.example:8089` (the Python SDK sends `rpc-host` as host:port dialed) means the
/// machine a grant names `rover.example`.
pub fn canonical_host(host: &str, own_port: Option<u16>) -> String {
    let host = host.trim().to_ascii_lowercase();
    if let Some((name, port)) = host.rsplit_once(':')
        && !name.is_empty()
        && !name.ends_with(']')
        && !name.contains(':')
        && let Ok(port) = port.parse::<u16>()
        && (port == 443 || Some(port) == own_port)
    {
        return name.to_string();
    }
    host
}

impl Grants {
    /// Grants by key id (hosts compared without regard to case).
    pub fn new(by_key: HashMap<String, Grant>) -> Self {
        let by_key = by_key
            .into_iter()
            .map(|(id, g)| {
                let norm = |s: HashSet<String>| s.iter().map(|h| canonical_host(h, None)).collect();
                (
                    id,
                    Grant {
                        answer: norm(g.answer),
                        call: norm(g.call),
                    },
                )
            })
            .collect();
        Self {
            by_key,
            open: false,
        }
    }

    /// Everyone may answer for and call every host (no keys configured).
    pub fn open() -> Self {
        Self {
            by_key: HashMap::new(),
            open: true,
        }
    }

    /// Whether `entity` (the key id the caller authenticated as; empty when it did not) may
    /// name `host` for `role`, or the status saying why not.
    pub fn check(&self, entity: &str, host: &str, role: Role) -> Result<(), Status> {
        if self.open {
            return Ok(());
        }
        if entity.is_empty() {
            return Err(Status::unauthenticated("authentication required"));
        }
        let Some(grant) = self.by_key.get(entity) else {
            return Err(Status::permission_denied(format!(
                "key {:?} has no grants on this signaling service",
                tether_rpc::context::Clipped(entity).to_string()
            )));
        };
        let allowed = match role {
            Role::Call => grant.call.contains(host),
            Role::Answer => grant.answer.contains(host),
            Role::Config => grant.call.contains(host) || grant.answer.contains(host),
        };
        if allowed {
            return Ok(());
        }
        let verb = match role {
            Role::Call => "call",
            Role::Answer => "answer for",
            Role::Config => "call or answer for",
        };
        Err(Status::permission_denied(format!(
            "this key may not {verb} host {:?}",
            tether_rpc::context::Clipped(host).to_string()
        )))
    }
}

/// TURN REST credentials (coturn's `use-auth-secret`): for each caller, a username
/// `<expiry unix seconds>:<key id>` and as password base64(HMAC-SHA1(secret, username)), which
/// the TURN server checks with the same secret and refuses after the expiry.
#[derive(Clone)]
pub struct TurnRest {
    pub urls: Vec<String>,
    pub secret: String,
    pub ttl: Duration,
}

impl std::fmt::Debug for TurnRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnRest")
            .field("urls", &self.urls)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TurnRest {
    /// The credentials for `entity` asked at `now`.
    pub fn credentials(&self, entity: &str, now: SystemTime) -> IceServer {
        let expiry = now
            .checked_add(self.ttl)
            .unwrap_or(now)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // A colon would end the expiry field early in the TURN server's parsing.
        let who: String = entity
            .chars()
            .map(|c| if c == ':' { '_' } else { c })
            .collect();
        let username = if who.is_empty() {
            expiry.to_string()
        } else {
            format!("{expiry}:{who}")
        };
        let key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            self.secret.as_bytes(),
        );
        let tag = ring::hmac::sign(&key, username.as_bytes());
        IceServer {
            urls: self.urls.clone(),
            username,
            credential: base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
        }
    }
}

/// The ICE servers a service hands out: fixed ones, and TURN REST credentials minted per
/// caller.
#[derive(Debug, Clone, Default)]
pub struct IceServers {
    pub fixed: Vec<IceServer>,
    pub turn_rest: Option<TurnRest>,
}

impl IceServers {
    /// Fixed servers only.
    pub fn fixed(servers: Vec<IceServer>) -> Self {
        Self {
            fixed: servers,
            turn_rest: None,
        }
    }

    /// What `entity` gets at `now`.
    pub fn for_entity(&self, entity: &str, now: SystemTime) -> Vec<IceServer> {
        let mut out = self.fixed.clone();
        if let Some(t) = &self.turn_rest {
            out.push(t.credentials(entity, now));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants() -> Grants {
        Grants::new(HashMap::from([
            (
                "rover-key".to_string(),
                Grant {
                    answer: HashSet::from(["Rover.Fleet.Test".to_string()]),
                    call: HashSet::new(),
                },
            ),
            (
                "operator".to_string(),
                Grant {
                    answer: HashSet::new(),
                    call: HashSet::from(["rover.fleet.test".to_string()]),
                },
            ),
        ]))
    }

    #[test]
    fn a_key_answers_and_calls_only_its_hosts() {
        let g = grants();
        let rover = canonical_host("ROVER.fleet.test", None);
        assert_eq!(canonical_host("Rover.Fleet.Test:8089", Some(8089)), rover);
        assert_eq!(canonical_host("rover.fleet.test:443", Some(8089)), rover);
        assert_eq!(
            canonical_host("rover.fleet.test:8080", Some(8089)),
            "rover.fleet.test:8080"
        );
        assert_eq!(canonical_host("[::1]:8089", Some(8089)), "[::1]:8089");
        g.check("rover-key", &rover, Role::Answer).unwrap();
        g.check("operator", &rover, Role::Call).unwrap();
        g.check("operator", &rover, Role::Config).unwrap();
        g.check("rover-key", &rover, Role::Config).unwrap();
        // Each key only in its own role, and only for its own hosts.
        let e = g.check("operator", &rover, Role::Answer).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("answer for"), "{e:?}");
        let e = g.check("rover-key", &rover, Role::Call).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let e = g
            .check("operator", "other.fleet.test", Role::Call)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let e = g.check("stranger", &rover, Role::Call).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        let e = g.check("", &rover, Role::Call).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        Grants::open().check("", "anything", Role::Answer).unwrap();
    }

    #[test]
    fn turn_rest_credentials_are_coturns_scheme() {
        let t = TurnRest {
            urls: vec!["turn:198.51.100.1:3478".into()],
            secret: "north".into(),
            ttl: Duration::from_secs(3600),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let s = t.credentials("op:1", now);
        assert_eq!(s.username, "1700003600:op_1");
        // python3 -c 'import hmac,hashlib,base64;
        //   print(base64.b64encode(hmac.new(b"north", b"1700003600:op_1", hashlib.sha1).digest()))'
        assert_eq!(s.credential, "C/yjjRKh0Gg8ZpzP+ZeJ5qJVJcg=");
        let later = t.credentials("op:1", now + Duration::from_secs(1));
        assert_ne!(later.credential, s.credential);
        let all = IceServers {
            fixed: vec![IceServer {
                urls: vec!["stun:198.51.100.1:3478".into()],
                ..Default::default()
            }],
            turn_rest: Some(t),
        };
        assert_eq!(all.for_entity("op", now).len(), 2);
    }
}
