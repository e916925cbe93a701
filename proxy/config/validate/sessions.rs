//! The minion's sessions: how long they may drain (`sidecar.drain_timeout`)
//! or stay half closed (`half_close_timeout`), how many there may be
//! (`max_sessions`); `move_sessions` and `salt_events` are plain booleans.

use std::time::Duration;

use super::values::duration_or;
use super::{loc, Ctx};
use crate::config::raw::RawSidecar;
use crate::config::{ConfigError, DEFAULT_HALF_CLOSE_TIMEOUT};

impl RawSidecar {
    /// `drain_timeout` (default 60 s, up to a day) and `half_close_timeout`
    /// (default [`DEFAULT_HALF_CLOSE_TIMEOUT`], 100 ms to an hour).
    pub(super) fn session_timeouts(
        &self,
        cx: &Ctx<'_>,
    ) -> Result<(Duration, Duration), ConfigError> {
        let drain_timeout = duration_or(
            cx,
            self.drain_timeout.as_ref(),
            "sidecar.drain_timeout",
            Duration::from_secs(60),
            Duration::ZERO,
            Duration::from_secs(86_400),
        )?;
        let half_close_timeout = duration_or(
            cx,
            self.half_close_timeout.as_ref(),
            "sidecar.half_close_timeout",
            DEFAULT_HALF_CLOSE_TIMEOUT,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )?;
        Ok((drain_timeout, half_close_timeout))
    }

    /// `max_sessions`: the cap on minion connections (fitted to the
    /// open-file limit at start).
    pub(super) fn max_sessions(&self, cx: &Ctx<'_>) -> Result<Option<u32>, ConfigError> {
        match &self.max_sessions {
            None => Ok(None),
            Some(s) if s.value < 2 || s.value > 1_000_000 => Err(cx.err(
                loc(s),
                "sidecar.max_sessions",
                "must be between 2 and 1000000 (one minion needs 2: publish and ret)",
            )),
            Some(s) => Ok(Some(s.value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::DEFAULT_HALF_CLOSE_TIMEOUT;

    use super::super::testing::{assert_refused, load, sidecar};

    #[test]
    fn the_session_defaults() {
        let c = load(&sidecar(""));
        assert_eq!(c.sidecar.drain_timeout, Duration::from_secs(60));
        assert_eq!(c.sidecar.half_close_timeout, DEFAULT_HALF_CLOSE_TIMEOUT);
        assert_eq!(c.sidecar.half_close_timeout, Duration::from_secs(10));
        assert!(c.sidecar.move_sessions, "ZeroMQ sessions move by default");
        assert!(c.sidecar.salt_events, "Salt's events fire by default");
        assert_eq!(
            c.sidecar.max_sessions, None,
            "fitted to the open-file limit"
        );
    }

    #[test]
    fn the_drain_timeout_is_0_to_a_day() {
        let drain = |v: &str| {
            load(&sidecar(&format!("drain_timeout: {v}")))
                .sidecar
                .drain_timeout
        };
        assert_eq!(drain("0"), Duration::ZERO);
        assert_eq!(drain("2m"), Duration::from_secs(120));
        assert_eq!(drain("1day"), Duration::from_secs(86_400));
        assert_refused(
            &sidecar("drain_timeout: 86401"),
            "t.yaml:4:18: sidecar.drain_timeout: 1day 1s is out of range [0s, 1day]",
        );
        assert_refused(
            &sidecar("drain_timeout: -3"),
            "t.yaml:4:18: sidecar.drain_timeout: a duration cannot be negative",
        );
    }

    #[test]
    fn the_half_close_timeout_is_100ms_to_an_hour() {
        let half = |v: &str| {
            load(&sidecar(&format!("half_close_timeout: {v}")))
                .sidecar
                .half_close_timeout
        };
        assert_eq!(half("100ms"), Duration::from_millis(100));
        assert_eq!(half("3600"), Duration::from_secs(3600));
        assert_refused(
            &sidecar("half_close_timeout: 99ms"),
            "t.yaml:4:23: sidecar.half_close_timeout: 99ms is out of range [100ms, 1h]",
        );
    }

    #[test]
    fn move_sessions_and_salt_events_may_be_turned_off() {
        assert!(!load(&sidecar("move_sessions: false")).sidecar.move_sessions);
        assert!(!load(&sidecar("salt_events: false")).sidecar.salt_events);
        assert_refused(
            &sidecar("salt_events: sometimes"),
            "t.yaml:4:16: sidecar.salt_events: invalid boolean",
        );
    }

    #[test]
    fn max_sessions_is_2_to_a_million() {
        let max = |v: &str| {
            load(&sidecar(&format!("max_sessions: {v}")))
                .sidecar
                .max_sessions
        };
        assert_eq!(max("2"), Some(2));
        assert_eq!(max("1000000"), Some(1_000_000));
        assert_refused(
            &sidecar("max_sessions: 1"),
            "t.yaml:4:17: sidecar.max_sessions: must be between 2 and 1000000 (one minion needs 2: publish and ret)",
        );
        assert_refused(
            &sidecar("max_sessions: 1000001"),
            "t.yaml:4:17: sidecar.max_sessions: must be between 2 and 1000000",
        );
    }
}
