//! Leases: an agent stays alive while it shows signs of life.
//!
//! Every message from the agent renews its lease to `now + heartbeat_interval × lease_intervals`.
//! Renewal is O(1) and schedules nothing: the engine keeps one timer per agent and, when it fires
//! early because the lease was renewed meanwhile, re-arms it at the new expiry.

use crate::io::Time;

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

#[cfg(test)]
mod tests {
    use super::*;

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
