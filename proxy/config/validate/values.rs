//! Checks of one value the sections share: a port, a count of consecutive
//! probes, a bounded duration, an `IP:port` address. Each takes the key it
//! is for, so its errors name it.

use std::net::SocketAddr;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::{loc, quoted, Ctx};
use crate::config::raw::DurationValue;
use crate::config::ConfigError;

pub(super) fn port_or(
    cx: &Ctx<'_>,
    v: Option<&Spanned<u16>>,
    key: &str,
    default: u16,
) -> Result<u16, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) if s.value == 0 => {
            Err(cx.err(loc(s), key, "port 0 is not a port a master can listen on"))
        }
        Some(s) => Ok(s.value),
    }
}

pub(super) fn count_or(
    cx: &Ctx<'_>,
    v: Option<&Spanned<u32>>,
    key: &str,
    default: u32,
) -> Result<u32, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) if s.value == 0 || s.value > 100 => {
            Err(cx.err(loc(s), key, "must be between 1 and 100 consecutive probes"))
        }
        Some(s) => Ok(s.value),
    }
}

pub(super) fn duration_or(
    cx: &Ctx<'_>,
    v: Option<&Spanned<DurationValue>>,
    key: &str,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) if s.value.0 < min || s.value.0 > max => Err(cx.err(
            loc(s),
            key,
            format!(
                "{} is out of range [{}, {}]",
                humantime::format_duration(s.value.0),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        )),
        Some(s) => Ok(s.value.0),
    }
}

pub(super) fn socket_or(
    cx: &Ctx<'_>,
    v: Option<&Spanned<String>>,
    key: &str,
    default: SocketAddr,
) -> Result<SocketAddr, ConfigError> {
    let Some(s) = v else { return Ok(default) };
    let addr: SocketAddr = s.value.trim().parse().map_err(|_| {
        cx.err(
            loc(s),
            key,
            format!(
                "{} is not an IP:port address (e.g. 127.0.0.1:4505 or [::1]:4505)",
                quoted(&s.value)
            ),
        )
    })?;
    if addr.port() == 0 {
        return Err(cx.err(
            loc(s),
            key,
            "port 0 would pick a random port the minion cannot know; give a port",
        ));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_refused, load, sidecar, with};

    #[test]
    fn a_port_is_1_to_65535() {
        let c = load(&with(
            "publish_port: 1\nmaster_port: 65535\nsidecar:\n  admin: 127.0.0.1:9\n",
        ));
        assert_eq!(c.masters()[0].publish_port, 1);
        assert_eq!(c.masters()[0].ret_port, 65535);
        assert_refused(
            &with("master_port: 0\n"),
            "t.yaml:3:14: master_port: port 0 is not a port a master can listen on",
        );
        assert_refused(
            &with("publish_port: 0\n"),
            "t.yaml:3:15: publish_port: port 0 is not a port a master can listen on",
        );
        assert_refused(
            &with("master_port: 65536\n"),
            "t.yaml:3:14: master_port: invalid u16",
        );
    }

    #[test]
    fn a_count_is_a_whole_number() {
        assert_refused(
            &sidecar("rise: 1.5"),
            "t.yaml:4:9: sidecar.rise: invalid u32",
        );
        assert_refused(
            &sidecar("fall: -1"),
            "t.yaml:4:9: sidecar.fall: invalid u32",
        );
    }

    #[test]
    fn a_duration_is_finite_and_not_negative() {
        assert_refused(
            &sidecar("connect_timeout: -0.5"),
            "t.yaml:4:20: sidecar.connect_timeout: a duration must be a finite, non-negative number of seconds",
        );
        assert_refused(
            &sidecar("connect_timeout: 1e400"),
            "t.yaml:4:20: sidecar.connect_timeout: non-finite float `1e400` rejected",
        );
        assert_refused(
            &sidecar("connect_timeout: 99999999999999999999d"),
            "t.yaml:4:20: sidecar.connect_timeout: `99999999999999999999d` is not a duration",
        );
    }

    #[test]
    fn an_address_takes_v4_or_bracketed_v6_with_a_port() {
        let c = load(&sidecar(
            "listen_publish: \"[::1]:4505\"\nlisten_ret: \" 127.0.0.1:4506 \"",
        ));
        assert_eq!(c.sidecar.listen_publish.to_string(), "[::1]:4505");
        assert_eq!(c.sidecar.listen_ret.to_string(), "127.0.0.1:4506");
        assert_refused(
            &sidecar("listen_ret: \"::1:4506\""),
            "t.yaml:4:15: sidecar.listen_ret: `::1:4506` is not an IP:port address (e.g. 127.0.0.1:4505 or [::1]:4505)",
        );
    }
}
