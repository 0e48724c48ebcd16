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

/// What a status page shows of one live session ([`SessionManager::views`]).
#[derive(Debug)]
pub struct SessionView<'a, R, P> {
    /// Its id.
    pub id: SessionId,
    /// Who owns it.
    pub owner: &'a str,
    /// When it started.
    pub started: Instant,
    /// When its client was last known alive (the last heartbeat, at its sending time when it
    /// said); `None` before the first heartbeat.
    pub last_alive: Option<Instant>,
    /// When it expires unless a heartbeat comes.
    pub deadline: Instant,
    /// What is known of its peer.
    pub peer: &'a P,
    /// The resources whose last caller it is.
    pub resources: &'a HashSet<R>,
}

#[derive(Debug, Clone)]
struct Session<R, P> {
    owner: String,
    /// When it started: the origin of its client clock's offsets.
    started: Instant,
    deadline: Instant,
    /// Whether a heartbeat has come (until then the first grace holds).
    beaten: bool,
    /// What the heartbeats that said when they were sent taught about the client's clock.
    clock: Option<ClientClock>,
    peer: P,
    /// Resources whose last caller is this session.
    resources: HashSet<R>,
}

/// How much a client's clock may run slow against the machine's, in parts per million: NTP
/// slews a clock by at most 500 ppm.
const CLOCK_DRIFT_PPM: i128 = 500;

/// The lowest offset seen between the machine's clock at receipt and the client's at sending:
/// the clocks' difference plus the fastest trip. A heartbeat whose offset is above it by `d`
/// spent `d` longer on the way (queued in a backlog, retransmitted) than the fastest one, so
/// the client was last known alive `d` before it arrived, not when it arrived.
#[derive(Debug, Clone, Copy)]
struct ClientClock {
    /// The lowest offset, in microseconds.
    base_us: i128,
    /// When it was seen: a client clock that runs slow raises the offsets by up to
    /// [`CLOCK_DRIFT_PPM`] of the time since.
    base_at: Instant,
}

impl ClientClock {
    /// When the client was alive, for a heartbeat it sent at `sent_us` (its clock) that
    /// arrived `now`; updates the lowest offset.
    fn alive_at(clock: &mut Option<Self>, origin: Instant, now: Instant, sent_us: u64) -> Instant {
        let offset =
            now.saturating_duration_since(origin).as_micros() as i128 - i128::from(sent_us);
        let base = match clock {
            Some(c) => {
                let drift = now.saturating_duration_since(c.base_at).as_micros() as i128
                    * CLOCK_DRIFT_PPM
                    / 1_000_000;
                c.base_us + drift
            }
            None => offset,
        };
        if offset <= base {
            *clock = Some(Self {
                base_us: offset,
                base_at: now,
            });
            return now;
        }
        let late = u64::try_from(offset - base).unwrap_or(u64::MAX);
        now.checked_sub(Duration::from_micros(late))
            .unwrap_or(origin)
    }
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
                started: now,
                deadline,
                beaten: false,
                clock: None,
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
        self.beat(now, None, id, owner, peer)
    }

    /// A heartbeat that says when its client sent it: `sent_us`, microseconds on the client's
    /// own steady clock (any origin). The deadline becomes one window after the client was
    /// last known alive: `now`, less however much longer than the session's fastest
    /// heartbeat this one took to arrive. So heartbeats that sat in a backlog (a starved
    /// machine, a stalled link) and arrive after their client died keep nothing alive beyond
    /// one window after it sent them. A heartbeat never shortens the deadline, except the
    /// first one, which ends the first grace.
    pub fn heartbeat_sent(
        &mut self,
        now: Instant,
        sent_us: u64,
        id: SessionId,
        owner: &str,
        peer: Option<P>,
    ) -> Result<(), SessionExpired> {
        self.beat(now, Some(sent_us), id, owner, peer)
    }

    fn beat(
        &mut self,
        now: Instant,
        sent_us: Option<u64>,
        id: SessionId,
        owner: &str,
        peer: Option<P>,
    ) -> Result<(), SessionExpired> {
        let session = self.sessions.get_mut(&id).ok_or(SessionExpired)?;
        if session.owner != owner || session.deadline <= now {
            return Err(SessionExpired);
        }
        let alive_at = match sent_us {
            Some(sent) => ClientClock::alive_at(&mut session.clock, session.started, now, sent),
            None => now,
        };
        let deadline = alive_at + self.window;
        let first = !std::mem::replace(&mut session.beaten, true);
        if deadline > session.deadline || (first && deadline != session.deadline) {
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

    /// A look at every live session, for status pages.
    pub fn views(&self) -> impl Iterator<Item = SessionView<'_, R, P>> {
        self.sessions.iter().map(|(id, s)| SessionView {
            id: *id,
            owner: &s.owner,
            started: s.started,
            // Every heartbeat sets the deadline to one window after the client was last known
            // alive; before the first, the deadline includes the first grace.
            last_alive: s.beaten.then(|| s.deadline - self.window),
            deadline: s.deadline,
            peer: &s.peer,
            resources: &s.resources,
        })
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

    /// A client clock reading: `at` on the machine's clock, seen from a client whose clock is
    /// `skew_us` ahead and runs `ppm` parts per million slow.
    fn client_us(t0: Instant, at: Instant, skew_us: u64, ppm: u64) -> u64 {
        let elapsed = at.duration_since(t0).as_micros() as u64;
        skew_us + elapsed - elapsed * ppm / 1_000_000
    }

    #[test]
    fn heartbeats_that_arrive_late_from_a_backlog_keep_nothing_alive_past_a_window_after_they_were_sent()
     {
        let (mut m, t0) = manager();
        let s = m.start(t0, "alice", None, 1).unwrap();
        let skew = 5_000_000_000; // the client's clock is far from the machine's
        // Heartbeats every 100 ms for 10 s, each arriving 20 ms after it was sent.
        let mut sent = t0;
        while sent < t0 + ms(10_000) {
            m.heartbeat_sent(
                sent + ms(20),
                client_us(t0, sent, skew, 0),
                s.id,
                "alice",
                None,
            )
            .unwrap();
            sent += ms(100);
        }
        assert_eq!(m.next_deadline(), Some(t0 + ms(9_920) + W));
        // The client dies at 10 s; the heartbeats it sent in its last second were held up and
        // arrive one every 200 ms until 13 s. Each is still a sign of life from when it was
        // sent: the deadline stays one window after the last one was sent.
        let mut arrive = t0 + ms(10_000);
        for k in 0..10u64 {
            let sent = t0 + ms(9_000 + 100 * k);
            arrive += ms(200);
            if arrive >= t0 + ms(9_900) + W {
                break;
            }
            m.heartbeat_sent(arrive, client_us(t0, sent, skew, 0), s.id, "alice", None)
                .unwrap();
            assert_eq!(m.next_deadline(), Some(t0 + ms(9_920) + W), "k = {k}");
        }
        assert_eq!(m.expire(t0 + ms(9_920) + W).len(), 1);
    }

    #[test]
    fn a_slow_trip_never_shortens_the_deadline_and_a_slow_client_clock_is_no_false_expiry() {
        let (mut m, t0) = manager();
        let s = m.start(t0, "alice", None, 1).unwrap();
        // An hour of heartbeats every 400 ms, from a client whose clock runs 400 ppm slow,
        // with trips of 10..210 ms: never expired, and the deadline never moves earlier.
        let mut sent = t0;
        let mut last_deadline = m.next_deadline().unwrap();
        let mut trip = 10;
        let mut n = 0u64;
        while sent < t0 + Duration::from_secs(3600) {
            let arrive = sent + ms(trip);
            assert!(m.expire(arrive).is_empty(), "expired at {:?}", arrive - t0);
            m.heartbeat_sent(arrive, client_us(t0, sent, 77, 400), s.id, "alice", None)
                .unwrap();
            let deadline = m.next_deadline().unwrap();
            assert!(n == 0 || deadline >= last_deadline);
            // The deadline is one window after the client was last known alive, give or take
            // the trip and the drift allowance.
            assert!(deadline >= sent + W && deadline <= arrive + W);
            last_deadline = deadline;
            trip = 10 + (trip * 37 + 11) % 200;
            sent += ms(400);
            n += 1;
        }
    }

    #[test]
    fn the_first_timed_heartbeat_ends_the_grace_and_untimed_ones_count_at_arrival() {
        let mut m: SessionManager<&str, u32> =
            SessionManager::new(W, DEFAULT_MAX_SESSIONS).with_first_grace(ms(8000));
        let t0 = Instant::now();
        let s = m.start(t0, "alice", None, 1).unwrap();
        assert_eq!(m.next_deadline(), Some(t0 + W + ms(8000)));
        m.heartbeat_sent(t0 + ms(10), u64::MAX, s.id, "alice", None)
            .unwrap();
        assert_eq!(m.next_deadline(), Some(t0 + ms(10) + W));
        // Untimed heartbeats (a call from Viam's SDKs) count when they arrive.
        m.heartbeat(t0 + ms(500), s.id, "alice", None).unwrap();
        assert_eq!(m.next_deadline(), Some(t0 + ms(500) + W));
        // Another owner still gets nothing, timed or not.
        assert_eq!(
            m.heartbeat_sent(t0 + ms(600), 0, s.id, "bob", None),
            Err(SessionExpired)
        );
    }

    #[test]
    fn views_show_when_each_session_was_last_alive_and_what_it_commands() {
        let mut m: SessionManager<&str, u32> =
            SessionManager::new(W, DEFAULT_MAX_SESSIONS).with_first_grace(ms(8000));
        let t0 = Instant::now();
        let a = m.start(t0, "alice", None, 1).unwrap();
        let b = m.start(t0, "bob", None, 2).unwrap();
        m.heartbeat(t0 + ms(300), a.id, "alice", Some(7)).unwrap();
        m.record_caller("left", Some(a.id));
        let mut views: Vec<_> = m.views().collect();
        views.sort_by_key(|v| v.owner.to_string());
        let (va, vb) = (&views[0], &views[1]);
        assert_eq!((va.id, va.owner, *va.peer), (a.id, "alice", 7));
        assert_eq!(va.last_alive, Some(t0 + ms(300)));
        assert_eq!(va.deadline, t0 + ms(300) + W);
        assert!(va.resources.contains("left") && va.resources.len() == 1);
        // No heartbeat yet: not alive since any moment, deadline with the grace.
        assert_eq!((vb.id, vb.last_alive), (b.id, None));
        assert_eq!(vb.deadline, t0 + W + ms(8000));
        assert!(vb.resources.is_empty());
    }
}
