//! Layer 8, the subcommands besides `run`: `check` (`check-config`),
//! `status`, `reload` and `enroll` (clients of a running sidecar's admin
//! endpoint), `convert` (a minion config to a sidecar config), and with
//! the `demo` feature `demo` and its stand-in master (also what the
//! integration tests run against).
//!
//! May import every layer below; nothing in the crate imports it except
//! `lib.rs`.

pub mod check;
pub mod convert;
#[cfg(feature = "demo")]
pub mod demo;
pub mod enroll;
pub mod reload;
pub mod status;
