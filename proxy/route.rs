//! The routing decision forwarding reads for every new minion connection.
//!
//! Published by the supervisor through a `watch` channel, so both listeners
//! (publish and ret) always see the same master: a switch moves both ports
//! at once. Plain data; no I/O.

use tokio::time::Instant;

use crate::master::MasterId;

/// Where new minion connections go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The selected master, if any is up (or pinned).
    pub active: Option<MasterId>,
    /// Masters to try, in order, when the active one refuses or times out.
    /// Empty while pinned, and while no master is up.
    pub fallbacks: Vec<MasterId>,
    /// New upstream connections wait until then (reconnect jitter).
    pub connect_after: Instant,
}

impl Route {
    /// The masters a new connection tries, in order.
    pub fn candidates(&self) -> impl Iterator<Item = MasterId> + '_ {
        self.active
            .into_iter()
            .chain(self.fallbacks.iter().copied())
    }

    /// Whether a new session may (still) go to `m`.
    pub fn allows(&self, m: MasterId) -> bool {
        self.active == Some(m) || self.fallbacks.contains(&m)
    }
}
