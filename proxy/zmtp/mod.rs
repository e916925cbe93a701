//! ZMTP 3.0 as the sidecar needs it: the codec and the health probe.

mod codec;
pub mod probe;

pub use codec::*;
