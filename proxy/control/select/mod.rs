//! Picks the active master. Pure: no sockets, no clock, no tokio tasks.
//!
//! Inputs are [`Event`]s (health transitions after hysteresis, admin commands,
//! the passing of time) with the current instant; outputs are [`Action`]s the
//! supervisor carries out (switch the route and close or drain the old
//! master's sessions, or re-probe everything). Randomness (reconnect jitter,
//! recycle backoff) comes from a seeded generator so tests are repeatable.
//!
//! The rules, in order:
//! - **Pinned** (admin): the pinned master is active whatever its health.
//! - **Failover**: the active master went down (or was drained): move to the
//!   first usable master in preference order; old sessions are reset.
//! - **Failback** (`master_failback`): a master ranked better than the active
//!   one has been up for `master_failback_interval`: move to it; old sessions
//!   drain.
//! - **Idle** (no minion session open, [`Minion::Idle`]): nothing to disrupt,
//!   so the active master is always the first usable one in order, at once,
//!   with or without `master_failback` (reason `failback`, no reconnect
//!   delay; a session that opens meanwhile on the master left drains or
//!   moves as on any failback). A native failover minion likewise tries its
//!   list in order at each (re)connect.
//! - **All down**: no active master; re-probe everything on an exponential
//!   backoff with full jitter (the article's "recycle"), until one is up.
//! - **Start-up**: while a better-ranked master has not reported yet, wait (at
//!   most `startup_grace`) rather than settle on a worse one.
//! - Every switch except the first choice sets `connect_after`, a reconnect
//!   delay drawn from `[0, random_reauth_delay]`.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::master::MasterId;
pub use crate::config::settings::Policy;
use crate::control::pace;

mod order;
mod words;
pub use order::{jitter_seed, preference_order, shuffled_order, srv_order};
pub use words::{Action, Event, Health, Minion, Reason, SessionFate};

#[derive(Clone, Copy, Debug)]
struct Recycle {
    attempt: u32,
    at: Instant,
}

/// The selection state machine. `Clone`: a copy can be fed an event to see
/// where it leads (`health::verify`) without touching the real one.
#[derive(Clone, Debug)]
pub struct Selector {
    policy: Policy,
    /// Preference order (configured, or shuffled by id).
    order: Vec<MasterId>,
    /// Indexed by `MasterId`.
    health: Vec<Health>,
    drained: Vec<bool>,
    active: Option<MasterId>,
    pinned: Option<MasterId>,
    /// Whether a switch would disrupt a minion session; `Connected` until
    /// told otherwise.
    minion: Minion,
    /// Set once a first choice was made (later choices are switches).
    decided: bool,
    started: Instant,
    connect_after: Instant,
    /// A random instant in the second half of `random_reauth_delay` after
    /// the last switch that spreads reconnects: a paced sign-in goes by
    /// then at the latest.
    reauth_by: Instant,
    /// Sign-ins are paced until then (`reauth_by` plus
    /// `pace::HOLD_PAST_BOUND` after a spread switch; else `now`).
    pace_until: Instant,
    recycle: Option<Recycle>,
    /// The reason for the next switch, if set (a reload).
    next_reason: Option<Reason>,
    rng: fastrand::Rng,
}

// === impl Selector ===

impl Selector {
    /// `order` must be a permutation of `MasterId(0..n)`.
    pub fn new(order: Vec<MasterId>, policy: Policy, seed: u64, now: Instant) -> Self {
        let n = order.len();
        Selector {
            policy,
            order,
            health: vec![Health::Unknown; n],
            drained: vec![false; n],
            active: None,
            pinned: None,
            minion: Minion::Connected,
            decided: false,
            started: now,
            connect_after: now,
            reauth_by: now,
            pace_until: now,
            recycle: None,
            next_reason: None,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// A selector for a reloaded master list. `map` gives each old master's
    /// new id, `None` for a master the reload removed. Health, drain, pin and
    /// the active master carry over for masters that stay; new masters start
    /// unknown. If the active master was removed, the next event (send
    /// [`Event::Tick`]) chooses again, and that switch has reason `reload`.
    pub fn carry_over(
        prev: Selector,
        order: Vec<MasterId>,
        map: impl Fn(MasterId) -> Option<MasterId>,
    ) -> Selector {
        let n = order.len();
        let mut next = Selector {
            health: vec![Health::Unknown; n],
            drained: vec![false; n],
            active: prev.active.and_then(&map),
            pinned: prev.pinned.and_then(&map),
            minion: prev.minion,
            order,
            next_reason: Some(Reason::Reload),
            recycle: None,
            policy: prev.policy,
            decided: prev.decided,
            started: prev.started,
            connect_after: prev.connect_after,
            reauth_by: prev.reauth_by,
            pace_until: prev.pace_until,
            rng: prev.rng.clone(),
        };
        for (old, h) in prev.health.iter().enumerate() {
            if let Some(new) = map(MasterId(old as u16)) {
                if let Some(slot) = next.health.get_mut(new.index()) {
                    *slot = *h;
                }
                if let Some(slot) = next.drained.get_mut(new.index()) {
                    *slot = prev.drained.get(old).copied().unwrap_or(false);
                }
            }
        }
        next
    }

    /// A selector for the first masters of a sidecar that had none (with
    /// `sidecar.master_srv`, until the record's first answer): a fresh start
    /// at `now`, so the first choice waits for better-ranked masters' first
    /// probes (`startup_grace`) and is not counted as a switch. Keeps the
    /// policy and the random generator.
    pub fn first_masters(prev: Selector, order: Vec<MasterId>, now: Instant) -> Selector {
        let mut next = Selector::new(order, prev.policy, 0, now);
        next.rng = prev.rng;
        next.minion = prev.minion;
        next
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Applies new knobs (a config reload); takes effect at the next event.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    pub fn active(&self) -> Option<MasterId> {
        self.active
    }

    pub fn pinned(&self) -> Option<MasterId> {
        self.pinned
    }

    /// What the selector was last told of the minion's sessions.
    pub fn minion(&self) -> Minion {
        self.minion
    }

    pub fn is_drained(&self, m: MasterId) -> bool {
        self.drained.get(m.index()).copied().unwrap_or(false)
    }

    pub fn health(&self, m: MasterId) -> Health {
        self.health
            .get(m.index())
            .copied()
            .unwrap_or(Health::Unknown)
    }

    pub fn order(&self) -> &[MasterId] {
        &self.order
    }

    pub fn connect_after(&self) -> Instant {
        self.connect_after
    }

    /// The bound of a paced sign-in: a random instant in `[R/2, R]` after
    /// the last switch that spreads reconnects (R = `random_reauth_delay`;
    /// the switch itself for one that does not).
    pub fn reauth_by(&self) -> Instant {
        self.reauth_by
    }

    /// Until when new sign-ins are paced (none: a past instant).
    pub fn pace_until(&self) -> Instant {
        self.pace_until
    }

    /// Masters a new connection may try after the active one, in order: the
    /// other usable masters. Empty while pinned (enrollment must reach the
    /// pinned master only) and while none is up (connections wait instead).
    pub fn fallbacks(&self) -> Vec<MasterId> {
        if self.pinned.is_some() {
            return Vec::new();
        }
        self.order
            .iter()
            .copied()
            .filter(|m| Some(*m) != self.active && self.usable(*m))
            .collect()
    }

    /// When the supervisor must send [`Event::Tick`] next, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(r) = self.recycle {
            consider(r.at);
        }
        if !self.decided && self.health.contains(&Health::Unknown) {
            consider(self.started + self.policy.startup_grace);
        }
        if let Some(t) = self.failback_due() {
            consider(t);
        }
        next
    }

    /// Feeds one input; returns what to do, in order.
    pub fn on_event(&mut self, ev: Event, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match ev {
            Event::Up(m) => {
                if let Some(h) = self.health.get_mut(m.index()) {
                    if !matches!(h, Health::Up { .. }) {
                        *h = Health::Up { since: now };
                    }
                }
            }
            Event::Down(m) => {
                if let Some(h) = self.health.get_mut(m.index()) {
                    *h = Health::Down;
                }
            }
            Event::Pin(m) => {
                if m.index() < self.order.len() {
                    self.pinned = Some(m);
                }
            }
            Event::Unpin => {
                if self.pinned.take().is_some() {
                    // Back to the normal choice: the best usable master.
                    if let Ok(Some(best)) = self.first_usable(now) {
                        if self.active != Some(best) {
                            self.switch(
                                Some(best),
                                Reason::Admin,
                                SessionFate::Drain,
                                now,
                                &mut actions,
                            );
                        }
                    }
                }
            }
            Event::Drain(m) => {
                if let Some(d) = self.drained.get_mut(m.index()) {
                    *d = true;
                }
            }
            Event::Undrain(m) => {
                if let Some(d) = self.drained.get_mut(m.index()) {
                    *d = false;
                }
            }
            Event::Minion(m) => self.minion = m,
            Event::Tick => {}
        }
        self.reconcile(now, &mut actions);
        self.recycle_step(now, &mut actions);
        self.next_reason = None;
        actions
    }

    fn is_up(&self, m: MasterId) -> bool {
        matches!(self.health(m), Health::Up { .. })
    }

    fn usable(&self, m: MasterId) -> bool {
        self.is_up(m) && !self.is_drained(m)
    }

    fn rank(&self, m: MasterId) -> usize {
        self.order
            .iter()
            .position(|x| *x == m)
            .unwrap_or(usize::MAX)
    }

    /// The first usable master in order; `Err(())` while start-up says wait.
    fn first_usable(&self, now: Instant) -> Result<Option<MasterId>, ()> {
        let in_grace = !self.decided && now < self.started + self.policy.startup_grace;
        for m in &self.order {
            if self.is_drained(*m) {
                continue;
            }
            match self.health(*m) {
                Health::Up { .. } => return Ok(Some(*m)),
                Health::Unknown if in_grace => return Err(()),
                _ => {}
            }
        }
        Ok(None)
    }

    /// Usable masters ranked better than the active one, best first, each
    /// with the instant it will have been up for the failback interval.
    fn failback_candidates(&self) -> impl Iterator<Item = (MasterId, Instant)> + '_ {
        let active_rank = match self.active {
            Some(a) if self.policy.failback && self.pinned.is_none() => self.rank(a),
            _ => 0,
        };
        self.order
            .iter()
            .take(active_rank)
            .filter(|m| !self.is_drained(**m))
            .filter_map(|m| match self.health(*m) {
                Health::Up { since } => Some((*m, since + self.policy.failback_interval)),
                _ => None,
            })
    }

    /// The best master that has been up long enough to fail back to.
    fn failback_target(&self, now: Instant) -> Option<MasterId> {
        self.failback_candidates()
            .find(|(_, at)| now >= *at)
            .map(|(m, _)| m)
    }

    /// When the next better master becomes eligible for failback.
    fn failback_due(&self) -> Option<Instant> {
        self.failback_candidates().map(|(_, at)| at).min()
    }

    fn reconcile(&mut self, now: Instant, actions: &mut Vec<Action>) {
        // Pinned => (pinned): admin override, whatever the health.
        if let Some(p) = self.pinned {
            if self.active != Some(p) {
                self.switch(Some(p), Reason::Admin, SessionFate::Drain, now, actions);
            }
            return;
        }
        match self.active {
            // Active(a) + a usable => Active(a) | Failback(better): after
            // the failback interval while a session is open, at once while
            // the minion is idle (nothing to disrupt).
            Some(a) if self.usable(a) => {
                let better = match self.minion {
                    Minion::Idle => self.first_usable(now).ok().flatten().filter(|b| *b != a),
                    Minion::Connected => self.failback_target(now),
                };
                if let Some(better) = better {
                    self.switch(
                        Some(better),
                        Reason::Failback,
                        SessionFate::Drain,
                        now,
                        actions,
                    );
                }
                // Leaving a pin or an undrain also lands here: nothing to do
                // unless failback says so.
            }
            // Active(a) + a down/drained, or no active => first usable | AllDown.
            current => {
                let Ok(next) = self.first_usable(now) else {
                    return;
                };
                if next == current && self.decided {
                    return;
                }
                let fate = match current {
                    Some(a) if self.is_drained(a) && self.is_up(a) => SessionFate::Drain,
                    _ => SessionFate::Reset,
                };
                let reason = match current {
                    Some(a) if self.is_drained(a) && self.is_up(a) => Reason::Admin,
                    _ => Reason::Failover,
                };
                self.switch(next, reason, fate, now, actions);
            }
        }
    }

    fn switch(
        &mut self,
        to: Option<MasterId>,
        reason: Reason,
        fate: SessionFate,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let from = self.active;
        let first = !self.decided;
        self.decided = true;
        if from == to {
            return;
        }
        let reason = if first && from.is_none() {
            Reason::Initial
        } else {
            self.next_reason.take().unwrap_or(reason)
        };
        // No reconnect delay for the first choice, for none, and from one
        // master to another while the minion is idle: nobody to spread, and
        // a minion that connects next must not wait for a switch it did not
        // see. (Out of "all down" it stays: connections held meanwhile are
        // not sessions yet, and a fleet of them must not arrive at once.)
        let idle_move = self.minion == Minion::Idle && from.is_some();
        (self.connect_after, self.reauth_by, self.pace_until) =
            if reason == Reason::Initial || to.is_none() || idle_move {
                (now, now, now)
            } else {
                // The bound of a paced sign-in: within the second half
                // of R, so that a fleet's sign-ins that reach it do not
                // all go in the same instant.
                let half = self.policy.reauth_delay / 2;
                let by = now + half + self.jitter(self.policy.reauth_delay - half);
                let until = if by > now {
                    by + pace::HOLD_PAST_BOUND
                } else {
                    now
                };
                (now + self.jitter(self.policy.reauth_delay), by, until)
            };
        self.active = to;
        actions.push(Action::Switch {
            from,
            to,
            reason,
            old_sessions: from.map(|_| fate),
            connect_after: self.connect_after,
        });
    }

    /// All down => schedule re-probes with exponential backoff and full jitter.
    fn recycle_step(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let all_down = self.active.is_none() && self.decided;
        if !all_down {
            self.recycle = None;
            return;
        }
        match self.recycle {
            None => {
                let at = now + self.backoff(0);
                self.recycle = Some(Recycle { attempt: 0, at });
            }
            Some(r) if now >= r.at => {
                actions.push(Action::ProbeAll);
                let attempt = r.attempt.saturating_add(1);
                self.recycle = Some(Recycle {
                    attempt,
                    at: now + self.backoff(attempt),
                });
            }
            Some(_) => {}
        }
    }

    fn backoff(&mut self, attempt: u32) -> Duration {
        let ceiling = self
            .policy
            .recycle_base
            .checked_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .unwrap_or(self.policy.recycle_cap)
            .min(self.policy.recycle_cap);
        // Full jitter, but never a busy loop.
        self.jitter(ceiling).max(Duration::from_millis(50))
    }

    /// Uniform in `[0, max]`.
    fn jitter(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.u64(0..=nanos))
    }
}

#[cfg(test)]
mod tests;
