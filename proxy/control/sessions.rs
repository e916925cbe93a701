//! Which sessions belong to which master, so a switch can close them.
//!
//! Each master has a current pair of cancellation tokens: `reset` (close now
//! with RST) and `drain` (close when idle or at the drain timeout). A session
//! takes clones when it starts; [`Sessions::reset`] / [`Sessions::drain`]
//! fire the current pair and install fresh ones for later sessions. Touched
//! once per session and once per switch, never per byte.

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::config::master::MasterId;

/// The tokens one session watches.
#[derive(Clone, Debug, Default)]
pub struct SessionTokens {
    pub reset: CancellationToken,
    pub drain: CancellationToken,
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

    /// Asks every current session to `m` to close when idle.
    pub fn drain(&self, m: MasterId) {
        self.fire(m, |t| &mut t.drain);
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
