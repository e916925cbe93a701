//! Layer 7, running the sidecar: `app` wires every task for one config (the
//! only place that starts things), `reload` turns a new config into a pure
//! diff and sends the changes down as commands, `admin` serves the HTTP
//! endpoint (`listen` serves it within budgets), `api` is the `/status`
//! schema it shares with its clients, and `systemd` speaks the notify,
//! watchdog and socket-activation protocols.
//!
//! May import every layer below (`config` … `data`); never `commands`, and
//! nothing below imports it.

pub mod admin;
pub mod api;
pub mod app;
pub mod listen;
pub mod reload;
pub mod systemd;
