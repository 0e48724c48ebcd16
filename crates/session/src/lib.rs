//! The session manager: the state machine behind Tether's safety stop.
//!
//! A client that commands actuators holds a *session* by heartbeating within a window. Every
//! safety-monitored call records its session as the *last caller* of the resource it drives
//! (or clears it, when the call had no session). When a session's deadline passes, the manager
//! hands back the resources whose last caller it was, and the caller of [`SessionManager::expire`]
//! stops them.
//!
//! This crate does no I/O, holds no locks and reads no clock: every operation takes `now`, so
//! its behaviour is a pure function of its inputs and is tested exactly (as `quinn-proto` and
//! `str0m` do). The async driver that sleeps until [`SessionManager::next_deadline`] lives in the
//! machine crate.
//!
//! Costs: start, heartbeat and record are O(log n) in the number of sessions; expiry is
//! O(k log n) for k expired sessions plus the resources they held — never a scan of every
//! session. The session limit answers [`StartError::TooManySessions`] and nothing else changes,
//! so it cannot wedge the manager.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// A session's id (a random UUIDv4, as viam-server's).
pub type SessionId = Uuid;

/// Default session limit: generous, but bounded.
pub const DEFAULT_MAX_SESSIONS: usize = 65_536;

/// Why a session could not be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// The limit of concurrent sessions is reached.
    TooManySessions { limit: usize },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::TooManySessions { limit } => write!(
                f,
                "too many concurrent sessions (limit {limit}); close unused clients or wait \
                 for their sessions to expire"
            ),
        }
    }
}

impl std::error::Error for StartError {}

/// The session is unknown, expired, or belongs to another owner. On the wire this is always
/// `INVALID_ARGUMENT` with message `SESSION_EXPIRED`, whichever it was, so a client cannot
/// probe for other owners' sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpired;

impl std::fmt::Display for SessionExpired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SESSION_EXPIRED")
    }
}

impl std::error::Error for SessionExpired {}

/// A started (or resumed) session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// Its id.
    pub id: SessionId,
    /// Its heartbeat window.
    pub window: Duration,
    /// Whether an existing session was resumed.
    pub resumed: bool,
}

/// A session whose deadline passed, with what it was the last caller of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired<R, P> {
    /// The session.
    pub id: SessionId,
    /// Who owned it.
    pub owner: String,
    /// When it expired.
    pub deadline: Instant,
    /// What it knew of its peer.
    pub peer: P,
    /// The resources whose last caller it was: these must be stopped.
    pub resources: Vec<R>,
}

#[derive(Debug, Clone)]
struct Session<R, P> {
    owner: String,
    deadline: Instant,
    peer: P,
    /// Resources whose last caller is this session.
    resources: HashSet<R>,
}

/// The session manager. `R` names a resource, `P` is what is known of a session's peer.
#[derive(Debug)]
pub struct SessionManager<R, P> {
    window: Duration,
    /// Extra time a new session gets before its first heartbeat.
    first_grace: Duration,
    max_sessions: usize,
    sessions: HashMap<SessionId, Session<R, P>>,
    /// Every live session by deadline: the next to expire comes first.
    deadlines: BTreeSet<(Instant, SessionId)>,
    /// resource → the session that last commanded it with a session.
    last_caller: HashMap<R, SessionId>,
}

impl<R: Clone + Eq + Hash, P: Clone> SessionManager<R, P> {
    /// A manager with this heartbeat window and session limit.
    pub fn new(window: Duration, max_sessions: usize) -> Self {
        assert!(!window.is_zero(), "a heartbeat window must be positive");
        Self {
            window,
            first_grace: Duration::ZERO,
            max_sessions,
            sessions: HashMap::new(),
            deadlines: BTreeSet::new(),
            last_caller: HashMap::new(),
        }
    }

    /// The heartbeat window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Gives a new session `grace` more than the window before its first heartbeat (none by
    /// default). Its client learns the id only when StartSession's answer arrives, so on a
    /// slow, lossy link the answer and the first heartbeat together can take longer than a
    /// short window. It costs no safety: a session drives nothing before its first
    /// monitored call, and every heartbeat (a monitored call is one) sets the deadline to
    /// exactly one window after it, so the grace is gone with the first one.
    pub fn with_first_grace(mut self, grace: Duration) -> Self {
        self.first_grace = grace;
        self
    }

    /// Live sessions (including any past their deadline that `expire` has not collected yet).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Starts a session for `owner`, or resumes `resume` if it is alive at `now` and `owner`'s:
    /// then it is heartbeated and returned with the same id. Anything else about `resume`
    /// (unknown, expired, another owner's) starts a new session, as viam-server does.
    pub fn start(
        &mut self,
        now: Instant,
        owner: &str,
        resume: Option<SessionId>,
        peer: P,
    ) -> Result<Started, StartError> {
        if let Some(id) = resume
            && self.heartbeat(now, id, owner, Some(peer.clone())).is_ok()
        {
            return Ok(Started {
                id,
                window: self.window,
                resumed: true,
            });
        }
        if self.sessions.len() >= self.max_sessions {
            return Err(StartError::TooManySessions {
                limit: self.max_sessions,
            });
        }
        let id = loop {
            let id = Uuid::new_v4();
            if !self.sessions.contains_key(&id) {
                break id;
            }
        };
        let deadline = now + self.window + self.first_grace;
        self.sessions.insert(
            id,
            Session {
                owner: owner.to_string(),
                deadline,
                peer,
                resources: HashSet::new(),
            },
        );
        self.deadlines.insert((deadline, id));
        Ok(Started {
            id,
            window: self.window,
            resumed: false,
        })
    }

    /// Extends a live session's deadline to `now + window` (and refreshes its peer, if given).
    /// A session whose deadline is at or before `now` is expired even if not yet collected.
    pub fn heartbeat(
        &mut self,
        now: Instant,
        id: SessionId,
        owner: &str,
        peer: Option<P>,
    ) -> Result<(), SessionExpired> {
        let session = self.sessions.get_mut(&id).ok_or(SessionExpired)?;
        if session.owner != owner || session.deadline <= now {
            return Err(SessionExpired);
        }
        let deadline = now + self.window;
        if deadline != session.deadline {
            self.deadlines.remove(&(session.deadline, id));
            self.deadlines.insert((deadline, id));
            session.deadline = deadline;
        }
        if let Some(peer) = peer {
            session.peer = peer;
        }
        Ok(())
    }

    /// The owner of live session `id`, if it is known.
    pub fn owner(&self, id: &SessionId) -> Option<&str> {
        self.sessions.get(id).map(|s| s.owner.as_str())
    }

    /// Records the caller of a safety-monitored call on `resource`: the session, or `None` for
    /// a call without one (which clears monitoring of that resource). Last writer wins.
    pub fn record_caller(&mut self, resource: R, session: Option<SessionId>) {
        let previous = match session {
            Some(id) => {
                let Some(s) = self.sessions.get_mut(&id) else {
                    return;
                };
                s.resources.insert(resource.clone());
                self.last_caller.insert(resource.clone(), id)
            }
            None => self.last_caller.remove(&resource),
        };
        if let Some(prev) = previous
            && Some(prev) != session
            && let Some(s) = self.sessions.get_mut(&prev)
        {
            s.resources.remove(&resource);
        }
    }

    /// The session that last commanded `resource`, if it is still known.
    pub fn last_caller(&self, resource: &R) -> Option<SessionId> {
        self.last_caller.get(resource).copied()
    }

    /// The earliest deadline of any session.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// Removes every session whose deadline is at or before `now`, returning each with the
    /// resources it was the last caller of, earliest deadline first.
    pub fn expire(&mut self, now: Instant) -> Vec<Expired<R, P>> {
        let mut out = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(session) = self.sessions.remove(&id) else {
                continue;
            };
            let mut resources = Vec::with_capacity(session.resources.len());
            for r in session.resources {
                if self.last_caller.get(&r) == Some(&id) {
                    self.last_caller.remove(&r);
                }
                resources.push(r);
            }
            out.push(Expired {
                id,
                owner: session.owner,
                deadline,
                peer: session.peer,
                resources,
            });
        }
        out
    }

    /// Every live session with its owner and peer.
    pub fn sessions_with_owner(&self) -> impl Iterator<Item = (SessionId, &str, &P)> {
        self.sessions
            .iter()
            .map(|(id, s)| (*id, s.owner.as_str(), &s.peer))
    }

    /// Every live session with its peer.
    pub fn sessions(&self) -> impl Iterator<Item = (SessionId, &P)> {
        self.sessions.iter().map(|(id, s)| (*id, &s.peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(2);

    fn manager() -> (SessionManager<&'static str, u32>, Instant) {
        (SessionManager::new(W, DEFAULT_MAX_SESSIONS), Instant::now())
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_session_lives_exactly_one_window_after_its_last_heartbeat() {
        let (mut m, t0) = manager();
        let s = m.start(t0, "alice", None, 1).unwrap();
        assert_eq!((s.window, s.resumed), (W, false));
        assert_eq!(m.next_deadline(), Some(t0 + W));
        // Just inside the window: alive, and the heartbeat moves the deadline.
        assert!(m.expire(t0 + W - ms(1)).is_empty());
        m.heartbeat(t0 + W - ms(1), s.id, "alice", None).unwrap();
        assert_eq!(m.next_deadline(), Some(t0 + 2 * W - ms(1)));
        assert!(m.expire(t0 + 2 * W - ms(2)).is_empty());
        // At the deadline itself: expired (heartbeat refused, collected by expire).
        let deadline = t0 + 2 * W - ms(1);
        assert_eq!(
            m.heartbeat(deadline, s.id, "alice", None),
            Err(SessionExpired)
        );
        let gone = m.expire(deadline);
        assert_eq!(gone.len(), 1);
        assert_eq!(
            (gone[0].id, gone[0].deadline, gone[0].owner.as_str()),
            (s.id, deadline, "alice")
        );
        assert!(m.is_empty() && m.next_deadline().is_none());
        assert_eq!(
            m.heartbeat(deadline, s.id, "alice", None),
            Err(SessionExpired)
        );
    }

    #[test]
    fn the_first_grace_lasts_until_the_first_heartbeat() {
        let (m, t0) = manager();
        let mut m = m.with_first_grace(W);
        let a = m.start(t0, "", None, 0).unwrap().id;
        let b = m.start(t0, "", None, 0).unwrap().id;
        assert!(
            m.expire(t0 + 2 * W - ms(1)).is_empty(),
            "two windows before any heartbeat"
        );
        // A heartbeat (or a monitored call) brings the deadline back to one window after it.
        m.heartbeat(t0 + ms(10), a, "", None).unwrap();
        m.record_caller("left", Some(a));
        let gone = m.expire(t0 + ms(10) + W);
        assert_eq!((gone[0].id, gone[0].resources.clone()), (a, vec!["left"]));
        assert_eq!(m.expire(t0 + 2 * W)[0].id, b);
    }

    #[test]
    fn resume_keeps_a_live_session_of_the_same_owner_only() {
        let (mut m, t0) = manager();
        let s = m.start(t0, "alice", None, 1).unwrap();
        let again = m.start(t0 + ms(500), "alice", Some(s.id), 2).unwrap();
        assert_eq!((again.id, again.resumed), (s.id, true));
        assert_eq!(m.next_deadline(), Some(t0 + ms(500) + W));
        assert_eq!(
            m.sessions().next().map(|(_, p)| *p),
            Some(2),
            "peer refreshed"
        );
        // Another owner resuming it gets a new session; the original is untouched.
        let other = m.start(t0 + ms(600), "bob", Some(s.id), 3).unwrap();
        assert!(!other.resumed && other.id != s.id);
        assert_eq!(
            m.heartbeat(t0 + ms(700), s.id, "bob", None),
            Err(SessionExpired)
        );
        m.heartbeat(t0 + ms(700), s.id, "alice", None).unwrap();
        // Resuming after expiry starts afresh.
        let late = t0 + ms(700) + W;
        let fresh = m.start(late, "alice", Some(s.id), 4).unwrap();
        assert!(!fresh.resumed && fresh.id != s.id);
        // Resuming an unknown id starts afresh too.
        let unknown = m.start(late, "alice", Some(Uuid::new_v4()), 5).unwrap();
        assert!(!unknown.resumed);
    }

    #[test]
    fn last_caller_rules() {
        let (mut m, t0) = manager();
        let a = m.start(t0, "", None, 0).unwrap().id;
        let b = m.start(t0, "", None, 0).unwrap().id;
        m.record_caller("left", Some(a));
        m.record_caller("right", Some(a));
        m.record_caller("arm", Some(a));
        // B takes over `right`; a session-less call clears `arm`.
        m.record_caller("right", Some(b));
        m.record_caller("arm", None);
        assert_eq!(m.last_caller(&"right"), Some(b));
        assert_eq!(m.last_caller(&"arm"), None);
        // A heartbeats until later; B lapses: only what B last commanded is handed back.
        m.heartbeat(t0 + ms(1000), a, "", None).unwrap();
        let gone = m.expire(t0 + W);
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].id, gone[0].resources.clone()), (b, vec!["right"]));
        assert_eq!(m.last_caller(&"right"), None);
        // A lapses: only `left` (not `right`, taken by B; not `arm`, cleared).
        let gone = m.expire(t0 + ms(1000) + W);
        assert_eq!(gone[0].resources, vec!["left"]);
        // Recording for an unknown session changes nothing.
        m.record_caller("left", Some(Uuid::new_v4()));
        assert_eq!(m.last_caller(&"left"), None);
    }

    #[test]
    fn a_command_by_the_same_session_again_is_idempotent() {
        let (mut m, t0) = manager();
        let a = m.start(t0, "", None, 0).unwrap().id;
        m.record_caller("left", Some(a));
        m.record_caller("left", Some(a));
        assert_eq!(m.expire(t0 + W)[0].resources, vec!["left"]);
    }

    #[test]
    fn the_limit_refuses_new_sessions_and_nothing_else() {
        let mut m: SessionManager<&str, ()> = SessionManager::new(W, 3);
        let t0 = Instant::now();
        let ids: Vec<_> = (0..3)
            .map(|_| m.start(t0, "", None, ()).unwrap().id)
            .collect();
        assert_eq!(
            m.start(t0, "", None, ()),
            Err(StartError::TooManySessions { limit: 3 })
        );
        // Existing sessions still heartbeat, resume, and expire; then there is room again.
        m.heartbeat(t0 + ms(10), ids[0], "", None).unwrap();
        assert!(m.start(t0 + ms(10), "", Some(ids[1]), ()).unwrap().resumed);
        assert_eq!(m.expire(t0 + W + ms(5)).len(), 1);
        assert!(m.start(t0 + W + ms(5), "", None, ()).is_ok());
    }

    #[test]
    fn one_hundred_thousand_sessions() {
        let mut m: SessionManager<u32, ()> = SessionManager::new(W, 200_000);
        let t0 = Instant::now();
        let ids: Vec<_> = (0..100_000u32)
            .map(|i| {
                let id = m
                    .start(t0 + Duration::from_micros(u64::from(i)), "", None, ())
                    .unwrap()
                    .id;
                m.record_caller(i, Some(id));
                id
            })
            .collect();
        // Every even session heartbeats at t0 + 1 s; the odd ones lapse at ~t0 + 2 s.
        for id in ids.iter().step_by(2) {
            m.heartbeat(t0 + ms(1000), *id, "", None).unwrap();
        }
        let gone = m.expire(t0 + W + ms(200));
        assert_eq!(gone.len(), 50_000);
        assert!(gone.windows(2).all(|w| w[0].deadline <= w[1].deadline));
        assert!(
            gone.iter()
                .all(|e| e.resources.len() == 1 && e.resources[0] % 2 == 1)
        );
        assert_eq!(m.len(), 50_000);
        assert_eq!(m.next_deadline(), Some(t0 + ms(1000) + W));
        assert_eq!(m.expire(t0 + ms(1000) + W).len(), 50_000);
        assert!(m.is_empty());
    }
}
