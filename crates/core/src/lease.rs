//! Leases: an agent stays alive while it shows signs of life.
//!
//! Every message from the agent renews its lease to `now + heartbeat_interval × lease_intervals`.
//! Renewal is O(1) and schedules nothing: the engine keeps one timer per agent and, when it fires
//! early because the lease was renewed meanwhile, re-arms it at the new expiry.
//!
//! Sessions that share one client connection (one process's agents multiplexed on one HTTP/2
//! connection) live and die together, so a heartbeat on any of them renews every one:
//! [`SharedConnections`] knows which sessions share a connection. A client that knows this sends one
//! heartbeat per connection and interval instead of one per agent, which is what keeps thousands of
//! idle agents cheap.
//!
//! A client's traffic renews its leases when it reaches the server, not when the engine gets to
//! it: the shell reports the session messages it reads from each client connection that have to
//! wait for room in its intake ([`crate::Input::Alive`], dated when they were read, at most four
//! times a second per session; a message with room renews the leases when it is applied), and a
//! lease that runs out is renewed from its session's connection's last report before the
//! agent is declared lost. Under overload a client's messages can wait behind a backlog of other
//! inputs for longer than a lease; its acknowledgements and heartbeats still show it alive when
//! they are read. Only session messages count: a connection's other calls (queries, watches) say
//! nothing of its agents, and an agent whose client stopped its automatic heartbeats must still be
//! lost when nobody on its connection speaks for it. (One time kept per connection: a report costs
//! the same for one session or a thousand.)

use std::collections::HashMap;

use crate::io::{ConnId, Time};

/// When an agent's lease runs out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    expires_at: Time,
    duration_ms: u64,
}

impl Lease {
    /// A lease granted at `now` for `duration_ms`.
    pub fn new(now: Time, duration_ms: u64) -> Self {
        Lease { expires_at: now.saturating_add(duration_ms), duration_ms }
    }

    /// A sign of life at `now`.
    pub fn renew(&mut self, now: Time) {
        self.expires_at = self.expires_at.max(now.saturating_add(self.duration_ms));
    }

    /// The server could not run for `stall_ms` until `now`: the lease is moved by that time, so
    /// that only the client's silence counts, and runs at least `grace_ms` past `now`, time for
    /// what the client sent meanwhile to be read.
    pub fn extend_after_stall(&mut self, now: Time, stall_ms: u64, grace_ms: u64) {
        self.expires_at = self.expires_at.saturating_add(stall_ms).max(now.saturating_add(grace_ms));
    }

    /// When the lease runs out unless renewed.
    pub fn expires_at(&self) -> Time {
        self.expires_at
    }

    /// Whether the lease has run out at `now`.
    pub fn expired(&self, now: Time) -> bool {
        now >= self.expires_at
    }
}

/// A client connection as the shell names it (0: not known to be shared with anything).
pub type ConnectionId = u64;

/// Which sessions share which client connection.
#[derive(Debug, Default)]
pub struct SharedConnections {
    connection_of: HashMap<ConnId, ConnectionId>,
    sessions: HashMap<ConnectionId, Vec<ConnId>>,
    /// When a session message was last read from each connection that carries sessions.
    heard: HashMap<ConnectionId, Time>,
}

impl SharedConnections {
    /// Session `conn` runs on client connection `connection` (nothing is recorded for 0).
    pub fn join(&mut self, conn: ConnId, connection: ConnectionId) {
        if connection == 0 || self.connection_of.insert(conn, connection).is_some() {
            return;
        }
        self.sessions.entry(connection).or_default().push(conn);
    }

    /// Session `conn` is over.
    pub fn leave(&mut self, conn: ConnId) {
        let Some(connection) = self.connection_of.remove(&conn) else { return };
        if let Some(sessions) = self.sessions.get_mut(&connection) {
            sessions.retain(|c| *c != conn);
            if sessions.is_empty() {
                self.sessions.remove(&connection);
                self.heard.remove(&connection);
            }
        }
    }

    /// A session message was read from client connection `connection` at `at` (nothing is kept for a
    /// connection without sessions).
    pub fn heard(&mut self, connection: ConnectionId, at: Time) {
        if self.sessions.contains_key(&connection) {
            let last = self.heard.entry(connection).or_insert(at);
            *last = (*last).max(at);
        }
    }

    /// When a message was last read from the client connection session `conn` runs on.
    pub fn last_heard(&self, conn: ConnId) -> Option<Time> {
        self.heard.get(self.connection_of.get(&conn)?).copied()
    }

    /// The other sessions on `conn`'s client connection.
    pub fn peers(&self, conn: ConnId) -> impl Iterator<Item = ConnId> + '_ {
        let sessions = self.connection_of.get(&conn).and_then(|c| self.sessions.get(c));
        sessions.into_iter().flatten().copied().filter(move |c| *c != conn)
    }

    /// How many client connections carry sessions.
    pub fn connections(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_on_one_connection_are_peers_until_they_leave() {
        let mut shared = SharedConnections::default();
        shared.join(ConnId(1), 7);
        shared.join(ConnId(2), 7);
        shared.join(ConnId(3), 7);
        shared.join(ConnId(4), 8);
        shared.join(ConnId(5), 0);
        assert_eq!(shared.peers(ConnId(1)).collect::<Vec<_>>(), [ConnId(2), ConnId(3)]);
        assert_eq!(shared.peers(ConnId(4)).count(), 0);
        assert_eq!(shared.peers(ConnId(5)).count(), 0, "connection 0 is shared with nothing");
        shared.heard(7, 500);
        shared.heard(7, 400);
        shared.heard(0, 500);
        shared.heard(9, 500);
        assert_eq!((shared.last_heard(ConnId(2)), shared.last_heard(ConnId(4))), (Some(500), None));
        assert_eq!(shared.last_heard(ConnId(5)), None, "connection 0 is not heard");
        assert!(!shared.heard.contains_key(&9), "nothing is kept for a connection without sessions");
        shared.leave(ConnId(2));
        assert_eq!(shared.peers(ConnId(3)).collect::<Vec<_>>(), [ConnId(1)]);
        shared.leave(ConnId(1));
        shared.leave(ConnId(3));
        shared.leave(ConnId(3));
        shared.leave(ConnId(4));
        shared.leave(ConnId(5));
        assert_eq!(shared.connections(), 0, "nothing is kept for connections without sessions");
        assert!(shared.connection_of.is_empty() && shared.heard.is_empty());
    }

    #[test]
    fn renewal_pushes_expiry_forward() {
        let mut l = Lease::new(1000, 3000);
        assert_eq!(l.expires_at(), 4000);
        assert!(!l.expired(3999));
        l.renew(2000);
        assert_eq!(l.expires_at(), 5000);
        assert!(!l.expired(4500));
        assert!(l.expired(5000));
    }

    #[test]
    fn a_stall_moves_expiry_by_its_length_and_leaves_a_grace() {
        let mut l = Lease::new(1000, 3000);
        l.extend_after_stall(10_000, 8_000, 500);
        assert_eq!(l.expires_at(), 12_000, "4 000 + 8 000: the time left before the stall");
        let mut l = Lease::new(1000, 3000);
        l.extend_after_stall(10_000, 5_000, 500);
        assert_eq!(l.expires_at(), 10_500, "4 000 + 5 000 is past: the grace from the end of the stall");
    }

    #[test]
    fn renewal_never_moves_expiry_back() {
        let mut l = Lease::new(1000, 3000);
        l.renew(500);
        assert_eq!(l.expires_at(), 4000);
    }
}
