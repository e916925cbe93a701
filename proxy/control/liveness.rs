//! Whether the control loop is making progress (for the systemd watchdog).
//!
//! The supervisor ticks on every turn of its loop (with a watchdog it wakes
//! at least every [`SUPERVISOR_TICK`]; without one nothing reads this, and
//! an idle loop sleeps); every health task ticks after each probe round.
//! [`Liveness::stalled`] says which of them has not ticked in time: the
//! supervisor within the watchdog period, the health tasks within two alive
//! intervals plus the probe timeout (they probe once per interval, however
//! short the watchdog). Plain atomics and arithmetic; no I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// With a systemd watchdog, the supervisor's loop wakes at least this often
/// to show it is alive.
pub const SUPERVISOR_TICK: Duration = Duration::from_millis(250);

/// The last tick of each part of the control loop.
#[derive(Debug)]
pub struct Liveness {
    start: Instant,
    /// Milliseconds since `start`, plus one (0: never).
    supervisor_ms: AtomicU64,
    health_ms: AtomicU64,
    /// How long a health task may take between ticks: 2 × alive interval +
    /// probe timeout (updated on reload).
    health_grace_ms: AtomicU64,
}

// === impl Liveness ===

impl Liveness {
    pub fn new(now: Instant, health_grace: Duration) -> Self {
        let l = Liveness {
            start: now,
            supervisor_ms: AtomicU64::new(0),
            health_ms: AtomicU64::new(0),
            health_grace_ms: AtomicU64::new(0),
        };
        l.set_health_grace(health_grace);
        l
    }

    /// How long health may go without a tick (2 × interval + timeout).
    pub fn set_health_grace(&self, grace: Duration) {
        self.health_grace_ms
            .store(grace.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn tick_supervisor(&self, now: Instant) {
        self.supervisor_ms.store(self.ms(now), Ordering::Relaxed);
    }

    pub fn tick_health(&self, now: Instant) {
        self.health_ms.store(self.ms(now), Ordering::Relaxed);
    }

    /// `None` if both parts ticked in time (the supervisor within `period`,
    /// health within `max(period, grace)`), else the part that did not.
    /// A part that never ticked counts from `start`.
    pub fn stalled(&self, now: Instant, period: Duration) -> Option<&'static str> {
        let now_ms = self.ms(now);
        let late = |tick: &AtomicU64, limit: Duration| {
            let last = tick.load(Ordering::Relaxed).max(1);
            now_ms.saturating_sub(last) > limit.as_millis() as u64
        };
        let grace = Duration::from_millis(self.health_grace_ms.load(Ordering::Relaxed));
        if late(&self.supervisor_ms, period) {
            Some("supervisor")
        } else if late(&self.health_ms, period.max(grace)) {
            Some("health checks")
        } else {
            None
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_millis() as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_parts_must_tick_in_time() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let l = Liveness::new(t0, s(5));
        l.tick_supervisor(t0);
        l.tick_health(t0);
        assert_eq!(l.stalled(t0 + s(1), s(2)), None);
        // The supervisor ticks often; health only once per interval (grace 5 s).
        l.tick_supervisor(t0 + s(3));
        assert_eq!(l.stalled(t0 + s(4), s(2)), None, "health within its grace");
        assert_eq!(l.stalled(t0 + s(6), s(2)), Some("supervisor"));
        l.tick_supervisor(t0 + s(6));
        assert_eq!(l.stalled(t0 + s(6), s(2)), Some("health checks"));
        l.tick_health(t0 + s(6));
        assert_eq!(l.stalled(t0 + s(7), s(2)), None);
        // A longer watchdog period than the grace: the period applies to both.
        assert_eq!(l.stalled(t0 + s(15), s(10)), None);
    }

    #[test]
    fn never_ticking_counts_from_the_start() {
        let t0 = Instant::now();
        let l = Liveness::new(t0, Duration::from_secs(1));
        assert_eq!(
            l.stalled(t0 + Duration::from_millis(500), Duration::from_secs(1)),
            None
        );
        assert_eq!(
            l.stalled(t0 + Duration::from_secs(2), Duration::from_secs(1)),
            Some("supervisor")
        );
    }
}
