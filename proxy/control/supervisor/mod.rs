//! Drives the pure [`Selector`] with health transitions, admin commands and
//! time, and carries out its actions.
//!
//! It is the only writer of the [`Route`] (a `watch` channel read by both
//! listeners) and of the [`Snapshot`] the admin API shows, the only one to
//! close sessions on a switch, and the one place that logs and counts
//! switches. One task; no sockets.
//!
//! **Lingering.** A graceful switch (failback, drain, reload) with moves on
//! asks the old master's sessions to move once they are all idle. Until
//! they have (or the drain timeout), the route keeps sending *new*
//! connections to that old master ([`Route::linger`]): a legacy minion's job
//! process returns over a new connection, and the return belongs to the
//! master that published the job. When the wait ends, the sessions that
//! opened meanwhile are asked to move in turn, and new connections go to
//! the new master.
//!
//! **Idle.** The supervisor also tells the selector whether any minion
//! session is open ([`OpenSessions`]): right before every event, and when
//! the last session closes (or the first opens), so an idle sidecar moves
//! to the first healthy master at once.
//!
//! **Arrival.** A minion connection that arrives while the sidecar is idle
//! is a minion starting; a native failover minion then tries its list in
//! order. So the connection waits ([`Route::idle`]) while the supervisor
//! checks, at once and in parallel, the masters ranked before the active
//! one that are not up ([`verify::at_arrival`]): one that answers is up
//! and taken (an idle move, no delay), instead of the minion settling on a
//! worse master until the next failover because the better one came back
//! a probe or two before the minion did.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock;
use crate::config::master::MasterId;
use crate::config::settings::Tunables;
use crate::control::health::{verify, Transition};
use crate::control::liveness::Liveness;
use crate::control::masters::Plane;
use crate::control::route::Route;
use crate::control::select::{Action, Event, Minion, Policy, Reason, Selector, SessionFate};
use crate::control::sessions::{OpenSessions, SwitchGate};
use crate::metrics::{Metrics, NONE};

mod linger;

use linger::lingered;
pub use linger::Linger;

/// Commands from the admin API and the reloader.
#[derive(Clone, Debug)]
pub enum Command {
    Pin(MasterId),
    Unpin,
    Drain(MasterId),
    Undrain(MasterId),
    /// A reload changed the policy knobs.
    SetPolicy(Policy),
    /// A reload changed the masters: switch to this plane and order.
    Reload {
        plane: Arc<Plane>,
        order: Vec<MasterId>,
    },
}

/// The selector's state as the admin API shows it; published after every event.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The masters the ids below refer to.
    pub plane: Arc<Plane>,
    pub active: Option<MasterId>,
    pub pinned: Option<MasterId>,
    /// Preference order (configured, or shuffled by minion id).
    pub order: Vec<MasterId>,
    /// Indexed by `MasterId`.
    pub drained: Vec<bool>,
}

/// Everything the supervisor acts on.
pub struct Supervisor {
    pub selector: Selector,
    pub plane: Arc<Plane>,
    /// Transitions of a plane newer than `plane` (see `run`).
    pub early: Vec<Transition>,
    pub route: watch::Sender<Route>,
    pub snapshot: watch::Sender<Snapshot>,
    pub metrics: Arc<Metrics>,
    /// Ticked on every turn of the loop (the systemd watchdog reads it).
    pub liveness: Arc<Liveness>,
    /// How often the loop wakes to tick `liveness` when nothing happens:
    /// only while a systemd watchdog reads it. Without one an idle sidecar
    /// sleeps until an event or a deadline (a fleet's hosts: no wake-ups
    /// for nothing).
    pub alive_tick: Option<Duration>,
    /// Whether sessions move on a switch (for the switch's log line), and
    /// how long a graceful switch may take (the drain timeout).
    pub tunables: watch::Receiver<Arc<Tunables>>,
    /// The graceful switch whose old master still takes new connections.
    pub linger: Option<Linger>,
    /// When a minion session was last seen open (`None`: never).
    pub last_busy: Option<Instant>,
    /// A session was open at the last look.
    pub was_open: bool,
    /// When a minion connection last arrived while the sidecar was idle
    /// (and was let through): busy for [`IDLE_AFTER`] from then, as its
    /// session opens.
    pub arrival: Option<Instant>,
}

/// How long no minion session may have been open before the sidecar counts
/// as idle (and follows its list at once). A minion that opens a connection
/// now and then (a `salt-call`, a client asking every 200 ms) is not idle:
/// an idle switch at each gap would follow a flapping master up and down
/// (seen: 8 switches each way in a 20 s flap, instead of the failback
/// interval's one). A real minion's publish connection stays open, so this
/// only delays the case it is for: a minion that is gone.
pub const IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.plane, &other.plane)
            && (self.active, self.pinned) == (other.active, other.pinned)
            && (&self.order, &self.drained) == (&other.order, &other.drained)
    }
}

// === impl Supervisor ===

impl Supervisor {
    /// The route the selector's current state implies, lingering on the
    /// master `linger` names while a graceful switch waits.
    pub fn current_route(
        selector: &Selector,
        plane: &Arc<Plane>,
        linger: Option<MasterId>,
    ) -> Route {
        Route {
            plane: plane.clone(),
            active: selector.active(),
            fallbacks: selector.fallbacks(),
            connect_after: selector.connect_after(),
            reauth_by: selector.reauth_by(),
            pace_until: selector.pace_until(),
            linger,
            idle: selector.minion() == Minion::Idle,
        }
    }

    /// The admin view of the selector's current state.
    pub fn current_snapshot(selector: &Selector, plane: &Arc<Plane>) -> Snapshot {
        let order = selector.order().to_vec();
        let mut drained = vec![false; order.len()];
        for m in &order {
            if let Some(d) = drained.get_mut(m.index()) {
                *d = selector.is_drained(*m);
            }
        }
        Snapshot {
            plane: plane.clone(),
            active: selector.active(),
            pinned: selector.pinned(),
            order,
            drained,
        }
    }

    /// Runs until `token` is cancelled.
    pub async fn run(
        mut self,
        mut transitions: mpsc::Receiver<Transition>,
        mut commands: mpsc::Receiver<Command>,
        token: CancellationToken,
    ) {
        let mut alive = self.alive_tick.map(|every| {
            let mut alive = tokio::time::interval(every);
            alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            alive
        });
        let stall_at = test_stall_after().map(|d| Instant::now() + d);
        loop {
            self.liveness.tick_supervisor(Instant::now());
            let deadline = self.selector.next_deadline();
            // Shared by every plane: a reload keeps the count.
            let open: Arc<OpenSessions> = self.plane.sessions.open().clone();
            let event = tokio::select! {
                _ = token.cancelled() => return,
                () = alive_ticked(alive.as_mut()) => continue,
                // `handle` reads the count itself, before the event.
                _ = open.changed() => Event::Tick,
                _ = open.arrived() => {
                    self.arrive().await;
                    continue;
                }
                _ = lingered(self.linger.clone()) => {
                    self.end_linger("moved");
                    Event::Tick
                }
                _ = sleep_until_opt(stall_at) => {
                    warn!("test hook: stalling the supervisor (SALT_SIDECAR_TEST_STALL_SUPERVISOR_AFTER)");
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = std::future::pending::<()>() => continue,
                    }
                }
                Some(t) = transitions.recv() => {
                    if t.generation > self.plane.generation {
                        // A reloaded plane's first probes can arrive before
                        // the reload command: keep them for the swap.
                        self.early.push(t);
                        continue;
                    }
                    if t.generation < self.plane.generation {
                        continue; // from a plane a reload replaced
                    }
                    transition_event(&t)
                }
                Some(c) = commands.recv() => match c {
                    Command::Pin(m) => Event::Pin(m),
                    Command::Unpin => Event::Unpin,
                    Command::Drain(m) => Event::Drain(m),
                    Command::Undrain(m) => Event::Undrain(m),
                    Command::SetPolicy(p) => {
                        self.selector.set_policy(p);
                        Event::Tick
                    }
                    Command::Reload { plane, order } => {
                        self.swap_plane(plane, order);
                        let generation = self.plane.generation;
                        let early = std::mem::take(&mut self.early);
                        let (now_due, later): (Vec<Transition>, Vec<Transition>) =
                            early.into_iter().filter(|t| t.generation >= generation).partition(|t| t.generation == generation);
                        self.early = later;
                        for t in &now_due {
                            self.handle(transition_event(t), Instant::now());
                        }
                        Event::Tick
                    }
                },
                _ = sleep_until_opt(deadline) => Event::Tick,
                _ = sleep_until_opt(self.idle_at()) => Event::Tick,
            };
            let tunables = self.tunables.borrow().clone();
            for m in
                verify::before_switch(&self.selector, &self.plane, &tunables, &self.metrics, event)
                    .await
            {
                self.handle(Event::Down(m), Instant::now());
            }
            self.handle(event, Instant::now());
        }
    }

    /// Moves to a reloaded plane: state carries over for masters that stay,
    /// sessions to removed masters drain, the old plane's tasks end.
    fn swap_plane(&mut self, plane: Arc<Plane>, order: Vec<MasterId>) {
        // Its ids name the old plane's masters.
        self.end_linger("reload");
        let old = std::mem::replace(&mut self.plane, plane);
        let map = |m: MasterId| {
            old.masters
                .get(m.index())
                .and_then(|spec| self.plane.find(spec))
        };
        let placeholder = Selector::new(Vec::new(), self.selector.policy(), 0, Instant::now());
        let prev = std::mem::replace(&mut self.selector, placeholder);
        self.selector = if prev.order().is_empty() {
            // The first masters (an SRV record's first answer): a start.
            Selector::first_masters(prev, order, Instant::now())
        } else {
            Selector::carry_over(prev, order, map)
        };
        let moves = self.tunables.borrow().moves_sessions();
        for spec in &old.masters {
            if self.plane.find(spec).is_none() {
                // A followed session moves to the active master at its next
                // message boundary; the others drain.
                old.sessions.drain(spec.id);
                self.metrics.retire(&spec.label);
                if moves {
                    info!(master = %spec.label, "reload: master removed; its sessions move");
                } else {
                    info!(master = %spec.label, "reload: master removed; its sessions drain");
                }
            }
        }
        for spec in &self.plane.masters {
            if old.find(spec).is_none() {
                info!(master = %spec.label, "reload: master added");
            }
        }
        old.token.cancel();
    }

    /// When the sidecar becomes idle if no session opens meanwhile:
    /// [`IDLE_AFTER`] after one was last seen open (or after a minion
    /// connection arrived); `None` once idle, or while one is open (the
    /// count's change wakes the loop).
    fn idle_at(&self) -> Option<Instant> {
        if self.plane.sessions.open().any() || self.selector.minion() == Minion::Idle {
            return None;
        }
        self.last_busy.max(self.arrival).map(|t| t + IDLE_AFTER)
    }

    /// A minion connection arrived while the sidecar was idle (see the
    /// module doc): the better-ranked masters that are not up are checked
    /// first; those that answer are up, and the idle selector moves to the
    /// best at once. Then the sidecar counts as busy, which lets the
    /// connection (and any other waiting) through.
    async fn arrive(&mut self) {
        if self.selector.minion() == Minion::Idle {
            let tunables = self.tunables.borrow().clone();
            let answered =
                verify::at_arrival(&self.selector, &self.plane, &tunables, &self.metrics).await;
            for m in answered {
                self.handle(Event::Up(m), Instant::now());
            }
        }
        self.arrival = Some(Instant::now());
        self.handle(Event::Tick, Instant::now());
    }

    /// Feeds one event and applies what the selector decides.
    pub fn handle(&mut self, event: Event, now: Instant) {
        if let Event::Up(m) | Event::Down(m) = event {
            let up = i64::from(matches!(event, Event::Up(_)));
            self.metrics
                .master_up
                .with_label_values(&[self.plane.label(m)])
                .set(up);
        }
        // Whether a switch would disrupt a session, as of now: a session
        // that opens after this look joins the master being left before the
        // route changes, and is drained (or moved) like any failback's.
        // Open now, or open until now (the loop is woken when the last
        // session closes): busy as of now.
        let open = self.plane.sessions.open().any();
        if open || self.was_open {
            self.last_busy = Some(now);
        }
        self.was_open = open;
        let arrived = self.arrival.is_some_and(|t| now < t + IDLE_AFTER);
        let minion = match self.idle_at() {
            Some(at) if now < at => Minion::Connected,
            _ if self.plane.sessions.open().any() || arrived => Minion::Connected,
            _ => Minion::Idle,
        };
        let mut actions = Vec::new();
        if minion != self.selector.minion() {
            match minion {
                Minion::Idle => info!(
                    "minion idle: no session for {} s; its next connection is a start (the masters it prefers are checked first)",
                    IDLE_AFTER.as_secs()
                ),
                Minion::Connected => info!("minion connected: a session is open or opening"),
            }
            actions = self.selector.on_event(Event::Minion(minion), now);
        }
        actions.extend(self.selector.on_event(event, now));
        if actions.iter().any(|a| matches!(a, Action::Switch { .. })) {
            self.end_linger("switched again");
        } else if self
            .linger
            .as_ref()
            .is_some_and(|l| !self.may_linger(l.from))
        {
            self.end_linger("master no longer up");
        }
        // Publish first, then close: a session that registers after the close
        // re-checks the route and sees the new master.
        self.publish_route();
        let snapshot = Self::current_snapshot(&self.selector, &self.plane);
        self.snapshot.send_if_modified(|s| {
            let changed = *s != snapshot;
            *s = snapshot;
            changed
        });
        for action in actions {
            match action {
                Action::Switch {
                    from,
                    to,
                    reason,
                    old_sessions,
                    connect_after,
                } => {
                    let gate =
                        self.apply_switch(from, to, reason, old_sessions, connect_after, now);
                    if let (Some(from), Some(gate)) = (from, gate) {
                        self.start_linger(from, gate, now);
                    }
                }
                Action::ProbeAll => {
                    for h in &self.plane.health {
                        h.reprobe();
                    }
                }
            }
        }
    }

    /// Publishes the route the selector and the linger imply, if it changed.
    fn publish_route(&self) {
        let linger = self.linger.as_ref().map(|l| l.from);
        let route = Self::current_route(&self.selector, &self.plane, linger);
        verify::note_route(&route);
        self.route.send_if_modified(|r| {
            let changed = *r != route;
            *r = route;
            changed
        });
    }

    /// Carries out a switch; returns the gate of the sessions a graceful
    /// switch asked to move.
    fn apply_switch(
        &self,
        from: Option<MasterId>,
        to: Option<MasterId>,
        reason: Reason,
        old_sessions: Option<SessionFate>,
        connect_after: Instant,
        now: Instant,
    ) -> Option<Arc<SwitchGate>> {
        let m = &self.metrics;
        let plane = &self.plane;
        let name = |x: Option<MasterId>| x.map_or(NONE, |id| plane.label(id));
        let mut gate = None;
        if let Some(f) = from {
            m.master_active.with_label_values(&[plane.label(f)]).set(0);
            match old_sessions {
                Some(SessionFate::Reset) => plane.sessions.reset(f),
                Some(SessionFate::Drain) => gate = plane.sessions.drain(f),
                None => {}
            }
        }
        if let Some(t) = to {
            m.master_active.with_label_values(&[plane.label(t)]).set(1);
        }
        let delay_ms = connect_after.saturating_duration_since(now).as_millis() as u64;
        // With moves on, the data path moves each followed session (now on
        // a reset, at its next message boundary on a drain) and resets or
        // drains only the rest.
        let moves = self.tunables.borrow().moves_sessions();
        let sessions = match (old_sessions, moves) {
            (Some(SessionFate::Reset), false) => "reset",
            (Some(SessionFate::Reset), true) => "moved",
            (Some(SessionFate::Drain), false) => "draining",
            (Some(SessionFate::Drain), true) => "moving",
            (None, _) => "none",
        };
        if reason == Reason::Initial {
            info!(master = name(to), "selected master");
            return gate;
        }
        m.switched(name(from), name(to), reason.as_str());
        m.last_switch_timestamp_seconds
            .set(clock::unix(SystemTime::now()).as_secs_f64());
        match to {
            Some(_) => info!(
                from = name(from),
                to = name(to),
                reason = reason.as_str(),
                old_sessions = sessions,
                reconnect_delay_ms = delay_ms,
                "switched master"
            ),
            None if self.tunables.borrow().shows_switches() => warn!(
                from = name(from),
                reason = reason.as_str(),
                old_sessions = sessions,
                "every master is down; refusing the minion's publish connections (so it notices) and holding its ret connections until one is back"
            ),
            None => warn!(
                from = name(from),
                reason = reason.as_str(),
                old_sessions = sessions,
                "every master is down; holding minion connections until one is back"
            ),
        }
        gate
    }
}

fn transition_event(t: &Transition) -> Event {
    if t.up {
        Event::Up(t.master)
    } else {
        Event::Down(t.master)
    }
}

/// The next tick of the liveness interval; never without one.
async fn alive_ticked(alive: Option<&mut tokio::time::Interval>) {
    match alive {
        Some(alive) => {
            alive.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Test hook, debug builds only: stall the supervisor (not the process)
/// this long after it starts, so a test can see the systemd watchdog stop
/// being fed. Release builds ignore the variable.
fn test_stall_after() -> Option<std::time::Duration> {
    if cfg!(debug_assertions) {
        std::env::var("SALT_SIDECAR_TEST_STALL_SUPERVISOR_AFTER")
            .ok()?
            .parse()
            .ok()
            .map(std::time::Duration::from_secs)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    //! The supervisor task with virtual time: transitions and commands in,
    //! route, snapshot, session tokens and metrics out.

    use std::net::IpAddr;
    use std::time::Duration;

    use super::linger::LINGER_SETTLE;
    use super::*;
    use crate::config::master::{Host, MasterSpec};
    use crate::control::sessions::SessionTokens;

    const A: MasterId = MasterId(0);
    const B: MasterId = MasterId(1);
    const C: MasterId = MasterId(2);
    const LIMIT: Duration = Duration::from_secs(60);

    fn spec(id: u16, host: u8) -> MasterSpec {
        MasterSpec {
            id: MasterId(id),
            host: Host::Ip(IpAddr::from([192, 0, 2, host])),
            publish_port: 4505,
            ret_port: 4506,
            label: format!("192.0.2.{host}"),
            srv: None,
        }
    }

    fn tunables() -> Tunables {
        use crate::config::settings::{HealthSettings, SocketOptions};
        use crate::config::ProbeKind;
        let second = Duration::from_secs(1);
        Tunables {
            health: HealthSettings {
                kind: ProbeKind::Zmtp,
                interval: second,
                timeout: second,
                rise: 2,
                fall: 2,
                ret_answer_timeout: None,
            },
            policy: policy(),
            connect_timeout: second,
            drain_timeout: second,
            half_close_timeout: second,
            socket_options: SocketOptions::for_health(second),
            move_sessions: true,
            salt_events: true,
        }
    }

    fn policy() -> Policy {
        Policy {
            failback: true,
            failback_interval: Duration::from_secs(30),
            reauth_delay: Duration::ZERO,
            recycle_base: Duration::from_secs(1),
            recycle_cap: Duration::from_secs(5),
            startup_grace: Duration::from_secs(2),
        }
    }

    /// A running supervisor and its channels.
    struct Harness {
        transitions: mpsc::Sender<Transition>,
        commands: mpsc::Sender<Command>,
        route: watch::Receiver<Route>,
        snapshot: watch::Receiver<Snapshot>,
        metrics: Arc<Metrics>,
        plane: Arc<Plane>,
        _stop: tokio_util::sync::DropGuard,
    }

    /// Starts a supervisor over masters on 192.0.2.1.., generation 0.
    fn start(n: u16) -> Harness {
        start_watched(n, None).0
    }

    /// The same, with a liveness tick (a systemd watchdog reading it);
    /// returns the liveness too.
    fn start_watched(n: u16, alive_tick: Option<Duration>) -> (Harness, Arc<Liveness>) {
        let masters: Vec<MasterSpec> = (0..n).map(|i| spec(i, i as u8 + 1)).collect();
        let metrics =
            Metrics::new(&masters, &Reason::COUNTED.map(Reason::as_str)).expect("metrics");
        let plane = Plane::idle(0, masters);
        let selector = Selector::new((0..n).map(MasterId).collect(), policy(), 7, Instant::now());
        let (route_tx, route) = watch::channel(Supervisor::current_route(&selector, &plane, None));
        let (snapshot_tx, snapshot) =
            watch::channel(Supervisor::current_snapshot(&selector, &plane));
        let (transitions, transitions_rx) = mpsc::channel(16);
        let (commands, commands_rx) = mpsc::channel(16);
        let token = CancellationToken::new();
        let liveness = Arc::new(Liveness::new(Instant::now(), Duration::from_secs(1)));
        let supervisor = Supervisor {
            selector,
            plane: plane.clone(),
            early: Vec::new(),
            route: route_tx,
            snapshot: snapshot_tx,
            metrics: metrics.clone(),
            liveness: liveness.clone(),
            alive_tick,
            tunables: watch::channel(Arc::new(tunables())).1,
            linger: None,
            last_busy: None,
            was_open: false,
            arrival: None,
        };
        tokio::spawn(supervisor.run(transitions_rx, commands_rx, token.clone()));
        let harness = Harness {
            transitions,
            commands,
            route,
            snapshot,
            metrics,
            plane,
            _stop: token.drop_guard(),
        };
        (harness, liveness)
    }

    /// An idle supervisor wakes for the watchdog only when one reads its
    /// liveness: without one it sleeps until an event (a fleet's hosts).
    #[tokio::test(start_paused = true)]
    async fn an_idle_supervisor_wakes_only_for_a_watchdog() {
        let s = Duration::from_secs;
        let (mut h, watched) = start_watched(2, Some(Duration::from_millis(250)));
        h.health(0, MasterId(0), true).await;
        h.active(Some(MasterId(0))).await;
        let (mut u, unwatched) = start_watched(2, None);
        u.health(0, MasterId(0), true).await;
        u.active(Some(MasterId(0))).await;
        // Health keeps ticking; only the supervisor's own wake-ups differ.
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            watched.tick_health(Instant::now());
            unwatched.tick_health(Instant::now());
        }
        assert_eq!(watched.stalled(Instant::now(), s(1)), None, "ticked");
        assert_eq!(
            unwatched.stalled(Instant::now(), s(1)),
            Some("supervisor"),
            "asleep: nothing happened for 10 s"
        );
        // An event wakes it, as before.
        u.health(0, MasterId(1), true).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            unwatched.stalled(Instant::now(), s(1)),
            None,
            "woke for the event"
        );
    }

    impl Harness {
        async fn health(&self, generation: u64, master: MasterId, up: bool) {
            let t = Transition {
                generation,
                master,
                up,
                detail: String::new(),
            };
            self.transitions.send(t).await.expect("supervisor runs");
        }

        /// Waits (virtual time) until the route's active master is `want`.
        async fn active(&mut self, want: Option<MasterId>) -> Route {
            tokio::time::timeout(LIMIT, self.route.wait_for(|r| r.active == want))
                .await
                .unwrap_or_else(|_| panic!("active never became {want:?}"))
                .expect("supervisor runs")
                .clone()
        }

        /// Switches by `reason` counted to `to` and from `from`.
        fn switches(&self, from: &str, to: &str, reason: Reason) -> (u64, u64) {
            let reason = reason.as_str();
            (
                self.metrics
                    .switches_from_total
                    .with_label_values(&[from, reason])
                    .get(),
                self.metrics
                    .switches_total
                    .with_label_values(&[to, reason])
                    .get(),
            )
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failover_resets_the_dead_masters_sessions_and_counts_the_switch() {
        let mut h = start(2);
        h.health(0, A, true).await;
        h.health(0, B, true).await;
        let route = h.active(Some(A)).await;
        assert_eq!(route.fallbacks, vec![B]);
        let on_a = h.plane.sessions.join(A);

        h.health(0, A, false).await;
        let route = h.active(Some(B)).await;
        assert!(route.fallbacks.is_empty());
        assert!(
            on_a.reset.is_cancelled(),
            "sessions to a dead master are reset"
        );
        assert_eq!(
            h.switches("192.0.2.1", "192.0.2.2", Reason::Failover),
            (1, 1)
        );
        assert!(h.metrics.last_switch_timestamp_seconds.get() > 0.0);
        assert_eq!(
            h.metrics
                .master_active
                .with_label_values(&["192.0.2.2"])
                .get(),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failback_waits_the_interval_on_the_clock_and_drains() {
        let mut h = start(2);
        h.health(0, B, true).await;
        h.health(0, A, false).await;
        h.active(Some(B)).await;
        let on_b = h.plane.sessions.join(B);

        let back = Instant::now();
        h.health(0, A, true).await;
        h.active(Some(A)).await;
        assert!(
            back.elapsed() >= Duration::from_secs(30),
            "failback after {:?}",
            back.elapsed()
        );
        assert!(on_b.drain.is_cancelled(), "sessions to B drain");
        assert!(!on_b.reset.is_cancelled(), "and are not reset");
        assert_eq!(
            h.switches("192.0.2.2", "192.0.2.1", Reason::Failback),
            (1, 1)
        );
    }

    /// Fails A over to B, then brings A back: returns B's session tokens
    /// from before the failback and the instant the failback switched.
    async fn failback_from_b(h: &mut Harness) -> (SessionTokens, Instant) {
        h.health(0, B, true).await;
        h.health(0, A, false).await;
        h.active(Some(B)).await;
        let on_b = h.plane.sessions.join(B);
        h.health(0, A, true).await;
        let route = h.active(Some(A)).await;
        assert_eq!(route.linger, Some(B), "new connections stay on B for now");
        assert_eq!(h.metrics.graceful_switch_waiting.get(), 1);
        assert!(route.allows(B) && route.allows(A));
        (on_b, Instant::now())
    }

    /// Waits (virtual time) until the route no longer lingers.
    async fn linger_over(h: &mut Harness) {
        tokio::time::timeout(LIMIT, h.route.wait_for(|r| r.linger.is_none()))
            .await
            .expect("the linger ends")
            .expect("supervisor runs");
    }

    #[tokio::test(start_paused = true)]
    async fn failback_keeps_new_connections_on_the_old_master_until_its_sessions_have_moved() {
        let mut h = start(2);
        let (on_b, switched) = failback_from_b(&mut h).await;
        // The session the failback asked to move is busy (a job's return
        // on its way), as the data path counts it.
        on_b.gate.busy();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(h.route.borrow().linger, Some(B), "still busy: still B");
        // A legacy minion's job process connects meanwhile: to B, with
        // tokens no switch has fired yet.
        let opened_meanwhile = h.plane.sessions.join(B);
        assert!(!opened_meanwhile.drain.is_cancelled());

        on_b.gate.idle();
        linger_over(&mut h).await;
        assert_eq!(h.metrics.graceful_switch_waiting.get(), 0);
        let waited = switched.elapsed();
        assert!(
            waited < Duration::from_millis(700),
            "ended when the sessions were idle, not at the drain timeout: {waited:?}"
        );
        assert_eq!(
            h.route.borrow().candidates().next(),
            Some(A),
            "new connections go to A"
        );
        assert!(
            opened_meanwhile.drain.is_cancelled(),
            "the sessions opened meanwhile are asked to move in turn"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_linger_ends_at_the_drain_timeout_and_at_once_without_busy_sessions() {
        let mut h = start(2);
        let (on_b, switched) = failback_from_b(&mut h).await;
        on_b.gate.busy(); // never idle
        linger_over(&mut h).await;
        let waited = switched.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_millis(1300),
            "ended at the drain timeout (1 s): {waited:?}"
        );

        // Back to B (A fails), then to A again with nothing busy: the
        // linger ends once the switch's sessions had time to count in.
        h.health(0, A, false).await;
        h.active(Some(B)).await;
        assert_eq!(h.route.borrow().linger, None, "a failover never lingers");
        let idle_on_b = h.plane.sessions.join(B);
        h.health(0, A, true).await;
        h.active(Some(A)).await;
        assert_eq!(h.route.borrow().linger, Some(B), "a session is open on B");
        let switched = Instant::now();
        linger_over(&mut h).await;
        assert!(
            switched.elapsed() <= LINGER_SETTLE + Duration::from_millis(50),
            "no busy session: {:?}",
            switched.elapsed()
        );
        drop(idle_on_b);

        // No session open on the master left: no wait at all.
        h.health(0, A, false).await;
        h.active(Some(B)).await;
        h.health(0, A, true).await;
        let route = h.active(Some(A)).await;
        assert_eq!(route.linger, None, "no session to wait for");
    }

    #[tokio::test(start_paused = true)]
    async fn a_linger_ends_when_its_master_goes_down() {
        let mut h = start(2);
        let (on_b, _) = failback_from_b(&mut h).await;
        on_b.gate.busy();
        h.health(0, B, false).await;
        linger_over(&mut h).await;
        assert_eq!(h.route.borrow().active, Some(A));
    }

    #[tokio::test(start_paused = true)]
    async fn admin_commands_show_in_the_snapshot() {
        let mut h = start(3);
        for m in [A, B, C] {
            h.health(0, m, true).await;
        }
        h.active(Some(A)).await;
        h.commands.send(Command::Pin(C)).await.expect("send");
        h.active(Some(C)).await;
        assert_eq!(h.snapshot.borrow().pinned, Some(C));
        assert_eq!(
            h.route.borrow().linger,
            None,
            "a pin sends every new connection to the pinned master"
        );
        h.commands.send(Command::Unpin).await.expect("send");
        h.commands.send(Command::Drain(A)).await.expect("send");
        h.active(Some(B)).await;
        let snapshot = tokio::time::timeout(
            LIMIT,
            h.snapshot.wait_for(|s| s.pinned.is_none() && s.drained[0]),
        )
        .await
        .expect("snapshot")
        .expect("supervisor runs")
        .clone();
        assert_eq!(snapshot.drained, vec![true, false, false]);
        // Two admin switches left A (the pin to C, and the drain after the
        // unpin brought it back); one went to C.
        assert_eq!(h.switches("192.0.2.1", "192.0.2.3", Reason::Admin), (2, 1));
    }

    /// A reloaded plane's health tasks can report before the reloader's
    /// command arrives: those transitions are kept and applied at the swap;
    /// transitions of a replaced plane are dropped; those of a plane newer
    /// still wait for theirs.
    #[tokio::test(start_paused = true)]
    async fn early_transitions_wait_for_their_generation() {
        let mut h = start(2);
        h.health(0, A, true).await;
        h.health(0, B, true).await;
        h.active(Some(A)).await;

        // Generation 1: C (new) first, then B; A is removed. Unless C's
        // early "up" is applied at the swap, B (known up) would be chosen.
        let next = Plane::idle(1, vec![spec(0, 3), spec(1, 2)]);
        h.health(1, MasterId(0), true).await; // C up, before the reload
        h.health(2, MasterId(1), false).await; // from a plane not built yet
        tokio::task::yield_now().await;
        assert_eq!(
            h.route.borrow().active,
            Some(A),
            "not applied before the swap"
        );

        h.commands
            .send(Command::Reload {
                plane: next.clone(),
                order: vec![MasterId(0), MasterId(1)],
            })
            .await
            .expect("send");
        let route = tokio::time::timeout(LIMIT, h.route.wait_for(|r| r.plane.generation == 1))
            .await
            .expect("swapped")
            .expect("supervisor runs")
            .clone();
        assert!(
            Arc::ptr_eq(&route.plane, &next),
            "routes into the new plane"
        );
        assert_eq!(route.active, Some(MasterId(0)), "C, up before the reload");
        // A is not in the new plane: the switch counts from `none`.
        assert_eq!(h.switches("none", "192.0.2.3", Reason::Reload), (1, 1));

        // A late transition of generation 0 (id 0 was A there, is C now)
        // changes nothing.
        h.health(0, A, false).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(h.route.borrow().active, Some(MasterId(0)));
        assert_eq!(h.route.borrow().fallbacks, vec![MasterId(1)]);

        // Generation 2 arrives: its early "down" for master 1 applies now.
        let last = Plane::idle(2, vec![spec(0, 3), spec(1, 2)]);
        h.commands
            .send(Command::Reload {
                plane: last,
                order: vec![MasterId(0), MasterId(1)],
            })
            .await
            .expect("send");
        tokio::time::timeout(
            LIMIT,
            h.route
                .wait_for(|r| r.plane.generation == 2 && r.fallbacks.is_empty()),
        )
        .await
        .expect("the early down of generation 2 applied")
        .expect("supervisor runs");
    }

    /// Point 2 of issue 23: an idle sidecar sits on its first healthy
    /// master; an open session keeps its master until it closes.
    #[tokio::test(start_paused = true)]
    async fn an_idle_sidecar_moves_to_the_first_master_at_once_and_a_session_holds_it_back() {
        let mut h = start(2);
        h.health(0, B, true).await;
        h.health(0, A, false).await;
        h.active(Some(B)).await;

        // No session open: A's return moves the route at once, not after
        // the failback interval (30 s here).
        let back = Instant::now();
        h.health(0, A, true).await;
        let route = h.active(Some(A)).await;
        assert!(
            back.elapsed() < Duration::from_secs(1),
            "{:?}",
            back.elapsed()
        );
        assert_eq!(route.linger, None, "nothing to wait for");
        assert_eq!(
            route.connect_after, back,
            "no reconnect delay: nobody to spread"
        );
        assert_eq!(
            h.switches("192.0.2.2", "192.0.2.1", Reason::Failback),
            (1, 1)
        );

        // A session open on B when A returns: it keeps B ...
        h.health(0, A, false).await;
        h.active(Some(B)).await;
        let on_b = h.plane.sessions.join(B);
        h.health(0, A, true).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(h.route.borrow().active, Some(B), "a session is open");
        // ... until it closes: then A once idle (IDLE_AFTER without a
        // session), long before the failback interval.
        let closed = Instant::now();
        drop(on_b);
        h.active(Some(A)).await;
        let waited = closed.elapsed();
        assert!(
            waited >= IDLE_AFTER && waited < IDLE_AFTER + Duration::from_secs(1),
            "{waited:?}"
        );
        assert_eq!(
            h.switches("192.0.2.2", "192.0.2.1", Reason::Failback),
            (2, 2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn all_down_holds_connections_until_one_is_back() {
        let mut h = start(2);
        h.health(0, A, true).await;
        h.active(Some(A)).await;
        h.health(0, B, false).await;
        h.health(0, A, false).await;
        h.active(None).await;
        assert_eq!(h.switches("192.0.2.1", "none", Reason::Failover), (1, 1));
        h.health(0, B, true).await;
        h.active(Some(B)).await;
    }
}
