//! Running the sidecar: wiring, reload and the admin endpoint.

pub mod admin;
pub mod api;
pub mod app;
pub mod listen;
pub mod reload;
