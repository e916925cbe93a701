//! The minion's side of the sidecar: `sidecar.listen`, `listen_publish`,
//! `listen_ret` (the two listeners the minion connects to, loopback unless
//! `listen_allow_remote`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::values::socket_or;
use super::{loc, quoted, Ctx};
use crate::config::raw::RawSidecar;
use crate::config::ConfigError;

impl RawSidecar {
    /// `listen`, `listen_publish`, `listen_ret`: the minion's two listeners.
    pub(super) fn listeners(
        &self,
        cx: &Ctx<'_>,
        publish_port: u16,
        ret_port: u16,
    ) -> Result<(SocketAddr, SocketAddr), ConfigError> {
        let listen_ip = match &self.listen {
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(s) => s
                .value
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map_err(|_| {
                    cx.err(
                        loc(s),
                        "sidecar.listen",
                        format!("{} is not an IP address (e.g. 127.0.0.1)", quoted(&s.value)),
                    )
                })?,
        };
        let listen_publish = socket_or(
            cx,
            self.listen_publish.as_ref(),
            "sidecar.listen_publish",
            SocketAddr::new(listen_ip, publish_port),
        )?;
        let listen_ret = socket_or(
            cx,
            self.listen_ret.as_ref(),
            "sidecar.listen_ret",
            SocketAddr::new(listen_ip, ret_port),
        )?;
        if listen_publish == listen_ret {
            return Err(cx.err(
            self.listen_ret.as_ref().or(self.listen_publish.as_ref()).map(|s| &s.referenced),
            "sidecar.listen_ret",
            format!("the publish and ret listeners are both {listen_ret}; the minion needs two distinct ports"),
        ));
        }
        Ok((listen_publish, listen_ret))
    }

    /// `listen_allow_remote`: a non-loopback minion listener is an open
    /// relay to the masters unless explicitly allowed.
    pub(super) fn listen_allow_remote(
        &self,
        cx: &Ctx<'_>,
        listen_publish: SocketAddr,
        listen_ret: SocketAddr,
    ) -> Result<bool, ConfigError> {
        let allowed = self.listen_allow_remote.as_ref().is_some_and(|s| s.value);
        for (addr, key, at) in [
            (
                listen_publish,
                "sidecar.listen_publish",
                self.listen_publish.as_ref(),
            ),
            (listen_ret, "sidecar.listen_ret", self.listen_ret.as_ref()),
        ] {
            if !addr.ip().is_loopback() && !allowed {
                let (key, at) = match at {
                    Some(s) => (key, Some(&s.referenced)),
                    None => (
                        "sidecar.listen",
                        self.listen.as_ref().map(|s| &s.referenced),
                    ),
                };
                return Err(cx.err(at, key, format!("{addr} is not a loopback address: anyone who can reach it could use the sidecar as a relay to your masters; the minion on this host connects over loopback (127.0.0.1). Set `listen_allow_remote: true` only if other hosts must connect through it")));
            }
        }
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::super::testing::{assert_refused, load, sidecar, with};

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("a socket address")
    }

    #[test]
    fn the_listeners_default_to_loopback_on_salts_ports() {
        let c = load(&with(""));
        assert_eq!(c.sidecar.listen_publish, addr("127.0.0.1:4505"));
        assert_eq!(c.sidecar.listen_ret, addr("127.0.0.1:4506"));
        assert!(!c.sidecar.listen_allow_remote);
        let c = load(&with("publish_port: 14505\nmaster_port: 14506\n"));
        assert_eq!(
            (c.sidecar.listen_publish, c.sidecar.listen_ret),
            (addr("127.0.0.1:14505"), addr("127.0.0.1:14506")),
            "<listen>:<publish_port> and <listen>:<master_port>"
        );
    }

    #[test]
    fn listen_sets_both_addresses_and_each_may_be_overridden() {
        let c = load(&sidecar("listen: 127.0.0.5"));
        assert_eq!(
            (c.sidecar.listen_publish, c.sidecar.listen_ret),
            (addr("127.0.0.5:4505"), addr("127.0.0.5:4506"))
        );
        let c = load(&sidecar("listen: \"[::1]\"\nlisten_ret: \"[::1]:14506\""));
        assert_eq!(
            (c.sidecar.listen_publish, c.sidecar.listen_ret),
            (addr("[::1]:4505"), addr("[::1]:14506"))
        );
    }

    #[test]
    fn a_listener_that_is_not_an_address_is_refused() {
        assert_refused(
            &sidecar("listen: localhost"),
            "t.yaml:4:11: sidecar.listen: `localhost` is not an IP address (e.g. 127.0.0.1)",
        );
        assert_refused(
            &sidecar("listen_publish: 127.0.0.1"),
            "t.yaml:4:19: sidecar.listen_publish: `127.0.0.1` is not an IP:port address (e.g. 127.0.0.1:4505 or [::1]:4505)",
        );
        assert_refused(
            &sidecar("listen_publish: 127.0.0.1:0"),
            "t.yaml:4:19: sidecar.listen_publish: port 0 would pick a random port the minion cannot know; give a port",
        );
    }

    #[test]
    fn the_two_listeners_must_differ() {
        assert_refused(
            &sidecar("listen_publish: 127.0.0.1:4505\nlisten_ret: 127.0.0.1:4505"),
            "t.yaml:5:15: sidecar.listen_ret: the publish and ret listeners are both 127.0.0.1:4505; the minion needs two distinct ports",
        );
        // Both from defaults: the ports are equal.
        assert_refused(
            &with("publish_port: 4506\nsidecar:\n  listen: 127.0.0.1\n"),
            "t.yaml: sidecar.listen_ret: the publish and ret listeners are both 127.0.0.1:4506",
        );
    }

    #[test]
    fn a_remote_listener_needs_listen_allow_remote() {
        assert_refused(
            &sidecar("listen: 0.0.0.0"),
            "t.yaml:4:11: sidecar.listen: 0.0.0.0:4505 is not a loopback address: anyone who can reach it could use the sidecar as a relay to your masters",
        );
        assert_refused(
            &sidecar("listen_ret: 192.0.2.7:4506"),
            "t.yaml:4:15: sidecar.listen_ret: 192.0.2.7:4506 is not a loopback address",
        );
        let c = load(&sidecar("listen: 0.0.0.0\nlisten_allow_remote: true"));
        assert_eq!(c.sidecar.listen_publish, addr("0.0.0.0:4505"));
        assert!(c.sidecar.listen_allow_remote);
    }
}
