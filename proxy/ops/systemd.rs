//! Behaving like a well-kept systemd service: readiness and status
//! (`sd_notify`), the watchdog, and socket activation.
//!
//! - [`Notifier`] sends `READY=1` once both listeners accept and the first
//!   probe round has a verdict, `STATUS=` lines with the active master,
//!   `RELOADING=1` (with `MONOTONIC_USEC`) then `READY=1` around a reload, and
//!   `STOPPING=1` when the drain starts. Without `NOTIFY_SOCKET` it does
//!   nothing.
//! - [`watchdog`] sends `WATCHDOG=1` every half `WATCHDOG_USEC`, but only
//!   while [`Liveness`] shows the control loop making progress (the
//!   supervisor and the health tasks both ticking): a wedged sidecar stops
//!   pinging and systemd restarts it, instead of it sitting alive and useless.
//! - [`activated_listeners`] takes the minion listeners systemd passed
//!   (`LISTEN_FDS`, named `publish` and `ret` by `FileDescriptorName=` in
//!   `config/salt-sidecar.socket`), so a restart never refuses a minion: the
//!   kernel queues its connection meanwhile.
//!
//! I/O only at this edge; the decisions (is it progressing, which fd is
//! which) are plain functions, tested here.

use std::io;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::control::liveness::Liveness;

/// Talks to the service manager, if there is one.
#[derive(Clone, Debug)]
pub struct Notifier {
    enabled: bool,
}

// === impl Notifier ===

impl Notifier {
    /// Enabled when systemd (or a test) set `NOTIFY_SOCKET`.
    pub fn from_env() -> Self {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty()),
        }
    }

    /// A notifier that never sends (in-process runs: demo, tests).
    pub fn disabled() -> Self {
        Notifier { enabled: false }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A `STATUS=` line (`systemctl status` shows it).
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// `RELOADING=1` with the time it started (systemd's `Type=notify-reload`
    /// protocol); follow with [`Notifier::ready`].
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// `STOPPING=1`: the drain has started.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
    }

    fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    fn send(&self, state: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(state) {
            debug!(error = %e, "sd_notify failed");
        }
    }
}

/// The watchdog period systemd asked for (`WATCHDOG_USEC`, for this PID).
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Pings the watchdog every half `period` while `liveness` shows progress;
/// stops pinging (once, with a log line) while it does not.
pub async fn watchdog(
    notifier: Notifier,
    period: Duration,
    liveness: std::sync::Arc<Liveness>,
    token: CancellationToken,
) {
    let every = (period / 2).max(Duration::from_millis(10));
    let mut stalled = false;
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match liveness.stalled(Instant::now(), period) {
            None => {
                if stalled {
                    info!("the control loop makes progress again; watchdog pings resume");
                    stalled = false;
                }
                notifier.watchdog();
            }
            Some(what) if !stalled => {
                warn!(
                    stalled = what,
                    "the control loop makes no progress; watchdog pings stop (systemd will restart the sidecar)"
                );
                stalled = true;
            }
            Some(_) => {}
        }
    }
}

/// The minion listeners systemd passed, by name.
#[derive(Debug, Default)]
pub struct Activated {
    pub publish: Option<std::net::TcpListener>,
    pub ret: Option<std::net::TcpListener>,
}

/// Which passed descriptor is which: by `FileDescriptorName=` (`publish`,
/// `ret`) where given; the others in order (one `.socket` unit with two
/// `ListenStream=` lines names both after itself): the first left is
/// publish, the next ret. Returns (publish index, ret index). Pure.
pub fn assign(count: usize, names: Option<&str>) -> Result<(Option<usize>, Option<usize>), String> {
    let names: Vec<&str> = names.map_or_else(Vec::new, |n| n.split(':').collect());
    let named = |want: &str| (0..count).find(|i| names.get(*i) == Some(&want));
    let (mut publish, mut ret) = (named("publish"), named("ret"));
    let (p, r) = (publish, ret);
    let mut rest = (0..count).filter(move |i| Some(*i) != p && Some(*i) != r);
    if publish.is_none() {
        publish = rest.next();
    }
    if ret.is_none() {
        ret = rest.next();
    }
    if let Some(extra) = rest.next() {
        return Err(format!(
            "systemd passed {count} sockets (names {names:?}); salt-sidecar takes two: publish and ret (socket {extra} is one too many)"
        ));
    }
    Ok((publish, ret))
}

/// Takes the listeners systemd passed (`LISTEN_FDS`, `LISTEN_PID`,
/// `LISTEN_FDNAMES`); none when not socket-activated.
pub fn activated_listeners() -> io::Result<Activated> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(Activated::default());
    }
    let names = std::env::var("LISTEN_FDNAMES").ok();
    let (publish, ret) = assign(fds.len(), names.as_deref())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut take = |i: Option<usize>| -> io::Result<Option<std::net::TcpListener>> {
        match i {
            Some(i) => {
                let l = fds.take_tcp_listener(i)?;
                if let Some(l) = &l {
                    l.set_nonblocking(true)?;
                }
                Ok(l)
            }
            None => Ok(None),
        }
    };
    Ok(Activated {
        publish: take(publish)?,
        ret: take(ret)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passed_sockets_are_told_apart_by_name_or_order() {
        assert_eq!(assign(0, None), Ok((None, None)));
        assert_eq!(assign(2, None), Ok((Some(0), Some(1))), "by order");
        assert_eq!(
            assign(2, Some("salt-sidecar.socket:salt-sidecar.socket")),
            Ok((Some(0), Some(1))),
            "one socket unit: in ListenStream= order"
        );
        assert_eq!(assign(2, Some("ret:publish")), Ok((Some(1), Some(0))));
        assert_eq!(assign(1, Some("ret")), Ok((None, Some(0))), "one of them");
        assert_eq!(
            assign(2, Some("x:publish")),
            Ok((Some(1), Some(0))),
            "a named one, the other by order"
        );
        assert!(assign(3, None).is_err(), "one too many");
    }
}
