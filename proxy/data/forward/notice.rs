//! Making a ZeroMQ minion notice what Salt's own events are about
//! (`sidecar.salt_events`, on by default): a switch of master, and every
//! master being down.
//!
//! A ZeroMQ minion learns about its master only from its alive check
//! (`status.master`, scheduled every `master_alive_interval`): it looks for
//! an ESTABLISHED connection to the master's publish port; when there is
//! none it fires `__master_disconnected`, and Salt 3006 and later then close
//! their request channel, sign in again and fire `salt/minion/<id>/start`
//! on the master that answers (2019.2 with `master_type: str` only waits for
//! the connection and fires `__master_connected`). A moved or held session
//! hides all of that, so:
//!
//! * **Every master down:** the publish port refuses (accept, RST) and a
//!   publish session that loses its master is reset instead of held; ret
//!   connections are still held, so a request sent meanwhile is served the
//!   moment a master is back. The forwarder reads that from the route.
//! * **After a move to another master:** the publish session goes on at once
//!   (no publication missed at the switch), and is closed at its first quiet
//!   moment; then a *window* opens during which new publish connections are
//!   refused, so the minion's next alive check finds none. It ends when the
//!   minion reacts — it closes a ret session that was open before the window
//!   (Salt 3006+ closes its request channel before signing in again, so its
//!   new publish connection, right after the sign-in, is accepted) — or after
//!   one alive interval and [`MARGIN`], whichever comes first.
//!
//! Holds one small state behind a lock, touched once per window and per
//! refused connection, never per byte, and a count of the moved publish
//! sessions waiting for their quiet moment. `/status` shows both as the
//! minion's [`Phase`]. Logs one line when a window opens and one when it
//! ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

/// Beyond one alive interval, how long a window may last: Salt's scheduler
/// looks at its jobs once a second (`loop_interval`), and the check itself
/// takes a moment.
pub const MARGIN: Duration = Duration::from_secs(2);

/// The publish connections refused after a switch, until the minion reacts.
#[derive(Debug, Default)]
pub struct Notice {
    window: Mutex<Option<Window>>,
    /// Publish sessions moved at a switch, to be closed at their first
    /// quiet moment.
    closing: AtomicUsize,
}

/// Where the minion is in noticing a switch (`/status` `minion_notice`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A publish session moved at a switch waits for its first quiet
    /// moment to be closed: a publication now may meet the close.
    Closing,
    /// Its publish connections are refused until it signs in again: it
    /// hears no publication.
    Refusing,
}

/// Counts one moved publish session as closing while it lives.
#[derive(Debug)]
pub struct Closing<'a>(&'a Notice);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        self.0.closing.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, Debug)]
struct Window {
    since: Instant,
    until: Instant,
}

/// How a window ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The minion closed a ret session it had before the window.
    Reacted,
    /// The longest window passed.
    Expired,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Ended::Reacted => "the minion closed its request channel (it signs in again)",
            Ended::Expired => "the window passed",
        }
    }
}

// === impl Notice ===

impl Notice {
    /// Opens a window of `len` at `now` (a publish session was just closed
    /// after a move); an open one is extended.
    pub fn open(&self, now: Instant, len: Duration) {
        let Ok(mut w) = self.window.lock() else {
            return;
        };
        let until = now + len;
        match w.as_mut() {
            Some(open) => open.until = open.until.max(until),
            None => {
                *w = Some(Window { since: now, until });
                info!(
                    at_most_ms = len.as_millis() as u64,
                    "publish session closed after a switch so the minion's alive check sees it: its publish connections are refused until it signs in again"
                );
            }
        }
    }

    /// A publish session moved at a switch is to be closed at its first
    /// quiet moment: counted until the guard drops.
    pub fn closing(&self) -> Closing<'_> {
        self.closing.fetch_add(1, Ordering::Relaxed);
        Closing(self)
    }

    /// Where the minion is in noticing a switch, at `now` (a window that
    /// has passed counts as none, without closing it: a read).
    pub fn phase(&self, now: Instant) -> Option<Phase> {
        let refusing = self
            .window
            .lock()
            .is_ok_and(|w| w.is_some_and(|open| now < open.until));
        if refusing {
            Some(Phase::Refusing)
        } else if self.closing.load(Ordering::Relaxed) > 0 {
            Some(Phase::Closing)
        } else {
            None
        }
    }

    /// Whether a new publish connection is refused at `now`; a window that
    /// has passed is closed here.
    pub fn refusing(&self, now: Instant) -> bool {
        let Ok(mut w) = self.window.lock() else {
            return false;
        };
        match *w {
            Some(open) if now < open.until => true,
            Some(open) => {
                *w = None;
                log_end(open, now, Ended::Expired);
                false
            }
            None => false,
        }
    }

    /// A ret session the minion opened at `opened` was closed by the
    /// minion at `now`: if that was before the window, the minion is
    /// reacting (it signs in again), and the window ends.
    pub fn ret_closed(&self, opened: Instant, now: Instant) -> Option<Ended> {
        let mut w = self.window.lock().ok()?;
        let open = (*w)?;
        if opened >= open.since {
            return None;
        }
        *w = None;
        let ended = if now < open.until {
            Ended::Reacted
        } else {
            Ended::Expired
        };
        log_end(open, now, ended);
        Some(ended)
    }
}

fn log_end(w: Window, now: Instant, how: Ended) {
    // An expired window is noticed at the next look: it lasted until `until`.
    let end = match how {
        Ended::Reacted => now,
        Ended::Expired => now.min(w.until),
    };
    info!(
        after_ms = end.saturating_duration_since(w.since).as_millis() as u64,
        why = how.as_str(),
        "publish connections accepted again"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_window_refuses_until_it_passes() {
        let n = Notice::default();
        let t0 = Instant::now();
        assert!(!n.refusing(t0));
        n.open(t0, 7 * S);
        assert!(n.refusing(t0 + 6 * S));
        assert!(!n.refusing(t0 + 7 * S), "passed");
        assert!(!n.refusing(t0 + S), "and closed");
    }

    #[test]
    fn the_minion_closing_an_older_ret_session_ends_the_window() {
        let n = Notice::default();
        let t0 = Instant::now();
        let before = t0 - S;
        n.open(t0, 7 * S);
        assert_eq!(
            n.ret_closed(t0 + S, t0 + 2 * S),
            None,
            "a ret session opened during the window (a job's return) is no reaction"
        );
        assert!(n.refusing(t0 + 2 * S));
        assert_eq!(n.ret_closed(before, t0 + 3 * S), Some(Ended::Reacted));
        assert!(!n.refusing(t0 + 3 * S));
        assert_eq!(n.ret_closed(before, t0 + 4 * S), None, "no window");
    }

    #[test]
    fn the_phase_says_closing_then_refusing_then_nothing() {
        let n = Notice::default();
        let t0 = Instant::now();
        assert_eq!(n.phase(t0), None);
        let guard = n.closing();
        assert_eq!(n.phase(t0), Some(Phase::Closing));
        n.open(t0, 2 * S);
        drop(guard);
        assert_eq!(n.phase(t0 + S), Some(Phase::Refusing));
        assert_eq!(n.phase(t0 + 2 * S), None, "passed");
    }

    #[test]
    fn opening_again_extends_the_window() {
        let n = Notice::default();
        let t0 = Instant::now();
        n.open(t0, 2 * S);
        n.open(t0 + S, 5 * S);
        assert!(n.refusing(t0 + 5 * S));
        assert!(!n.refusing(t0 + 6 * S));
    }
}
