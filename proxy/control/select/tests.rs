//! Every selection rule, with virtual time (plain `Instant` arithmetic).

use super::*;

const A: MasterId = MasterId(0);
const B: MasterId = MasterId(1);
const C: MasterId = MasterId(2);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn policy() -> Policy {
    Policy {
        failback: true,
        failback_interval: secs(30),
        reauth_delay: secs(10),
        recycle_base: secs(1),
        recycle_cap: secs(30),
        startup_grace: secs(4),
    }
}

fn selector(n: u16, p: Policy) -> (Selector, Instant) {
    let t0 = Instant::now();
    (Selector::new((0..n).map(MasterId).collect(), p, 7, t0), t0)
}

/// The (from, to, reason) of each switch in `actions`.
fn switches(actions: &[Action]) -> Vec<(Option<MasterId>, Option<MasterId>, Reason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Switch {
                from, to, reason, ..
            } => Some((*from, *to, *reason)),
            Action::ProbeAll => None,
        })
        .collect()
}

fn fate(actions: &[Action]) -> Option<SessionFate> {
    actions.iter().find_map(|a| match a {
        Action::Switch { old_sessions, .. } => *old_sessions,
        Action::ProbeAll => None,
    })
}

/// Brings all of `up` up (in order) at `t`, the rest down; returns the actions.
fn start(sel: &mut Selector, n: u16, up: &[MasterId], t: Instant) -> Vec<Action> {
    let mut out = Vec::new();
    for m in (0..n).map(MasterId) {
        let ev = if up.contains(&m) {
            Event::Up(m)
        } else {
            Event::Down(m)
        };
        out.extend(sel.on_event(ev, t));
    }
    out
}

#[test]
fn first_choice_is_the_first_master_and_is_not_a_counted_switch() {
    let (mut sel, t0) = selector(2, policy());
    let acts = start(&mut sel, 2, &[A, B], t0);
    assert_eq!(switches(&acts), vec![(None, Some(A), Reason::Initial)]);
    assert_eq!(sel.active(), Some(A));
    // The first choice has no reconnect delay.
    assert_eq!(sel.connect_after(), t0);
}

#[test]
fn startup_waits_for_a_better_master_that_has_not_reported() {
    let (mut sel, t0) = selector(2, policy());
    // B reports first; A (preferred) has not been probed yet.
    assert!(sel.on_event(Event::Up(B), t0).is_empty());
    assert_eq!(sel.active(), None);
    // A comes up within the grace: A is chosen, no detour through B.
    let acts = sel.on_event(Event::Up(A), t0 + secs(1));
    assert_eq!(switches(&acts), vec![(None, Some(A), Reason::Initial)]);
}

#[test]
fn startup_grace_expiry_settles_on_what_is_up() {
    let (mut sel, t0) = selector(2, policy());
    assert!(sel.on_event(Event::Up(B), t0).is_empty());
    assert_eq!(sel.next_deadline(), Some(t0 + secs(4)));
    assert!(sel.on_event(Event::Tick, t0 + secs(3)).is_empty());
    let acts = sel.on_event(Event::Tick, t0 + secs(4));
    assert_eq!(switches(&acts), vec![(None, Some(B), Reason::Initial)]);
}

#[test]
fn failover_goes_to_the_next_up_master_and_resets_sessions() {
    let (mut sel, t0) = selector(3, policy());
    start(&mut sel, 3, &[A, B, C], t0);
    let t1 = t0 + secs(60);
    let acts = sel.on_event(Event::Down(A), t1);
    assert_eq!(switches(&acts), vec![(Some(A), Some(B), Reason::Failover)]);
    assert_eq!(fate(&acts), Some(SessionFate::Reset));
    // Reconnect jitter: within [0, random_reauth_delay].
    assert!(sel.connect_after() >= t1 && sel.connect_after() <= t1 + secs(10));
    // A paced sign-in's bound: in the second half of random_reauth_delay.
    assert!(sel.reauth_by() >= t1 + secs(5) && sel.reauth_by() <= t1 + secs(10));
}

#[test]
fn failover_skips_masters_that_are_down() {
    let (mut sel, t0) = selector(3, policy());
    start(&mut sel, 3, &[A, C], t0);
    let acts = sel.on_event(Event::Down(A), t0 + secs(1));
    assert_eq!(switches(&acts), vec![(Some(A), Some(C), Reason::Failover)]);
}

#[test]
fn a_non_active_master_going_down_changes_nothing() {
    let (mut sel, t0) = selector(3, policy());
    start(&mut sel, 3, &[A, B, C], t0);
    assert!(sel.on_event(Event::Down(B), t0 + secs(1)).is_empty());
    assert_eq!(sel.active(), Some(A));
    assert_eq!(sel.fallbacks(), vec![C]);
}

#[test]
fn failback_waits_for_the_interval_then_drains() {
    let (mut sel, t0) = selector(2, policy());
    start(&mut sel, 2, &[A, B], t0);
    sel.on_event(Event::Down(A), t0 + secs(10));
    let back = t0 + secs(20);
    assert!(
        sel.on_event(Event::Up(A), back).is_empty(),
        "no failback before the interval"
    );
    assert_eq!(sel.next_deadline(), Some(back + secs(30)));
    assert!(sel.on_event(Event::Tick, back + secs(29)).is_empty());
    let acts = sel.on_event(Event::Tick, back + secs(30));
    assert_eq!(switches(&acts), vec![(Some(B), Some(A), Reason::Failback)]);
    assert_eq!(fate(&acts), Some(SessionFate::Drain));
}

#[test]
fn no_failback_when_disabled() {
    let (mut sel, t0) = selector(
        2,
        Policy {
            failback: false,
            ..policy()
        },
    );
    start(&mut sel, 2, &[A, B], t0);
    sel.on_event(Event::Down(A), t0 + secs(1));
    sel.on_event(Event::Up(A), t0 + secs(2));
    assert!(sel.on_event(Event::Tick, t0 + secs(3600)).is_empty());
    assert_eq!(sel.active(), Some(B));
    assert_eq!(sel.next_deadline(), None);
}

#[test]
fn failback_goes_to_the_best_master_not_just_a_better_one() {
    let (mut sel, t0) = selector(3, policy());
    start(&mut sel, 3, &[C], t0 + secs(5)); // after grace: only C up
    assert_eq!(sel.active(), Some(C));
    sel.on_event(Event::Up(B), t0 + secs(10));
    sel.on_event(Event::Up(A), t0 + secs(12));
    // B becomes eligible first (t=40): moves to B.
    let acts = sel.on_event(Event::Tick, t0 + secs(40));
    assert_eq!(switches(&acts), vec![(Some(C), Some(B), Reason::Failback)]);
    // A eligible at t=42: moves on to A.
    let acts = sel.on_event(Event::Tick, t0 + secs(42));
    assert_eq!(switches(&acts), vec![(Some(B), Some(A), Reason::Failback)]);
}

#[test]
fn flapping_primary_causes_one_switch_away_and_none_back() {
    let (mut sel, t0) = selector(2, policy());
    start(&mut sel, 2, &[A, B], t0);
    let mut all = Vec::new();
    // A flaps every 0.5 s for 20 s (as health reports after hysteresis).
    for i in 0..40u64 {
        let t = t0 + secs(1) + Duration::from_millis(500 * i);
        let ev = if i % 2 == 0 {
            Event::Down(A)
        } else {
            Event::Up(A)
        };
        all.extend(sel.on_event(ev, t));
        all.extend(sel.on_event(Event::Tick, t));
    }
    assert_eq!(switches(&all), vec![(Some(A), Some(B), Reason::Failover)]);
    // Once A is stable for the interval, exactly one failback.
    let stable = t0 + secs(25);
    sel.on_event(Event::Up(A), stable);
    let acts = sel.on_event(Event::Tick, stable + secs(30));
    assert_eq!(switches(&acts), vec![(Some(B), Some(A), Reason::Failback)]);
}

#[test]
fn all_down_recycles_with_jittered_exponential_backoff_then_recovers() {
    let (mut sel, t0) = selector(2, policy());
    start(&mut sel, 2, &[A, B], t0);
    sel.on_event(Event::Down(A), t0 + secs(1));
    let acts = sel.on_event(Event::Down(B), t0 + secs(2));
    assert_eq!(switches(&acts), vec![(Some(B), None, Reason::Failover)]);
    assert_eq!(fate(&acts), Some(SessionFate::Reset));
    assert_eq!(sel.active(), None);
    // While nothing is up there is nothing to try: new connections wait.
    assert!(sel.fallbacks().is_empty());
    // Recycle: ProbeAll at deadlines that are never later than the capped backoff.
    let mut now = t0 + secs(2);
    let mut probes = 0;
    for attempt in 0..10u32 {
        let next = sel.next_deadline().expect("recycling");
        let ceiling = secs(1).saturating_mul(1 << attempt).min(secs(30));
        assert!(
            next <= now + ceiling,
            "attempt {attempt}: waited past the backoff ceiling"
        );
        assert!(next >= now + Duration::from_millis(50), "never a busy loop");
        now = next;
        let acts = sel.on_event(Event::Tick, now);
        probes += acts.iter().filter(|a| **a == Action::ProbeAll).count();
    }
    assert_eq!(probes, 10);
    // One returns: it becomes active (a failover out of the all-down state), recycle stops.
    let acts = sel.on_event(Event::Up(B), now);
    assert_eq!(switches(&acts), vec![(None, Some(B), Reason::Failover)]);
    assert!(sel.connect_after() <= now + secs(10));
    // Only the failback timer remains (A is down, so none).
    assert_eq!(sel.next_deadline(), None);
}

#[test]
fn all_down_at_startup_is_quiet_until_one_comes_up() {
    let (mut sel, t0) = selector(2, policy());
    let acts = start(&mut sel, 2, &[], t0);
    assert!(switches(&acts).is_empty());
    assert!(sel.next_deadline().is_some(), "recycle scheduled");
    let acts = sel.on_event(Event::Up(B), t0 + secs(3));
    assert_eq!(switches(&acts), vec![(None, Some(B), Reason::Failover)]);
}

#[test]
fn pin_overrides_health_and_unpin_returns_to_the_best() {
    let (mut sel, t0) = selector(2, policy());
    start(&mut sel, 2, &[A], t0);
    let acts = sel.on_event(Event::Pin(B), t0 + secs(1));
    assert_eq!(switches(&acts), vec![(Some(A), Some(B), Reason::Admin)]);
    assert_eq!(fate(&acts), Some(SessionFate::Drain));
    assert!(
        sel.fallbacks().is_empty(),
        "a pinned minion reaches only the pinned master"
    );
    // Health changes do not move a pinned minion.
    assert!(sel.on_event(Event::Down(B), t0 + secs(2)).is_empty());
    assert!(sel.on_event(Event::Tick, t0 + secs(100)).is_empty());
    let acts = sel.on_event(Event::Unpin, t0 + secs(101));
    assert_eq!(switches(&acts), vec![(Some(B), Some(A), Reason::Admin)]);
}

#[test]
fn drain_moves_away_gracefully_and_keeps_the_master_out() {
    let (mut sel, t0) = selector(2, policy());
    start(&mut sel, 2, &[A, B], t0);
    let acts = sel.on_event(Event::Drain(A), t0 + secs(1));
    assert_eq!(switches(&acts), vec![(Some(A), Some(B), Reason::Admin)]);
    assert_eq!(fate(&acts), Some(SessionFate::Drain));
    // No failback onto a drained master.
    assert!(sel.on_event(Event::Tick, t0 + secs(1000)).is_empty());
    assert!(sel.fallbacks().is_empty());
    // Undrained: failback applies again after the interval (A has been up all along).
    let acts = sel.on_event(Event::Undrain(A), t0 + secs(1001));
    assert_eq!(switches(&acts), vec![(Some(B), Some(A), Reason::Failback)]);
}

#[test]
fn reconnect_jitter_spreads_a_fleet() {
    // 200 sidecars with different seeds failing over at the same instant.
    let mut delays = Vec::new();
    for seed in 0..200u64 {
        let t0 = Instant::now();
        let mut sel = Selector::new(vec![A, B], policy(), seed, t0);
        start(&mut sel, 2, &[A, B], t0);
        sel.on_event(Event::Down(A), t0 + secs(1));
        delays.push((sel.connect_after() - (t0 + secs(1))).as_secs_f64());
    }
    assert!(delays.iter().all(|d| (0.0..=10.0).contains(d)));
    // Roughly uniform: every 2-second bucket gets some of the fleet.
    for bucket in 0..5 {
        let n = delays
            .iter()
            .filter(|d| (**d / 2.0) as usize == bucket)
            .count();
        assert!(n >= 20, "bucket {bucket} has only {n} of 200");
    }
}

#[test]
fn zero_reauth_delay_reconnects_at_once() {
    let (mut sel, t0) = selector(
        2,
        Policy {
            reauth_delay: Duration::ZERO,
            ..policy()
        },
    );
    start(&mut sel, 2, &[A, B], t0);
    sel.on_event(Event::Down(A), t0 + secs(1));
    assert_eq!(sel.connect_after(), t0 + secs(1));
}

#[test]
fn shuffle_is_stable_and_spreads_and_moves_only_the_dead_masters_minions() {
    let labels = ["salt-a", "salt-b", "salt-c"];
    let ids: Vec<String> = (0..3000).map(|i| format!("minion-{i:04}")).collect();
    let mut counts = [0usize; 3];
    for id in &ids {
        let order = shuffled_order(id, &labels);
        assert_eq!(order, shuffled_order(id, &labels), "stable for the same id");
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, vec![A, B, C], "a permutation");
        counts[order[0].index()] += 1;
    }
    for c in counts {
        assert!((800..=1200).contains(&c), "uneven spread: {counts:?}");
    }
    // Remove salt-b: minions that had a or c first keep it.
    let without_b = ["salt-a", "salt-c"];
    for id in &ids {
        let before = labels[shuffled_order(id, &labels)[0].index()];
        let after = without_b[shuffled_order(id, &without_b)[0].index()];
        if before != "salt-b" {
            assert_eq!(before, after, "{id} moved although its master stayed");
        }
    }
}

#[test]
fn unknown_master_ids_are_ignored() {
    let (mut sel, t0) = selector(2, policy());
    start(&mut sel, 2, &[A, B], t0);
    assert!(sel.on_event(Event::Down(MasterId(9)), t0).is_empty());
    assert!(sel.on_event(Event::Pin(MasterId(9)), t0).is_empty());
    assert_eq!(sel.active(), Some(A));
}

#[test]
fn a_flapping_best_master_does_not_block_failback_to_a_stable_second() {
    let (mut sel, t0) = selector(3, policy());
    start(&mut sel, 3, &[C], t0 + secs(5));
    sel.on_event(Event::Up(B), t0 + secs(10));
    // A flaps every second, never up for 30 s.
    let mut all = Vec::new();
    for i in 0..60u64 {
        let t = t0 + secs(6 + i);
        all.extend(sel.on_event(
            if i % 2 == 0 {
                Event::Up(A)
            } else {
                Event::Down(A)
            },
            t,
        ));
        all.extend(sel.on_event(Event::Tick, t));
    }
    assert_eq!(switches(&all), vec![(Some(C), Some(B), Reason::Failback)]);
}

#[test]
fn a_reload_carries_state_over_and_rechooses_with_reason_reload() {
    let (mut sel, t0) = selector(3, policy());
    start(&mut sel, 3, &[A, B, C], t0);
    sel.on_event(Event::Drain(C), t0 + secs(1));
    assert_eq!(sel.active(), Some(A));
    // New list: [C, B] (A removed, order changed): old C -> new 0, old B -> new 1.
    let map = |m: MasterId| match m {
        A => None,
        B => Some(MasterId(1)),
        C => Some(MasterId(0)),
        _ => None,
    };
    let mut sel = Selector::carry_over(sel, vec![MasterId(0), MasterId(1)], map);
    assert_eq!(sel.active(), None, "the active master was removed");
    assert!(sel.is_drained(MasterId(0)), "C stays drained");
    assert!(
        matches!(sel.health(MasterId(1)), Health::Up { .. }),
        "B stays up"
    );
    let acts = sel.on_event(Event::Tick, t0 + secs(2));
    assert_eq!(
        switches(&acts),
        vec![(None, Some(MasterId(1)), Reason::Reload)]
    );
    // Later switches have their own reasons again.
    let acts = sel.on_event(Event::Down(MasterId(1)), t0 + secs(3));
    assert_eq!(
        switches(&acts),
        vec![(Some(MasterId(1)), None, Reason::Failover)]
    );
}

#[test]
fn a_reload_that_keeps_the_active_master_switches_nothing() {
    let (mut sel, t0) = selector(2, policy());
    start(&mut sel, 2, &[A, B], t0);
    // Add a third master after the two.
    let mut sel = Selector::carry_over(sel, vec![A, B, C], Some);
    assert!(sel.on_event(Event::Tick, t0 + secs(1)).is_empty());
    assert_eq!(sel.active(), Some(A));
    assert_eq!(sel.health(C), Health::Unknown);
}

/// With `sidecar.master_srv` the sidecar starts with no masters; the
/// record's first answer is a start, not a reload: the first choice waits
/// for the better-ranked master's first probe and is not a switch.
#[test]
fn the_first_masters_after_none_are_a_start_not_a_switch() {
    let (mut sel, t0) = selector(0, policy());
    assert!(switches(&sel.on_event(Event::Tick, t0)).is_empty());
    assert_eq!(sel.active(), None);

    let t1 = t0 + secs(60);
    let mut sel = Selector::first_masters(sel, vec![B, A], t1);
    // A (ranked second) answers first: within the grace, wait for B.
    assert!(switches(&sel.on_event(Event::Up(A), t1)).is_empty());
    assert_eq!(sel.active(), None);
    let acts = sel.on_event(Event::Up(B), t1 + secs(1));
    assert_eq!(switches(&acts), vec![(None, Some(B), Reason::Initial)]);
    // Later switches are switches.
    let acts = sel.on_event(Event::Down(B), t1 + secs(2));
    assert_eq!(switches(&acts), vec![(Some(B), Some(A), Reason::Failover)]);
}

fn no_failback() -> Policy {
    Policy {
        failback: false,
        ..policy()
    }
}

/// Every master down, then B back first: the sidecar goes to B.
fn all_down_then_b(sel: &mut Selector, t0: Instant) -> Instant {
    start(sel, 2, &[A, B], t0);
    sel.on_event(Event::Down(A), t0 + secs(1));
    sel.on_event(Event::Down(B), t0 + secs(2));
    assert_eq!(sel.active(), None);
    let acts = sel.on_event(Event::Up(B), t0 + secs(5));
    assert_eq!(switches(&acts), vec![(None, Some(B), Reason::Failover)]);
    t0 + secs(5)
}

#[test]
fn an_idle_sidecar_follows_the_list_at_once_even_without_failback() {
    let (mut sel, t0) = selector(2, no_failback());
    assert!(sel.on_event(Event::Minion(Minion::Idle), t0).is_empty());
    let t = all_down_then_b(&mut sel, t0);
    // Out of "all down" the reconnect delay still applies (held
    // connections are not sessions yet).
    assert!(sel.connect_after() <= t + secs(10));
    // A returns: nothing is open, so the list's first master at once.
    let back = t + secs(3);
    let acts = sel.on_event(Event::Up(A), back);
    assert_eq!(switches(&acts), vec![(Some(B), Some(A), Reason::Failback)]);
    // Gently, should a session have opened on B meanwhile; and with no
    // reconnect delay: there is nobody to spread.
    assert_eq!(fate(&acts), Some(SessionFate::Drain));
    assert_eq!(sel.connect_after(), back);
    assert_eq!(sel.next_deadline(), None);
}

#[test]
fn a_connected_sidecar_without_failback_stays_until_the_minion_is_idle() {
    let (mut sel, t0) = selector(2, no_failback());
    let t = all_down_then_b(&mut sel, t0);
    assert!(sel.on_event(Event::Minion(Minion::Connected), t).is_empty());
    assert!(sel.on_event(Event::Up(A), t + secs(1)).is_empty());
    assert!(sel.on_event(Event::Tick, t + secs(3600)).is_empty());
    assert_eq!(sel.active(), Some(B));
    // The minion's last session closes: now nothing is disrupted.
    let idle = t + secs(3601);
    let acts = sel.on_event(Event::Minion(Minion::Idle), idle);
    assert_eq!(switches(&acts), vec![(Some(B), Some(A), Reason::Failback)]);
    assert_eq!(sel.connect_after(), idle);
}

#[test]
fn an_idle_sidecar_does_not_wait_for_the_failback_interval() {
    let (mut sel, t0) = selector(2, policy());
    start(&mut sel, 2, &[A, B], t0);
    sel.on_event(Event::Down(A), t0 + secs(10));
    // A session is open: A's return waits the interval.
    assert!(sel.on_event(Event::Up(A), t0 + secs(20)).is_empty());
    assert_eq!(sel.next_deadline(), Some(t0 + secs(50)));
    // The minion closes its sessions at t=30: failback then, not at t=50.
    let acts = sel.on_event(Event::Minion(Minion::Idle), t0 + secs(30));
    assert_eq!(switches(&acts), vec![(Some(B), Some(A), Reason::Failback)]);
    assert_eq!(sel.next_deadline(), None);
}

#[test]
fn a_session_that_opens_before_the_better_master_returns_keeps_its_master() {
    let (mut sel, t0) = selector(2, policy());
    assert!(sel.on_event(Event::Minion(Minion::Idle), t0).is_empty());
    let t = all_down_then_b(&mut sel, t0);
    // The minion connects (the supervisor says so before the next event).
    assert!(sel.on_event(Event::Minion(Minion::Connected), t).is_empty());
    let back = t + secs(1);
    assert!(sel.on_event(Event::Up(A), back).is_empty());
    assert_eq!(sel.active(), Some(B));
    // An ordinary failback then: after the interval, drained, jittered.
    let acts = sel.on_event(Event::Tick, back + secs(30));
    assert_eq!(switches(&acts), vec![(Some(B), Some(A), Reason::Failback)]);
    assert_eq!(fate(&acts), Some(SessionFate::Drain));
    assert!(sel.connect_after() <= back + secs(40));
}

#[test]
fn idle_follows_the_list_only_among_usable_masters_and_never_past_a_pin() {
    let (mut sel, t0) = selector(3, no_failback());
    sel.on_event(Event::Minion(Minion::Idle), t0);
    start(&mut sel, 3, &[A, B, C], t0);
    // A drained: the first usable is B.
    let acts = sel.on_event(Event::Drain(A), t0 + secs(1));
    assert_eq!(switches(&acts), vec![(Some(A), Some(B), Reason::Admin)]);
    assert!(sel.on_event(Event::Tick, t0 + secs(2)).is_empty());
    // B down: C (failover, at once: the minion is idle); B back: B again.
    let acts = sel.on_event(Event::Down(B), t0 + secs(3));
    assert_eq!(switches(&acts), vec![(Some(B), Some(C), Reason::Failover)]);
    assert_eq!(sel.connect_after(), t0 + secs(3));
    let acts = sel.on_event(Event::Up(B), t0 + secs(4));
    assert_eq!(switches(&acts), vec![(Some(C), Some(B), Reason::Failback)]);
    // Pinned to C: idle does not move it.
    sel.on_event(Event::Pin(C), t0 + secs(5));
    assert!(sel.on_event(Event::Undrain(A), t0 + secs(6)).is_empty());
    assert_eq!(sel.active(), Some(C));
    // Unpinned: the best again, A.
    let acts = sel.on_event(Event::Unpin, t0 + secs(7));
    assert_eq!(switches(&acts), vec![(Some(C), Some(A), Reason::Admin)]);
}

#[test]
fn idle_carries_over_a_reload() {
    let (mut sel, t0) = selector(2, no_failback());
    sel.on_event(Event::Minion(Minion::Idle), t0);
    start(&mut sel, 2, &[B], t0 + secs(5));
    assert_eq!(sel.active(), Some(B));
    let mut sel = Selector::carry_over(sel, vec![A, B], Some);
    assert_eq!(sel.minion(), Minion::Idle);
    let acts = sel.on_event(Event::Up(A), t0 + secs(6));
    assert_eq!(switches(&acts), vec![(Some(B), Some(A), Reason::Reload)]);
}
