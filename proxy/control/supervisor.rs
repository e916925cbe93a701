//! Drives the pure [`Selector`] with health transitions, admin commands and
//! time, and carries out its actions.
//!
//! It is the only writer of the [`Route`] (a `watch` channel read by both
//! listeners) and of the [`Snapshot`] the admin API shows, the only one to
//! close sessions on a switch, and the one place that logs and counts
//! switches. One task; no sockets.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock;
use crate::config::master::MasterId;
use crate::control::health::Transition;
use crate::control::masters::Plane;
use crate::control::route::Route;
use crate::control::select::{Action, Event, Policy, Reason, Selector, SessionFate};
use crate::metrics::{Metrics, NONE};

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
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.plane, &other.plane)
            && (self.active, self.pinned) == (other.active, other.pinned)
            && (&self.order, &self.drained) == (&other.order, &other.drained)
    }
}

// === impl Supervisor ===

impl Supervisor {
    /// The route the selector's current state implies.
    pub fn current_route(selector: &Selector, plane: &Arc<Plane>) -> Route {
        Route {
            plane: plane.clone(),
            active: selector.active(),
            fallbacks: selector.fallbacks(),
            connect_after: selector.connect_after(),
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
        loop {
            let deadline = self.selector.next_deadline();
            let event = tokio::select! {
                _ = token.cancelled() => return,
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
            };
            self.handle(event, Instant::now());
        }
    }

    /// Moves to a reloaded plane: state carries over for masters that stay,
    /// sessions to removed masters drain, the old plane's tasks end.
    fn swap_plane(&mut self, plane: Arc<Plane>, order: Vec<MasterId>) {
        let old = std::mem::replace(&mut self.plane, plane);
        let map = |m: MasterId| {
            old.masters
                .get(m.index())
                .and_then(|spec| self.plane.find(spec))
        };
        let placeholder = Selector::new(Vec::new(), self.selector.policy(), 0, Instant::now());
        let prev = std::mem::replace(&mut self.selector, placeholder);
        self.selector = Selector::carry_over(prev, order, map);
        for spec in &old.masters {
            if self.plane.find(spec).is_none() {
                old.sessions.drain(spec.id);
                self.metrics.retire(&spec.label);
                info!(master = %spec.label, "reload: master removed; its sessions drain");
            }
        }
        for spec in &self.plane.masters {
            if old.find(spec).is_none() {
                info!(master = %spec.label, "reload: master added");
            }
        }
        old.token.cancel();
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
        let actions = self.selector.on_event(event, now);
        // Publish first, then close: a session that registers after the close
        // re-checks the route and sees the new master.
        let route = Self::current_route(&self.selector, &self.plane);
        self.route.send_if_modified(|r| {
            let changed = *r != route;
            *r = route;
            changed
        });
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
                } => self.apply_switch(from, to, reason, old_sessions, connect_after, now),
                Action::ProbeAll => {
                    for h in &self.plane.health {
                        h.reprobe();
                    }
                }
            }
        }
    }

    fn apply_switch(
        &self,
        from: Option<MasterId>,
        to: Option<MasterId>,
        reason: Reason,
        old_sessions: Option<SessionFate>,
        connect_after: Instant,
        now: Instant,
    ) {
        let m = &self.metrics;
        let plane = &self.plane;
        let name = |x: Option<MasterId>| x.map_or(NONE, |id| plane.label(id));
        if let Some(f) = from {
            m.master_active.with_label_values(&[plane.label(f)]).set(0);
            match old_sessions {
                Some(SessionFate::Reset) => plane.sessions.reset(f),
                Some(SessionFate::Drain) => plane.sessions.drain(f),
                None => {}
            }
        }
        if let Some(t) = to {
            m.master_active.with_label_values(&[plane.label(t)]).set(1);
        }
        let delay_ms = connect_after.saturating_duration_since(now).as_millis() as u64;
        let sessions = match old_sessions {
            Some(SessionFate::Reset) => "reset",
            Some(SessionFate::Drain) => "draining",
            None => "none",
        };
        if reason == Reason::Initial {
            info!(master = name(to), "selected master");
            return;
        }
        m.switches_total
            .with_label_values(&[name(from), name(to), reason.as_str()])
            .inc();
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
            None => warn!(
                from = name(from),
                reason = reason.as_str(),
                old_sessions = sessions,
                "every master is down; holding minion connections until one is back"
            ),
        }
    }
}

fn transition_event(t: &Transition) -> Event {
    if t.up {
        Event::Up(t.master)
    } else {
        Event::Down(t.master)
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
