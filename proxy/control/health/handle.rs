//! What a master's health task shares with the rest of the sidecar: the
//! [`HealthHandle`] (wake-ups, passive failures, the last status, the
//! answer clocks and live-session evidence), and the [`Transition`]s it
//! sends the supervisor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::master::MasterId;
use crate::control::answers::Answers;
use crate::control::evidence::PortsEvidence;

/// A health transition, sent to the supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The plane the master id belongs to (a reload starts a new one).
    pub generation: u64,
    pub master: MasterId,
    pub up: bool,
    /// Why (the failing probe's error, or "probes ok").
    pub detail: String,
}

/// What the admin API shows about a master's last probe.
#[derive(Clone, Debug, Default)]
pub struct ProbeStatus {
    pub up: Option<bool>,
    pub last_probe: Option<SystemTime>,
    pub last_result: Option<String>,
}

/// Shared between a master's health task and the forwarders.
#[derive(Debug, Default)]
pub struct HealthHandle {
    pub(super) wake: Notify,
    pub(super) suspect: AtomicBool,
    /// A session was cut, or every master is re-probed: the next round
    /// probes (see `Judge::must_probe`).
    pub(super) lost: AtomicBool,
    pub(super) status: Mutex<ProbeStatus>,
    /// The request clocks of this master's ret sessions (transport tcp).
    pub answers: Answers,
    /// What this master's live sessions say about it, per port.
    pub evidence: PortsEvidence,
    /// The route sends minions here (active, or lingering after a switch):
    /// checked every interval; otherwise a standby, probed lazily.
    pub(super) routed: AtomicBool,
    /// When a check last found the master up.
    pub(super) last_ok: Mutex<Option<Instant>>,
    /// Why a probe right before a switch to it failed (`verify`).
    pub(super) verify_failed: Mutex<Option<String>>,
    /// A probe at a minion's start found it answering (`verify`).
    pub(super) verify_passed: AtomicBool,
    /// Confirmed hung (a minion request went unanswered); set by the
    /// health task after each round.
    pub(super) hung: AtomicBool,
}

// === impl HealthHandle ===

impl HealthHandle {
    /// A live session to this master was cut: probe now.
    /// A handle that starts from an earlier one's state (a reload).
    pub fn with_status(status: ProbeStatus) -> Self {
        HealthHandle {
            status: Mutex::new(status),
            ..Default::default()
        }
    }

    /// Whether the route sends minions to this master; becoming routed
    /// wakes its health task (a standby's next round may be far off).
    pub fn set_routed(&self, routed: bool) {
        if !self.routed.swap(routed, Ordering::Relaxed) && routed {
            self.wake.notify_one();
        }
    }

    pub fn is_routed(&self) -> bool {
        self.routed.load(Ordering::Relaxed)
    }

    /// A check found the master up at `at`.
    pub(super) fn note_ok(&self, at: Instant) {
        if let Ok(mut last) = self.last_ok.lock() {
            *last = Some(last.map_or(at, |l| l.max(at)));
        }
    }

    /// When a check last found the master up.
    pub fn last_ok(&self) -> Option<Instant> {
        self.last_ok.lock().ok().and_then(|l| *l)
    }

    pub(super) fn take_verify_failure(&self) -> Option<String> {
        self.verify_failed.lock().ok().and_then(|mut s| s.take())
    }

    /// A probe right before a switch to this master failed: its health task
    /// calls it down at once.
    pub fn fail_verification(&self, why: String) {
        if let Ok(mut slot) = self.verify_failed.lock() {
            *slot = Some(why);
        }
        self.wake.notify_one();
    }

    /// A probe when a minion started found this master answering: its
    /// health task calls it up at once (the supervisor already did).
    pub fn pass_verification(&self) {
        self.verify_passed.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    pub(super) fn take_verify_pass(&self) -> bool {
        self.verify_passed.swap(false, Ordering::Relaxed)
    }

    /// Whether the master is confirmed hung (its handshakes may pass; its
    /// answers do not).
    pub fn is_hung(&self) -> bool {
        self.hung.load(Ordering::Relaxed)
    }

    /// A live session to this master was cut (or every master is to be
    /// re-probed): probe now, whatever the sessions said before.
    pub fn reprobe(&self) {
        self.lost.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// A connect to this master failed: count a failed check and probe now.
    pub fn suspect(&self) {
        self.suspect.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    pub fn status(&self) -> ProbeStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}
