//! Standbys verified on demand: right before the route moves to a master
//! that is not routed to now, the masters it could move to are probed at
//! once, in parallel, within `connect_timeout`, so that a standby that died
//! since its last (lazy) probe is never chosen.
//!
//! [`stale_candidates`] is the pure part: which masters a switch caused by
//! an event would need verified (the selector is run on a copy to see where
//! the event leads). [`before_switch`] probes them and tells each failed
//! one's health task (which calls it down at once); the supervisor then
//! feeds their `Down` to the selector before the event itself, which then
//! picks the next usable master. A master checked within the last interval
//! (plus a probe timeout) is fresh and not probed again: the active
//! master's failover to a standby checked every interval waits for nothing
//! (nor does one to a master its handle never checked: a plane carried
//! over a reload, whose first round comes at once).
//!
//! The same check runs when a minion starts ([`at_arrival`]): a minion
//! connection arriving at an idle sidecar first has the masters ranked
//! before the active one that are not up checked (not those confirmed
//! hung: their handshakes pass), and one that answers is up at once. A
//! native failover minion tries its list in order when it starts; without
//! this a master back a probe or two before the minion (the health task's
//! `rise`) would lose it to a worse one until the next failover.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::master::{MasterId, Port};
use crate::config::settings::Tunables;
use crate::config::ProbeKind;
use crate::control::masters::Plane;
use crate::control::route::Route;
use crate::control::select::{Action, Event, Health, Minion, Selector};
use crate::limits::Blame;
use crate::metrics::{CheckResult, Evidence, Metrics};
use crate::zmtp::probe::{self, ProbeError};

/// The masters to verify before `event` is fed to `selector` at `now`: if
/// it would switch to a master other than the active one, every usable
/// master other than the active one (the switch's target first) whose last
/// good check is not `fresh`. Pure.
pub fn stale_candidates(
    selector: &Selector,
    event: Event,
    now: Instant,
    fresh: impl Fn(MasterId) -> bool,
) -> Vec<MasterId> {
    let mut dry = selector.clone();
    let target = dry.on_event(event, now).into_iter().find_map(|a| match a {
        Action::Switch { to: Some(to), .. } if Some(to) != selector.active() => Some(to),
        _ => None,
    });
    let Some(target) = target else {
        return Vec::new();
    };
    let mut out = vec![target];
    out.extend(
        selector
            .fallbacks()
            .into_iter()
            .filter(|m| *m != target && Some(*m) != selector.active()),
    );
    out.retain(|m| !fresh(*m));
    out
}

/// The masters to check for a minion arriving at an idle sidecar: those
/// ranked before the active one (all of them while none is), not up and
/// not drained, best first; none while pinned or not idle. Pure.
pub fn arrival_candidates(selector: &Selector) -> Vec<MasterId> {
    if selector.pinned().is_some() || selector.minion() != Minion::Idle {
        return Vec::new();
    }
    selector
        .order()
        .iter()
        .copied()
        .take_while(|m| Some(*m) != selector.active())
        .filter(|m| !matches!(selector.health(*m), Health::Up { .. }) && !selector.is_drained(*m))
        .collect()
}

/// Whether a start check with probes of `kind` can call a master up: not
/// with `ping` (the tcp transport's default), which the check can only
/// replace by a connect (a second request in flight can wedge a 3008 tcp
/// master, see `zmtp::probe::PingLine`): a master whose port is open but
/// that answers no `ping` yet (3008 loading its modules) would be called up
/// on the connect, then down again on the next unanswered ping, resetting
/// the minion's sessions (seen in CI: a 3008 tcp minion that never answered
/// afterwards). The starting minion then waits for the health task, as
/// before the start check. Pure.
pub fn start_check_applies(kind: ProbeKind) -> bool {
    kind != ProbeKind::Ping
}

/// Checks the [`arrival_candidates`] not confirmed hung, in parallel within
/// `connect_timeout`; returns those that answered, best first (their health
/// tasks were told: up at once). The caller feeds their `Up` to the
/// selector.
pub async fn at_arrival(
    selector: &Selector,
    plane: &Arc<Plane>,
    tunables: &Tunables,
    metrics: &Metrics,
) -> Vec<MasterId> {
    if !start_check_applies(tunables.health.kind) {
        return Vec::new();
    }
    let candidates: Vec<MasterId> = arrival_candidates(selector)
        .into_iter()
        .filter(|m| plane.health.get(m.index()).is_some_and(|h| !h.is_hung()))
        .collect();
    if candidates.is_empty() {
        return Vec::new();
    }
    let mut answered = Vec::new();
    for (m, result) in check_all(plane, candidates, tunables, metrics).await {
        let label = plane.label(m);
        match result {
            Ok(()) => {
                tracing::info!(master = label, "a minion is starting: a master ranked before the active one answers; up at once");
                if let Some(h) = plane.health.get(m.index()) {
                    h.pass_verification();
                }
                answered.push(m);
            }
            Err(why) => {
                tracing::debug!(master = label, why = %why, "a minion is starting: a master ranked before the active one does not answer");
            }
        }
    }
    answered
}

/// Marks each master of `route`'s plane routed or not (the active one, and
/// one a graceful switch lingers on, are routed): a standby's health task
/// probes it lazily.
pub fn note_route(route: &Route) {
    for (i, handle) in route.plane.health.iter().enumerate() {
        let id = MasterId(i as u16);
        handle.set_routed(route.active == Some(id) || route.linger == Some(id));
    }
}

/// Verifies the masters a switch caused by `event` could move to (see the
/// module doc); returns those that failed (their health tasks were told).
pub async fn before_switch(
    selector: &Selector,
    plane: &Arc<Plane>,
    tunables: &Tunables,
    metrics: &Metrics,
    event: Event,
) -> Vec<MasterId> {
    let settings = &tunables.health;
    let now = Instant::now();
    let freshness = settings.interval + settings.timeout;
    let fresh = |m: MasterId| {
        plane
            .health
            .get(m.index())
            .map(|h| h.last_ok())
            // Never checked by this handle (a test plane, a master just
            // carried over a reload): not a lazily probed standby.
            .is_none_or(|last| last.is_none_or(|t| now.saturating_duration_since(t) <= freshness))
    };
    let stale = stale_candidates(selector, event, now, fresh);
    if stale.is_empty() {
        return Vec::new();
    }
    let mut failed = Vec::new();
    for (m, result) in check_all(plane, stale, tunables, metrics).await {
        let label = plane.label(m);
        match result {
            Ok(()) => {
                tracing::debug!(master = label, "standby verified before a switch to it");
            }
            Err(why) => {
                tracing::info!(master = label, why = %why, "standby failed its check right before a switch to it: not chosen");
                if let Some(h) = plane.health.get(m.index()) {
                    h.fail_verification(format!("verified before a switch: {why}"));
                }
                failed.push(m);
            }
        }
    }
    failed
}

/// Checks `masters` at once, in parallel, each within `connect_timeout`
/// (see [`verify_one`]); each with its result, in the order given.
async fn check_all(
    plane: &Plane,
    masters: Vec<MasterId>,
    tunables: &Tunables,
    metrics: &Metrics,
) -> Vec<(MasterId, Result<(), String>)> {
    let checks = masters.iter().map(|m| {
        verify_one(
            plane,
            *m,
            tunables.health.kind,
            tunables.connect_timeout,
            metrics,
        )
    });
    let results = futures_join_all(checks).await;
    masters.into_iter().zip(results).collect()
}

/// Probes both ports of master `m` within `limit`; counts each port as an
/// `on_demand` check (and in `health_checks_total`, as a probe).
async fn verify_one(
    plane: &Plane,
    m: MasterId,
    kind: ProbeKind,
    limit: Duration,
    metrics: &Metrics,
) -> Result<(), String> {
    let (Some(spec), Some(addrs)) = (plane.masters.get(m.index()), plane.addrs.get(m.index()))
    else {
        return Err("unknown master".into());
    };
    let current: Arc<[std::net::IpAddr]> = addrs.borrow().clone();
    // Salt's `ping` needs the health task's line and gate: a connect on
    // the ret port here (the publish port gets its usual check).
    let kind = match kind {
        ProbeKind::Ping => ProbeKind::Tcp,
        k => k,
    };
    let (publish, ret) = tokio::join!(
        probe::probe(kind, &current, spec.publish_port, Port::Publish, limit),
        probe::probe(kind, &current, spec.ret_port, Port::Ret, limit),
    );
    let label = spec.label.as_str();
    for (port, result) in [(Port::Publish, &publish), (Port::Ret, &ret)] {
        if result.as_ref().err().map(ProbeError::blame) == Some(Blame::Sidecar) {
            continue;
        }
        let ok = result.is_ok();
        metrics
            .health_evidence_total
            .with_label_values(&[
                label,
                port.as_str(),
                Evidence::OnDemand.as_str(),
                if ok { "ok" } else { "failed" },
            ])
            .inc();
        let outcome = result
            .as_ref()
            .map_or_else(ProbeError::result, |_| CheckResult::Ok);
        metrics
            .health_checks_total
            .with_label_values(&[label, port.as_str(), outcome.as_str()])
            .inc();
    }
    match (publish, ret) {
        // The sidecar's own exhaustion says nothing of the master.
        (Err(e), _) | (_, Err(e)) if e.blame() == Blame::Sidecar => Ok(()),
        (Err(e), _) => Err(format!("publish port {}: {e}", spec.publish_port)),
        (_, Err(e)) => Err(format!("ret port {}: {e}", spec.ret_port)),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// Runs the futures concurrently, results in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            match fut.as_mut().poll(cx) {
                std::task::Poll::Ready(v) => *slot = Some(v),
                std::task::Poll::Pending => pending = true,
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::Policy;

    fn policy() -> Policy {
        Policy {
            failback: true,
            failback_interval: Duration::from_secs(2),
            reauth_delay: Duration::ZERO,
            recycle_base: Duration::from_secs(1),
            recycle_cap: Duration::from_secs(1),
            startup_grace: Duration::ZERO,
        }
    }

    const A: MasterId = MasterId(0);
    const B: MasterId = MasterId(1);
    const C: MasterId = MasterId(2);

    /// A selector on A, with B and C up.
    fn on_a() -> Selector {
        let now = Instant::now();
        let mut s = Selector::new(vec![A, B, C], policy(), 1, now);
        for m in [A, B, C] {
            s.on_event(Event::Up(m), now);
        }
        assert_eq!(s.active(), Some(A));
        s
    }

    #[test]
    fn a_start_check_calls_masters_up_only_with_a_check_as_strong_as_health() {
        assert!(
            start_check_applies(ProbeKind::Zmtp),
            "a handshake, as health"
        );
        assert!(start_check_applies(ProbeKind::Tcp), "a connect, as health");
        assert!(
            !start_check_applies(ProbeKind::Ping),
            "a connect is not a ping answered"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_starting_minion_has_the_masters_ranked_before_the_active_one_checked() {
        let now = Instant::now();
        let mut s = Selector::new(vec![A, B, C], policy(), 1, now);
        s.on_event(Event::Minion(Minion::Idle), now);
        s.on_event(Event::Down(A), now);
        assert!(s.active().is_none());
        assert_eq!(
            arrival_candidates(&s),
            vec![A, B, C],
            "none up: every master, in order"
        );
        s.on_event(Event::Up(B), now);
        s.on_event(Event::Up(C), now);
        assert_eq!(s.active(), Some(B));
        assert_eq!(arrival_candidates(&s), vec![A], "not C: it ranks after B");

        let mut drained = s.clone();
        drained.on_event(Event::Drain(A), now);
        assert!(
            arrival_candidates(&drained).is_empty(),
            "a drained master is not taken"
        );
        let mut pinned = s.clone();
        pinned.on_event(Event::Pin(C), now);
        assert!(
            arrival_candidates(&pinned).is_empty(),
            "pinned: nothing to choose"
        );
        let mut busy = s.clone();
        busy.on_event(Event::Minion(Minion::Connected), now);
        assert!(
            arrival_candidates(&busy).is_empty(),
            "not a start: a session is open"
        );
        let mut first = on_a();
        first.on_event(Event::Minion(Minion::Idle), now);
        assert!(
            arrival_candidates(&first).is_empty(),
            "on the first master already"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failover_verifies_the_stale_standbys_target_first() {
        let s = on_a();
        let all = stale_candidates(&s, Event::Down(A), Instant::now(), |_| false);
        assert_eq!(
            all,
            vec![B, C],
            "the target first, then the other candidates"
        );
        let fresh_b = stale_candidates(&s, Event::Down(A), Instant::now(), |m| m == B);
        assert_eq!(
            fresh_b,
            vec![C],
            "a standby checked lately is not probed again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_switch_no_verification() {
        let s = on_a();
        assert!(stale_candidates(&s, Event::Down(C), Instant::now(), |_| false).is_empty());
        assert!(stale_candidates(&s, Event::Tick, Instant::now(), |_| false).is_empty());
        // The selector itself was not touched by the dry run.
        assert_eq!(s.active(), Some(A));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failback_verifies_its_target() {
        let now = Instant::now();
        let mut s = Selector::new(vec![A, B], policy(), 1, now);
        s.on_event(Event::Down(A), now);
        s.on_event(Event::Up(B), now);
        assert_eq!(s.active(), Some(B));
        s.on_event(Event::Up(A), now);
        tokio::time::advance(Duration::from_secs(3)).await;
        let stale = stale_candidates(&s, Event::Tick, Instant::now(), |_| false);
        assert_eq!(stale, vec![A], "failback to A: A is verified first");
    }
}
