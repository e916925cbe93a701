//! The subcommands besides `run`.

pub mod convert;
pub mod demo;
pub mod enroll;
pub mod status;
