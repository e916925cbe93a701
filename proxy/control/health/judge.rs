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
//!
//! **What a round costs the master** ([`Judge::check`], per port). A master
//! that is up and was *heard* on a live minion session lately
//! ([`PASSIVE_WINDOW`] of the interval) is not checked at all (`passive`);
//! one whose sessions were quiet gets a ZMTP PING on one of them (`ping`,
//! ZeroMQ only: its libzmq answers from its I/O thread; while both ports
//! answer, the ports take turns, one PING a round: [`Judge::checks`]);
//! otherwise — no
//! session, a master down or hung, a suspicion to settle, Salt's `ping` on a
//! tcp-transport ret port — a probe connection as before (`probe`). A
//! *standby* (up, not where the route sends minions) is probed only every
//! [`STANDBY_ROUNDS`] intervals, jittered ([`Judge::set_standby`]): it is
//! verified on demand right before a switch to it (`health::verify`).

use std::time::Duration;

use tokio::time::Instant;

use super::gate::{Opening, PingGate};
use crate::config::master::Port;
use crate::config::settings::HealthSettings;
use crate::config::{ProbeKind, WARM_UP};
use crate::control::hysteresis::Hysteresis;

/// How soon a probe skipped for the sidecar's own exhaustion is tried again.
pub const EXHAUSTED_RETRY: Duration = Duration::from_secs(1);

/// The part of the interval within which a master heard on a live session
/// needs no check this round. A quarter: a master that freezes just after
/// its last bytes is found at most a quarter interval later than by a
/// check every round (at interval 1 s, `fall` 2 and a 0.5 s timeout: 2.65 s
/// at worst instead of 2.4 s; the bar is 3 s).
pub const PASSIVE_WINDOW: f64 = 0.25;

/// A standby (up, not routed to) is probed every this many intervals,
/// uniformly jittered between the two. A fresh ZMTP probe round (two
/// connections, two handshakes) cost a Salt 3008 master 0.95 ms of CPU when
/// every sidecar probed every interval, and 1.65 ms when 500 sidecars
/// probed it every 10–20 intervals (fewer connections per wake-up of its
/// I/O threads; the fleet lab, docs/fleet.md); the budget is 0.1 ms per
/// sidecar per interval, so a standby's rounds must be at least 16.5
/// intervals apart on average: 20–40 (30 on average, about 0.055 ms). A
/// dead standby is never chosen meanwhile: it is verified right before a
/// switch to it.
pub const STANDBY_ROUNDS: (f64, f64) = (20.0, 40.0);

/// After a failed check of a master still up, the next one comes this
/// fraction of the interval after the round ended.
pub const FAILING_INTER: f64 = 0.25;

/// How a round checks one port of the master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Heard on a live session lately: no check.
    Passive,
    /// A ZMTP PING on a live session (a probe if none can carry it).
    Ping,
    /// Not checked this round: the other port was pinged (the ports take
    /// turns while both answer, see [`Judge::checks`]).
    Turn,
    /// A probe connection (`sidecar.probe`, or the plan's ret check).
    Probe,
}

/// What one port's live sessions say at the start of a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    /// When the master was last heard on one of them.
    pub last: Option<Instant>,
    /// Sessions open to it on this port (one may carry a PING).
    pub sessions: usize,
}

/// A minion request that waited too long for its master's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suspicion {
    /// How long it had waited when it was seen.
    pub waited: Duration,
    /// When it was sent (the master answering anyone since clears it).
    pub asked: Instant,
}

/// What one round probes the ret port with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The ret port's check this round.
    pub ret: ProbeKind,
    /// A `ping` was due but the port is young: a plain connect instead,
    /// which can fail the master but not call it up.
    pub deferred: bool,
    /// This round settles a suspicion (the ret port is pinged at once).
    pub suspicion: Option<Suspicion>,
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
    /// The master answered some minion request (any session) since the
    /// suspected one was sent: busy, not stuck.
    pub answered: bool,
    /// Both ports completed their handshakes and only the `ping` went
    /// unanswered (a mute master, or one whose workers are not up yet).
    pub mute: bool,
}

/// How a suspicion ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    pub waited: Duration,
    /// The master answered the re-probe, or another minion meanwhile:
    /// slow, not hung.
    pub cleared: bool,
    /// Cleared by answers to other minions, the ping itself unanswered.
    pub busy: bool,
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
    /// A suspicion stays open: the master is in its [`WARM_UP`] (or its
    /// port is young) and did not answer yet; pinged again next round.
    pub pending: bool,
    /// When the next round is due (unless woken earlier).
    pub next: Option<Instant>,
}

/// One master's health state between rounds. See the module doc.
#[derive(Clone, Debug)]
pub struct Judge {
    hyst: Hysteresis,
    /// A ret request waited too long: settled by the next round that may ping.
    suspicion: Option<Suspicion>,
    /// Confirmed hung: the ret port is pinged until it answers.
    hung: bool,
    gate: PingGate,
    /// Until when the master is warming up (called up less than
    /// [`WARM_UP`] ago); `None` for one up for longer or not up.
    warm_until: Option<Instant>,
    /// Not where the route sends minions: probed lazily while up.
    standby: bool,
    /// A failure signal came (a minion's connect failed, a session was
    /// cut): the next round probes, whatever the sessions said before it.
    probe_next: bool,
    /// Which port rests when the ports take turns ([`Judge::checks`]).
    turn: bool,
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
            warm_until: None,
            standby: false,
            probe_next: false,
            turn: false,
        }
    }

    /// Whether the master is a standby (the route sends minions elsewhere);
    /// returns whether that changed.
    pub fn set_standby(&mut self, standby: bool) -> bool {
        std::mem::replace(&mut self.standby, standby) != standby
    }

    /// A standby on the slow cadence: up, not hung, nothing to settle.
    pub fn lazy(&self) -> bool {
        self.standby && self.hyst.is_up() == Some(true) && !self.hung && self.suspicion.is_none()
    }

    /// How the round planned as `plan`, starting at `now`, checks `port`
    /// (see the module doc): `heard` is what its live sessions say.
    pub fn check(
        &self,
        settings: &HealthSettings,
        plan: &Plan,
        port: Port,
        heard: Heard,
        now: Instant,
    ) -> Check {
        let planned = port == Port::Ret && (plan.ret == ProbeKind::Ping || plan.deferred);
        if planned
            || plan.suspicion.is_some()
            || self.hung
            || self.probe_next
            || self.hyst.is_up() != Some(true)
        {
            return Check::Probe;
        }
        let window = settings.interval.mul_f64(PASSIVE_WINDOW);
        if heard
            .last
            .is_some_and(|t| now.saturating_duration_since(t) <= window)
        {
            return Check::Passive;
        }
        if heard.sessions > 0 && settings.kind == ProbeKind::Zmtp {
            return Check::Ping;
        }
        Check::Probe
    }

    /// How the round checks each port (publish, ret): [`Judge::check`] per
    /// port, except that while the master is up with no failed check
    /// pending and both ports would get a PING, only one does, the ports
    /// taking turns (`turn` flips every round). A whole master that stops
    /// fails the first PING on either port, as fast as before; a stop of
    /// only one of its processes is found one interval later. A failed
    /// check ends the turns until the master is up again with a clean
    /// streak.
    pub fn checks(
        &self,
        settings: &HealthSettings,
        plan: &Plan,
        heard: [Heard; 2],
        now: Instant,
    ) -> [Check; 2] {
        let [publish, ret] = heard;
        let mut checks = [
            self.check(settings, plan, Port::Publish, publish, now),
            self.check(settings, plan, Port::Ret, ret, now),
        ];
        if checks == [Check::Ping; 2] && self.hyst.streak() == 0 {
            let rest = usize::from(self.turn);
            if let Some(c) = checks.get_mut(rest) {
                *c = Check::Turn;
            }
        }
        checks
    }

    /// A probe right before a switch to this master failed: down at once
    /// (the switch must not choose it). Returns the new state if it flipped.
    pub fn verify_failed(&mut self) -> Option<bool> {
        self.hyst.force(false)
    }

    /// A probe when a minion started found the master answering: up at
    /// once (`rise` not waited for). Returns the new state if it flipped.
    pub fn verify_passed(&mut self) -> Option<bool> {
        self.hyst.force(true)
    }

    /// Confirmed hung: a minion request went unanswered and the master has
    /// not answered since.
    pub fn is_hung(&self) -> bool {
        self.hung
    }

    /// A reload changed the thresholds.
    pub fn set_thresholds(&mut self, settings: &HealthSettings) {
        self.hyst.set_thresholds(settings.rise, settings.fall);
    }

    /// A minion's connect to the master failed: one failed check, and the
    /// next round probes.
    pub fn connect_failed(&mut self) -> Option<bool> {
        self.probe_next = true;
        self.hyst.observe(false)
    }

    /// A live session to the master was cut (or every master is re-probed):
    /// the next round probes, whatever its sessions said before.
    pub fn must_probe(&mut self) {
        self.probe_next = true;
    }

    /// A minion request waited unanswered: the next round settles it (an
    /// older pending one is kept: it counts from its own request).
    pub fn suspect(&mut self, suspicion: Suspicion) {
        self.suspicion.get_or_insert(suspicion);
    }

    /// What the round starting at `now` probes the ret port with. A
    /// suspicion is settled with a ping at once (a minion request already
    /// waits on the master) once the gate allows pings (a young port is
    /// never pinged: the suspicion waits); other pings wait for the gate,
    /// also those of a master confirmed hung (restarted, it is young).
    pub fn plan(&mut self, kind: ProbeKind, now: Instant) -> Plan {
        let may_ping = self.gate.may_ping(now);
        let suspicion = if may_ping {
            self.suspicion.take()
        } else {
            None
        };
        let deferred = (kind == ProbeKind::Ping || self.hung) && suspicion.is_none() && !may_ping;
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
        self.probe_next = false;
        self.turn = !self.turn;
        let Some(round) = round else {
            verdict.next = Some(start + settings.interval.min(EXHAUSTED_RETRY));
            return verdict;
        };
        verdict.opening = self.gate.observe(round.ret_connected, now);
        if self.warm_until.is_some_and(|t| now >= t) {
            self.warm_until = None;
        }
        let mut next = start + settings.interval.mul_f64(0.9 + 0.1 * jitter);
        if self.lazy() && round.ok {
            let (min, max) = STANDBY_ROUNDS;
            next = start + settings.interval.mul_f64(min + (max - min) * jitter);
        }
        if let Some(suspicion) = plan.suspicion {
            let cleared = round.ok || round.answered;
            if !cleared && round.mute && self.warm_until.is_some() {
                // Warming up: its workers may not answer yet. Asked again
                // next round; its handshakes are judged as usual meanwhile.
                self.suspicion = Some(suspicion);
                verdict.pending = true;
            } else {
                verdict.settled = Some(Settled {
                    waited: suspicion.waited,
                    cleared,
                    busy: cleared && !round.ok,
                });
            }
            if cleared || verdict.pending {
                // Only the ping was late (a busy master, or one warming
                // up): the round is a check of the handshakes, which a
                // frozen or dead master fails as usual.
                if let Some(up) = self.hyst.observe(round.ok || round.mute) {
                    verdict.report = Some((up, round.detail));
                }
                self.note_report(settings.kind, &verdict, now);
                verdict.next = Some(next);
                return verdict;
            }
            self.hung = true;
            if let Some(up) = self.hyst.force(false) {
                let why = format!(
                    "a minion request went unanswered for {:.1} s; {}",
                    suspicion.waited.as_secs_f64(),
                    round.detail
                );
                verdict.report = Some((up, why));
            }
        }
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
        self.note_report(settings.kind, &verdict, now);
        if !round.ok && self.hyst.is_up() == Some(true) {
            // Failing but not down yet (fall not reached): the next check
            // comes a quarter interval after this one ended, not a whole
            // interval after it started (HAProxy's `fastinter`), so a
            // frozen master is down within fall checks, not fall intervals.
            next = next.min(now + settings.interval.mul_f64(FAILING_INTER));
        }
        verdict.next = Some(next);
        verdict
    }

    /// A master called up on its handshakes starts its [`WARM_UP`] (one
    /// called up by `probe: ping` has answered already); one called down
    /// ends it.
    fn note_report(&mut self, kind: ProbeKind, verdict: &Verdict, now: Instant) {
        match verdict.report {
            Some((true, _)) if kind != ProbeKind::Ping => self.warm_until = Some(now + WARM_UP),
            Some((true, _)) => {}
            Some((false, _)) => self.warm_until = None,
            None => {}
        }
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
            answered: false,
            mute: !ok,
        })
    }

    /// A request that has waited `ms` by now.
    fn waited(ms: u64) -> Suspicion {
        let waited = Duration::from_millis(ms);
        Suspicion {
            waited,
            asked: Instant::now() - waited,
        }
    }

    /// A master up for longer than its warm-up (as after a reload).
    fn settled_judge(s: &HealthSettings) -> Judge {
        Judge::new(s, Some(true), Duration::ZERO, Instant::now())
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
        let mut judge = settled_judge(&s);
        judge.suspect(waited(1200));
        let (plan, v) = step(&mut judge, &s, false).await;
        assert_eq!(plan.ret, ProbeKind::Ping, "settled with a ping");
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
        let mut judge = settled_judge(&s);
        judge.suspect(waited(2000));
        let (plan, v) = step(&mut judge, &s, true).await;
        assert_eq!(plan.ret, ProbeKind::Ping);
        assert_eq!(
            v.settled,
            Some(Settled {
                waited: Duration::from_secs(2),
                cleared: true,
                busy: false,
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

    #[tokio::test(start_paused = true)]
    async fn a_master_answering_other_minions_is_busy_not_hung() {
        let s = settings(ProbeKind::Zmtp);
        let mut judge = settled_judge(&s);
        judge.suspect(waited(1500));
        let start = Instant::now();
        let plan = judge.plan(s.kind, start);
        assert_eq!(plan.ret, ProbeKind::Ping);
        let mut late = round(false);
        if let Some(r) = late.as_mut() {
            r.answered = true;
        }
        tokio::time::advance(s.timeout).await;
        let v = judge.judge(&s, &plan, late, start, Instant::now(), 0.5);
        let settled = v.settled.expect("settled");
        assert!(settled.cleared && settled.busy, "{settled:?}");
        assert_eq!(v.report, None);
        // The late ping counted as no failed check: fall=2 rounds of a
        // failing probe are still needed to call it down.
        let (_, v) = step(&mut judge, &s, false).await;
        assert_eq!(v.report, None);
        let (_, v) = step(&mut judge, &s, false).await;
        assert_eq!(v.report.map(|r| r.0), Some(false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_warming_master_is_asked_again_and_confirmed_only_after_its_warm_up() {
        let s = settings(ProbeKind::Zmtp);
        let mut judge = Judge::new(&s, None, Duration::ZERO, Instant::now());
        let (_, v) = step(&mut judge, &s, true).await;
        assert_eq!(v.report.map(|r| r.0), Some(true), "called up");
        let up_at = Instant::now();
        judge.suspect(waited(1000));
        let mut rounds = 0;
        let confirmed = loop {
            let (plan, v) = step(&mut judge, &s, false).await;
            rounds += 1;
            assert_eq!(plan.ret, ProbeKind::Ping, "pinged each round");
            if let Some(settled) = v.settled {
                break (settled, v.report);
            }
            assert!(v.pending, "kept while warming up");
            assert_eq!(v.report, None, "no verdict while warming up");
            assert!(rounds < 20);
        };
        let after = Instant::now() - up_at;
        assert!(
            after >= WARM_UP,
            "confirmed after the warm-up, not {after:?} ({rounds} rounds)"
        );
        assert!(!confirmed.0.cleared);
        assert_eq!(
            confirmed.0.waited,
            Duration::from_millis(1000),
            "counts from its request"
        );
        assert_eq!(confirmed.1.map(|r| r.0), Some(false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_warming_master_that_answers_meanwhile_is_cleared() {
        let s = settings(ProbeKind::Zmtp);
        let mut judge = Judge::new(&s, None, Duration::ZERO, Instant::now());
        let (_, v) = step(&mut judge, &s, true).await;
        assert_eq!(v.report.map(|r| r.0), Some(true), "called up");
        judge.suspect(waited(1000));
        let (_, v) = step(&mut judge, &s, false).await;
        assert!(v.pending);
        let (_, v) = step(&mut judge, &s, true).await;
        assert_eq!(v.settled.map(|x| x.cleared), Some(true));
        assert_eq!(v.report, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_suspicion_waits_for_a_young_port_and_is_pinged_once_it_may_be() {
        let s = settings(ProbeKind::Zmtp);
        let mut judge = Judge::new(&s, Some(true), Duration::from_secs(3), Instant::now());
        judge.suspect(waited(1000));
        let (plan, v) = step(&mut judge, &s, true).await;
        assert_ne!(plan.ret, ProbeKind::Ping, "a young port is not pinged");
        assert_eq!(plan.suspicion, None);
        assert_eq!(v.settled, None);
        let mut rounds = 0;
        loop {
            let (plan, v) = step(&mut judge, &s, true).await;
            rounds += 1;
            if let Some(suspicion) = plan.suspicion {
                assert_eq!(plan.ret, ProbeKind::Ping);
                assert_eq!(suspicion.waited, Duration::from_millis(1000));
                assert_eq!(v.settled.map(|x| x.cleared), Some(true));
                break;
            }
            assert!(rounds < 10);
        }
    }

    fn heard(ago_ms: Option<u64>, sessions: usize) -> Heard {
        Heard {
            last: ago_ms.map(|ms| Instant::now() - Duration::from_millis(ms)),
            sessions,
        }
    }

    /// The checks of both ports of a round planned now.
    fn checks(judge: &mut Judge, s: &HealthSettings, h: Heard) -> [Check; 2] {
        let now = Instant::now();
        let plan = judge.plan(s.kind, now);
        [Port::Publish, Port::Ret].map(|p| judge.check(s, &plan, p, h, now))
    }

    #[tokio::test(start_paused = true)]
    async fn a_master_heard_lately_is_not_checked_a_quiet_one_is_pinged_on_a_session() {
        let s = settings(ProbeKind::Zmtp);
        let mut judge = settled_judge(&s);
        // Heard 200 ms ago, within a quarter of the 1 s interval: no check.
        assert_eq!(
            checks(&mut judge, &s, heard(Some(200), 1)),
            [Check::Passive; 2]
        );
        // Quiet for 300 ms: a PING on the open session.
        assert_eq!(
            checks(&mut judge, &s, heard(Some(300), 1)),
            [Check::Ping; 2]
        );
        assert_eq!(checks(&mut judge, &s, heard(None, 2)), [Check::Ping; 2]);
        // No session to carry a PING: probe connections, as before.
        assert_eq!(checks(&mut judge, &s, heard(None, 0)), [Check::Probe; 2]);
        // Transport tcp (no ZMTP): passive when heard, else probes.
        let t = settings(ProbeKind::Tcp);
        let mut judge = settled_judge(&t);
        assert_eq!(
            checks(&mut judge, &t, heard(Some(100), 1)),
            [Check::Passive; 2]
        );
        assert_eq!(
            checks(&mut judge, &t, heard(Some(900), 1)),
            [Check::Probe; 2]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_ports_take_turns_for_the_ping_until_one_fails() {
        let s = settings(ProbeKind::Zmtp);
        let mut judge = settled_judge(&s);
        let quiet = [heard(None, 1); 2];
        let mut pinged = Vec::new();
        for _ in 0..4 {
            let now = Instant::now();
            let plan = judge.plan(s.kind, now);
            pinged.push(judge.checks(&s, &plan, quiet, now));
            let v = judge.judge(&s, &plan, round(true), now, now, 0.5);
            tokio::time::advance(v.next.expect("next") - now).await;
        }
        assert_eq!(
            pinged,
            [
                [Check::Turn, Check::Ping],
                [Check::Ping, Check::Turn],
                [Check::Turn, Check::Ping],
                [Check::Ping, Check::Turn],
            ],
            "one PING a round, the ports in turn"
        );
        // A failed PING: both ports are pinged until the master is up with
        // a clean streak again.
        let now = Instant::now();
        let plan = judge.plan(s.kind, now);
        let v = judge.judge(&s, &plan, round(false), now, now, 0.5);
        tokio::time::advance(v.next.expect("next") - now).await;
        let now = Instant::now();
        let plan = judge.plan(s.kind, now);
        assert_eq!(judge.checks(&s, &plan, quiet, now), [Check::Ping; 2]);
        // One port heard lately: the other gets the PING, no turns.
        let mixed = [heard(Some(10), 1), heard(None, 1)];
        let mut judge = settled_judge(&s);
        let now = Instant::now();
        let plan = judge.plan(s.kind, now);
        assert_eq!(
            judge.checks(&s, &plan, mixed, now),
            [Check::Passive, Check::Ping]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_failed_connect_or_a_cut_session_the_next_round_probes() {
        let s = settings(ProbeKind::Zmtp);
        let busy = heard(Some(10), 1);
        let mut judge = settled_judge(&s);
        // Heard a moment before the master died: that is no evidence
        // against the refused connect that followed.
        assert_eq!(judge.connect_failed(), None, "fall=2");
        assert_eq!(checks(&mut judge, &s, busy), [Check::Probe; 2]);
        let (_, v) = step(&mut judge, &s, false).await;
        assert_eq!(v.report.map(|r| r.0), Some(false), "two failed checks");
        let mut judge = settled_judge(&s);
        judge.must_probe();
        assert_eq!(checks(&mut judge, &s, busy), [Check::Probe; 2]);
        step(&mut judge, &s, true).await;
        let busy = heard(Some(10), 1);
        assert_eq!(checks(&mut judge, &s, busy), [Check::Passive; 2], "once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_master_down_hung_or_suspected_is_probed_whatever_its_sessions_say() {
        let s = settings(ProbeKind::Zmtp);
        let busy = heard(Some(10), 1);
        // Not known yet, or down: probes (what brings it up is a probe).
        let mut judge = Judge::new(&s, None, Duration::ZERO, Instant::now());
        assert_eq!(checks(&mut judge, &s, busy), [Check::Probe; 2]);
        let mut judge = Judge::new(&s, Some(false), Duration::ZERO, Instant::now());
        assert_eq!(checks(&mut judge, &s, busy), [Check::Probe; 2]);
        // A suspicion (a request unanswered): the ret port gets Salt's ping;
        // bytes on a session prove the I/O thread, not the workers.
        let mut judge = settled_judge(&s);
        judge.suspect(waited(1200));
        assert_eq!(checks(&mut judge, &s, busy), [Check::Probe; 2]);
        // `probe: ping` (transport tcp): the ret port is always pinged.
        let p = settings(ProbeKind::Ping);
        let mut judge = settled_judge(&p);
        assert_eq!(checks(&mut judge, &p, busy), [Check::Passive, Check::Probe]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_standby_is_probed_every_20_to_40_intervals_but_at_once_when_failing() {
        let s = settings(ProbeKind::Zmtp);
        let mut judge = settled_judge(&s);
        assert!(judge.set_standby(true));
        assert!(!judge.set_standby(true), "no change");
        assert!(judge.lazy());
        for (jitter, secs) in [(0.0, 20.0), (0.5, 30.0), (0.999, 39.98)] {
            let start = Instant::now();
            let plan = judge.plan(s.kind, start);
            let v = judge.judge(&s, &plan, round(true), start, start, jitter);
            let next = v.next.expect("next") - start;
            assert!(
                (next.as_secs_f64() - secs).abs() < 0.01,
                "jitter {jitter}: {next:?}"
            );
        }
        // A failed round: the next one comes a quarter interval later
        // (fall counts).
        let start = Instant::now();
        let plan = judge.plan(s.kind, start);
        let v = judge.judge(&s, &plan, round(false), start, start, 0.5);
        assert_eq!(v.next, Some(start + Duration::from_millis(250)));
        // Routed again: the interval.
        judge.set_standby(false);
        let (_, v) = step(&mut judge, &s, true).await;
        assert!(v.next.is_some());
        assert!(!judge.lazy());
        // A standby that is down is probed on the interval (to see it back).
        let mut down = Judge::new(&s, Some(false), Duration::ZERO, Instant::now());
        down.set_standby(true);
        assert!(!down.lazy());
        let start = Instant::now();
        let plan = down.plan(s.kind, start);
        let v = down.judge(&s, &plan, round(false), start, start, 0.0);
        assert_eq!(v.next, Some(start + Duration::from_millis(900)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_verification_is_down_at_once() {
        let s = settings(ProbeKind::Zmtp);
        let mut judge = settled_judge(&s);
        assert_eq!(judge.verify_failed(), Some(false), "fall=2 not waited for");
        assert_eq!(judge.verify_failed(), None, "already down");
        // Back after `rise` good rounds.
        let (_, v) = step(&mut judge, &s, true).await;
        assert_eq!(v.report, None);
        let (_, v) = step(&mut judge, &s, true).await;
        assert_eq!(v.report.map(|r| r.0), Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_master_answering_when_a_minion_starts_is_up_at_once() {
        let s = settings(ProbeKind::Zmtp);
        let mut judge = settled_judge(&s);
        assert_eq!(judge.verify_failed(), Some(false));
        // One good round: not up yet (rise = 2) ...
        let (_, v) = step(&mut judge, &s, true).await;
        assert_eq!(v.report, None);
        // ... but a check when a minion starts is enough.
        assert_eq!(judge.verify_passed(), Some(true), "rise not waited for");
        assert_eq!(judge.verify_passed(), None, "already up");
        assert!(!judge.is_hung());
    }

    #[tokio::test(start_paused = true)]
    async fn a_warming_master_that_freezes_is_down_at_once() {
        let s = settings(ProbeKind::Zmtp);
        let mut judge = Judge::new(&s, None, Duration::ZERO, Instant::now());
        let (_, v) = step(&mut judge, &s, true).await;
        assert_eq!(v.report.map(|r| r.0), Some(true), "called up");
        judge.suspect(waited(1000));
        let start = Instant::now();
        let plan = judge.plan(s.kind, start);
        // The handshake itself timed out: no mute master, a frozen one.
        let frozen = round(false).map(|r| Round { mute: false, ..r });
        let v = judge.judge(&s, &plan, frozen, start, Instant::now(), 0.5);
        assert!(!v.pending);
        assert_eq!(v.settled.map(|x| x.cleared), Some(false));
        assert_eq!(v.report.map(|r| r.0), Some(false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_check_of_a_master_still_up_is_followed_up_within_a_quarter_interval() {
        let s = settings(ProbeKind::Zmtp);
        let mut judge = settled_judge(&s);
        let start = Instant::now();
        let plan = judge.plan(s.kind, start);
        tokio::time::advance(s.timeout).await;
        let v = judge.judge(
            &s,
            &plan,
            round(false).map(|r| Round { mute: false, ..r }),
            start,
            Instant::now(),
            0.5,
        );
        assert_eq!(v.report, None, "fall=2: not down yet");
        assert_eq!(
            v.next,
            Some(Instant::now() + s.interval.mul_f64(FAILING_INTER))
        );
        let start = Instant::now() + s.interval.mul_f64(FAILING_INTER);
        tokio::time::advance(s.interval.mul_f64(FAILING_INTER)).await;
        let plan = judge.plan(s.kind, start);
        let v = judge.judge(
            &s,
            &plan,
            round(false).map(|r| Round { mute: false, ..r }),
            start,
            Instant::now(),
            0.5,
        );
        assert_eq!(
            v.report.map(|r| r.0),
            Some(false),
            "down at the second failed check"
        );
    }
}
