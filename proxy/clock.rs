//! Layer 1, beside `config`: wall-clock time as Unix time, for what leaves the process (metrics,
//! `/status`, a jitter seed). Everything that measures intervals uses
//! `tokio::time::Instant` instead. Imports nothing of the crate.

use std::time::{Duration, SystemTime};

/// Time since the Unix epoch (zero for a clock set before it).
pub fn unix(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}
