//! The masters as currently configured, and everything kept per master.
//!
//! A [`Plane`] bundles what is indexed by [`MasterId`]: the specs, their
//! addresses, health handles and session tokens, and the token that ends the
//! plane's health and DNS tasks. The supervisor publishes it inside every
//! [`Route`](crate::control::route::Route), so forwarding always reads a route and the
//! plane it refers to together. A reload builds a new plane with
//! [`PlaneBuilder`], carrying over what it can from the old one for masters
//! that stay (addresses, last health, session tokens), so their sessions and
//! state survive. No policy here.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::master::{MasterId, MasterSpec};
use crate::config::settings::Tunables;
use crate::control::health::{self, HealthHandle, Transition};
use crate::control::liveness::Liveness;
use crate::control::resolve::{self, Addresses};
use crate::control::sessions::Sessions;
use crate::metrics::{Metrics, NONE};

/// One configuration's masters and their per-master state.
#[derive(Debug)]
pub struct Plane {
    /// Increases with every reload that changes the masters.
    pub generation: u64,
    /// Indexed by `MasterId`.
    pub masters: Vec<MasterSpec>,
    pub addrs: Vec<Addresses>,
    pub health: Vec<Arc<HealthHandle>>,
    pub sessions: Arc<Sessions>,
    /// Ends this plane's health and DNS tasks.
    pub token: CancellationToken,
}

impl Plane {
    pub fn label(&self, m: MasterId) -> &str {
        self.masters
            .get(m.index())
            .map_or(NONE, |s| s.label.as_str())
    }

    /// The id of the master with the same host and ports, if any.
    pub fn find(&self, spec: &MasterSpec) -> Option<MasterId> {
        self.masters
            .iter()
            .find(|m| m.same_master(spec))
            .map(|m| m.id)
    }
}

#[cfg(test)]
impl Plane {
    /// A plane with no tasks behind it (no DNS, no probes): for unit tests
    /// of what reads a plane.
    pub(crate) fn idle(generation: u64, masters: Vec<MasterSpec>) -> Arc<Plane> {
        let n = masters.len();
        Arc::new(Plane {
            generation,
            addrs: (0..n)
                .map(|_| watch::channel(Arc::from(Vec::new())).1)
                .collect(),
            health: (0..n).map(|_| Arc::new(HealthHandle::default())).collect(),
            sessions: Arc::new(Sessions::new(n, &CancellationToken::new())),
            masters,
            token: CancellationToken::new(),
        })
    }
}

/// What starting a plane needs; kept by the app for reloads.
pub struct PlaneBuilder {
    pub tracker: TaskTracker,
    pub metrics: Arc<Metrics>,
    pub transitions: mpsc::Sender<Transition>,
    pub tunables: watch::Receiver<Arc<Tunables>>,
    /// Parent of every plane's token (the sidecar's shutdown token).
    pub root: CancellationToken,
    /// The minion listeners: a master address equal to one is a self-loop.
    pub listeners: [std::net::SocketAddr; 2],
    /// What health tasks tick after each probe round.
    pub liveness: Arc<Liveness>,
}

impl PlaneBuilder {
    /// Starts DNS and health tasks for `masters`; for a master that was in
    /// `previous` too, its addresses, last probe state and session tokens
    /// carry over.
    pub fn build(
        &self,
        generation: u64,
        masters: &[MasterSpec],
        previous: Option<&Plane>,
    ) -> Arc<Plane> {
        let token = self.root.child_token();
        let before = |spec: &MasterSpec| previous.and_then(|p| p.find(spec).map(|id| (p, id)));
        self.metrics.add_masters(masters);
        let seed = |spec: &MasterSpec| -> Option<Arc<[IpAddr]>> {
            before(spec).and_then(|(p, id)| p.addrs.get(id.index()).map(|a| a.borrow().clone()))
        };
        let addrs = resolve::start(
            masters,
            self.listeners,
            &self.metrics,
            &self.tracker,
            &token,
            seed,
        );
        let health: Vec<Arc<HealthHandle>> = masters
            .iter()
            .map(|spec| {
                let prev =
                    before(spec).and_then(|(p, id)| p.health.get(id.index()).map(|h| h.status()));
                Arc::new(prev.map(HealthHandle::with_status).unwrap_or_default())
            })
            .collect();
        let sessions = Arc::new(Sessions::with_slots(
            masters
                .iter()
                .map(|spec| before(spec).and_then(|(p, id)| p.sessions.slot(id)))
                .collect(),
            &self.root,
            previous.map(|p| p.sessions.open().clone()),
        ));
        for (i, spec) in masters.iter().enumerate() {
            let watch = health::Watch {
                master: spec.clone(),
                generation,
                addrs: addrs[i].clone(),
                handle: health[i].clone(),
                tunables: self.tunables.clone(),
                events: self.transitions.clone(),
                metrics: self.metrics.clone(),
                liveness: self.liveness.clone(),
                ping_line: Default::default(),
            };
            self.tracker.spawn(watch.run(token.clone()));
        }
        Arc::new(Plane {
            generation,
            masters: masters.to_vec(),
            addrs,
            health,
            sessions,
            token,
        })
    }
}
