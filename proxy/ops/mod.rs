//! Running the sidecar: wiring, reload and the admin endpoint.

pub mod admin;
pub mod app;
pub mod reload;
