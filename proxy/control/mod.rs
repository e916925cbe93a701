//! The control plane: which master is up and which one is active.

pub mod health;
pub mod hysteresis;
pub mod masters;
pub mod resolve;
pub mod route;
pub mod select;
pub mod sessions;
pub mod supervisor;
