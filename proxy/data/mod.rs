//! Layer 6, the data plane: the minion's sessions, forwarded byte for byte.
//! `forward` accepts, picks the master from the current route, connects and
//! hands both sockets to `duplex`, the two-way copy that counts live and
//! keeps half-close. On a switch, a ZeroMQ session is moved to the new
//! master at a message boundary (the minion keeps its connection and its
//! ZMTP session) where its tracker (`track`: the frame boundaries of each
//! direction, pure) says it can be, and `rejoin` opens it there; others are
//! reset or drained. Reads control's route and session tokens; decides nothing about
//! masters.
//!
//! May import `config`, `metrics`, `net`, `zmtp`, `control`; never `ops` or
//! `commands`.

pub mod admit;
pub mod duplex;
pub mod forward;
pub mod rejoin;
pub mod track;
