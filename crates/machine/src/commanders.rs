//! The safety net for commanders without a session.
//!
//! A safety-monitored command that carries no session (the TypeScript SDK sends none until
//! a session exists, and `disableSessions` clients never do) makes its *connection* the
//! commander of the resource it drives: the HTTP/2 connection or the WebRTC peer connection
//! it came on. When that connection ends (closed, or found dead by HTTP/2 keepalive or by
//! ICE), the machine stops every actuator it is still the commander of. A later command from
//! a session or from another connection takes the resource over, as a session's does.
//!
//! HTTP/1.1 (gRPC-web from a browser) has no lasting connection: a browser opens and pools
//! them as it likes, so such commands register no commander and only a session covers them.
//! `network.sessions.stop_on_disconnect: false` turns the net off (viam-server's behaviour).
//!
//! The connection side knows nothing of resources: it hands every request a
//! [`ConnectionLink`] and cancels it when the connection ends; the session layer watches the
//! link of a connection from its first session-less command on.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::{CancellationToken, DropGuard};

use crate::machine::Machine;
use crate::resource::ResourceName;

/// Which connection a request came on, and the signal that it ended (a request extension).
#[derive(Clone, Debug)]
pub struct ConnectionLink {
    id: u64,
    transport: &'static str,
    ended: CancellationToken,
}

impl ConnectionLink {
    /// A link for a new connection over `transport` (`h2`, `webrtc`), and the guard whose drop
    /// (the connection's end, on every path) ends it.
    pub fn new(transport: &'static str) -> (Self, DropGuard) {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let ended = CancellationToken::new();
        let link = Self {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            transport,
            ended: ended.clone(),
        };
        (link, ended.drop_guard())
    }
}

/// Which connection commands which resource without a session.
#[derive(Debug)]
pub struct Commanders {
    /// `network.sessions.stop_on_disconnect`.
    enabled: bool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    by_resource: HashMap<ResourceName, u64>,
    /// Each commanding connection's transport and resources.
    by_connection: HashMap<u64, (&'static str, HashSet<ResourceName>)>,
}

impl State {
    /// Forgets `resource`'s commander, if it has one.
    fn release(&mut self, resource: &ResourceName) {
        if let Some(previous) = self.by_resource.remove(resource)
            && let Some((_, held)) = self.by_connection.get_mut(&previous)
        {
            held.remove(resource);
        }
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Commanders {
    /// The net, on or off (`network.sessions.stop_on_disconnect`).
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            state: Mutex::default(),
        }
    }

    /// Whether the net is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A session-less command on `resource` came on `link`: it is the commander now. True if
    /// this is the connection's first such resource (its end must be watched from now on).
    pub fn command(&self, link: &ConnectionLink, resource: ResourceName) -> bool {
        let mut s = lock(&self.state);
        s.release(&resource);
        s.by_resource.insert(resource.clone(), link.id);
        let first = !s.by_connection.contains_key(&link.id);
        s.by_connection
            .entry(link.id)
            .or_insert_with(|| (link.transport, HashSet::new()))
            .1
            .insert(resource);
        first
    }

    /// A session (or a connection not watched) took `resource` over.
    pub fn release(&self, resource: &ResourceName) {
        lock(&self.state).release(resource);
    }

    /// Connection `id` ended: the resources it still commands, no longer anyone's.
    fn ended(&self, id: u64) -> Vec<ResourceName> {
        let mut s = lock(&self.state);
        let (_, held) = s.by_connection.remove(&id).unwrap_or_default();
        held.into_iter()
            .filter(|r| {
                let mine = s.by_resource.get(r) == Some(&id);
                if mine {
                    s.by_resource.remove(r);
                }
                mine
            })
            .collect()
    }

    /// Every connection that commands a resource without a session now: its id, transport
    /// and those resources.
    pub fn snapshot(&self) -> Vec<(u64, &'static str, Vec<ResourceName>)> {
        let s = lock(&self.state);
        let mut out: Vec<_> = s
            .by_connection
            .iter()
            .filter(|(_, (_, held))| !held.is_empty())
            .map(|(id, (transport, held))| (*id, *transport, held.iter().cloned().collect()))
            .collect();
        out.sort_by_key(|(id, _, _)| *id);
        out
    }

    /// Resources with a connection as commander now.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.state).by_resource.len()
    }
}

/// Waits for `link`'s connection to end, then stops what it still commands.
pub fn watch(machine: Arc<Machine>, link: ConnectionLink) {
    tokio::spawn(async move {
        link.ended.cancelled().await;
        let resources = machine.commanders().ended(link.id);
        // Stops first, then the line: as an expiry does.
        let stopping = machine.spawn_stops(
            &resources,
            crate::telemetry::StopCause::connection_end,
            std::time::Instant::now(),
        );
        if !stopping.names.is_empty() {
            tracing::info!(
                connection = link.id,
                transport = link.transport,
                stopping = ?stopping.names,
                "a connection that commanded without a session ended: stopping what it last commanded"
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::ApiName;

    fn motor(name: &str) -> ResourceName {
        ResourceName::new(ApiName::component("motor"), name.to_string())
    }

    #[test]
    fn the_last_commander_of_a_resource_is_the_one_whose_end_stops_it() {
        let c = Commanders::new(true);
        let (a, _ga) = ConnectionLink::new("h2");
        let (b, _gb) = ConnectionLink::new("webrtc");
        assert!(c.command(&a, motor("left")));
        assert!(!c.command(&a, motor("right")));
        // b takes "right" over; a session takes "left" over.
        assert!(c.command(&b, motor("right")));
        c.release(&motor("left"));
        assert_eq!(c.len(), 1);
        // What the machine's page lists: only b, with what it commands.
        assert_eq!(c.snapshot(), vec![(b.id, "webrtc", vec![motor("right")])]);
        // a's end stops nothing (it commands nothing now); b's stops "right".
        assert!(c.ended(a.id).is_empty());
        assert_eq!(c.ended(b.id), vec![motor("right")]);
        assert_eq!(c.len(), 0);
        // A connection that commands again after its end was handled is watched again.
        assert!(c.command(&a, motor("left")));
    }
}
