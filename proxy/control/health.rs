//! Health of every master: active probes on the alive interval, passive
//! signals from forwarding, and rise/fall hysteresis.
//!
//! One task per master probes both ports every `master_alive_interval` (with
//! jitter within 0.9–1.0 × interval, measured from the previous probe's
//! start, so a fleet does not probe in lockstep) and reports only
//! *transitions* to the supervisor. A master is up only if both ports are.
//! Forwarding calls [`HealthHandle::suspect`] when a connect to the master is
//! refused or times out (counted as a failed check, then an immediate
//! re-probe) and [`HealthHandle::reprobe`] when a live session is cut.
//! This module never chooses a master.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::master::{MasterId, MasterSpec, Port};
use crate::config::settings::Tunables;
use crate::control::hysteresis::Hysteresis;
use crate::control::resolve::Addresses;
use crate::limits::Op;
use crate::metrics::{CheckResult, Metrics};
use crate::zmtp::probe::{self, ProbeError};

/// How soon a probe skipped for the sidecar's own exhaustion is tried again.
const EXHAUSTED_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

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
    wake: Notify,
    suspect: AtomicBool,
    status: Mutex<ProbeStatus>,
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

    pub fn reprobe(&self) {
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

/// Probes one master until cancelled, reporting transitions on `events`.
#[allow(clippy::too_many_arguments)]
pub async fn watch(
    master: MasterSpec,
    generation: u64,
    mut addrs: Addresses,
    handle: Arc<HealthHandle>,
    mut tunables: watch::Receiver<Arc<Tunables>>,
    events: mpsc::Sender<Transition>,
    metrics: Arc<Metrics>,
    token: CancellationToken,
) {
    let mut settings = tunables.borrow_and_update().health.clone();
    let mut hyst = Hysteresis::resume(settings.rise, settings.fall, handle.status().up);
    let mut rng = fastrand::Rng::new();
    let label = master.label.as_str();
    let mut resolver_alive = matches!(master.host, crate::config::master::Host::Name(_));
    if resolver_alive && addrs.borrow().is_empty() {
        // A DNS name not resolved yet: give the first lookup up to one probe
        // timeout, so the master is not called down before it had an address
        // (an NXDOMAIN answers at once and the probe then says "unresolved").
        let _ = tokio::time::timeout(settings.timeout, addrs.wait_for(|a| !a.is_empty())).await;
    }
    loop {
        if handle.suspect.swap(false, Ordering::Relaxed) {
            debug!(
                master = label,
                "passive failure: a connect to this master failed"
            );
            if let Some(up) = hyst.observe(false) {
                report(
                    &events,
                    &handle,
                    &master,
                    generation,
                    up,
                    "a minion connection to it failed".into(),
                )
                .await;
            }
        }
        let current: Arc<[std::net::IpAddr]> = addrs.borrow_and_update().clone();
        let start = Instant::now();
        let (publish, ret) = tokio::join!(
            probe::probe(
                settings.kind,
                &current,
                master.publish_port,
                Port::Publish,
                settings.timeout
            ),
            probe::probe(
                settings.kind,
                &current,
                master.ret_port,
                Port::Ret,
                settings.timeout
            ),
        );
        let elapsed = start.elapsed().as_secs_f64();
        // The sidecar's own exhaustion is no verdict on the master: counted
        // as a resource error, no check recorded, tried again soon.
        let mut exhausted = false;
        for (_, e) in [&publish, &ret]
            .into_iter()
            .filter_map(|r| r.as_ref().err().and_then(ProbeError::exhausted))
        {
            metrics.resources.check(Op::Probe, e);
            exhausted = true;
        }
        if exhausted {
            debug!(
                master = label,
                "probe skipped: the sidecar is out of resources"
            );
            let retry = start + settings.interval.min(EXHAUSTED_RETRY);
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep_until(retry) => {}
            }
            continue;
        }
        for (port, result) in [(Port::Publish, &publish), (Port::Ret, &ret)] {
            let outcome = result
                .as_ref()
                .map_or_else(ProbeError::result, |_| CheckResult::Ok);
            metrics
                .health_checks_total
                .with_label_values(&[label, port.as_str(), outcome.as_str()])
                .inc();
            metrics
                .health_check_duration_seconds
                .with_label_values(&[label, port.as_str()])
                .observe(elapsed);
        }
        let detail = match (&publish, &ret) {
            (Ok(()), Ok(())) => "probes ok".to_string(),
            (Err(e), _) => format!("publish port {}: {e}", master.publish_port),
            (_, Err(e)) => format!("ret port {}: {e}", master.ret_port),
        };
        let ok = publish.is_ok() && ret.is_ok();
        debug!(master = label, ok, detail = %detail, "probe");
        if let Ok(mut s) = handle.status.lock() {
            s.last_probe = Some(SystemTime::now());
            s.last_result = Some(detail.clone());
        }
        if let Some(up) = hyst.observe(ok) {
            report(&events, &handle, &master, generation, up, detail).await;
        }

        // The next probe starts 0.9–1.0 × interval after this one *started*
        // (never later, so a dead master is down within fall × interval +
        // timeout; jittered, so a fleet does not probe in lockstep), or at
        // once when woken or when DNS changes the addresses (a literal IP has
        // no resolver, so its channel is closed from the start).
        let next = start + settings.interval.mul_f64(0.9 + 0.1 * rng.f64());
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
            _ = handle.wake.notified() => {}
            changed = addrs.changed(), if resolver_alive => resolver_alive = changed.is_ok(),
            changed = tunables.changed() => {
                // A reload: new timing or thresholds apply from this probe on.
                if changed.is_ok() {
                    settings = tunables.borrow_and_update().health.clone();
                    hyst.set_thresholds(settings.rise, settings.fall);
                }
            }
        }
    }
}

async fn report(
    events: &mpsc::Sender<Transition>,
    handle: &HealthHandle,
    master: &MasterSpec,
    generation: u64,
    up: bool,
    detail: String,
) {
    if up {
        info!(master = %master.label, "master is up");
    } else {
        warn!(master = %master.label, reason = %detail, "master is down");
    }
    if let Ok(mut s) = handle.status.lock() {
        s.up = Some(up);
    }
    // The supervisor outlives health tasks; a send error means shutdown.
    let _ = events
        .send(Transition {
            generation,
            master: master.id,
            up,
            detail,
        })
        .await;
}
