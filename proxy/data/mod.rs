//! Layer 6, the data plane: the minion's sessions, forwarded byte for byte.
//! `forward` accepts, picks the master from the current route, connects and
//! hands both sockets to `duplex`, the two-way copy that counts live and
//! keeps half-close. Reads control's route and session tokens; decides
//! nothing about masters.
//!
//! May import `config`, `metrics`, `net`, `control`; never `ops` or
//! `commands`.

pub mod duplex;
pub mod forward;
