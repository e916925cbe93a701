//! salt-sidecar: a transport-layer failover proxy for SaltStack minions.
//!
//! The minion keeps `master: 127.0.0.1`; the sidecar listens on the master
//! ports, health-checks the configured masters and forwards every TCP session
//! byte for byte to the one master currently selected.
//!
//! How the pieces fit:
//! - [`config`] turns the YAML file into a typed [`config::Config`], once.
//! - [`resolve`] keeps each master's addresses fresh (DNS, per TTL).
//! - [`health`] probes every master ([`probe`], [`zmtp`]) and reports up/down
//!   after rise/fall hysteresis.
//! - [`select`] is the pure policy: which master is active, when to fail over
//!   or back, what happens to open sessions.
//! - [`supervisor`] drives `select` with events and time, and publishes the
//!   [`route::Route`] that [`forward`] reads for every new minion connection.
//! - [`metrics`] holds the Prometheus families every module updates;
//!   [`admin`] serves them with `/status` and the admin commands, and
//!   [`status`] is the client side (`salt-sidecar status`).

pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod data;
pub mod metrics;
pub mod net;
pub mod ops;
pub mod zmtp;

pub use commands::demo::standin;
pub use commands::{convert, demo, enroll, status};
pub use config::master;
pub use control::{health, hysteresis, select};
pub use ops::app;
pub use zmtp::probe;
