//! The `/status` document's schema, shared by the admin server (which
//! writes it) and its clients (`salt-sidecar status`, `enroll`, which read
//! it). Plain serde data: no I/O, no state.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What `/status` returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The sidecar's version.
    pub version: String,
    pub minion_id: String,
    /// Whether `/readyz` answers 200: a master is selected and up.
    pub ready: bool,
    /// One line saying why (not) ready.
    pub ready_reason: String,
    /// Label of the master the minion is routed to.
    pub active: Option<String>,
    /// Label of the master pinned by the admin API.
    pub pinned: Option<String>,
    /// Unix time of the last switch (`None`: no switch since start).
    pub last_switch_unix_seconds: Option<f64>,
    /// Seconds since the last switch, measured by the sidecar.
    pub last_switch_age_seconds: Option<f64>,
    /// Every configured master, in this minion's preference order.
    pub masters: Vec<MasterStatus>,
    /// The SRV record the masters come from (`sidecar.master_srv`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srv: Option<SrvStatus>,
    /// The sidecar's own budget and exhaustion (absent from older sidecars).
    #[serde(default)]
    pub resources: Option<ResourceStatus>,
    /// Where the minion is in noticing the last switch (`salt_events`):
    /// `None` once it has (or with nothing to notice).
    #[serde(default)]
    pub minion_notice: Option<MinionNotice>,
}

/// Where the minion is in noticing a switch (`sidecar.salt_events`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MinionNotice {
    /// Its publish session, moved at the switch, is to be closed at its
    /// first quiet moment (2 s without a publication): a job published now
    /// may meet the close.
    Closing,
    /// Its publish connections are refused until it signs in again (one
    /// alive interval + 2 s at most): it hears no publication.
    Refusing,
}

/// The SRV record the masters come from, and how fresh its answer is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SrvStatus {
    /// The record's name.
    pub record: String,
    /// RFC 3339 time of the last good answer (`None`: none yet).
    pub last_refresh: Option<String>,
    /// Seconds since then, measured by the sidecar.
    pub last_refresh_age_seconds: Option<f64>,
    /// That answer's TTL, as served (the sidecar asks again after it,
    /// clamped to 5 s … 5 min).
    pub ttl_seconds: Option<u64>,
    /// Targets in the last good answer (the masters).
    pub targets: usize,
    /// Why the last lookup failed, while it does (the last good masters
    /// stay in use).
    pub last_error: Option<String>,
}

/// The resource budget and the sidecar's own exhaustion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceStatus {
    /// The open-file limit (soft RLIMIT_NOFILE) the sidecar runs with.
    pub fd_limit: u64,
    /// Concurrent minion connections allowed (`sidecar.max_sessions`, fitted).
    pub max_sessions: usize,
    /// Minion connections open now (proxied, or held waiting for a master).
    pub connections_open: usize,
    /// Times the sidecar ran out of a resource since start.
    pub resource_errors: u64,
    /// Connections closed at accept over a cap since start.
    pub connections_refused: u64,
    pub last_error: Option<LastResourceError>,
}

/// The last time the sidecar ran out of something.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastResourceError {
    /// accept, connect, probe or admin.
    pub op: String,
    /// emfile, enfile, enobufs or enomem.
    pub kind: String,
    pub what: String,
    pub age_seconds: f64,
}

/// One master in `/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MasterStatus {
    /// Its index in the configured `master:` list (`?master=ID` accepts it).
    pub id: u16,
    /// Its position in this minion's preference order (0 = preferred).
    pub rank: usize,
    /// Its label, as in metrics and logs (`?master=LABEL` accepts it).
    pub master: String,
    pub host: String,
    pub publish_port: u16,
    pub ret_port: u16,
    /// Its SRV priority (lower is preferred), for a master from `master_srv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
    /// Its SRV weight (its share of the minions within its priority).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
    /// Current addresses (a DNS name's last good answer; empty: unresolved).
    pub addresses: Vec<IpAddr>,
    pub health: HealthState,
    /// RFC 3339 time of the last probe.
    pub last_probe: Option<String>,
    /// Seconds since the last probe, measured by the sidecar.
    pub last_probe_age_seconds: Option<f64>,
    /// The last probe's outcome: `probes ok`, or why not.
    pub last_result: Option<String>,
    pub active: bool,
    pub pinned: bool,
    pub drained: bool,
    /// Open proxied sessions to this master.
    pub sessions: SessionCounts,
}

/// Health after rise/fall hysteresis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Up,
    Down,
    /// Not probed yet.
    Unknown,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Up => "up",
            HealthState::Down => "down",
            HealthState::Unknown => "unknown",
        }
    }
}

/// Open sessions by port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCounts {
    pub publish: i64,
    pub ret: i64,
}
