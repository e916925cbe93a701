//! The subcommands besides `run`.

pub mod convert;
#[cfg(feature = "demo")]
pub mod demo;
pub mod enroll;
pub mod status;
