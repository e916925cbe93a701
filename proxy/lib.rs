//! salt-sidecar: a transport-layer failover proxy for SaltStack minions.
//!
//! The minion keeps `master: 127.0.0.1`; the sidecar listens on the master
//! ports, health-checks the configured masters and forwards every TCP session
//! byte for byte to the one master currently selected.
//!
//! The source is in layers; each imports only the layers below it:
//! 1. `config/`: the YAML file → a typed [`config::Config`], once; the master
//!    vocabulary ([`master`]) and the live tunables (`config::settings`).
//! 2. `metrics.rs`, `limits.rs`: the Prometheus families every layer
//!    updates, and the resource budgets (open files, sessions) with the
//!    sidecar's own exhaustion, which is never blamed on a master.
//! 3. `net.rs`: connecting to a master (timeouts, socket options).
//! 4. `zmtp/`: the ZMTP codec ([`zmtp`]), the health [`probe`] and the
//!    little of Salt's tcp framing the `ping` probe needs.
//! 5. `control/`: which master is up and which is active: the pure policy
//!    ([`select`]), [`hysteresis`], health, DNS, the supervisor and the route.
//! 6. `data/`: forwarding the minion's sessions (and moving ZeroMQ ones on
//!    a switch instead of cutting them: frame tracking, rejoin).
//! 7. `ops/`: the wiring ([`app`], the only place that starts things), reload
//!    and the admin endpoint.
//! 8. `commands/`: the subcommands besides `run` ([`check`], [`status`], [`reload`],
//!    [`enroll`], [`convert`], and with the `demo` feature `demo` and its stand-in master).
//!
//! This crate's public surface is what `main.rs` and the integration tests
//! need; everything else is private.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cli;
mod clock;
mod commands;
pub mod config;
mod control;
mod data;
mod limits;
mod metrics;
mod net;
mod ops;
pub mod zmtp;

#[cfg(feature = "demo")]
pub use commands::demo::{self, standin};
pub use commands::{check, convert, enroll, reload, status};
pub use config::master;
pub use control::{hysteresis, select, srv};
pub use limits::DEFAULT_MAX_SESSIONS;
pub use ops::api;
pub use ops::app;
pub use ops::listen;
pub use ops::reload::{ReloadError, Reloader};
pub use zmtp::probe;
