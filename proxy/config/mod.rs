//! Layer 1, the bottom: the configuration file and the words every other
//! layer speaks. Imports nothing else of the crate.
//!
//! Salt's own minion keys plus a `sidecar:` section: [`load()`] reads YAML into
//! raw serde structs (`raw`, unknown keys rejected), then `validate` (one
//! function per section) turns them into the typed [`Config`] the rest of the
//! sidecar uses. Every error carries the file, line and key, and nothing
//! after this module parses a string. Also here: who the masters are
//! ([`master`]) and the live tunables a reload can change ([`settings`]).
//! No I/O except reading the file.

pub mod host;
mod load;
pub mod master;
mod raw;
pub mod settings;
mod validate;
mod yaml;

pub(crate) use load::yaml_message;
pub use load::{load, parse, MAX_CONFIG_BYTES};
pub(crate) use raw::OneOrList;
use validate::one_line;
pub use validate::{parse_host_port, quoted};

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::config::master::MasterSpec;

/// Salt's default `publish_port`.
pub const DEFAULT_PUBLISH_PORT: u16 = 4505;
/// Salt's default `master_port` (the ret port).
pub const DEFAULT_RET_PORT: u16 = 4506;
/// Used when `master_alive_interval` is missing (Salt would then never check).
pub const DEFAULT_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Lower bound of the default `sidecar.ret_answer_timeout` (one alive
/// interval, but never less than this) with `transport: tcp`, whose
/// masters answer a `ping` before they are called up.
pub const MIN_DEFAULT_RET_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// The same with ZeroMQ (`probe: zmtp`), whose masters are called up on
/// their handshakes: a real Salt 3008 master on a loaded 2-core box (3
/// workers, load 10) left a new minion's requests and a 2 s `ping`
/// unanswered for over 3 s while its workers loaded their modules, 5–10 s
/// after its ports opened; a minion whose request is lost in a false
/// failover waits Salt's 60 s. Salt's own retry timers are 5–10 s
/// (`return_retry_timer`, `return_retry_timer_max`).
pub const MIN_DEFAULT_RET_ANSWER_TIMEOUT_ZEROMQ: Duration = Duration::from_secs(10);
/// Default `sidecar.half_close_timeout`. A master or minion that is alive
/// closes its half within milliseconds of the other's FIN (libzmq and
/// Salt's tcp transport close a connection whose peer has gone); one that
/// never reads never does, and would hold the session's slot for ever.
pub const DEFAULT_HALF_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Salt's default `random_reauth_delay`.
pub const DEFAULT_RANDOM_REAUTH_DELAY: Duration = Duration::from_secs(10);
/// Default admin endpoint.
pub const DEFAULT_ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);

/// How long a master's ret port must have been connectable before it gets
/// `ping` probes (`control::health::PingGate`): a Salt 3008 tcp-transport
/// master connects its request router to its workers on the first request,
/// and a request that comes before its workers listen (measured: up to
/// ~0.15 s after the ret port opens) can wedge it. Short, as it delays the
/// first verdict at start-up (the next round comes when the hold ends, not an
/// interval later).
pub const PING_AFTER_OPEN: Duration = Duration::from_secs(1);

/// A master's first seconds after it was called up on its handshakes
/// (`probe: zmtp`; `probe: ping` calls none up before it answered), during
/// which an unanswered `ping` does not confirm a suspicion (the suspicion is
/// kept and pinged again each round): a Salt master that has just started
/// completes ZMTP handshakes before its workers answer, and a minion sent to
/// it at once (a failback, the sidecar's start) would otherwise take it for
/// a mute one, fail over and back, and wait Salt's timeout for nothing. A
/// master still silent after it is confirmed as usual.
pub const WARM_UP: Duration = Duration::from_secs(10);

/// The least time the `ping` that settles a suspicion is given (more if
/// `connect_timeout` is longer): a busy master answers it late, a mute one
/// never. Measured: a real Salt 3008 master on a loaded 2-core box left a
/// minion request and a 1 s ping unanswered while its workers warmed up.
/// Within the "mute master left within `ret_answer_timeout` + 3 s" bar.
pub const CONFIRM_PING_TIMEOUT: Duration = Duration::from_millis(1500);

/// How a master's health is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// Read the ZMTP greeting and READY, check the socket type (transport zeromq).
    Zmtp,
    /// A plain TCP connect (transport tcp, opt-in: a ZMTP greeting would
    /// make it log a traceback; a hung master's kernel still accepts it).
    Tcp,
    /// Transport tcp (the default there): a connect on the publish port and
    /// Salt's clear `ping` request on the ret port, which a live master
    /// answers at once and a hung one (whose kernel still accepts) never does.
    /// Not in a master's first seconds (`control::health::PingGate`).
    Ping,
}

impl ProbeKind {
    /// The Salt transport the probe implies: `zmtp` is ZeroMQ's, the others
    /// are for `transport: tcp`.
    pub fn transport(self) -> Transport {
        match self {
            ProbeKind::Zmtp => Transport::Zeromq,
            ProbeKind::Tcp | ProbeKind::Ping => Transport::Tcp,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Zmtp => "zmtp",
            ProbeKind::Tcp => "tcp",
            ProbeKind::Ping => "ping",
        }
    }
}

/// Salt's `transport`: how a master's ports speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// ZMTP 3 (ZeroMQ): PUB/SUB on publish, ROUTER/REQ on ret.
    Zeromq,
    /// Salt's own msgpack framing over TCP.
    Tcp,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Zeromq, Transport::Tcp];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Zeromq => "zeromq",
            Transport::Tcp => "tcp",
        }
    }
}

/// Salt's `master_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MasterType {
    Failover,
    Str,
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file this came from (for messages and reloads).
    pub source: PathBuf,
    /// Where the masters come from: the `master:` list, or DNS SRV.
    pub master_source: MasterSource,
    pub master_type: MasterType,
    pub alive_interval: Duration,
    pub failback: bool,
    pub failback_interval: Duration,
    pub reauth_delay: Duration,
    pub shuffle: bool,
    /// The minion id (for shuffle and jitter seeds).
    pub minion_id: String,
    pub sidecar: SidecarConfig,
    /// Things worth a warning at start-up (e.g. a defaulted alive interval).
    pub warnings: Vec<String>,
    /// Things worth one info line at start-up (e.g. a list taken as failover).
    pub notes: Vec<String>,
}

/// Where the master list comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterSource {
    /// `master:`, in configured order; `masters[i].id == MasterId(i)`.
    List(Vec<MasterSpec>),
    /// `sidecar.master_srv`: the masters are the record's targets, found
    /// at run time (`control::srv`) and applied like a reloaded list.
    Srv(SrvSource),
}

/// `sidecar.master_srv`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvSource {
    /// The SRV record's name, lower case, e.g. `_salt._tcp.example.net`.
    pub name: String,
    /// Every target's publish port (`publish_port`); its ret port is the
    /// record's port.
    pub publish_port: u16,
}

// === impl Config ===

impl Config {
    /// The masters listed in the file, in configured order; empty with
    /// `sidecar.master_srv` (the running list then comes from DNS).
    pub fn masters(&self) -> &[MasterSpec] {
        match &self.master_source {
            MasterSource::List(masters) => masters,
            MasterSource::Srv(_) => &[],
        }
    }

    /// The SRV record the masters come from, if any.
    pub fn srv(&self) -> Option<&SrvSource> {
        match &self.master_source {
            MasterSource::Srv(srv) => Some(srv),
            MasterSource::List(_) => None,
        }
    }
}

/// The `sidecar:` section, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarConfig {
    pub listen_publish: SocketAddr,
    pub listen_ret: SocketAddr,
    pub admin: SocketAddr,
    /// `admin` may be a non-loopback address (it serves `/status` and the
    /// admin API without authentication).
    pub admin_allow_remote: bool,
    pub probe: ProbeKind,
    pub rise: u32,
    pub fall: u32,
    pub connect_timeout: Duration,
    pub drain_timeout: Duration,
    /// `sidecar.half_close_timeout`: how long a session may stay half
    /// closed (one side sent its FIN, the other has not) with nothing
    /// moving before both sides are closed.
    pub half_close_timeout: Duration,
    /// `sidecar.ret_answer_timeout`: how long a minion's request on a ret
    /// session may go unanswered before its master is suspected and
    /// re-probed with Salt's `ping` (passive hung-master detection, both
    /// transports); `None` when off (set to 0).
    pub ret_answer_timeout: Option<Duration>,
    /// ZeroMQ sessions move to the new master on a switch instead of being
    /// cut (default true; `false` restores the 0.1 behaviour, a reset).
    pub move_sessions: bool,
    /// `sidecar.salt_events`: the minion notices switches and outages as
    /// Salt's alive check sees them (default true; `data::forward::notice`).
    pub salt_events: bool,
    /// The minion listeners may be non-loopback addresses (an open relay to
    /// the masters for anyone who can reach them).
    pub listen_allow_remote: bool,
    /// `sidecar.max_sessions` as configured; the running cap also fits the
    /// open-file limit (see `limits::Budget`).
    pub max_sessions: Option<u32>,
    /// The admin commands' Unix socket.
    pub admin_socket: AdminSocket,
}

/// Where and with which permissions the admin Unix socket is created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSocket {
    pub path: PathBuf,
    /// File mode bits (default 0660).
    pub mode: u32,
    /// Group to give the socket, if any (found in /etc/group at load).
    pub group: Option<SocketGroup>,
}

/// `sidecar.admin_socket_group`: as written, and its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketGroup {
    pub name: String,
    pub gid: u32,
}

/// The longest admin socket path, in bytes: `sun_path` has 108, one for
/// the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// The most masters a config may list (an SRV record's targets are capped
/// lower, `control::srv::MAX_TARGETS`): each one is probed and has its own
/// metric series, so memory and `/metrics` stay small.
pub const MAX_MASTERS: usize = 64;

/// Default path of the admin socket (systemd's `RuntimeDirectory=salt-sidecar`).
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/salt-sidecar/admin.sock";

/// A configuration error: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<u32>,
    pub column: Option<u32>,
    /// Dotted key path, e.g. `sidecar.rise` or `master[1]`.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    /// An error about the file as a whole (it cannot be read, or read in
    /// time): no line, column or key.
    pub fn whole_file(file: &std::path::Path, message: String) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            column: None,
            key: String::new(),
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if self.key.is_empty() {
            write!(f, ": {}", one_line(&self.message))
        } else {
            write!(f, ": {}: {}", one_line(&self.key), one_line(&self.message))
        }
    }
}
