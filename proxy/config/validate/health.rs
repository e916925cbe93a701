//! How masters are judged: `sidecar.probe` (checked against Salt's
//! `transport`), `rise` and `fall` (consecutive probes to change a verdict),
//! `connect_timeout`, and `ret_answer_timeout` (the passive check on ret
//! sessions, whose default depends on the transport and the alive interval).

use std::time::Duration;

use serde_saphyr::Spanned;

use super::values::{count_or, duration_or};
use super::{loc, quoted, Ctx};
use crate::config::raw::{DurationValue, RawSidecar};
use crate::config::{
    ConfigError, ProbeKind, MIN_DEFAULT_RET_ANSWER_TIMEOUT, MIN_DEFAULT_RET_ANSWER_TIMEOUT_ZEROMQ,
};

/// `rise`, `fall` and `connect_timeout`, validated.
pub(super) struct Counts {
    pub(super) rise: u32,
    pub(super) fall: u32,
    pub(super) connect_timeout: Duration,
}

impl RawSidecar {
    /// `probe`, checked against Salt's `transport`.
    pub(super) fn probe(
        &self,
        cx: &Ctx<'_>,
        transport_probe: Option<ProbeKind>,
    ) -> Result<ProbeKind, ConfigError> {
        Ok(match (&self.probe, transport_probe) {
            (None, t) => t.unwrap_or(ProbeKind::Zmtp),
            (Some(s), t) => {
                let p = match s.value.trim() {
                "zmtp" => ProbeKind::Zmtp,
                "tcp" => ProbeKind::Tcp,
                "ping" => ProbeKind::Ping,
                other => return Err(cx.err(loc(s), "sidecar.probe", format!("{} is not a probe; expected `zmtp` (transport zeromq), `ping` or `tcp` (transport tcp)", quoted(other)))),
            };
                if t == Some(ProbeKind::Ping) && p == ProbeKind::Zmtp {
                    return Err(cx.err(loc(s), "sidecar.probe", "`zmtp` contradicts `transport: tcp`: a tcp-transport master does not speak ZMTP (and logs a traceback for every probe); use `probe: ping` (or `tcp`)"));
                }
                if t != Some(ProbeKind::Ping) && p == ProbeKind::Ping {
                    return Err(cx.err(loc(s), "sidecar.probe", "`ping` sends Salt's tcp-transport request, which needs `transport: tcp` (a ZeroMQ master would never answer it); add `transport: tcp`, or use `probe: zmtp`"));
                }
                p
            }
        })
    }

    /// `rise`, `fall` (default 2 each) and `connect_timeout` (default 2 s).
    pub(super) fn counts(&self, cx: &Ctx<'_>) -> Result<Counts, ConfigError> {
        let rise = count_or(cx, self.rise.as_ref(), "sidecar.rise", 2)?;
        let fall = count_or(cx, self.fall.as_ref(), "sidecar.fall", 2)?;
        let connect_timeout = duration_or(
            cx,
            self.connect_timeout.as_ref(),
            "sidecar.connect_timeout",
            Duration::from_secs(2),
            Duration::from_millis(10),
            Duration::from_secs(300),
        )?;
        Ok(Counts {
            rise,
            fall,
            connect_timeout,
        })
    }
}

/// `sidecar.ret_answer_timeout`: passive hung-master detection on ret
/// sessions, on both transports (a stuck ZeroMQ master still completes
/// every ZMTP handshake in libzmq's I/O thread, so the `zmtp` probe alone
/// cannot see it). Default: one alive interval, at least
/// [`MIN_DEFAULT_RET_ANSWER_TIMEOUT`] with `transport: tcp` and
/// [`MIN_DEFAULT_RET_ANSWER_TIMEOUT_ZEROMQ`] with `probe: zmtp` (ZeroMQ
/// messages followed): wherever the sidecar knows what a request is and can
/// ask the master a Salt `ping`. Off by default with
/// `probe: tcp` on ZeroMQ (bytes not followed, and a master checked by a
/// plain connect may be no Salt master to ping); `0` turns it off.
pub(super) fn ret_answer_timeout(
    cx: &Ctx<'_>,
    raw: Option<&Spanned<DurationValue>>,
    alive_interval: Duration,
    transport_probe: Option<ProbeKind>,
    probe: ProbeKind,
) -> Result<Option<Duration>, ConfigError> {
    match raw {
        None if transport_probe == Some(ProbeKind::Ping) => {
            Ok(Some(alive_interval.max(MIN_DEFAULT_RET_ANSWER_TIMEOUT)))
        }
        None if probe == ProbeKind::Zmtp => Ok(Some(
            alive_interval.max(MIN_DEFAULT_RET_ANSWER_TIMEOUT_ZEROMQ),
        )),
        None => Ok(None),
        Some(s) if s.value.0.is_zero() => Ok(None),
        Some(_) => duration_or(
            cx,
            raw,
            "sidecar.ret_answer_timeout",
            Duration::ZERO,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )
        .map(Some),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::ProbeKind;

    use super::super::testing::{assert_refused, load, sidecar, with};

    #[test]
    fn the_health_defaults_are_zmtp_rise_2_fall_2_and_2s() {
        let c = load(&sidecar(""));
        assert_eq!(c.sidecar.probe, ProbeKind::Zmtp);
        assert_eq!((c.sidecar.rise, c.sidecar.fall), (2, 2));
        assert_eq!(c.sidecar.connect_timeout, Duration::from_secs(2));
        assert_eq!(
            c.sidecar.ret_answer_timeout,
            Some(Duration::from_secs(10)),
            "zmtp: one alive interval (5 s here), at least 10 s"
        );
    }

    #[test]
    fn the_probe_must_speak_the_transport() {
        let probe = |text: &str| load(&with(text)).sidecar.probe;
        assert_eq!(probe("sidecar:\n  probe: tcp\n"), ProbeKind::Tcp);
        assert_eq!(
            probe("transport: tcp\nsidecar:\n  probe: tcp\n"),
            ProbeKind::Tcp
        );
        assert_eq!(
            probe("transport: tcp\nsidecar:\n  probe: ping\n"),
            ProbeKind::Ping
        );
        assert_eq!(
            probe("transport: zeromq\nsidecar:\n  probe: zmtp\n"),
            ProbeKind::Zmtp
        );
        assert_refused(
            &with("transport: tcp\nsidecar:\n  probe: zmtp\n"),
            "t.yaml:5:10: sidecar.probe: `zmtp` contradicts `transport: tcp`",
        );
        assert_refused(
            &with("sidecar:\n  probe: ping\n"),
            "t.yaml:4:10: sidecar.probe: `ping` sends Salt's tcp-transport request, which needs `transport: tcp`",
        );
        assert_refused(
            &with("sidecar:\n  probe: http\n"),
            "t.yaml:4:10: sidecar.probe: `http` is not a probe; expected `zmtp` (transport zeromq), `ping` or `tcp` (transport tcp)",
        );
    }

    #[test]
    fn rise_and_fall_are_1_to_100() {
        let c = load(&sidecar("rise: 1\nfall: 100"));
        assert_eq!((c.sidecar.rise, c.sidecar.fall), (1, 100));
        assert_refused(
            &sidecar("rise: 0"),
            "t.yaml:4:9: sidecar.rise: must be between 1 and 100 consecutive probes",
        );
        assert_refused(
            &sidecar("fall: 101"),
            "t.yaml:4:9: sidecar.fall: must be between 1 and 100 consecutive probes",
        );
    }

    #[test]
    fn the_connect_timeout_is_10ms_to_5min_in_any_unit() {
        let timeout = |v: &str| {
            load(&sidecar(&format!("connect_timeout: {v}")))
                .sidecar
                .connect_timeout
        };
        assert_eq!(timeout("10ms"), Duration::from_millis(10));
        assert_eq!(timeout("0.5"), Duration::from_millis(500));
        assert_eq!(timeout("5m"), Duration::from_secs(300));
        assert_refused(
            &sidecar("connect_timeout: 9ms"),
            "t.yaml:4:20: sidecar.connect_timeout: 9ms is out of range [10ms, 5m]",
        );
        assert_refused(
            &sidecar("connect_timeout: 301"),
            "t.yaml:4:20: sidecar.connect_timeout: 5m 1s is out of range [10ms, 5m]",
        );
        assert_refused(
            &sidecar("connect_timeout: soon"),
            "t.yaml:4:20: sidecar.connect_timeout: `soon` is not a duration",
        );
    }

    #[test]
    fn the_ret_answer_timeout_follows_the_transport_unless_set() {
        let answer = |text: &str| load(text).sidecar.ret_answer_timeout;
        let tcp = "master: [a, b]\ntransport: tcp\n";
        assert_eq!(
            answer(&format!("{tcp}master_alive_interval: 5\n")),
            Some(Duration::from_secs(5)),
            "tcp: one alive interval"
        );
        assert_eq!(
            answer(&format!("{tcp}master_alive_interval: 1\n")),
            Some(Duration::from_secs(1)),
            "tcp: at least 1 s"
        );
        assert_eq!(
            answer(&format!("{tcp}sidecar:\n  ret_answer_timeout: 0\n")),
            None,
            "0 turns it off"
        );
        assert_eq!(
            answer("master: [a, b]\nmaster_alive_interval: 30\n"),
            Some(Duration::from_secs(30)),
            "zmtp: one alive interval"
        );
        assert_eq!(
            answer(&sidecar("probe: tcp")),
            None,
            "a plain connect on ZeroMQ: off unless set"
        );
        assert_eq!(
            answer(&sidecar("probe: tcp\nret_answer_timeout: 2s")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            answer(&sidecar("ret_answer_timeout: 100ms")),
            Some(Duration::from_millis(100)),
            "zeromq: as set"
        );
        assert_eq!(
            answer(&sidecar("ret_answer_timeout: 1h")),
            Some(Duration::from_secs(3600))
        );
        assert_refused(
            &sidecar("ret_answer_timeout: 10ms"),
            "t.yaml:4:23: sidecar.ret_answer_timeout: 10ms is out of range [100ms, 1h]",
        );
        assert_refused(
            &sidecar("ret_answer_timeout: 3601"),
            "t.yaml:4:23: sidecar.ret_answer_timeout: 1h 1s is out of range [100ms, 1h]",
        );
        assert_refused(
            &sidecar("ret_answer_timeout: whenever"),
            "t.yaml:4:23: sidecar.ret_answer_timeout: `whenever` is not a duration",
        );
    }
}
