//! Who the masters are: typed identities and addresses, shared by every module.
//!
//! `config` builds these once at load; the rest of the sidecar only ever
//! handles a [`MasterId`] (the master's rank in the configured list) and looks
//! the static facts up in [`MasterSpec`]. No I/O, except asking the kernel
//! whether an address is this host's own ([`MasterSpec::loops_at`]).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::config::host;

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
    /// would reach on one of its ports, if any: the same address in any
    /// spelling (`::ffff:127.0.0.1` is 127.0.0.1), `0.0.0.0`/`::` (this
    /// host), or any of this host's own addresses behind a wildcard listener
    /// (the one place this looks at the host: [`host::is_own_address`]).
    pub fn loops_at(&self, ip: IpAddr, listeners: &[SocketAddr]) -> Option<SocketAddr> {
        listeners.iter().copied().find(|l| {
            (l.port() == self.publish_port || l.port() == self.ret_port)
                && reaches(unmapped(ip), unmapped(l.ip()))
        })
    }
}

/// Whether a connection to `ip` would arrive at a listener bound to
/// `listener` (both unmapped), on the same port.
fn reaches(ip: IpAddr, listener: IpAddr) -> bool {
    if ip == listener {
        return true;
    }
    // A connection to 0.0.0.0 or :: goes to this host's loopback.
    if ip.is_unspecified() {
        return listener.is_loopback() || listener.is_unspecified();
    }
    if !listener.is_unspecified() {
        return false;
    }
    // A wildcard listener takes every own address of its family; `::` takes
    // IPv4 too (Linux binds it dual-stack unless `bindv6only` is set).
    let family = matches!(
        (listener, ip),
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), _)
    );
    family && (ip.is_loopback() || host::is_own_address(ip))
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`, or the deprecated
/// `::a.b.c.d`) as the IPv4 address it reaches; anything else unchanged.
pub fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            // IPv4-compatible (RFC 4291 2.5.5.1): 96 zero bits, but not `::`
            // or `::1`, which are IPv6's own.
            let [a, b, c, d, e, f, ..] = v6.segments();
            if [a, b, c, d, e, f] == [0; 6] && !v6.is_unspecified() && !v6.is_loopback() {
                if let Some(v4) = v6.to_ipv4() {
                    return IpAddr::V4(v4);
                }
            }
            ip
        }
        IpAddr::V4(_) => ip,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn master(host: &str, publish: u16, ret: u16) -> MasterSpec {
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(host.into()),
        };
        MasterSpec {
            id: MasterId(0),
            label: label_for(&host, publish, ret, (4505, 4506)),
            host,
            publish_port: publish,
            ret_port: ret,
            srv: None,
        }
    }

    /// Every spelling of "the sidecar itself", by table: (master host,
    /// listener address, loops).
    #[test]
    fn a_self_loop_in_every_spelling() {
        let cases: &[(&str, &str, bool)] = &[
            ("127.0.0.1", "127.0.0.1", true),
            ("::ffff:127.0.0.1", "127.0.0.1", true),
            ("::ffff:7f00:1", "127.0.0.1", true),
            ("::127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "::ffff:127.0.0.1", true),
            ("0.0.0.0", "127.0.0.1", true),
            ("::", "127.0.0.1", true),
            ("::", "::1", true),
            ("localhost", "127.0.0.1", true),
            ("app.localhost.", "::1", true),
            // Wildcard listeners take loopback and the host's own addresses.
            ("127.0.0.7", "0.0.0.0", true),
            ("::ffff:127.0.0.7", "0.0.0.0", true),
            ("::1", "::", true),
            ("127.0.0.7", "::", true),
            ("::1", "0.0.0.0", false),
            // Not this host (documentation prefixes are never assigned here).
            ("203.0.113.7", "0.0.0.0", false),
            ("2001:db8::7", "::", false),
            ("127.0.0.2", "127.0.0.1", false),
            ("::ffff:127.0.0.2", "127.0.0.1", false),
            ("salt.example.net", "127.0.0.1", false),
        ];
        for (host, listener, loops) in cases {
            let listener: IpAddr = listener.parse().expect("listener");
            let listeners = [
                SocketAddr::new(listener, 4505),
                SocketAddr::new(listener, 14506),
            ];
            let m = master(host, 4505, 4506);
            assert_eq!(
                m.loops_to(&listeners).is_some(),
                *loops,
                "{host} -> {listener}"
            );
            // The same address on other ports is another service.
            let other = master(host, 5505, 5506);
            assert_eq!(other.loops_to(&listeners), None, "{host} on other ports");
        }
    }

    #[test]
    fn dns_answers_are_checked_in_every_spelling_too() {
        let m = master("salt.example.net", 4505, 4506);
        let listeners: [SocketAddr; 2] = [
            "127.0.0.1:4505".parse().unwrap(),
            "127.0.0.1:4506".parse().unwrap(),
        ];
        for ip in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "0.0.0.0",
            "::",
        ] {
            assert!(
                m.loops_at(ip.parse().unwrap(), &listeners).is_some(),
                "{ip}"
            );
        }
        assert!(m
            .loops_at("192.0.2.99".parse().unwrap(), &listeners)
            .is_none());
    }

    #[test]
    fn unmapped_keeps_ipv6_own_addresses() {
        for (ip, want) in [
            ("::ffff:10.1.2.3", "10.1.2.3"),
            ("::10.1.2.3", "10.1.2.3"),
            ("::1", "::1"),
            ("::", "::"),
            ("2001:db8::1", "2001:db8::1"),
            ("10.1.2.3", "10.1.2.3"),
        ] {
            assert_eq!(
                unmapped(ip.parse().unwrap()),
                want.parse::<IpAddr>().unwrap(),
                "{ip}"
            );
        }
    }
}
