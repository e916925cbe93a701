//! Lingering after a graceful switch (see the supervisor's module doc):
//! new connections keep going to the master being left until the sessions
//! the switch asked to move have moved, or the drain timeout.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::{debug, info};

use super::Supervisor;
use crate::config::master::MasterId;
use crate::control::sessions::SwitchGate;
use crate::metrics::NONE;

/// A graceful switch's wait for its sessions to move (see the module doc).
#[derive(Clone, Debug)]
pub struct Linger {
    /// The master being left; still up.
    pub(super) from: MasterId,
    /// Where the sessions the switch asked to move meet.
    pub(super) gate: Arc<SwitchGate>,
    /// When the switch happened.
    pub(super) since: Instant,
    /// The drain timeout: past it, every session moves on its own.
    pub(super) until: Instant,
}

/// How long after a graceful switch its gate is first looked at: the
/// sessions it woke count themselves busy within one drain step (100 ms).
pub(super) const LINGER_SETTLE: std::time::Duration = std::time::Duration::from_millis(250);

/// Resolves when `linger`'s wait is over: its sessions have all moved (or
/// were never busy), or the drain timeout passed. Never without one.
pub(super) async fn lingered(linger: Option<Linger>) {
    let Some(l) = linger else {
        return std::future::pending().await;
    };
    tokio::time::sleep_until(l.since + LINGER_SETTLE).await;
    tokio::select! {
        _ = l.gate.until_all_idle() => {}
        _ = tokio::time::sleep_until(l.until) => {}
    }
}

// === impl Supervisor: lingering ===

impl Supervisor {
    /// Whether new connections may still go to `from`, a master a graceful
    /// switch is leaving: it is up, not the active one, and no pin says
    /// where every connection must go.
    pub(super) fn may_linger(&self, from: MasterId) -> bool {
        use crate::control::select::Health;
        self.selector.active() != Some(from)
            && self.selector.pinned().is_none()
            && matches!(self.selector.health(from), Health::Up { .. })
    }

    /// After a graceful switch that moves sessions: new connections keep
    /// going to `from` until `gate` says the moves are done.
    pub(super) fn start_linger(&mut self, from: MasterId, gate: Arc<SwitchGate>, now: Instant) {
        // The supervisor's is the only other handle on the gate when no
        // session of `from` was open: nothing to wait for.
        let sessions_asked = Arc::strong_count(&gate) > 1;
        if !sessions_asked || !self.tunables.borrow().moves_sessions() || !self.may_linger(from) {
            return;
        }
        let until = now + self.tunables.borrow().drain_timeout;
        self.linger = Some(Linger {
            from,
            gate,
            since: now,
            until,
        });
        self.metrics.graceful_switch_waiting.set(1);
        debug!(
            master = self.plane.label(from),
            "graceful switch: new connections go to the old master until its sessions have moved"
        );
        self.publish_route();
    }

    /// Ends the linger, if any: the sessions that opened to its master
    /// meanwhile are asked to move in turn (unless it is the active master
    /// again), and new connections go to the active master.
    pub(super) fn end_linger(&mut self, why: &'static str) {
        let Some(l) = self.linger.take() else {
            return;
        };
        self.metrics.graceful_switch_waiting.set(0);
        if self.selector.active() != Some(l.from) {
            self.plane.sessions.drain(l.from);
        }
        info!(
            from = self.plane.label(l.from),
            to = self.selector.active().map_or(NONE, |m| self.plane.label(m)),
            why,
            waited_ms = l.since.elapsed().as_millis() as u64,
            "graceful switch complete: new connections go to the new master"
        );
    }
}
