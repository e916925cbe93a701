//! The data plane: the minion's sessions, forwarded byte for byte.

pub mod duplex;
pub mod forward;
