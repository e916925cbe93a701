//! The selector's vocabulary: what it is told ([`Event`], [`Health`],
//! [`Minion`]) and what it decides ([`Action`], [`Reason`], [`SessionFate`]).
//! Plain data, no behaviour beyond naming.

use tokio::time::Instant;

use crate::config::master::MasterId;

/// What the selector knows of one master's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// No probe result yet.
    Unknown,
    Up {
        since: Instant,
    },
    Down,
}

/// Inputs to the state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Health says the master is up (after `rise` successes, or its first probe).
    Up(MasterId),
    /// Health says the master is down (after `fall` failures, or its first probe).
    Down(MasterId),
    /// Admin: route to this master only, whatever its health.
    Pin(MasterId),
    Unpin,
    /// Admin: take this master out of rotation (its sessions drain).
    Drain(MasterId),
    Undrain(MasterId),
    /// Whether any minion session is open (the supervisor sends it when that
    /// changes, before the event that follows the change).
    Minion(Minion),
    /// Time passed (the supervisor calls this at [`Selector::next_deadline`](super::Selector::next_deadline)).
    Tick,
}

/// Whether the minion has any session open through the sidecar: whether a
/// switch would disrupt anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Minion {
    /// No session open: the active master follows the list at once.
    Idle,
    /// A session is open (or not known otherwise): switch only on failover,
    /// failback after its interval, or admin.
    Connected,
}

/// Why a switch happened (the `reason` label of `switches_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The first choice after start-up (not counted as a switch).
    Initial,
    Failover,
    Failback,
    Admin,
    Reload,
}

impl Reason {
    pub const COUNTED: [Reason; 4] = [
        Reason::Failover,
        Reason::Failback,
        Reason::Admin,
        Reason::Reload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Initial => "initial",
            Reason::Failover => "failover",
            Reason::Failback => "failback",
            Reason::Admin => "admin",
            Reason::Reload => "reload",
        }
    }
}

/// What to do with the sessions open to the master we leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionFate {
    /// Close at once with RST: the master is gone, make the minion reconnect now.
    Reset,
    /// Close each when idle, or at `drain_timeout`: the master is fine, leave gently.
    Drain,
}

/// Outputs of the state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Switch {
        from: Option<MasterId>,
        to: Option<MasterId>,
        reason: Reason,
        /// Applies to `from`'s sessions; `None` when there was no `from`.
        old_sessions: Option<SessionFate>,
        /// New upstream connections wait until then (reconnect jitter).
        connect_after: Instant,
    },
    /// Every master is down: probe them all now (recycle).
    ProbeAll,
}
