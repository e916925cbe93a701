//! The facts about this host a config is checked against, so that
//! `check-config` and `run` refuse the same files: the groups in
//! `/etc/group` (for `sidecar.admin_socket_group`) and whether an address is
//! one of this host's own (a master there behind a wildcard listener is the
//! sidecar itself). The only I/O of `config` besides reading the file; no
//! packet is ever sent.

use std::net::{IpAddr, SocketAddr, UdpSocket};

/// A group's id: numeric, or looked up in /etc/group (no NSS: the shipped
/// binary is static).
pub fn group_id(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse() {
        return Some(gid);
    }
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == group).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// Whether `ip` is an address of this host: loopback, or an address the
/// kernel would route to itself. A connected UDP socket sends nothing; its
/// source address is the destination itself only when the destination is
/// local (the kernel's `local` routing table), whatever
/// `ip_nonlocal_bind` says.
pub fn is_own_address(ip: IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    let any: IpAddr = match ip {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    let Ok(socket) = UdpSocket::bind(SocketAddr::new(any, 0)) else {
        return false;
    };
    // Port 9 (discard): any port would do, nothing is sent.
    if socket.connect(SocketAddr::new(ip, 9)).is_err() {
        return false;
    }
    socket.local_addr().is_ok_and(|local| local.ip() == ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_resolve_by_number_or_name() {
        assert_eq!(group_id("0"), Some(0));
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-here"), None);
    }

    #[test]
    fn loopback_is_own_and_a_documentation_address_is_not() {
        assert!(is_own_address("127.0.0.1".parse().unwrap()));
        assert!(is_own_address("127.0.0.9".parse().unwrap()));
        assert!(is_own_address("::1".parse().unwrap()));
        // TEST-NET-3 and the IPv6 documentation prefix are never assigned
        // to this test host.
        assert!(!is_own_address("203.0.113.77".parse().unwrap()));
        assert!(!is_own_address("2001:db8::77".parse().unwrap()));
    }
}
