//! Health of every master: active probes on the alive interval, passive
//! signals from forwarding, and rise/fall hysteresis.
//!
//! One task per master probes both ports every `master_alive_interval` (with
//! jitter within 0.9–1.0 × interval, measured from the previous probe's
//! start, so a fleet does not probe in lockstep) and reports only
//! *transitions* to the supervisor. A master is up only if both ports are.
//! Forwarding calls [`HealthHandle::suspect`] when a connect to the master is
//! refused or times out (counted as a failed check, then an immediate
//! re-probe) and [`HealthHandle::reprobe`] when a live session is cut.
//!
//! **Passive detection (both transports).** A frozen tcp-transport master's
//! kernel still completes the connect of a `tcp` probe, and a ZeroMQ master
//! whose workers are stuck still completes every ZMTP handshake in libzmq's
//! I/O thread, so the probes alone never see it hang. With `sidecar.ret_answer_timeout` the health task
//! also scans its master's ret sessions ([`Answers`]): a minion request
//! left unanswered past the bound makes the master *suspect*, and it is
//! re-probed at once with Salt's clear `ping` request on the ret port
//! (`probe::PingLine`: in the master's transport, as a ZeroMQ REQ peer or in
//! Salt's tcp framing), which a live master answers at once even while it is
//! slow over a job. No answer: the suspicion is *confirmed* and the master
//! is down at once (two independent signals, so `fall` is not waited for);
//! it then stays on `ping` probes until one is answered (a frozen master
//! still accepts connects). Answered: *cleared*, no failover. One log line
//! and one `passive_suspicions_total{transport,outcome}` count per suspicion.
//!
//! **When to ping (`probe: ping`).** A master's ret port gets `ping`
//! requests only once it has been connectable, as this sidecar saw it, for
//! [`PING_AFTER_OPEN`] ([`PingGate`]); until then (at the sidecar's start,
//! and whenever the port reopens after a refusal: a master restarting) it
//! gets a plain connect, which can fail the master but not call it up: a
//! master is up only once it has answered pings (`rise`), so no minion is
//! sent to a master that cannot answer yet (a 3008 master answers nothing
//! for its first seconds, and a minion request waiting on it would be taken
//! for a hang). A Salt 3008 tcp-transport master routes requests to its
//! workers through one connection that it opens on the first request; a
//! request before its workers listen, or two before that connection is up,
//! can leave it answering nothing, for good (seen in the labs; reproduced
//! with two pings about 1 s apart in a master's first seconds). The ping
//! itself keeps at most one request in flight (`probe::PingLine`).
//!
//! **What it costs the master.** A round does not always probe: a master
//! heard on a live minion session lately is taken as up (`passive`), one
//! whose sessions were quiet gets a ZMTP PING on one of them (`ping`, see
//! `control::evidence`; one port a round, in turn, while both answer), and
//! only without a session that can carry it does
//! the round open probe connections. A standby (up, not routed to) is
//! probed every 20–40 intervals, and verified on demand right before a
//! switch to it ([`verify`]). `health_checks_total` counts probe results;
//! `health_evidence_total{kind}` counts every check by what it cost. Which
//! kind [`judge`] picks is pure policy; one debug line per change of mode.
//!
//! This module never chooses a master. It is the I/O shell: what a round
//! probes and what its result means is [`judge`]'s (pure, unit-tested on
//! virtual time), when a ret port may be pinged [`gate`]'s; carrying out one
//! round on both ports is [`round`]'s.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::master::{Host, MasterSpec, Port};
use crate::config::settings::{HealthSettings, Tunables};
use crate::config::{ProbeKind, Transport, CONFIRM_PING_TIMEOUT, PING_AFTER_OPEN};
use crate::control::liveness::Liveness;
use crate::control::resolve::Addresses;
use crate::metrics::{Metrics, SuspicionOutcome};
use crate::zmtp::probe;

mod gate;
mod handle;
mod judge;
mod round;
pub mod verify;

pub use handle::{HealthHandle, Transition};

use gate::Opening;
use judge::{Check, Heard, Judge, Settled, Suspicion};

/// One master's health task: what it probes, what it reads, where it reports.
pub struct Watch {
    pub master: MasterSpec,
    /// The plane the master belongs to (sent with every transition).
    pub generation: u64,
    pub addrs: Addresses,
    pub handle: Arc<HealthHandle>,
    /// Probe timing, kind and thresholds; a reload changes them live.
    pub tunables: watch::Receiver<Arc<Tunables>>,
    pub events: mpsc::Sender<Transition>,
    pub metrics: Arc<Metrics>,
    /// Ticked after every probe round (the systemd watchdog reads it).
    pub liveness: Arc<Liveness>,
    /// The `ping` probes' connection to the ret port (transport tcp).
    pub ping_line: probe::PingLine,
}

// === impl Watch ===

impl Watch {
    /// Probes the master until cancelled, reporting transitions on `events`.
    pub async fn run(mut self, token: CancellationToken) {
        let mut settings = self.tunables.borrow_and_update().health.clone();
        self.liveness.set_health_grace(Self::grace(&settings));
        let up = self.handle.status().up;
        let mut judge = Judge::new(&settings, up, PING_AFTER_OPEN, Instant::now());
        let mut rng = fastrand::Rng::new();
        let mut resolver_alive = matches!(self.master.host, Host::Name(_));
        let handle = self.handle.clone();
        // When the ret sessions are next scanned for an overdue request: kept
        // across rounds, so a round (every interval) does not restart the scan.
        let mut scan_at = Instant::now();
        // How the last round checked the master, for one log line per change.
        let mut mode: Option<Mode> = None;
        if resolver_alive && self.addrs.borrow().is_empty() {
            // A DNS name not resolved yet: give the first lookup up to one probe
            // timeout, so the master is not called down before it had an address
            // (an NXDOMAIN answers at once and the probe then says "unresolved").
            let first = self.addrs.wait_for(|a| !a.is_empty());
            let _ = tokio::time::timeout(settings.timeout, first).await;
        }
        loop {
            if self.handle.suspect.swap(false, Ordering::Relaxed) {
                debug!(
                    master = %self.master.label,
                    "passive failure: a connect to this master failed"
                );
                if let Some(up) = judge.connect_failed() {
                    self.report(up, "a minion connection to it failed".into())
                        .await;
                }
            }
            if self.handle.lost.swap(false, Ordering::Relaxed) {
                judge.must_probe();
            }
            if let Some(why) = self.handle.take_verify_failure() {
                if let Some(up) = judge.verify_failed() {
                    self.report(up, why).await;
                }
            }
            if self.handle.take_verify_pass() {
                self.handle.note_ok(Instant::now());
                if let Some(up) = judge.verify_passed() {
                    self.report(up, "answered when a minion started".into())
                        .await;
                }
            }
            judge.set_standby(!self.handle.is_routed());
            // Rounds run on the interval (jittered, see `Judge::judge`), or
            // at once when woken or when DNS changes the addresses (a literal
            // IP has no resolver, so its channel is closed from the start).
            let start = Instant::now();
            let plan = judge.plan(settings.kind, start);
            if plan.deferred {
                self.metrics
                    .pings_deferred_total
                    .with_label_values(&[self.master.label.as_str()])
                    .inc();
            }
            // A suspicion's ping gets at least CONFIRM_PING_TIMEOUT: a busy
            // master answers it late, a mute one never.
            let ping_limit = match plan.suspicion {
                Some(_) => settings.timeout.max(CONFIRM_PING_TIMEOUT),
                None => settings.timeout,
            };
            let heard = |port: Port| {
                let ev = self.handle.evidence.port(port);
                Heard {
                    last: ev.last_heard(),
                    sessions: ev.sessions(),
                }
            };
            let checks = judge.checks(
                &settings,
                &plan,
                [heard(Port::Publish), heard(Port::Ret)],
                start,
            );
            let now_mode = Mode::of(checks, judge.lazy());
            if mode != Some(now_mode) {
                self.log_mode(now_mode);
                mode = Some(now_mode);
            }
            let mut round = self
                .probe_both(&settings, plan.ret, checks, ping_limit)
                .await;
            if round.as_ref().is_some_and(|r| r.ok) {
                self.handle.note_ok(Instant::now());
            }
            if let (Some(r), Some(suspicion)) = (round.as_mut(), plan.suspicion) {
                r.answered = self.handle.answers.answered_since(suspicion.asked);
            }
            let verdict = judge.judge(&settings, &plan, round, start, Instant::now(), rng.f64());
            if let (Some(opening), ProbeKind::Ping) = (verdict.opening, settings.kind) {
                self.log_opening(opening);
            }
            if let Some(settled) = verdict.settled {
                self.settle(settled, settings.kind.transport());
                if let (true, Some(bound)) = (settled.cleared, settings.ret_answer_timeout) {
                    // The master answers on a fresh connection: a request
                    // still waiting may sit in a dead flow; its session looks.
                    self.handle.answers.recheck_overdue(bound);
                }
            }
            if verdict.pending {
                debug!(
                    master = %self.master.label,
                    "a minion request is unanswered, but the master came up less than {} s ago: asking again next round",
                    crate::config::WARM_UP.as_secs()
                );
            }
            if verdict.young {
                if let Ok(mut s) = self.handle.status.lock() {
                    s.last_result = Some(format!(
                        "ret port open less than {} s: connected, not pinged yet",
                        PING_AFTER_OPEN.as_secs()
                    ));
                }
            }
            if let Some((up, why)) = verdict.report {
                self.report(up, why).await;
            }
            self.handle.hung.store(judge.is_hung(), Ordering::Relaxed);
            let next = verdict.next.unwrap_or(start + settings.interval);
            self.liveness.tick_health(Instant::now());
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {}
                _ = self.handle.wake.notified() => {}
                waited = overdue(&handle, settings.ret_answer_timeout, &mut scan_at) => {
                    let asked = Instant::now().checked_sub(waited).unwrap_or_else(Instant::now);
                    judge.suspect(Suspicion { waited, asked });
                }
                changed = self.addrs.changed(), if resolver_alive => resolver_alive = changed.is_ok(),
                changed = self.tunables.changed() => {
                    // A reload: new timing or thresholds apply from this probe on.
                    if changed.is_ok() {
                        settings = self.tunables.borrow_and_update().health.clone();
                        judge.set_thresholds(&settings);
                        self.liveness.set_health_grace(Self::grace(&settings));
                    }
                }
            }
        }
    }

    /// One log line (debug) per change of how the master is checked.
    fn log_mode(&self, mode: Mode) {
        let label = self.master.label.as_str();
        match mode {
            Mode::Sessions => debug!(master = label, "health from the minion's live sessions: no probe while they are heard, a ZMTP PING on one when they are quiet"),
            Mode::Probes => debug!(master = label, "health from probe connections (no live session can vouch for the master, or it is down, hung or suspected)"),
            Mode::Standby => debug!(master = label, "standby: probed every {}-{} intervals, and verified right before a switch to it", judge::STANDBY_ROUNDS.0, judge::STANDBY_ROUNDS.1),
        }
    }

    /// One log line (debug) per change of when the ret port may be pinged.
    fn log_opening(&self, opening: Opening) {
        let label = self.master.label.as_str();
        match opening {
            Opening::Closed => {
                debug!(master = label, "ret port not connectable: when it opens again, plain connects for {} s before any ping", PING_AFTER_OPEN.as_secs())
            }
            Opening::Young { .. } => {
                debug!(master = label, "master young: plain connects, not called up, until its ret port has been open {} s; then pings (a Salt master pinged before its workers listen can stop answering)", PING_AFTER_OPEN.as_secs())
            }
            Opening::Settled => debug!(master = label, "ret port open a while: pinged from now on"),
        }
    }

    /// Counts and logs how a suspicion ended.
    fn settle(&self, settled: Settled, transport: Transport) {
        let label = self.master.label.as_str();
        let outcome = if settled.cleared {
            SuspicionOutcome::Cleared
        } else {
            SuspicionOutcome::Confirmed
        };
        self.metrics
            .passive_suspicions_total
            .with_label_values(&[label, transport.as_str(), outcome.as_str()])
            .inc();
        let waited = format!("{:.1}s", settled.waited.as_secs_f64());
        if settled.busy {
            info!(master = label, transport = transport.as_str(), waited = %waited, "master suspected hung (a minion request unanswered, and a ping too), but it answers other minions: busy, not hung; staying");
        } else if settled.cleared {
            info!(master = label, transport = transport.as_str(), waited = %waited, "master suspected hung (a minion request unanswered), but it answers a ping: slow, not hung; staying");
        } else {
            warn!(master = label, transport = transport.as_str(), waited = %waited, "master suspected hung (a minion request unanswered) and it does not answer a ping either: hung");
        }
    }

    /// How long a health task may take between rounds before the watchdog
    /// calls it stalled: two intervals and a probe timeout.
    fn grace(settings: &HealthSettings) -> std::time::Duration {
        settings.interval * 2 + settings.timeout
    }

    async fn report(&self, up: bool, detail: String) {
        report(
            &self.events,
            &self.handle,
            &self.master,
            self.generation,
            up,
            detail,
        )
        .await;
    }
}

/// How a master is checked, as far as one debug line per change tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Both ports from live sessions (passive or a ZMTP PING).
    Sessions,
    /// At least one port by probe connections, every interval.
    Probes,
    /// A standby on the slow cadence.
    Standby,
}

impl Mode {
    fn of(checks: [Check; 2], lazy: bool) -> Mode {
        if lazy {
            Mode::Standby
        } else if checks.iter().all(|c| *c != Check::Probe) {
            Mode::Sessions
        } else {
            Mode::Probes
        }
    }
}

/// Resolves when a request on one of `handle`'s ret sessions has waited
/// longer than `bound` (with how long); never without a bound. Scans when
/// the oldest waiting request reaches the bound (found on time), and with
/// none waiting one bound later (a request sent meanwhile reaches it no
/// sooner): an idle session costs one wake-up per bound, not a scan every
/// fraction of it. `scan_at` is when the next scan is due; it outlives this
/// future, which the round loop drops and makes anew every round: were the
/// schedule restarted each time, a round interval shorter than the bound
/// would never scan (seen with fixed steps: bound 2 s, interval 1 s,
/// detection up to 0.9 s late).
async fn overdue(
    handle: &HealthHandle,
    bound: Option<std::time::Duration>,
    scan_at: &mut Instant,
) -> std::time::Duration {
    let Some(bound) = bound else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep_until(*scan_at).await;
        let found = handle.answers.overdue(bound);
        let now = Instant::now();
        *scan_at = handle
            .answers
            .next_due(bound)
            .unwrap_or(now + bound)
            .max(now + std::time::Duration::from_millis(1));
        if let Some(waited) = found {
            return waited;
        }
    }
}

async fn report(
    events: &mpsc::Sender<Transition>,
    handle: &HealthHandle,
    master: &MasterSpec,
    generation: u64,
    up: bool,
    detail: String,
) {
    if up {
        info!(master = %master.label, "master is up");
    } else {
        warn!(master = %master.label, reason = %detail, "master is down");
    }
    if let Ok(mut s) = handle.status.lock() {
        s.up = Some(up);
    }
    // The supervisor outlives health tasks; a send error means shutdown.
    let _ = events
        .send(Transition {
            generation,
            master: master.id,
            up,
            detail,
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The health loop drops the scan every round (every `interval`) and
    /// starts it again; detection must still come within one step of the
    /// bound, not one round.
    #[tokio::test(start_paused = true)]
    async fn rounds_shorter_than_two_steps_do_not_delay_the_scan() {
        let handle = HealthHandle::default();
        let clock = handle.answers.clock();
        let bound = Duration::from_secs(2); // scans 0.25 s apart
        let round = Duration::from_millis(900); // the jittered 1 s interval
        let mut scan_at = Instant::now();
        let asker = {
            let clock = clock.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(450)).await;
                clock.asked();
            })
        };
        // The health loop: every round drops the scan and makes it anew.
        // (Restarted from scratch each round, the scans came 0.5 s into
        // each round — 0.5, 1.4, 2.3, 3.2 s — and found this request only
        // at 3.2 s, 2.75 s after it was sent.)
        let mut waited = None;
        for _ in 0..10 {
            let next_round = Instant::now() + round;
            tokio::select! {
                w = overdue(&handle, Some(bound), &mut scan_at) => {
                    waited = Some(w);
                    break;
                }
                _ = tokio::time::sleep_until(next_round) => {}
            }
        }
        asker.await.expect("asker");
        let waited = waited.expect("the request was found overdue");
        assert!(
            waited >= bound && waited <= bound + Duration::from_millis(5),
            "found {waited:?} after the request: on time, at the {bound:?} bound"
        );
    }

    /// No request waiting: the next scan comes one bound later (a request
    /// sent meanwhile reaches the bound no sooner), not every fraction of it.
    #[tokio::test(start_paused = true)]
    async fn an_idle_session_is_scanned_once_per_bound() {
        let handle = HealthHandle::default();
        let clock = handle.answers.clock();
        let bound = Duration::from_secs(10);
        let start = Instant::now();
        let mut scan_at = start;
        let r = tokio::time::timeout(
            Duration::from_millis(100),
            overdue(&handle, Some(bound), &mut scan_at),
        )
        .await;
        assert!(r.is_err(), "nothing waits");
        assert_eq!(scan_at, start + bound, "next scan one bound later");
        // A request sent now is found at its bound, not one bound after it.
        tokio::time::sleep(Duration::from_secs(3)).await;
        clock.asked();
        let asked = Instant::now();
        let waited = overdue(&handle, Some(bound), &mut scan_at).await;
        assert_eq!(waited, bound);
        assert_eq!(Instant::now(), asked + bound);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_bound_nothing_is_ever_overdue() {
        let handle = HealthHandle::default();
        let clock = handle.answers.clock();
        clock.asked();
        let mut scan_at = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(3600),
            overdue(&handle, None, &mut scan_at),
        )
        .await;
        assert!(r.is_err(), "ret_answer_timeout 0: never suspected");
    }
}
