//! Which sessions belong to which master, so a switch can close them.
//!
//! Each master has a current pair of cancellation tokens: `reset` (close now
//! with RST) and `drain` (close when idle or at the drain timeout). A session
//! takes clones when it starts; [`Sessions::reset`] / [`Sessions::drain`]
//! fire the current pair and install fresh ones for later sessions. Touched
//! once per session and once per switch, never per byte.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::config::master::MasterId;

/// The tokens one session watches.
#[derive(Clone, Debug, Default)]
pub struct SessionTokens {
    pub reset: CancellationToken,
    pub drain: CancellationToken,
    /// Shared by every session that holds the same `drain` token: a
    /// graceful switch moves them together, once all of them are idle.
    pub gate: Arc<SwitchGate>,
}

/// Where the sessions asked to move by one graceful switch meet: each
/// counts itself busy until it is idle, and none moves before all are, so
/// a minion's publish and ret sessions reach the new master together (a
/// minion whose publications come from one master and whose requests go
/// to another cannot sign in to either). Touched once per session and per
/// change between busy and idle, never per byte.
#[derive(Debug, Default)]
pub struct SwitchGate {
    busy: AtomicUsize,
}

impl SwitchGate {
    /// Counts one more session that is not idle yet.
    pub fn busy(&self) {
        self.busy.fetch_add(1, Ordering::AcqRel);
    }

    /// One counted session is idle now (or gone).
    pub fn idle(&self) {
        // Never below zero, whatever the order of calls.
        let _ = self
            .busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// No session of this switch is busy.
    pub fn all_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }
}

/// One master's current tokens; shared across a reload for a master that
/// stays, so later switches still reach the sessions opened before it.
pub type Slot = Arc<Mutex<SessionTokens>>;

/// Per-master session tokens.
#[derive(Debug)]
pub struct Sessions {
    per_master: Vec<Slot>,
}

impl Sessions {
    pub fn new(masters: usize) -> Self {
        Self::with_slots((0..masters).map(|_| None).collect())
    }

    /// One slot per master: the given one (a master kept across a reload) or a fresh one.
    pub fn with_slots(slots: Vec<Option<Slot>>) -> Self {
        Sessions {
            per_master: slots.into_iter().map(|s| s.unwrap_or_default()).collect(),
        }
    }

    /// The slot of master `m`, to carry into a reloaded plane.
    pub fn slot(&self, m: MasterId) -> Option<Slot> {
        self.per_master.get(m.index()).cloned()
    }

    /// Tokens for a new session to `m`.
    pub fn join(&self, m: MasterId) -> SessionTokens {
        self.per_master
            .get(m.index())
            .and_then(|t| t.lock().ok().map(|t| t.clone()))
            .unwrap_or_default()
    }

    /// Closes every current session to `m` at once (RST).
    pub fn reset(&self, m: MasterId) {
        self.fire(m, |t| &mut t.reset);
    }

    /// Asks every current session to `m` to close (or move) when idle;
    /// later sessions get a fresh drain token and gate.
    pub fn drain(&self, m: MasterId) {
        if let Some(slot) = self.per_master.get(m.index()) {
            if let Ok(mut tokens) = slot.lock() {
                tokens.gate = Arc::default();
                std::mem::take(&mut tokens.drain).cancel();
            }
        }
    }

    /// Cancels one token and replaces only that one, so a session that is
    /// draining can still be reset later.
    fn fire(&self, m: MasterId, which: fn(&mut SessionTokens) -> &mut CancellationToken) {
        if let Some(slot) = self.per_master.get(m.index()) {
            if let Ok(mut tokens) = slot.lock() {
                std::mem::take(which(&mut tokens)).cancel();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_reaches_existing_sessions_only() {
        let s = Sessions::new(2);
        let old = s.join(MasterId(0));
        let other = s.join(MasterId(1));
        s.reset(MasterId(0));
        assert!(old.reset.is_cancelled());
        assert!(!old.drain.is_cancelled());
        assert!(
            !other.reset.is_cancelled(),
            "other masters' sessions untouched"
        );
        assert!(
            !s.join(MasterId(0)).reset.is_cancelled(),
            "later sessions start fresh"
        );
    }

    #[test]
    fn one_drain_shares_one_gate_and_later_sessions_get_a_new_one() {
        let s = Sessions::new(1);
        let (a, b) = (s.join(MasterId(0)), s.join(MasterId(0)));
        assert!(Arc::ptr_eq(&a.gate, &b.gate));
        s.drain(MasterId(0));
        let later = s.join(MasterId(0));
        assert!(!Arc::ptr_eq(&a.gate, &later.gate));
        a.gate.busy();
        b.gate.busy();
        a.gate.idle();
        assert!(!b.gate.all_idle(), "one is still busy");
        b.gate.idle();
        assert!(a.gate.all_idle());
        a.gate.idle();
        assert!(a.gate.all_idle(), "never below zero");
        a.gate.busy();
        assert!(!a.gate.all_idle());
    }

    #[test]
    fn drain_is_separate_from_reset() {
        let s = Sessions::new(1);
        let t = s.join(MasterId(0));
        s.drain(MasterId(0));
        assert!(t.drain.is_cancelled() && !t.reset.is_cancelled());
        s.reset(MasterId(0));
        assert!(
            t.reset.is_cancelled(),
            "a draining session can still be reset"
        );
    }
}
