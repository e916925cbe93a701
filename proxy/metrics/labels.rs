//! The label values of the families in [`Metrics`](super::Metrics): one
//! enum per label, each with `as_str` (and `ALL` where every series is
//! created up front), so no string is built on the data path.

/// Label value for "no master" in `switches_total{from,to}`.
pub const NONE: &str = "none";

/// Why a probe failed, or `ok` (the `result` label of `health_checks_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckResult {
    Ok,
    Refused,
    Timeout,
    Reset,
    /// The peer answered, but not as a master of the expected kind.
    Protocol,
    /// The master's name has no address (yet).
    Unresolved,
    Other,
}

impl CheckResult {
    pub const ALL: [CheckResult; 7] = [
        CheckResult::Ok,
        CheckResult::Refused,
        CheckResult::Timeout,
        CheckResult::Reset,
        CheckResult::Protocol,
        CheckResult::Unresolved,
        CheckResult::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::Ok => "ok",
            CheckResult::Refused => "refused",
            CheckResult::Timeout => "timeout",
            CheckResult::Reset => "reset",
            CheckResult::Protocol => "protocol",
            CheckResult::Unresolved => "unresolved",
            CheckResult::Other => "other",
        }
    }
}

/// Why an upstream connect failed (the `kind` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectErrorKind {
    Refused,
    Timeout,
    Unreachable,
    Unresolved,
    Other,
}

impl ConnectErrorKind {
    pub const ALL: [ConnectErrorKind; 5] = [
        ConnectErrorKind::Refused,
        ConnectErrorKind::Timeout,
        ConnectErrorKind::Unreachable,
        ConnectErrorKind::Unresolved,
        ConnectErrorKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectErrorKind::Refused => "refused",
            ConnectErrorKind::Timeout => "timeout",
            ConnectErrorKind::Unreachable => "unreachable",
            ConnectErrorKind::Unresolved => "unresolved",
            ConnectErrorKind::Other => "other",
        }
    }
}

/// The outcome of one lookup of `sidecar.master_srv` (the `result` label of
/// `srv_lookups_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrvLookupResult {
    /// An answer with at least one target.
    Success,
    /// NXDOMAIN, no SRV record, or only the "no service" target `.`.
    Empty,
    /// SERVFAIL, a timeout, or no resolver.
    Failure,
}

impl SrvLookupResult {
    pub const ALL: [SrvLookupResult; 3] = [
        SrvLookupResult::Success,
        SrvLookupResult::Empty,
        SrvLookupResult::Failure,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SrvLookupResult::Success => "success",
            SrvLookupResult::Empty => "empty",
            SrvLookupResult::Failure => "failure",
        }
    }
}

/// Direction of bytes, seen from the sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Minion → master.
    ToMaster,
    /// Master → minion.
    ToMinion,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ToMaster => "to_master",
            Direction::ToMinion => "to_minion",
        }
    }
}

/// What a switch (or a lost master) did to one minion session (the `how`
/// label of `session_moves_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveHow {
    /// Moved to the new master; the minion saw no disconnect.
    Preserved,
    /// Closed (RST on failover, drained on a graceful switch).
    Reset,
}

impl MoveHow {
    pub const ALL: [MoveHow; 2] = [MoveHow::Preserved, MoveHow::Reset];

    pub fn as_str(self) -> &'static str {
        match self {
            MoveHow::Preserved => "preserved",
            MoveHow::Reset => "reset",
        }
    }
}

/// Why the sidecar closed or refused a minion connection so that the
/// minion notices its master is gone (the `reason` label of
/// `minion_reconnects_asked_total`; `data::forward::notice`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeReason {
    /// Every master is down.
    AllDown,
    /// The session moved to another master.
    Switch,
}

impl NoticeReason {
    pub const ALL: [NoticeReason; 2] = [NoticeReason::AllDown, NoticeReason::Switch];

    pub fn as_str(self) -> &'static str {
        match self {
            NoticeReason::AllDown => "all_down",
            NoticeReason::Switch => "switch",
        }
    }
}

/// How a sign-in after a switch was let through (the `outcome` label of
/// `sign_ins_paced_total`; `control::pace`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaceOutcome {
    /// The new master answered the first ask in time.
    AtOnce,
    /// After one or more slow answers, before the bound.
    Paced,
    /// Past the bound (R/2..R after the switch), at the first answer
    /// (within `pace::LATE_TARGET`): the master was still behind at R.
    Late,
    /// `pace::HOLD_PAST_BOUND` past the bound, whatever the answers.
    Bound,
}

impl PaceOutcome {
    pub const ALL: [PaceOutcome; 4] = [
        PaceOutcome::AtOnce,
        PaceOutcome::Paced,
        PaceOutcome::Late,
        PaceOutcome::Bound,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaceOutcome::AtOnce => "at_once",
            PaceOutcome::Paced => "paced",
            PaceOutcome::Late => "late",
            PaceOutcome::Bound => "bound",
        }
    }
}

/// How one pacing ask was answered (the `result` label of
/// `sign_in_pace_asks_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaceAsk {
    Fast,
    Slow,
    Unanswered,
}

impl PaceAsk {
    pub const ALL: [PaceAsk; 3] = [PaceAsk::Fast, PaceAsk::Slow, PaceAsk::Unanswered];

    pub fn as_str(self) -> &'static str {
        match self {
            PaceAsk::Fast => "fast",
            PaceAsk::Slow => "slow",
            PaceAsk::Unanswered => "unanswered",
        }
    }
}

/// How a passive suspicion of a master ended (the `outcome` label of
/// `passive_suspicions_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuspicionOutcome {
    /// The re-probe got no answer either: the master is down.
    Confirmed,
    /// The re-probe was answered: slow, not hung; no failover.
    Cleared,
}

impl SuspicionOutcome {
    pub const ALL: [SuspicionOutcome; 2] = [SuspicionOutcome::Confirmed, SuspicionOutcome::Cleared];

    pub fn as_str(self) -> &'static str {
        match self {
            SuspicionOutcome::Confirmed => "confirmed",
            SuspicionOutcome::Cleared => "cleared",
        }
    }
}

/// How a health check of a master was made (the `kind` label of
/// `health_evidence_total`): what it cost the master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// Heard on a live minion session lately: no check at all.
    Passive,
    /// A ZMTP PING on a live minion session (answered from libzmq's I/O
    /// thread: no connection, no handshake).
    Ping,
    /// A probe connection (`sidecar.probe`), as counted in
    /// `health_checks_total`.
    Probe,
    /// Not checked this round: its other port got the PING (the ports take
    /// turns while both answer).
    Turn,
    /// A probe of a standby right before a switch to it.
    OnDemand,
}

impl Evidence {
    pub const ALL: [Evidence; 5] = [
        Evidence::Passive,
        Evidence::Ping,
        Evidence::Turn,
        Evidence::Probe,
        Evidence::OnDemand,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::Passive => "passive",
            Evidence::Ping => "ping",
            Evidence::Probe => "probe",
            Evidence::OnDemand => "on_demand",
            Evidence::Turn => "turn",
        }
    }
}
