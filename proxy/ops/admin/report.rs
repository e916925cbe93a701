//! What `/readyz` and `/status` say: whether the sidecar is ready (a master
//! selected and up, room for one more session, no recent resource
//! exhaustion) and the status document (every master's health, sessions
//! and role, the SRV record, the resource budget). Reads only.

use std::time::{Duration, SystemTime};

use super::Admin;
use crate::clock;
use crate::config::master::Port;
use crate::control::srv::SrvState;
use crate::control::supervisor::Snapshot;
use crate::data::forward::Phase;
use crate::limits::LastError;
use crate::ops::api::{
    HealthState, LastResourceError, MasterStatus, MinionNotice, ResourceStatus, SessionCounts,
    SrvStatus, StatusReport,
};

/// `/readyz` says "not ready" for this long after the sidecar ran out of a
/// resource (EMFILE, ...).
const RESOURCE_ERROR_WINDOW: Duration = Duration::from_secs(30);

// === impl Admin ===

impl Admin {
    /// `Ok(why)` when a master is selected and up, else `Err(why not)`.
    pub(super) fn readiness(&self, snapshot: &Snapshot) -> Result<String, String> {
        // At the cap the next minion connection is refused at accept: a
        // minion that reconnects now would find no way in.
        if self.sessions.available_permits() == 0 {
            return Err(format!(
                "the session cap is full (all {} of sidecar.max_sessions in use): the next minion connection is refused; see salt_sidecar_connections_refused_total",
                self.max_sessions
            ));
        }
        if let Some(e) = self.metrics.resources.recent(RESOURCE_ERROR_WINDOW) {
            return Err(format!(
                "{} ({} failed {:.0} s ago; see salt_sidecar_resource_errors_total)",
                e.resource.describe(),
                e.op.as_str(),
                e.at.elapsed().as_secs_f64()
            ));
        }
        let Some(m) = snapshot.active else {
            if let (Some(srv), true) = (&self.srv, snapshot.plane.masters.is_empty()) {
                let srv = srv.borrow();
                return Err(format!(
                    "no masters yet: the SRV record {} has not answered with any ({})",
                    srv.record,
                    srv.last_error
                        .as_deref()
                        .unwrap_or("waiting for its first answer")
                ));
            }
            return Err(
                "no master is selected (none is up yet, or all are down or drained)".into(),
            );
        };
        let label = snapshot.plane.label(m);
        let up = snapshot
            .plane
            .health
            .get(m.index())
            .and_then(|h| h.status().up)
            .unwrap_or(false);
        match (up, snapshot.pinned == Some(m)) {
            (true, _) => Ok(format!("{label} is active and up")),
            (false, true) => Err(format!("{label} is pinned but down")),
            (false, false) => Err(format!("{label} is active but down")),
        }
    }

    /// The resource budget and exhaustion, for `/status`.
    fn resources(&self) -> ResourceStatus {
        let (last, errors, refused) = self.metrics.resources.summary();
        ResourceStatus {
            fd_limit: rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|l| l.0)
                .unwrap_or(0),
            max_sessions: self.max_sessions,
            connections_open: self
                .max_sessions
                .saturating_sub(self.sessions.available_permits()),
            resource_errors: errors,
            connections_refused: refused,
            last_error: last.map(|e: LastError| LastResourceError {
                op: e.op.as_str().to_string(),
                kind: e.resource.as_str().to_string(),
                what: e.resource.describe().to_string(),
                age_seconds: e.at.elapsed().as_secs_f64(),
            }),
        }
    }

    /// The `/status` document, now.
    pub fn report(&self) -> StatusReport {
        let snapshot = self.snapshot.borrow().clone();
        let now = SystemTime::now();
        let ready = self.readiness(&snapshot);
        let sessions = |label: &str, port: Port| {
            self.metrics
                .sessions_active
                .with_label_values(&[label, port.as_str()])
                .get()
        };
        let masters = snapshot
            .order
            .iter()
            .enumerate()
            .filter_map(|(rank, id)| {
                let spec = snapshot.plane.masters.get(id.index())?;
                let probe = snapshot
                    .plane
                    .health
                    .get(id.index())
                    .map(|h| h.status())
                    .unwrap_or_default();
                let label = spec.label.as_str();
                Some(MasterStatus {
                    id: id.0,
                    rank,
                    master: spec.label.clone(),
                    host: spec.host.to_string(),
                    publish_port: spec.publish_port,
                    ret_port: spec.ret_port,
                    priority: spec.srv.map(|r| r.priority),
                    weight: spec.srv.map(|r| r.weight),
                    addresses: snapshot
                        .plane
                        .addrs
                        .get(id.index())
                        .map(|a| a.borrow().to_vec())
                        .unwrap_or_default(),
                    health: match probe.up {
                        Some(true) => HealthState::Up,
                        Some(false) => HealthState::Down,
                        None => HealthState::Unknown,
                    },
                    last_probe: probe
                        .last_probe
                        .map(|t| humantime::format_rfc3339_millis(t).to_string()),
                    last_probe_age_seconds: probe
                        .last_probe
                        .map(|t| now.duration_since(t).unwrap_or_default().as_secs_f64()),
                    last_result: probe.last_result,
                    active: snapshot.active == Some(*id),
                    pinned: snapshot.pinned == Some(*id),
                    drained: snapshot.drained.get(id.index()).copied().unwrap_or(false),
                    sessions: SessionCounts {
                        publish: sessions(label, Port::Publish),
                        ret: sessions(label, Port::Ret),
                    },
                })
            })
            .collect();
        let last_switch =
            Some(self.metrics.last_switch_timestamp_seconds.get()).filter(|t| *t > 0.0);
        let now_unix = clock::unix(now).as_secs_f64();
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            minion_id: self.minion_id.clone(),
            ready: ready.is_ok(),
            ready_reason: ready.unwrap_or_else(|e| e),
            active: snapshot.active.map(|m| self.label(m).to_string()),
            pinned: snapshot.pinned.map(|m| self.label(m).to_string()),
            last_switch_unix_seconds: last_switch,
            last_switch_age_seconds: last_switch.map(|t| (now_unix - t).max(0.0)),
            masters,
            srv: self.srv.as_ref().map(|rx| srv_status(&rx.borrow(), now)),
            resources: Some(self.resources()),
            minion_notice: self
                .notice
                .phase(tokio::time::Instant::now())
                .map(|p| match p {
                    Phase::Closing => MinionNotice::Closing,
                    Phase::Refusing => MinionNotice::Refusing,
                }),
        }
    }
}

/// The SRV follower's state as `/status` shows it.
fn srv_status(state: &SrvState, now: SystemTime) -> SrvStatus {
    SrvStatus {
        record: state.record.clone(),
        last_refresh: state
            .last_refresh
            .map(|t| humantime::format_rfc3339_millis(t).to_string()),
        last_refresh_age_seconds: state
            .last_refresh
            .map(|t| now.duration_since(t).unwrap_or_default().as_secs_f64()),
        ttl_seconds: state.ttl.map(|t| t.as_secs()),
        targets: state.masters.len(),
        last_error: state.last_error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::master::MasterId;
    use crate::control::supervisor::Snapshot;
    use crate::ops::admin::testing::admin;

    #[test]
    fn readiness_needs_an_active_master_that_is_up() {
        let a = admin();
        let plane = a.plane();
        let snap = |active: Option<u16>, pinned: Option<u16>| Snapshot {
            plane: plane.clone(),
            active: active.map(MasterId),
            pinned: pinned.map(MasterId),
            order: (0..4).map(MasterId).collect(),
            drained: vec![false; 4],
        };
        assert!(a.readiness(&snap(None, None)).is_err());
        // Health unknown (never probed) is not up.
        let why = a
            .readiness(&snap(Some(1), Some(1)))
            .expect_err("pinned, unknown");
        assert!(why.contains("pinned but down"), "{why}");
        let report = a.report();
        assert!(!report.ready);
        assert_eq!(report.masters.len(), 0, "the default snapshot has no order");
    }

    #[test]
    fn a_full_session_cap_is_not_ready() {
        let a = admin();
        let plane = a.plane();
        let snap = Snapshot {
            plane,
            active: None,
            pinned: None,
            order: (0..4).map(MasterId).collect(),
            drained: vec![false; 4],
        };
        let held = a
            .sessions
            .clone()
            .try_acquire_many_owned(10)
            .expect("10 permits");
        let why = a.readiness(&snap).expect_err("cap full");
        assert!(why.contains("session cap is full"), "{why}");
        assert!(why.contains("all 10 of sidecar.max_sessions"), "{why}");
        drop(held);
        let why = a.readiness(&snap).expect_err("no master");
        assert!(!why.contains("session cap"), "{why}");
    }
}
