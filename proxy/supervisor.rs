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

use crate::health::{HealthHandle, Transition};
use crate::master::MasterId;
use crate::metrics::{Metrics, NONE};
use crate::route::Route;
use crate::select::{Action, Event, Policy, Reason, Selector, SessionFate};
use crate::sessions::Sessions;

/// Commands from the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Pin(MasterId),
    Unpin,
    Drain(MasterId),
    Undrain(MasterId),
    /// A reload changed the policy knobs.
    SetPolicy(Policy),
}

/// The selector's state as the admin API shows it; published after every event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
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
    pub route: watch::Sender<Route>,
    pub snapshot: watch::Sender<Snapshot>,
    pub sessions: Arc<Sessions>,
    pub health: Vec<Arc<HealthHandle>>,
    pub metrics: Arc<Metrics>,
}

// === impl Supervisor ===

impl Supervisor {
    /// The route the selector's current state implies.
    pub fn current_route(selector: &Selector) -> Route {
        Route {
            active: selector.active(),
            fallbacks: selector.fallbacks(),
            connect_after: selector.connect_after(),
        }
    }

    /// The admin view of the selector's current state.
    pub fn current_snapshot(selector: &Selector) -> Snapshot {
        let order = selector.order().to_vec();
        let mut drained = vec![false; order.len()];
        for m in &order {
            if let Some(d) = drained.get_mut(m.index()) {
                *d = selector.is_drained(*m);
            }
        }
        Snapshot {
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
                Some(t) = transitions.recv() => if t.up { Event::Up(t.master) } else { Event::Down(t.master) },
                Some(c) = commands.recv() => match c {
                    Command::Pin(m) => Event::Pin(m),
                    Command::Unpin => Event::Unpin,
                    Command::Drain(m) => Event::Drain(m),
                    Command::Undrain(m) => Event::Undrain(m),
                    Command::SetPolicy(p) => {
                        self.selector.set_policy(p);
                        Event::Tick
                    }
                },
                _ = sleep_until_opt(deadline) => Event::Tick,
            };
            self.handle(event, Instant::now());
        }
    }

    /// Feeds one event and applies what the selector decides.
    pub fn handle(&mut self, event: Event, now: Instant) {
        if let Event::Up(m) | Event::Down(m) = event {
            let up = i64::from(matches!(event, Event::Up(_)));
            self.metrics
                .master_up
                .with_label_values(&[self.metrics.label(m)])
                .set(up);
        }
        let actions = self.selector.on_event(event, now);
        // Publish first, then close: a session that registers after the close
        // re-checks the route and sees the new master.
        let route = Self::current_route(&self.selector);
        self.route.send_if_modified(|r| {
            let changed = *r != route;
            *r = route;
            changed
        });
        let snapshot = Self::current_snapshot(&self.selector);
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
                    for h in &self.health {
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
        let name = |x: Option<MasterId>| x.map_or(NONE, |id| m.label(id));
        if let Some(f) = from {
            m.master_active.with_label_values(&[m.label(f)]).set(0);
            match old_sessions {
                Some(SessionFate::Reset) => self.sessions.reset(f),
                Some(SessionFate::Drain) => self.sessions.drain(f),
                None => {}
            }
        }
        if let Some(t) = to {
            m.master_active.with_label_values(&[m.label(t)]).set(1);
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
        let unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        m.last_switch_timestamp_seconds.set(unix);
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

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
