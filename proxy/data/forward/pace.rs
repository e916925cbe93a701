//! Pacing the minion's sign-in after a switch (ZeroMQ ret connections):
//! the sidecar asks the new master clear Salt `ping`s and lets the new
//! connection through once the master answers in time (a slower answer
//! past the bound, `Route::reauth_by`: a random instant in the second half
//! of `random_reauth_delay` after the switch), or whatever the answers at
//! `Route::pace_until`. A sign-in the minion is about to give up on is not
//! sent (`control::pace::fresh`): the minion sends it again, and that one
//! goes. `control::pace` decides; this module asks, waits, counts and logs.
//!
//! One gate per switch, shared by the sidecar's new connections: one ask at
//! a time; a sign-in the minion sends again (its `auth_timeout`) carries on
//! where the last left off; once open, every new connection of the switch
//! goes at once (a minion signs in once; its later connections are
//! returns). One log line per switch that paced anything.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info};

use super::Forwarder;
use crate::config::master::{MasterId, Port};
use crate::config::Transport;
use crate::control::masters::Plane;
use crate::control::pace::{self, Answer, Next, Pace};
use crate::metrics::{PaceAsk, PaceOutcome};
use crate::zmtp::probe::PingLine;

/// What the pacing says of one sign-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pass {
    /// Send it now.
    Go,
    /// Too late: its minion gives up on it before the master could answer;
    /// hold it (the minion sends it again on a new connection).
    Stale,
}

/// The gate of the last switch, shared by the sidecar's connections: the
/// minion's sign-in that times out (its `auth_timeout`, 5 s) comes again on
/// a new connection, which carries on where the last one left off.
#[derive(Debug, Default)]
pub struct Pacer {
    gate: Mutex<Gate>,
}

#[derive(Debug, Default)]
struct Gate {
    /// The bound (`Route::reauth_by`) of the switch this is about.
    by: Option<Instant>,
    pace: Pace,
    /// When to ask next (none yet: at once).
    next_ask: Option<Instant>,
    /// When the last ask was sent: past the bound a sign-in that came
    /// after it asks at once (each attempt of the minion gets an answer
    /// while it is fresh, not only the ones the schedule happens to meet).
    asked_at: Option<Instant>,
    /// Opens at this instant without another ask (`Next::GoAfter`).
    go_at: Option<Instant>,
    /// Opened with this outcome: every new connection of the switch goes.
    open: Option<PaceOutcome>,
    started: Option<Instant>,
}

impl Forwarder {
    /// Whether a new connection on `port` is paced by the new master's
    /// answers (a ZeroMQ ret connection: a sign-in) instead of waiting the
    /// reconnect jitter. A ZeroMQ publish connection waits for neither: it
    /// costs the master a handshake, and the minion opens it only after
    /// its sign-in. (tcp transport: both ports keep the jitter; a 3008
    /// tcp master can wedge on early requests, see `probe::PingLine`.)
    pub(super) fn paced(&self, port: Port) -> Option<bool> {
        self.tunables
            .borrow()
            .moves_sessions()
            .then_some(port == Port::Ret)
    }

    /// Returns once the sign-in that came `since` may go to `m`, the new
    /// master of the switch whose bound is `by` (paced until `until`):
    /// [`Pass::Go`], or [`Pass::Stale`] when the minion would give up on it
    /// before `m` answered (`pace::fresh`; the gate stays as it was).
    pub(super) async fn pace(
        &self,
        plane: &Plane,
        m: MasterId,
        (by, until): (Instant, Instant),
        since: Instant,
    ) -> Pass {
        loop {
            let mut gate = self.pacer.gate.lock().await;
            if gate.by != Some(by) {
                *gate = Gate {
                    by: Some(by),
                    started: Some(Instant::now()),
                    ..Gate::default()
                };
            }
            if gate.open.is_some() {
                return self.pass(&gate, plane, m, since);
            }
            let now = Instant::now();
            if now >= until {
                self.opened(&mut gate, plane, m, PaceOutcome::Bound);
                return Pass::Go;
            }
            if let Some(at) = gate.go_at {
                if now < at {
                    drop(gate);
                    sleep_until(at.min(until)).await;
                    continue;
                }
                return self.let_through(&mut gate, plane, m, since, PaceOutcome::AtOnce);
            }
            let unasked = now >= by && gate.asked_at.is_none_or(|t| t < since);
            if let Some(at) = gate.next_ask.filter(|at| *at > now && !unasked) {
                // Not the time to ask: let go of the gate meanwhile
                // (and wake at the bound, where the rule changes).
                drop(gate);
                let wake = if now < by { at.min(by) } else { at };
                sleep_until(wake.min(until)).await;
                continue;
            }
            // Asked under the gate: one ask at a time.
            gate.asked_at = Some(now);
            let answer = self.ask(plane, m, (until - now).min(pace::ASK_LIMIT)).await;
            let late = Instant::now() >= by;
            match gate.pace.next(answer, fastrand::f64(), late) {
                Next::Go => {
                    let outcome = match (late, gate.pace.was_slow()) {
                        (true, _) => PaceOutcome::Late,
                        (false, true) => PaceOutcome::Paced,
                        (false, false) => PaceOutcome::AtOnce,
                    };
                    return self.let_through(&mut gate, plane, m, since, outcome);
                }
                Next::Wait(d) => gate.next_ask = Some(Instant::now() + d),
                Next::GoAfter(d) => gate.go_at = Some(Instant::now() + d),
            }
        }
    }

    /// The gate says go: the sign-in that came `since` goes and the gate
    /// opens with `outcome`, unless it is stale ([`Forwarder::pass`]); then
    /// the gate stays shut and the minion's next attempt (a new connection)
    /// asks at once.
    fn let_through(
        &self,
        gate: &mut Gate,
        plane: &Plane,
        m: MasterId,
        since: Instant,
        outcome: PaceOutcome,
    ) -> Pass {
        let pass = self.pass(gate, plane, m, since);
        if pass == Pass::Go {
            self.opened(gate, plane, m, outcome);
        } else {
            gate.go_at = None;
            gate.next_ask = None;
        }
        pass
    }

    /// Whether the sign-in that came `since` can still be answered by `m`
    /// before its minion gives up, with the master's queue as the gate
    /// last saw it; a stale one is counted.
    fn pass(&self, gate: &Gate, plane: &Plane, m: MasterId, since: Instant) -> Pass {
        let queue = gate.pace.queue();
        let held = since.elapsed();
        if pace::fresh(held, queue) {
            return Pass::Go;
        }
        self.metrics
            .sign_ins_held_stale_total
            .with_label_values(&[plane.label(m)])
            .inc();
        debug!(
            master = plane.label(m),
            held_ms = held.as_millis() as u64,
            queue_ms = queue.as_millis() as u64,
            "sign-in held: the minion would give up on it before the master answered"
        );
        Pass::Stale
    }

    /// The gate opens for the rest of the switch: counted and logged once.
    fn opened(&self, gate: &mut Gate, plane: &Plane, m: MasterId, outcome: PaceOutcome) {
        gate.open = Some(outcome);
        let waited = gate.started.map(|t| t.elapsed()).unwrap_or_default();
        let label = plane.label(m);
        self.metrics
            .sign_ins_paced_total
            .with_label_values(&[label, outcome.as_str()])
            .inc();
        self.metrics
            .sign_in_pace_wait_seconds
            .observe(waited.as_secs_f64());
        info!(
            master = label,
            outcome = outcome.as_str(),
            waited_ms = waited.as_millis() as u64,
            "sign-ins let through to the new master"
        );
    }

    /// One clear `ping` to `m`'s ret port on a fresh connection, within
    /// `limit`.
    async fn ask(&self, plane: &Plane, m: MasterId, limit: Duration) -> Answer {
        let addrs = plane
            .addrs
            .get(m.index())
            .map(|a| a.borrow().to_vec())
            .unwrap_or_default();
        let Some(spec) = plane.masters.get(m.index()) else {
            return Answer {
                answered: false,
                took: limit,
            };
        };
        let handshake = self.tunables.borrow().connect_timeout;
        let started = Instant::now();
        let mut line = PingLine::default();
        let answered = line
            .ping(Transport::Zeromq, &addrs, spec.ret_port, handshake, limit)
            .await
            .is_ok();
        line.close();
        let took = started.elapsed();
        let result = match (answered, took <= pace::TARGET) {
            (true, true) => PaceAsk::Fast,
            (true, false) => PaceAsk::Slow,
            (false, _) => PaceAsk::Unanswered,
        };
        self.metrics
            .sign_in_pace_asks_total
            .with_label_values(&[spec.label.as_str(), result.as_str()])
            .inc();
        debug!(
            master = spec.label.as_str(),
            result = result.as_str(),
            took_ms = took.as_millis() as u64,
            "sign-in pacing: asked the new master"
        );
        Answer { answered, took }
    }
}
