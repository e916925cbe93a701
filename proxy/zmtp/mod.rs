//! Layer 4: ZMTP 3.0 as the sidecar needs it. `codec` frames and parses
//! greetings, commands and messages (pure, no I/O); `probe` is the health
//! check of one master port (connect through `net`, then a greeting and
//! READY exchange, or a plain connect for `tcp`); `track` follows the frame
//! boundaries of a relayed session (pure) and `rejoin` opens that session on
//! another master, so a switch can move it instead of cutting it.
//! `saltreq` is the little of Salt's `transport: tcp` framing the `ping`
//! probe needs (a tcp-transport master's ret port speaks msgpack, not ZMTP).
//!
//! May import `config`, `metrics`, `net`; never `control`, `data`, `ops` or
//! `commands`.

mod codec;
pub mod probe;
pub mod rejoin;
pub mod saltreq;
pub mod track;

pub use codec::*;
