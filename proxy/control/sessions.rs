//! Which sessions belong to which master, so a switch can close them.
//!
//! Each master has a current pair of cancellation tokens: `reset` (close now
//! with RST) and `drain` (close when idle or at the drain timeout). Every
//! drain token is a child of the sidecar's shutdown token, so a session
//! watches one token for both (one future less in every idle session). A session
//! takes clones when it starts; [`Sessions::reset`] / [`Sessions::drain`]
//! fire the current pair and install fresh ones for later sessions. Touched
//! once per session and once per switch, never per byte.
//!
//! It also counts the sessions open, whatever their master ([`OpenSessions`]):
//! a session is counted from the moment it takes its tokens until it drops
//! them (a moving session keeps its old master's tokens until it holds the
//! new master's), so the supervisor can tell the selector whether a switch
//! would disrupt anything, and carries the data path's word that a minion
//! connection arrived while none was open ([`OpenSessions::arrive`]): the
//! minion (re)starts, and the supervisor checks the masters it prefers first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
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
    /// This session's share of [`OpenSessions`] (`None` for the tokens a
    /// slot keeps for later sessions). A clone counts once more, which
    /// changes nothing: only "any open" is read.
    pub open: Option<Open>,
}

/// How many minion sessions are open through the sidecar, across masters
/// and reloads: one per [`Open`] alive. Only the moments it becomes zero or
/// stops being zero wake the one waiter (the supervisor).
#[derive(Debug, Default)]
pub struct OpenSessions {
    count: AtomicUsize,
    /// Holds a permit when nobody waits, so no change between two looks is lost.
    changed: Notify,
    /// A minion connection arrived while the sidecar was idle (one permit
    /// for any number of them).
    arrived: Notify,
}

impl OpenSessions {
    /// Whether any session is open.
    pub fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    /// Resolves once [`any`](OpenSessions::any) may have changed since the
    /// last call (at once if it did meanwhile; spurious wake-ups are allowed).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// A minion connection arrived while the route said the sidecar was
    /// idle: the minion is starting (or restarting). Wakes the supervisor.
    pub fn arrive(&self) {
        self.arrived.notify_one();
    }

    /// Resolves once [`arrive`](OpenSessions::arrive) was called since the
    /// last call (at once if it was meanwhile).
    pub async fn arrived(&self) {
        self.arrived.notified().await;
    }
}

/// One open session's share of [`OpenSessions`]: counted while alive. One
/// pointer: no allocation per session.
#[derive(Debug)]
pub struct Open(Arc<OpenSessions>);

impl Clone for Open {
    fn clone(&self) -> Open {
        Open::new(&self.0)
    }
}

impl Open {
    pub fn new(count: &Arc<OpenSessions>) -> Open {
        if count.count.fetch_add(1, Ordering::AcqRel) == 0 {
            count.changed.notify_one();
        }
        Open(count.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let was = self
            .0
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if was == Ok(1) {
            self.0.changed.notify_one();
        }
    }
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
    /// Woken each time the last busy session becomes idle.
    all_idle: Notify,
}

impl SwitchGate {
    /// Counts one more session that is not idle yet.
    pub fn busy(&self) {
        self.busy.fetch_add(1, Ordering::AcqRel);
    }

    /// One counted session is idle now (or gone).
    pub fn idle(&self) {
        // Never below zero, whatever the order of calls.
        let was = self
            .busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if was == Ok(1) {
            self.all_idle.notify_waiters();
        }
    }

    /// No session of this switch is busy.
    pub fn all_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }

    /// Resolves once no session of this switch is busy (at once if none is).
    pub async fn until_all_idle(&self) {
        loop {
            let woken = self.all_idle.notified();
            tokio::pin!(woken);
            // Registered before the look, so an idle() in between still wakes it.
            woken.as_mut().enable();
            if self.all_idle() {
                return;
            }
            woken.await;
        }
    }
}

/// One master's current tokens; shared across a reload for a master that
/// stays, so later switches still reach the sessions opened before it.
pub type Slot = Arc<Mutex<SessionTokens>>;

/// Per-master session tokens.
#[derive(Debug)]
pub struct Sessions {
    per_master: Vec<Slot>,
    /// The sidecar's shutdown token: parent of every drain token.
    shutdown: CancellationToken,
    /// Every session that joined, whatever its master; shared with the
    /// planes before and after a reload.
    open: Arc<OpenSessions>,
}

impl Sessions {
    /// Fresh slots for `masters` masters, drained when `shutdown` is cancelled.
    pub fn new(masters: usize, shutdown: &CancellationToken) -> Self {
        Self::with_slots((0..masters).map(|_| None).collect(), shutdown, None)
    }

    /// One slot per master: the given one (a master kept across a reload) or
    /// a fresh one; `open` is the previous plane's count (a reload), if any.
    pub fn with_slots(
        slots: Vec<Option<Slot>>,
        shutdown: &CancellationToken,
        open: Option<Arc<OpenSessions>>,
    ) -> Self {
        let fresh = || Arc::new(Mutex::new(Self::fresh_tokens(shutdown)));
        Sessions {
            per_master: slots.into_iter().map(|s| s.unwrap_or_else(fresh)).collect(),
            shutdown: shutdown.clone(),
            open: open.unwrap_or_default(),
        }
    }

    /// The count of open sessions (the same across reloads).
    pub fn open(&self) -> &Arc<OpenSessions> {
        &self.open
    }

    fn fresh_tokens(shutdown: &CancellationToken) -> SessionTokens {
        SessionTokens {
            reset: CancellationToken::new(),
            drain: shutdown.child_token(),
            gate: Arc::default(),
            open: None,
        }
    }

    /// The slot of master `m`, to carry into a reloaded plane.
    pub fn slot(&self, m: MasterId) -> Option<Slot> {
        self.per_master.get(m.index()).cloned()
    }

    /// Tokens for a new session to `m`; the session counts as open while
    /// they (or clones of them) live.
    pub fn join(&self, m: MasterId) -> SessionTokens {
        let tokens = self
            .per_master
            .get(m.index())
            .and_then(|t| t.lock().ok().map(|t| t.clone()))
            .unwrap_or_else(|| Self::fresh_tokens(&self.shutdown));
        SessionTokens {
            open: Some(Open::new(&self.open)),
            ..tokens
        }
    }

    /// Closes every current session to `m` at once (RST). Only the reset
    /// token is replaced, so a session that is draining can still be reset.
    pub fn reset(&self, m: MasterId) {
        self.fire(m, |t| std::mem::take(&mut t.reset).cancel());
    }

    /// Asks every current session to `m` to close (or move) when idle;
    /// later sessions get a fresh drain token and gate. Returns the gate
    /// the asked sessions share, to see when they have all moved.
    pub fn drain(&self, m: MasterId) -> Option<Arc<SwitchGate>> {
        let next = self.shutdown.child_token();
        self.fire(m, |t| {
            std::mem::replace(&mut t.drain, next).cancel();
            std::mem::take(&mut t.gate)
        })
    }

    /// Applies `f` to master `m`'s current tokens.
    fn fire<R>(&self, m: MasterId, f: impl FnOnce(&mut SessionTokens) -> R) -> Option<R> {
        let slot = self.per_master.get(m.index())?;
        let mut tokens = slot.lock().ok()?;
        Some(f(&mut tokens))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn reset_reaches_existing_sessions_only() {
        let s = Sessions::new(2, &CancellationToken::new());
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
        let s = Sessions::new(1, &CancellationToken::new());
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

    #[tokio::test(start_paused = true)]
    async fn until_all_idle_wakes_when_the_last_busy_session_is_idle() {
        let s = Sessions::new(1, &CancellationToken::new());
        let t = s.join(MasterId(0));
        let gate = s.drain(MasterId(0)).expect("master 0");
        assert!(Arc::ptr_eq(&gate, &t.gate), "the asked sessions' gate");
        tokio::time::timeout(Duration::from_secs(1), gate.until_all_idle())
            .await
            .expect("no session busy: at once");
        gate.busy();
        gate.busy();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.until_all_idle().await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        gate.idle();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one session is still busy");
        gate.idle();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken when the last one is idle")
            .expect("waiter");
    }

    #[test]
    fn shutdown_drains_every_session_and_resets_none() {
        let shutdown = CancellationToken::new();
        let s = Sessions::new(2, &shutdown);
        let (a, b) = (s.join(MasterId(0)), s.join(MasterId(1)));
        s.drain(MasterId(0));
        let later = s.join(MasterId(0));
        assert!(!later.drain.is_cancelled());
        shutdown.cancel();
        for t in [&a, &b, &later] {
            assert!(t.drain.is_cancelled() && !t.reset.is_cancelled());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn open_sessions_are_counted_across_masters_and_reloads_until_dropped() {
        let shutdown = CancellationToken::new();
        let s = Sessions::new(2, &shutdown);
        let open = s.open().clone();
        assert!(!open.any());
        let on_a = s.join(MasterId(0));
        let copy = on_a.clone();
        let on_b = s.join(MasterId(1));
        assert!(open.any());
        tokio::time::timeout(Duration::from_secs(1), open.changed())
            .await
            .expect("the first session wakes the waiter");
        // A reload's plane shares the count.
        let reloaded =
            Sessions::with_slots(vec![s.slot(MasterId(1))], &shutdown, Some(open.clone()));
        let after_reload = reloaded.join(MasterId(0));
        drop((on_a, on_b));
        assert!(
            open.any(),
            "a clone and a session of the reloaded plane are open"
        );
        drop(copy);
        assert!(open.any());
        drop(after_reload);
        assert!(!open.any(), "every session closed");
        tokio::time::timeout(Duration::from_secs(1), open.changed())
            .await
            .expect("the last close wakes the waiter, though it was not waiting");
        // A slot's own tokens (switches fire them) are not a session.
        s.drain(MasterId(0));
        s.reset(MasterId(1));
        assert!(!open.any());
    }

    #[test]
    fn drain_is_separate_from_reset() {
        let s = Sessions::new(1, &CancellationToken::new());
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
