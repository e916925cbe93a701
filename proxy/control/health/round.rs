//! One round of checks on both ports of a master: on the minion's live
//! sessions where they can vouch (heard lately, or a ZMTP PING), else by
//! probe connections (the ret port by Salt's `ping` for a suspected or hung
//! master); counted by kind and result, recorded in the handle. What the
//! round means is `judge`'s.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;
use tracing::debug;

use super::judge::{Check, Round};
use super::Watch;
use crate::config::master::Port;
use crate::config::settings::HealthSettings;
use crate::config::ProbeKind;
use crate::control::evidence::PingOutcome;
use crate::limits::Op;
use crate::metrics::{CheckResult, Evidence as EvidenceKind};
use crate::zmtp::probe::{self, ProbeError};

/// How long a PING request may wait for a session to claim it before the
/// round probes instead (sessions claim within microseconds unless each
/// is inside a message).
const CLAIM_BOUND: std::time::Duration = std::time::Duration::from_millis(20);

// === impl Watch: one round ===

impl Watch {
    /// Probes both ports at once (the ret port with `ret_kind`: `ping` for
    /// a suspected or hung master, a plain connect for a young one), counts
    /// the results and records them in the handle; returns whether both
    /// passed, and why not — or `None` when the sidecar itself ran out of
    /// descriptors or memory (no verdict).
    pub(super) async fn probe_both(
        &mut self,
        settings: &HealthSettings,
        ret_kind: ProbeKind,
        checks: [Check; 2],
        ping_limit: std::time::Duration,
    ) -> Option<Round> {
        let master = &self.master;
        let label = master.label.as_str();
        let current: Arc<[std::net::IpAddr]> = self.addrs.borrow_and_update().clone();
        let start = Instant::now();
        let probe = |tcp_port: u16, port: Port| {
            probe::probe(settings.kind, &current, tcp_port, port, settings.timeout)
        };
        let evidence = &self.handle.evidence;
        let publish = async {
            let ev = evidence.port(Port::Publish);
            match on_sessions(checks[0], ev, settings.timeout).await {
                Some(done) => done,
                None => (
                    EvidenceKind::Probe,
                    probe(master.publish_port, Port::Publish).await,
                ),
            }
        };
        let line = &mut self.ping_line;
        let ret = async {
            let ev = evidence.port(Port::Ret);
            if let Some(done) = on_sessions(checks[1], ev, settings.timeout).await {
                return done;
            }
            let probed = if ret_kind == ProbeKind::Ping {
                line.ping(
                    settings.kind.transport(),
                    &current,
                    master.ret_port,
                    settings.timeout,
                    ping_limit,
                )
                .await
            } else {
                line.close();
                probe::probe(
                    ret_kind,
                    &current,
                    master.ret_port,
                    Port::Ret,
                    settings.timeout,
                )
                .await
            };
            (EvidenceKind::Probe, probed)
        };
        let ((publish_via, publish), (ret_via, ret)) = tokio::join!(publish, ret);
        let elapsed = start.elapsed().as_secs_f64();
        // The sidecar's own exhaustion is no verdict on the master: counted
        // as a resource error, no check recorded, tried again soon.
        let mut exhausted = false;
        for e in [&publish, &ret]
            .into_iter()
            .filter_map(|r| r.as_ref().err().and_then(ProbeError::own_error))
        {
            self.metrics.resources.check(Op::Probe, e);
            exhausted = true;
        }
        if exhausted {
            debug!(
                master = label,
                "probe skipped: the sidecar is out of resources"
            );
            return None;
        }
        for (port, kind, result) in [
            (Port::Publish, publish_via, &publish),
            (Port::Ret, ret_via, &ret),
        ] {
            self.metrics
                .health_evidence_total
                .with_label_values(&[
                    label,
                    port.as_str(),
                    kind.as_str(),
                    if result.is_ok() { "ok" } else { "failed" },
                ])
                .inc();
            if kind != EvidenceKind::Probe {
                continue;
            }
            let outcome = result
                .as_ref()
                .map_or_else(ProbeError::result, |_| CheckResult::Ok);
            self.metrics
                .health_checks_total
                .with_label_values(&[label, port.as_str(), outcome.as_str()])
                .inc();
            self.metrics
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
        if let Ok(mut s) = self.handle.status.lock() {
            s.last_probe = Some(SystemTime::now());
            s.last_result = Some(detail.clone());
        }
        Some(Round {
            ok,
            detail,
            ret_connected: !matches!(ret, Err(ProbeError::Connect(_))),
            answered: false,
            mute: publish.is_ok() && matches!(ret, Err(ProbeError::Unanswered)),
        })
    }
}

/// A check on the master's live sessions (`Passive`, `Ping`): what it cost
/// and found, or `None` when the round must probe instead (a probe check,
/// or a PING no session could carry).
async fn on_sessions(
    check: Check,
    evidence: &crate::control::evidence::Evidence,
    timeout: std::time::Duration,
) -> Option<(EvidenceKind, Result<(), ProbeError>)> {
    match check {
        Check::Passive => Some((EvidenceKind::Passive, Ok(()))),
        Check::Turn => Some((EvidenceKind::Turn, Ok(()))),
        Check::Ping => match evidence.ping(timeout, CLAIM_BOUND).await {
            PingOutcome::Answered => Some((EvidenceKind::Ping, Ok(()))),
            PingOutcome::Unanswered => Some((EvidenceKind::Ping, Err(ProbeError::PingUnanswered))),
            PingOutcome::NotSent => None,
        },
        Check::Probe => None,
    }
}
