//! Salt's other minion keys, with Salt's meaning: the health-check and
//! failback timers (`master_alive_interval`, `master_failback_interval`),
//! `random_reauth_delay`, the minion's `id` and its `transport`. (The
//! ports, `publish_port` and `master_port`, are plain port values:
//! `values::port_or`; `master_failback` is a plain boolean.)

use std::time::Duration;

use serde_saphyr::Spanned;

use super::{loc, quoted, Ctx};
use crate::config::{ConfigError, ProbeKind, DEFAULT_ALIVE_INTERVAL, DEFAULT_RANDOM_REAUTH_DELAY};

/// `master_alive_interval:`; missing, the default (with a warning).
pub(super) fn alive_interval(
    cx: &Ctx<'_>,
    raw: Option<&Spanned<u64>>,
    warnings: &mut Vec<String>,
) -> Result<Duration, ConfigError> {
    Ok(match raw {
        None => {
            warnings.push(format!(
                "`master_alive_interval` is missing: checking every master every {}s (Salt itself would silently never check)",
                DEFAULT_ALIVE_INTERVAL.as_secs()
            ));
            DEFAULT_ALIVE_INTERVAL
        }
        Some(s) if s.value == 0 => {
            return Err(cx.err(
                loc(s),
                "master_alive_interval",
                "must be at least 1 second; 0 would mean never checking",
            ));
        }
        Some(s) if s.value > 86_400 => {
            return Err(cx.err(
                loc(s),
                "master_alive_interval",
                "must be at most 86400 seconds (one day)",
            ));
        }
        Some(s) => Duration::from_secs(s.value),
    })
}

/// `master_failback_interval:`; missing, one alive interval.
pub(super) fn failback_interval(
    cx: &Ctx<'_>,
    raw: Option<&Spanned<u64>>,
    alive_interval: Duration,
) -> Result<Duration, ConfigError> {
    // Salt's default is 0; we wait one alive interval so a master that just
    // came back proves itself before a fleet moves onto it.
    Ok(match raw {
        None => alive_interval,
        Some(s) if s.value > 86_400 => {
            return Err(cx.err(
                loc(s),
                "master_failback_interval",
                "must be at most 86400 seconds (one day)",
            ));
        }
        Some(s) => Duration::from_secs(s.value),
    })
}

/// `random_reauth_delay:`.
pub(super) fn reauth_delay(
    cx: &Ctx<'_>,
    raw: Option<&Spanned<u64>>,
) -> Result<Duration, ConfigError> {
    Ok(match raw {
        None => DEFAULT_RANDOM_REAUTH_DELAY,
        Some(s) if s.value > 3_600 => {
            return Err(cx.err(
                loc(s),
                "random_reauth_delay",
                "must be at most 3600 seconds",
            ));
        }
        Some(s) => Duration::from_secs(s.value),
    })
}

/// `id:`; missing, the host name (as Salt does).
pub(super) fn minion_id(
    cx: &Ctx<'_>,
    raw: Option<&Spanned<String>>,
) -> Result<String, ConfigError> {
    Ok(match raw {
        Some(s) if s.value.trim().is_empty() => {
            return Err(cx.err(loc(s), "id", "must not be empty"))
        }
        Some(s) => s.value.trim().to_string(),
        None => gethostname::gethostname().to_string_lossy().into_owned(),
    })
}

/// `transport:`: the probe it implies, if given (`ping` for tcp).
pub(super) fn transport_probe(
    cx: &Ctx<'_>,
    raw: Option<&Spanned<String>>,
) -> Result<Option<ProbeKind>, ConfigError> {
    Ok(match raw {
        None => None,
        Some(s) => match s.value.trim() {
            "zeromq" => Some(ProbeKind::Zmtp),
            "tcp" => Some(ProbeKind::Ping),
            other => {
                return Err(cx.err(
                    loc(s),
                    "transport",
                    format!(
                        "{} is not a transport salt-sidecar forwards; expected `zeromq` or `tcp`",
                        quoted(other)
                    ),
                ))
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{ProbeKind, DEFAULT_ALIVE_INTERVAL, DEFAULT_RANDOM_REAUTH_DELAY};

    use super::super::testing::{assert_refused, load};

    const TWO: &str = "master: [a, b]\n";

    #[test]
    fn a_missing_alive_interval_is_the_default_with_a_warning() {
        let c = load(TWO);
        assert_eq!(c.alive_interval, DEFAULT_ALIVE_INTERVAL);
        assert_eq!(
            c.warnings,
            ["`master_alive_interval` is missing: checking every master every 30s (Salt itself would silently never check)"]
        );
    }

    #[test]
    fn the_alive_interval_is_one_second_to_one_day() {
        let alive = |v: &str| load(&format!("{TWO}master_alive_interval: {v}\n")).alive_interval;
        assert_eq!(alive("1"), Duration::from_secs(1));
        assert_eq!(alive("86400"), Duration::from_secs(86_400));
        assert_refused(
            &format!("{TWO}master_alive_interval: 0\n"),
            "t.yaml:2:24: master_alive_interval: must be at least 1 second; 0 would mean never checking",
        );
        assert_refused(
            &format!("{TWO}master_alive_interval: 86401\n"),
            "t.yaml:2:24: master_alive_interval: must be at most 86400 seconds (one day)",
        );
        assert_refused(
            &format!("{TWO}master_alive_interval: -1\n"),
            "t.yaml:2:24: master_alive_interval: invalid u64",
        );
    }

    #[test]
    fn failback_is_off_by_default_and_waits_one_alive_interval() {
        let c = load(&format!("{TWO}master_alive_interval: 7\n"));
        assert!(!c.failback);
        assert_eq!(c.failback_interval, Duration::from_secs(7));
        let c = load(&format!(
            "{TWO}master_alive_interval: 7\nmaster_failback: true\nmaster_failback_interval: 0\n"
        ));
        assert!(c.failback);
        assert_eq!(c.failback_interval, Duration::ZERO, "Salt's 0 is allowed");
        let c = load(&format!("{TWO}master_failback_interval: 86400\n"));
        assert_eq!(c.failback_interval, Duration::from_secs(86_400));
        assert_refused(
            &format!("{TWO}master_failback_interval: 86401\n"),
            "t.yaml:2:27: master_failback_interval: must be at most 86400 seconds (one day)",
        );
        assert_refused(
            &format!("{TWO}master_failback: yes please\n"),
            "t.yaml:2:18: master_failback: invalid boolean",
        );
    }

    #[test]
    fn the_reauth_delay_is_at_most_an_hour() {
        let delay = |v: &str| load(&format!("{TWO}random_reauth_delay: {v}\n")).reauth_delay;
        assert_eq!(load(TWO).reauth_delay, DEFAULT_RANDOM_REAUTH_DELAY);
        assert_eq!(delay("0"), Duration::ZERO);
        assert_eq!(delay("3600"), Duration::from_secs(3600));
        assert_refused(
            &format!("{TWO}random_reauth_delay: 3601\n"),
            "t.yaml:2:22: random_reauth_delay: must be at most 3600 seconds",
        );
    }

    #[test]
    fn the_id_is_as_written_or_the_host_name() {
        assert_eq!(
            load(&format!("{TWO}id: \" web-01 \"\n")).minion_id,
            "web-01"
        );
        assert_eq!(
            load(TWO).minion_id,
            gethostname::gethostname().to_string_lossy()
        );
        assert_refused(
            &format!("{TWO}id: \"  \"\n"),
            "t.yaml:2:5: id: must not be empty",
        );
    }

    #[test]
    fn the_transport_picks_the_default_probe() {
        assert_eq!(load(TWO).sidecar.probe, ProbeKind::Zmtp);
        assert_eq!(
            load(&format!("{TWO}transport: zeromq\n")).sidecar.probe,
            ProbeKind::Zmtp
        );
        assert_eq!(
            load(&format!("{TWO}transport: tcp\n")).sidecar.probe,
            ProbeKind::Ping
        );
        assert_refused(
            &format!("{TWO}transport: ws\n"),
            "t.yaml:2:12: transport: `ws` is not a transport salt-sidecar forwards; expected `zeromq` or `tcp`",
        );
    }
}
