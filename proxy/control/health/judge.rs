//! The pure core of one master's health task: what the next round probes,
//! and what a round's result means (a transition, a settled suspicion, when
//! the next round is due).
//!
//! [`Judge`] holds the whole state the task carries between rounds: the
//! rise/fall [`Hysteresis`], a pending suspicion (a minion request left
//! unanswered), whether the master was confirmed hung, and the [`PingGate`].
//! It takes `now` and a jitter draw as arguments: no clock, no I/O, no
//! logging, so the policy is unit-tested on virtual time; the task in
//! `health` is the shell that probes, counts, logs and reports.

use std::time::Duration;

use tokio::time::Instant;

use super::gate::{Opening, PingGate};
use crate::config::settings::HealthSettings;
use crate::config::ProbeKind;
use crate::control::hysteresis::Hysteresis;

/// How soon a probe skipped for the sidecar's own exhaustion is tried again.
pub const EXHAUSTED_RETRY: Duration = Duration::from_secs(1);

/// What one round probes the ret port with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The ret port's check this round.
    pub ret: ProbeKind,
    /// A `ping` was due but the port is young: a plain connect instead,
    /// which can fail the master but not call it up.
    pub deferred: bool,
    /// This round settles a suspicion (the ret port is pinged at once).
    pub suspicion: Option<Duration>,
}

/// One probe round's result, as the shell saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    /// Both ports passed.
    pub ok: bool,
    /// Why not (or "probes ok").
    pub detail: String,
    /// The ret port accepted the connect (answered or not).
    pub ret_connected: bool,
}

/// How a suspicion ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    pub waited: Duration,
    /// The master answered the re-probe: slow, not hung.
    pub cleared: bool,
}

/// What a round means.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// A suspicion this round settled.
    pub settled: Option<Settled>,
    /// The ret port's standing for pings changed.
    pub opening: Option<Opening>,
    /// The master flipped: up or down, and why.
    pub report: Option<(bool, String)>,
    /// Connectable but young: not judged yet (the status says so).
    pub young: bool,
    /// When the next round is due (unless woken earlier).
    pub next: Option<Instant>,
}

/// One master's health state between rounds. See the module doc.
#[derive(Clone, Debug)]
pub struct Judge {
    hyst: Hysteresis,
    /// A ret request waited this long: settled by the next round.
    suspicion: Option<Duration>,
    /// Confirmed hung: the ret port is pinged until it answers.
    hung: bool,
    gate: PingGate,
}

// === impl Judge ===

impl Judge {
    /// A master whose last state (a reload carries it over) was `up`.
    pub fn new(
        settings: &HealthSettings,
        up: Option<bool>,
        ping_hold: Duration,
        now: Instant,
    ) -> Self {
        Judge {
            hyst: Hysteresis::resume(settings.rise, settings.fall, up),
            suspicion: None,
            hung: false,
            gate: PingGate::new(ping_hold, now),
        }
    }

    /// A reload changed the thresholds.
    pub fn set_thresholds(&mut self, settings: &HealthSettings) {
        self.hyst.set_thresholds(settings.rise, settings.fall);
    }

    /// A minion's connect to the master failed: one failed check.
    pub fn connect_failed(&mut self) -> Option<bool> {
        self.hyst.observe(false)
    }

    /// A minion request waited `waited` unanswered: the next round settles it.
    pub fn suspect(&mut self, waited: Duration) {
        self.suspicion = Some(waited);
    }

    /// What the round starting at `now` probes the ret port with. A
    /// suspicion is settled with a ping at once (a minion request already
    /// waits on the master); other pings wait for the gate, also those of a
    /// master confirmed hung (restarted, it is young).
    pub fn plan(&mut self, kind: ProbeKind, now: Instant) -> Plan {
        let suspicion = self.suspicion.take();
        let deferred = (kind == ProbeKind::Ping || self.hung)
            && suspicion.is_none()
            && !self.gate.may_ping(now);
        let ret = if suspicion.is_some() {
            ProbeKind::Ping
        } else if deferred {
            ProbeKind::Tcp
        } else if self.hung {
            ProbeKind::Ping
        } else {
            kind
        };
        Plan {
            ret,
            deferred,
            suspicion,
        }
    }

    /// What the round planned as `plan`, started at `start` and ended at
    /// `now`, means; `round` is `None` when the sidecar could not probe (its
    /// own exhaustion: no verdict, tried again soon). `jitter` in [0, 1)
    /// spreads the next round over 0.9–1.0 × interval after this one
    /// started (never later, so a dead master is down within fall ×
    /// interval + timeout; jittered, so a fleet does not probe in lockstep).
    pub fn judge(
        &mut self,
        settings: &HealthSettings,
        plan: &Plan,
        round: Option<Round>,
        start: Instant,
        now: Instant,
        jitter: f64,
    ) -> Verdict {
        let mut verdict = Verdict::default();
        let Some(round) = round else {
            verdict.next = Some(start + settings.interval.min(EXHAUSTED_RETRY));
            return verdict;
        };
        verdict.opening = self.gate.observe(round.ret_connected, now);
        if let Some(waited) = plan.suspicion {
            verdict.settled = Some(Settled {
                waited,
                cleared: round.ok,
            });
            if !round.ok {
                self.hung = true;
                if let Some(up) = self.hyst.force(false) {
                    let why = format!(
                        "a minion request went unanswered for {:.1} s; {}",
                        waited.as_secs_f64(),
                        round.detail
                    );
                    verdict.report = Some((up, why));
                }
            }
        }
        let next = start + settings.interval.mul_f64(0.9 + 0.1 * jitter);
        if round.ok && plan.deferred {
            // Young and connectable: not judged until it answers a ping (a
            // 3008 master answers none for its first seconds, and a minion
            // sent to it early would wait on it).
            verdict.young = true;
            verdict.next = Some(self.gate.ping_at().map_or(next, |at| at.min(next)));
            return verdict;
        }
        self.hung &= !round.ok;
        if let Some(up) = self.hyst.observe(round.ok) {
            verdict.report = Some((up, round.detail));
        }
        verdict.next = Some(next);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(kind: ProbeKind) -> HealthSettings {
        HealthSettings {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
            kind,
            ret_answer_timeout: Some(Duration::from_secs(1)),
        }
    }

    fn round(ok: bool) -> Option<Round> {
        Some(Round {
            ok,
            detail: if ok {
                "probes ok"
            } else {
                "ret port 4506: no answer"
            }
            .into(),
            ret_connected: true,
        })
    }

    /// Runs one round with `ok` at the current virtual time, then advances
    /// to the next one; returns the plan and the verdict.
    async fn step(judge: &mut Judge, s: &HealthSettings, ok: bool) -> (Plan, Verdict) {
        let start = Instant::now();
        let plan = judge.plan(s.kind, start);
        let verdict = judge.judge(s, &plan, round(ok), start, Instant::now(), 0.5);
        let next = verdict.next.expect("next round");
        tokio::time::advance(next.saturating_duration_since(Instant::now())).await;
        (plan, verdict)
    }

    #[tokio::test(start_paused = true)]
    async fn a_suspicion_is_pinged_at_once_and_a_silent_master_is_down_without_fall() {
        let s = settings(ProbeKind::Zmtp);
        // No hold: a master open for long (the gate's own tests are in `gate`).
        let mut judge = Judge::new(&s, Some(true), Duration::ZERO, Instant::now());
        judge.suspect(Duration::from_millis(1200));
        let (plan, v) = step(&mut judge, &s, false).await;
        assert_eq!(
            plan.ret,
            ProbeKind::Ping,
            "settled with a ping, young or not"
        );
        assert!(!plan.deferred);
        let settled = v.settled.expect("settled");
        assert!(!settled.cleared);
        let (up, why) = v.report.expect("down at once, fall=2 not waited for");
        assert!(!up);
        assert!(why.contains("unanswered for 1.2 s"), "{why}");
        // Hung: pinged until it answers (a connect proves nothing); then
        // the configured probe again, and up after `rise`.
        let (plan, v) = step(&mut judge, &s, false).await;
        assert_eq!(plan.ret, ProbeKind::Ping);
        assert_eq!(v.report, None);
        let (plan, v) = step(&mut judge, &s, true).await;
        assert_eq!(plan.ret, ProbeKind::Ping);
        assert_eq!(v.report, None, "rise=2");
        let (plan, v) = step(&mut judge, &s, true).await;
        assert_eq!(plan.ret, ProbeKind::Zmtp, "answered once: no longer hung");
        assert_eq!(v.report.map(|r| r.0), Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cleared_suspicion_changes_nothing() {
        let s = settings(ProbeKind::Zmtp);
        let mut judge = Judge::new(&s, Some(true), Duration::from_secs(1), Instant::now());
        judge.suspect(Duration::from_secs(2));
        let (plan, v) = step(&mut judge, &s, true).await;
        assert_eq!(plan.ret, ProbeKind::Ping);
        assert_eq!(
            v.settled,
            Some(Settled {
                waited: Duration::from_secs(2),
                cleared: true
            })
        );
        assert_eq!(v.report, None);
        let (plan, _) = step(&mut judge, &s, true).await;
        assert_eq!(plan.ret, ProbeKind::Zmtp);
    }

    #[tokio::test(start_paused = true)]
    async fn a_young_ret_port_is_connected_not_pinged_and_not_called_up() {
        let s = settings(ProbeKind::Ping);
        let mut judge = Judge::new(&s, None, Duration::from_secs(3), Instant::now());
        let (plan, v) = step(&mut judge, &s, true).await;
        assert_eq!((plan.ret, plan.deferred), (ProbeKind::Tcp, true));
        assert!(v.young);
        assert_eq!(v.report, None, "not called up while young");
        // The next round is due when the gate opens, at the latest.
        let mut rounds = 1;
        loop {
            let (plan, v) = step(&mut judge, &s, true).await;
            rounds += 1;
            if !plan.deferred {
                assert_eq!(plan.ret, ProbeKind::Ping);
                assert_eq!(v.report.map(|r| r.0), Some(true));
                break;
            }
        }
        assert!(rounds <= 5, "{rounds} rounds");
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_round_is_no_verdict_and_retried_soon() {
        let mut s = settings(ProbeKind::Zmtp);
        s.interval = Duration::from_secs(30);
        let mut judge = Judge::new(&s, Some(true), Duration::from_secs(1), Instant::now());
        let start = Instant::now();
        let plan = judge.plan(s.kind, start);
        let v = judge.judge(&s, &plan, None, start, start, 0.0);
        assert_eq!(v.report, None);
        assert_eq!(v.next, Some(start + EXHAUSTED_RETRY));
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_round_is_jittered_within_the_interval() {
        let s = settings(ProbeKind::Zmtp);
        let mut judge = Judge::new(&s, Some(true), Duration::from_secs(1), Instant::now());
        for (jitter, ms) in [(0.0, 900), (0.5, 950), (0.999, 999)] {
            let start = Instant::now();
            let plan = judge.plan(s.kind, start);
            let v = judge.judge(&s, &plan, round(true), start, start, jitter);
            let next = v.next.expect("next");
            assert_eq!((next - start).as_millis(), ms);
        }
    }
}
