//! When a master's ret port may get application-level `ping` requests:
//! only once it has been connectable a while ([`PingGate`]). Pure: it takes
//! `now`, no clock, no I/O.

use tokio::time::Instant;

/// Where a master's ret port stands for [`PingGate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// The last connect to it failed (refused, timed out): a master down
    /// or restarting. Not pinged; when it opens again it is young.
    Closed,
    /// Connectable since `since` (or the sidecar's start): probed with a
    /// plain connect (no verdict unless it fails) until it has been open
    /// for the gate's hold.
    Young { since: Instant },
    /// Open for the hold: pinged.
    Settled,
}

/// When a master's ret port may get `ping` probes: only once it has been
/// connectable for `hold` as this sidecar saw it — never in a master's first
/// second, when a request before its workers listen, or racing the Salt 3008
/// router's first connection to them, can wedge it. Pure: it takes `now`, no clock, no I/O.
#[derive(Clone, Debug)]
pub struct PingGate {
    hold: std::time::Duration,
    opening: Opening,
}

// === impl PingGate ===

impl PingGate {
    /// At the sidecar's start: a master's age is unknown (it may have
    /// opened just now, as at boot), so it is young from `now`.
    pub fn new(hold: std::time::Duration, now: Instant) -> Self {
        PingGate {
            hold,
            opening: Opening::Young { since: now },
        }
    }

    /// When a young port may be pinged (the next round is due then).
    pub fn ping_at(&self) -> Option<Instant> {
        match self.opening {
            Opening::Young { since } => Some(since + self.hold),
            Opening::Closed | Opening::Settled => None,
        }
    }

    /// May a round starting at `now` ping the ret port?
    pub fn may_ping(&self, now: Instant) -> bool {
        match self.opening {
            Opening::Settled => true,
            Opening::Young { since } => now >= since + self.hold,
            Opening::Closed => false,
        }
    }

    /// A round ended at `now`: the ret port accepted its connect or not.
    /// Returns the new standing when it changed (one log line each).
    ///
    /// `_ + not connected => Closed`; `Closed + connected => Young{now}`;
    /// `Young{since} + connected, held => Settled`; otherwise unchanged.
    pub fn observe(&mut self, connected: bool, now: Instant) -> Option<Opening> {
        let next = match (self.opening, connected) {
            (_, false) => Opening::Closed,
            (Opening::Closed, true) => Opening::Young { since: now },
            (Opening::Young { since }, true) if now >= since + self.hold => Opening::Settled,
            (standing, true) => standing,
        };
        (next != self.opening).then(|| {
            self.opening = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const HOLD: Duration = Duration::from_secs(3);

    /// One round per second, the ret port open or not; what each round may
    /// do (ping or not) on virtual time.
    async fn rounds(gate: &mut PingGate, open: &[bool]) -> Vec<bool> {
        let mut pinged = Vec::new();
        for &connected in open {
            pinged.push(gate.may_ping(Instant::now()));
            gate.observe(connected, Instant::now());
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        pinged
    }

    #[tokio::test(start_paused = true)]
    async fn at_start_a_master_is_pinged_only_after_the_hold() {
        let mut gate = PingGate::new(HOLD, Instant::now());
        let pinged = rounds(&mut gate, &[true; 5]).await;
        assert_eq!(pinged, [false, false, false, true, true]);
        assert_eq!(gate.opening, Opening::Settled);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_master_is_young_again_from_its_first_open_connect() {
        let mut gate = PingGate::new(HOLD, Instant::now());
        rounds(&mut gate, &[true; 4]).await;
        assert!(gate.may_ping(Instant::now()));
        // Down for two rounds (refused), then open again.
        let pinged = rounds(&mut gate, &[false, false, true, true, true, true, true]).await;
        assert_eq!(
            pinged,
            [true, false, false, false, false, true, true],
            "no ping while closed, nor in the 3 s after it opened"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_while_young_restarts_the_hold() {
        let mut gate = PingGate::new(HOLD, Instant::now());
        let pinged = rounds(&mut gate, &[true, true, false, true, true, true, true]).await;
        assert_eq!(pinged, [false, false, false, false, false, false, true]);
    }

    #[tokio::test(start_paused = true)]
    async fn each_change_is_reported_once() {
        let t0 = Instant::now();
        let mut gate = PingGate::new(HOLD, t0);
        assert_eq!(gate.observe(true, t0), None);
        assert_eq!(gate.observe(false, t0), Some(Opening::Closed));
        assert_eq!(gate.observe(false, t0), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        let t1 = Instant::now();
        assert_eq!(gate.observe(true, t1), Some(Opening::Young { since: t1 }));
        tokio::time::advance(HOLD).await;
        assert_eq!(gate.observe(true, Instant::now()), Some(Opening::Settled));
        assert_eq!(gate.observe(true, Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_young_port_names_when_it_may_be_pinged() {
        let t0 = Instant::now();
        let mut gate = PingGate::new(HOLD, t0);
        assert_eq!(gate.ping_at(), Some(t0 + HOLD));
        gate.observe(false, t0);
        assert_eq!(gate.ping_at(), None, "closed: nothing to wait for");
        tokio::time::advance(Duration::from_millis(1500)).await;
        let t1 = Instant::now();
        gate.observe(true, t1);
        assert_eq!(gate.ping_at(), Some(t1 + HOLD));
        assert!(!gate.may_ping(t1 + HOLD - Duration::from_millis(1)));
        assert!(gate.may_ping(t1 + HOLD));
        gate.observe(true, t1 + HOLD);
        assert_eq!(gate.ping_at(), None, "settled");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_master_stays_settled_its_kernel_still_accepts() {
        let mut gate = PingGate::new(HOLD, Instant::now());
        rounds(&mut gate, &[true; 4]).await;
        // Unanswered pings: connected, so still pinged every round.
        let pinged = rounds(&mut gate, &[true; 10]).await;
        assert!(pinged.iter().all(|&p| p));
    }
}
