//! Layer 4: ZMTP 3.0 as the sidecar needs it. `codec` frames and parses
//! greetings, commands and messages (pure, no I/O); `probe` is the health
//! check of one master port (connect through `net`, then a greeting and
//! READY exchange, or a plain connect for `tcp`). Following a relayed
//! session's frames and moving it to another master is the data plane's
//! (`data::track`, `data::rejoin`), built on this codec.
//! `saltreq` is the little of Salt's `transport: tcp` framing the `ping`
//! probe needs (a tcp-transport master's ret port speaks msgpack, not ZMTP).
//!
//! May import `config`, `metrics`, `net`; never `control`, `data`, `ops` or
//! `commands`.

mod codec;
pub mod probe;
pub mod saltreq;

pub use codec::*;
