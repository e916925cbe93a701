//! The routing decision forwarding reads for every new minion connection.
//!
//! Published by the supervisor through a `watch` channel, so both listeners
//! (publish and ret) always see the same master: a switch moves both ports
//! at once. Plain data; no I/O.

use std::sync::Arc;

use tokio::time::Instant;

use crate::config::master::MasterId;
use crate::control::masters::Plane;

/// Where new minion connections go.
#[derive(Clone, Debug)]
pub struct Route {
    /// The masters these ids refer to.
    pub plane: Arc<Plane>,
    /// The selected master, if any is up (or pinned).
    pub active: Option<MasterId>,
    /// Masters to try, in order, when the active one refuses or times out.
    /// Empty while pinned, and while no master is up.
    pub fallbacks: Vec<MasterId>,
    /// New upstream connections wait until then (reconnect jitter), unless
    /// they are paced sign-ins (`reauth_by`).
    pub connect_after: Instant,
    /// A sign-in paced by the new master's answers (ZeroMQ ret
    /// connections, `control::pace`) goes by then at the latest: a random
    /// instant in the second half of `random_reauth_delay` after the switch.
    pub reauth_by: Instant,
    /// New sign-ins are paced until then: past `reauth_by` a slower answer
    /// lets one through, and at this instant it goes whatever the answers
    /// (`control::pace`). In the past: no pacing (no spread switch).
    pub pace_until: Instant,
    /// A graceful switch is under way from this master, which is still up:
    /// new connections go to it, first and without the jitter, until the
    /// sessions the switch asked to move have all moved. A legacy minion
    /// (Salt < 3007) sends a job's return on a new connection from the
    /// job's own process; this sends it to the master that published the job.
    pub linger: Option<MasterId>,
    /// No minion session is open (the selector's [`Minion::Idle`]): a new
    /// minion connection is a minion starting, and waits until the
    /// supervisor has checked the masters ranked before the active one
    /// ([`OpenSessions::arrive`]), as a native failover minion tries its
    /// list in order when it starts.
    ///
    /// [`Minion::Idle`]: crate::control::select::Minion::Idle
    /// [`OpenSessions::arrive`]: crate::control::sessions::OpenSessions::arrive
    pub idle: bool,
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.plane, &other.plane)
            && self.active == other.active
            && self.fallbacks == other.fallbacks
            && self.connect_after == other.connect_after
            && self.reauth_by == other.reauth_by
            && self.pace_until == other.pace_until
            && self.linger == other.linger
            && self.idle == other.idle
    }
}

impl Route {
    /// The masters a new connection tries, in order, after the
    /// [`linger`](Route::linger) master if there is one.
    pub fn candidates(&self) -> impl Iterator<Item = MasterId> + '_ {
        self.active
            .into_iter()
            .chain(self.fallbacks.iter().copied())
    }

    /// Whether a new session may (still) go to `m`.
    pub fn allows(&self, m: MasterId) -> bool {
        self.active == Some(m) || self.linger == Some(m) || self.fallbacks.contains(&m)
    }
}
