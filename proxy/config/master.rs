//! Who the masters are: typed identities and addresses, shared by every module.
//!
//! `config` builds these once at load; the rest of the sidecar only ever
//! handles a [`MasterId`] (the master's rank in the configured list) and looks
//! the static facts up in [`MasterSpec`]. Nothing here does I/O.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A master's rank in the configured `master:` list (0 = first), or in
/// the list an SRV record's answer makes (see `control::srv`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MasterId(pub u16);

impl MasterId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for MasterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The two TCP ports a minion opens to its master.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Port {
    /// 4505: the master publishes jobs (ZeroMQ PUB, or Salt `tcp` transport).
    Publish,
    /// 4506: auth, returns, pillar and file requests (ZeroMQ ROUTER, or `tcp`).
    Ret,
}

impl Port {
    pub const ALL: [Port; 2] = [Port::Publish, Port::Ret];

    /// Metric label value and log word.
    pub fn as_str(self) -> &'static str {
        match self {
            Port::Publish => "publish",
            Port::Ret => "ret",
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a master lives: a literal address, or a DNS name re-resolved per TTL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// One configured master, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterSpec {
    pub id: MasterId,
    pub host: Host,
    pub publish_port: u16,
    pub ret_port: u16,
    /// Human name used in logs, metrics (`master` label) and the admin API:
    /// `host` when both ports are the defaults, else `host:ret` or
    /// `host:ret/publish`.
    pub label: String,
    /// Its SRV priority and weight, for a master found by
    /// `sidecar.master_srv` (`None` for one listed under `master:`).
    pub srv: Option<SrvRank>,
}

/// An SRV record's preference for its target (RFC 2782): lower `priority`
/// first; within one priority, a share proportional to `weight`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SrvRank {
    pub priority: u16,
    pub weight: u16,
}

impl MasterSpec {
    pub fn port(&self, port: Port) -> u16 {
        match port {
            Port::Publish => self.publish_port,
            Port::Ret => self.ret_port,
        }
    }

    /// The same master: same host and ports, whatever its rank or label.
    pub fn same_master(&self, other: &MasterSpec) -> bool {
        self.host == other.host
            && self.publish_port == other.publish_port
            && self.ret_port == other.ret_port
    }

    /// The listener of `listeners` this master's configured host would reach
    /// (a literal address, or `localhost`), if any: a self-loop.
    pub fn loops_to(&self, listeners: &[SocketAddr]) -> Option<SocketAddr> {
        let local: &[IpAddr] = match &self.host {
            Host::Ip(ip) => std::slice::from_ref(ip),
            Host::Name(name) if is_localhost(name) => &LOCALHOST,
            Host::Name(_) => &[],
        };
        local.iter().find_map(|ip| self.loops_at(*ip, listeners))
    }

    /// The listener of `listeners` that `ip` (an address of this master)
    /// would reach on one of its ports, if any.
    pub fn loops_at(&self, ip: IpAddr, listeners: &[SocketAddr]) -> Option<SocketAddr> {
        listeners.iter().copied().find(|l| {
            let same_ip = l.ip() == ip
                || (l.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified()))
                || (ip.is_unspecified() && l.ip().is_loopback());
            same_ip && (l.port() == self.publish_port || l.port() == self.ret_port)
        })
    }
}

/// `localhost` and its subdomains (RFC 6761) always mean this host.
fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

const LOCALHOST: [IpAddr; 2] = [
    IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
];

/// Builds the label for a master (see [`MasterSpec::label`]).
pub fn label_for(host: &Host, publish: u16, ret: u16, defaults: (u16, u16)) -> String {
    if (publish, ret) == defaults {
        host.to_string()
    } else if publish == defaults.0 {
        format!("{host}:{ret}")
    } else {
        format!("{host}:{ret}/{publish}")
    }
}
