//! Layer 5, the control plane: which masters are up, and which one the
//! minion is routed to.
//!
//! - `select/`: the pure policy (a state machine on events and time) and
//!   the preference order, shuffle and jitter seed; no sockets, no clock.
//! - `hysteresis`: rise/fall, pure; `health`: one probe task per master;
//!   `resolve`: DNS per TTL; `srv`: the masters named by an SRV record.
//! - `masters`: the plane, everything kept per master; `sessions`: the
//!   per-master tokens a switch fires to reset or drain sessions.
//! - `supervisor`: drives `select` and carries out its actions; the only
//!   writer of `route`, the routing decision forwarding reads.
//! - `answers`: the ret sessions' unanswered-request clocks (transport
//!   tcp), which the copy loop stamps and `health` scans.
//! - `evidence`: when each master was last heard on a live session, and
//!   the ZMTP PINGs `health` asks those sessions to carry.
//! - `pace`: when to let a minion's sign-in through to a new master, by
//!   how fast it answers (pure; `data::forward` asks).
//! - `liveness`: the supervisor's and health tasks' ticks, which the
//!   systemd watchdog reads.
//!
//! May import `config`, `clock`, `metrics`, `net`, `zmtp`; never `data`,
//! `ops` or `commands` (a reload reaches it as a `supervisor::Command`).

pub mod answers;
pub mod evidence;
pub mod health;
pub mod hysteresis;
pub mod liveness;
pub mod masters;
pub mod pace;
pub mod resolve;
pub mod route;
pub mod select;
pub mod sessions;
pub mod srv;
pub mod supervisor;
