//! The sidecar's own resources: file-descriptor budgets, and running out.
//!
//! The sidecar must never be the reason a minion is offline, and never blame
//! a master for its own exhaustion. So:
//! - at start the soft `RLIMIT_NOFILE` is raised to the hard limit
//!   ([`raise_nofile`]) and split by [`Budget::plan`] into a reserve (probes,
//!   DNS, listeners, the admin endpoints) and a cap on minion sessions, so a
//!   local flood is refused at accept and can never starve the probes;
//! - [`Resource::of`] recognises the errors that mean *we* ran out (EMFILE,
//!   ENFILE, ENOBUFS, ENOMEM), and [`Blame`] says once, for every layer, who
//!   an error is to be blamed on: health and forwarding never count the
//!   sidecar's own as a master's failure;
//! - [`ResourceErrors`] counts them (`resource_errors_total{op,kind}`) and
//!   refused connections (`connections_refused_total{listener,reason}`), logs
//!   one line per burst, and remembers the last one for `/readyz` and
//!   `/status`.
//!
//! No sockets here; the budget arithmetic is pure and unit-tested.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prometheus::IntCounterVec;
use tokio::time::Instant;
use tracing::warn;

/// Minion sessions allowed when `sidecar.max_sessions` is not set. One minion
/// needs two (publish and ret), plus one per `salt-call` running on the host.
pub const DEFAULT_MAX_SESSIONS: u32 = 1024;
/// Concurrent connections to each admin endpoint (TCP and Unix socket).
pub const MAX_ADMIN_CONNECTIONS: usize = 16;
/// File descriptors the process holds whatever happens: stdio, the three
/// listeners and the admin socket, epoll, tokio's wakers, signals, the DNS
/// resolver's sockets.
const FIXED_FDS: u64 = 32;
/// Probe connections per master that can be open at once: both ports, and a
/// re-probe overlapping a slow one.
const PROBE_FDS_PER_MASTER: u64 = 4;
/// A burst of resource errors is over after this much quiet; the next error
/// is logged again.
const BURST_QUIET: Duration = Duration::from_secs(10);

/// The kind of exhaustion (the `kind` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// EMFILE: this process is at its open-file limit.
    Emfile,
    /// ENFILE: the whole system is at its open-file limit.
    Enfile,
    /// ENOBUFS: the kernel has no socket buffers left.
    Enobufs,
    /// ENOMEM: out of memory.
    Enomem,
}

impl Resource {
    pub const ALL: [Resource; 4] = [
        Resource::Emfile,
        Resource::Enfile,
        Resource::Enobufs,
        Resource::Enomem,
    ];

    /// The exhaustion `e` stands for, or `None` for any other error (one
    /// that may well be the peer's fault).
    pub fn of(e: &io::Error) -> Option<Resource> {
        match e.raw_os_error()? {
            libc::EMFILE => Some(Resource::Emfile),
            libc::ENFILE => Some(Resource::Enfile),
            libc::ENOBUFS => Some(Resource::Enobufs),
            libc::ENOMEM => Some(Resource::Enomem),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Emfile => "emfile",
            Resource::Enfile => "enfile",
            Resource::Enobufs => "enobufs",
            Resource::Enomem => "enomem",
        }
    }

    /// What it means, for a log line or `/readyz`.
    pub fn describe(self) -> &'static str {
        match self {
            Resource::Emfile => "the sidecar is at its open-file limit (EMFILE)",
            Resource::Enfile => "the system is at its open-file limit (ENFILE)",
            Resource::Enobufs => "the kernel has no socket buffers left (ENOBUFS)",
            Resource::Enomem => "out of memory (ENOMEM)",
        }
    }
}

/// Who an error is to be blamed on, said once for every layer (as
/// pingora's `ErrorSource`): what the error may change follows from it. A
/// master's counts against its health (the session it cut is moved, or
/// reset); a minion's ends its session and nothing else; the sidecar's own
/// — it ran out of descriptors, buffers or memory ([`Resource`]) — is
/// counted in `resource_errors_total` and changes no master's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    Minion,
    Master,
    Sidecar,
}

impl Blame {
    /// An I/O error `e` on `peer`'s socket: the sidecar's own when it means
    /// the sidecar ran out, else `peer`'s.
    pub fn io(peer: Blame, e: &io::Error) -> Blame {
        if Resource::of(e).is_some() {
            Blame::Sidecar
        } else {
            peer
        }
    }
}

/// What the sidecar was doing when it ran out (the `op` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Accepting a minion connection.
    Accept,
    /// Connecting to a master for a minion session.
    Connect,
    /// A health probe.
    Probe,
    /// Accepting an admin connection (TCP or Unix socket).
    Admin,
    /// Forwarding a minion session's bytes (reading or writing either side).
    Forward,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Accept, Op::Connect, Op::Probe, Op::Admin, Op::Forward];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Accept => "accept",
            Op::Connect => "connect",
            Op::Probe => "probe",
            Op::Admin => "admin",
            Op::Forward => "forward",
        }
    }
}

/// Which listener refused a connection over its cap (the `listener` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Publish,
    Ret,
    Admin,
    AdminSocket,
}

impl Listener {
    pub const ALL: [Listener; 4] = [
        Listener::Publish,
        Listener::Ret,
        Listener::Admin,
        Listener::AdminSocket,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Publish => "publish",
            Listener::Ret => "ret",
            Listener::Admin => "admin",
            Listener::AdminSocket => "admin_socket",
        }
    }
}

/// How the open-file limit is shared out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The soft RLIMIT_NOFILE the sidecar runs with.
    pub fd_limit: u64,
    /// Descriptors kept for everything but minion sessions.
    pub reserve: u64,
    /// Concurrent minion connections (each holds up to two descriptors: the
    /// minion's and the master's).
    pub max_sessions: usize,
    /// Concurrent connections per admin endpoint.
    pub max_admin: usize,
    /// `sidecar.max_sessions` was lowered to fit the limit.
    pub lowered_from: Option<u32>,
}

impl Budget {
    /// Splits `fd_limit` for `masters` masters and the configured session
    /// cap (default [`DEFAULT_MAX_SESSIONS`]). Pure.
    pub fn plan(fd_limit: u64, masters: usize, configured: Option<u32>) -> Budget {
        let max_admin = MAX_ADMIN_CONNECTIONS;
        let reserve = FIXED_FDS + PROBE_FDS_PER_MASTER * masters as u64 + 2 * max_admin as u64;
        let fit = (fd_limit.saturating_sub(reserve) / 2).min(u64::from(u32::MAX)) as u32;
        let wanted = configured.unwrap_or(DEFAULT_MAX_SESSIONS);
        let max_sessions = wanted.min(fit);
        Budget {
            fd_limit,
            reserve,
            max_sessions: max_sessions as usize,
            max_admin,
            lowered_from: (configured.is_some() && max_sessions < wanted).then_some(wanted),
        }
    }

    /// The smallest open-file limit that leaves room for one minion (two
    /// sessions) next to the reserve.
    pub fn minimum_fd_limit(&self) -> u64 {
        self.reserve + 4
    }
}

/// Raises the soft open-file limit to the hard one; returns (before, after).
pub fn raise_nofile() -> io::Result<(u64, u64)> {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if soft >= hard {
        return Ok((soft, soft));
    }
    let after = rlimit::increase_nofile_limit(hard)?;
    Ok((soft, after))
}

/// The last resource error, as `/readyz` and `/status` show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastError {
    pub op: Op,
    pub resource: Resource,
    pub at: Instant,
    pub wall: SystemTime,
}

#[derive(Debug, Default)]
struct Burst {
    /// When the current burst's last event happened.
    last: Option<Instant>,
    /// Events in the current burst after the one that was logged.
    unlogged: u64,
    last_error: Option<LastError>,
    errors: u64,
    refused: u64,
}

/// Counts and logs exhaustion and refused connections; shared by every task.
#[derive(Debug)]
pub struct ResourceErrors {
    errors_total: IntCounterVec,
    refused_total: IntCounterVec,
    burst: Mutex<Burst>,
}

// === impl ResourceErrors ===

impl ResourceErrors {
    /// `errors_total` is labelled `{op, kind}`, `refused_total`
    /// `{listener, reason}`; every series is created here.
    pub fn new(errors_total: IntCounterVec, refused_total: IntCounterVec) -> Self {
        for op in Op::ALL {
            for r in Resource::ALL {
                errors_total.with_label_values(&[op.as_str(), r.as_str()]);
            }
        }
        for l in Listener::ALL {
            refused_total.with_label_values(&[l.as_str(), "over_cap"]);
            if matches!(l, Listener::Publish | Listener::Ret) {
                refused_total.with_label_values(&[l.as_str(), "evicted_silent"]);
            }
        }
        ResourceErrors {
            errors_total,
            refused_total,
            burst: Mutex::new(Burst::default()),
        }
    }

    /// Records that `op` failed with `e`, if `e` is exhaustion; returns what
    /// ran out (then the caller must not blame the peer), or `None`.
    pub fn check(&self, op: Op, e: &io::Error) -> Option<Resource> {
        let resource = Resource::of(e)?;
        self.errors_total
            .with_label_values(&[op.as_str(), resource.as_str()])
            .inc();
        let now = Instant::now();
        let mut b = self.lock();
        b.errors += 1;
        b.last_error = Some(LastError {
            op,
            resource,
            at: now,
            wall: SystemTime::now(),
        });
        if let Some(unlogged) = Self::new_burst(&mut b, now) {
            warn!(
                op = op.as_str(),
                kind = resource.as_str(),
                earlier_unlogged = unlogged,
                "out of resources: {}; not a master's fault: no check failed, no switch \
                 (salt_sidecar_resource_errors_total counts the rest of this burst)",
                resource.describe()
            );
        }
        Some(resource)
    }

    /// Records a connection closed at accept because `listener` is at its cap.
    pub fn refused(&self, listener: Listener, cap: usize) {
        self.refused_total
            .with_label_values(&[listener.as_str(), "over_cap"])
            .inc();
        let now = Instant::now();
        let mut b = self.lock();
        b.refused += 1;
        if let Some(unlogged) = Self::new_burst(&mut b, now) {
            warn!(
                listener = listener.as_str(),
                cap,
                earlier_unlogged = unlogged,
                "connection refused: {} connections open, the cap; \
                 salt_sidecar_connections_refused_total counts the rest of this burst",
                cap
            );
        }
    }

    /// Records a connection that had never sent a byte, closed at the cap
    /// to give its slot to a newcomer (`data::admit`).
    pub fn evicted(&self, listener: Listener) {
        self.refused_total
            .with_label_values(&[listener.as_str(), "evicted_silent"])
            .inc();
    }

    /// The last exhaustion, if it happened within `within`.
    pub fn recent(&self, within: Duration) -> Option<LastError> {
        let b = self.lock();
        b.last_error.filter(|e| e.at.elapsed() <= within)
    }

    /// The last exhaustion ever, and the totals (errors, refused).
    pub fn summary(&self) -> (Option<LastError>, u64, u64) {
        let b = self.lock();
        (b.last_error, b.errors, b.refused)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Burst> {
        match self.burst.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        }
    }

    /// Marks an event at `now`; `Some(events not logged in the burst before)`
    /// when it starts a new burst (log it), `None` inside a burst.
    fn new_burst(b: &mut Burst, now: Instant) -> Option<u64> {
        let starts = b.last.is_none_or(|t| now.duration_since(t) > BURST_QUIET);
        b.last = Some(now);
        if starts {
            Some(std::mem::take(&mut b.unlogged))
        } else {
            b.unlogged += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    #[test]
    fn exhaustion_is_told_apart_from_a_peer_failure() {
        let of = |errno| Resource::of(&io::Error::from_raw_os_error(errno));
        assert_eq!(of(libc::EMFILE), Some(Resource::Emfile));
        assert_eq!(of(libc::ENFILE), Some(Resource::Enfile));
        assert_eq!(of(libc::ENOBUFS), Some(Resource::Enobufs));
        assert_eq!(of(libc::ENOMEM), Some(Resource::Enomem));
        assert_eq!(of(libc::ECONNREFUSED), None);
        assert_eq!(of(libc::ETIMEDOUT), None);
        assert_eq!(Resource::of(&io::Error::other("x")), None);
    }

    #[test]
    fn the_fd_limit_is_split_into_reserve_and_sessions() {
        // 2 masters: 32 fixed + 8 probe + 32 admin.
        let b = Budget::plan(256, 2, None);
        assert_eq!(b.reserve, 72);
        assert_eq!(b.max_sessions, 92, "(256 - 72) / 2");
        assert_eq!(b.lowered_from, None, "the default is lowered silently");
        // A systemd default hard limit: the default cap applies.
        let b = Budget::plan(524_288, 2, None);
        assert_eq!(b.max_sessions, DEFAULT_MAX_SESSIONS as usize);
        // A configured cap that does not fit is lowered, and says so.
        let b = Budget::plan(1024, 3, Some(5000));
        assert_eq!(
            (b.max_sessions, b.lowered_from),
            (474, Some(5000)),
            "(1024 - 76) / 2"
        );
        let b = Budget::plan(1024, 3, Some(10));
        assert_eq!((b.max_sessions, b.lowered_from), (10, None));
        // A limit below the reserve leaves no session at all.
        let b = Budget::plan(50, 2, None);
        assert_eq!(b.max_sessions, 0);
        assert!(b.minimum_fd_limit() > 50);
    }

    #[tokio::test(start_paused = true)]
    async fn one_log_line_per_burst_but_every_error_counted() {
        let errors = IntCounterVec::new(Opts::new("e", "e"), &["op", "kind"]).expect("vec");
        let refused = IntCounterVec::new(Opts::new("r", "r"), &["listener", "reason"]).expect("v");
        let r = ResourceErrors::new(errors.clone(), refused.clone());
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let mut b = Burst::default();
        assert_eq!(ResourceErrors::new_burst(&mut b, Instant::now()), Some(0));
        for _ in 0..5 {
            assert_eq!(r.check(Op::Probe, &emfile), Some(Resource::Emfile));
            assert_eq!(ResourceErrors::new_burst(&mut b, Instant::now()), None);
        }
        assert_eq!(
            errors.with_label_values(&["probe", "emfile"]).get(),
            5,
            "each one counted"
        );
        tokio::time::advance(BURST_QUIET + Duration::from_secs(1)).await;
        assert_eq!(
            ResourceErrors::new_burst(&mut b, Instant::now()),
            Some(5),
            "after quiet a new burst starts and reports what it did not log"
        );
        assert!(r.recent(Duration::from_secs(5)).is_none());
        assert_eq!(
            r.check(
                Op::Connect,
                &io::Error::from_raw_os_error(libc::ECONNREFUSED)
            ),
            None
        );
        r.refused(Listener::Publish, 3);
        let (last, n, refused_n) = r.summary();
        assert_eq!((last.map(|l| l.op), n, refused_n), (Some(Op::Probe), 5, 1));
        assert_eq!(refused.with_label_values(&["publish", "over_cap"]).get(), 1);
    }

    #[test]
    fn the_sidecars_own_exhaustion_is_blamed_on_the_sidecar() {
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(Blame::io(Blame::Master, &emfile), Blame::Sidecar);
        assert_eq!(Blame::io(Blame::Minion, &emfile), Blame::Sidecar);
        assert_eq!(Blame::io(Blame::Master, &reset), Blame::Master);
        assert_eq!(Blame::io(Blame::Minion, &reset), Blame::Minion);
    }
}
