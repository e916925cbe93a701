//! The live tunables: what a reload can change without new sockets.
//!
//! Plain data derived from a validated [`Config`]: health probing
//! ([`HealthSettings`]), the selection policy's knobs ([`Policy`]), timeouts
//! and upstream socket options ([`SocketOptions`]). Published by the app on a
//! `watch` channel that health, forwarding and the supervisor read; no I/O.

use std::time::Duration;

use crate::config::{Config, ProbeKind, PING_AFTER_OPEN};

/// Everything a reload can change live.
#[derive(Clone, Debug, PartialEq)]
pub struct Tunables {
    pub health: HealthSettings,
    pub policy: Policy,
    pub connect_timeout: Duration,
    pub drain_timeout: Duration,
    /// `sidecar.half_close_timeout`.
    pub half_close_timeout: Duration,
    pub socket_options: SocketOptions,
    /// `sidecar.move_sessions`: ZeroMQ sessions move on a switch.
    pub move_sessions: bool,
    /// `sidecar.salt_events`: see [`Tunables::shows_switches`].
    pub salt_events: bool,
}

impl Tunables {
    /// Sessions are followed and moved on a switch: `move_sessions` is on
    /// and the transport is ZeroMQ (`probe: zmtp`); a tcp-transport session
    /// is always reset.
    pub fn moves_sessions(&self) -> bool {
        self.move_sessions && self.health.kind == ProbeKind::Zmtp
    }

    /// The minion is made to notice switches and outages the way Salt's
    /// alive check sees them (`sidecar.salt_events`, on by default; ZeroMQ
    /// only: a tcp-transport minion sees its sessions reset and fires its
    /// events itself). See `data::forward::notice`.
    pub fn shows_switches(&self) -> bool {
        self.salt_events && self.health.kind == ProbeKind::Zmtp
    }

    pub fn from_config(c: &Config) -> Self {
        let sc = &c.sidecar;
        Tunables {
            health: HealthSettings {
                kind: sc.probe,
                interval: c.alive_interval,
                timeout: sc.connect_timeout,
                rise: sc.rise,
                fall: sc.fall,
                ret_answer_timeout: sc.ret_answer_timeout,
            },
            policy: Policy {
                failback: c.failback,
                failback_interval: c.failback_interval,
                reauth_delay: c.reauth_delay,
                recycle_base: Duration::from_secs(1).min(c.alive_interval),
                recycle_cap: c.alive_interval,
                // `ping`'s first verdict comes after a plain connect and
                // the hold before the first ping (control::health::PingGate).
                startup_grace: sc.connect_timeout
                    + Duration::from_millis(500)
                    + match sc.probe {
                        ProbeKind::Ping => PING_AFTER_OPEN,
                        ProbeKind::Zmtp | ProbeKind::Tcp => Duration::ZERO,
                    },
            },
            connect_timeout: sc.connect_timeout,
            drain_timeout: sc.drain_timeout,
            half_close_timeout: sc.half_close_timeout,
            move_sessions: sc.move_sessions,
            salt_events: sc.salt_events,
            socket_options: SocketOptions::for_health(c.alive_interval),
        }
    }
}

/// Probe settings, from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSettings {
    pub kind: ProbeKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// `sidecar.ret_answer_timeout`: a ret request unanswered this long makes
    /// its master suspect (transport tcp; `None`: off).
    pub ret_answer_timeout: Option<Duration>,
}

/// Policy knobs, from the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub failback: bool,
    pub failback_interval: Duration,
    pub reauth_delay: Duration,
    /// First step of the all-down re-probe backoff.
    pub recycle_base: Duration,
    /// Cap of the all-down re-probe backoff (the alive interval).
    pub recycle_cap: Duration,
    /// How long to wait at start for better-ranked masters' first probe.
    pub startup_grace: Duration,
}

/// Keepalive settings for upstream sockets (no user timeout: see `net`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    /// Idle time before the first keepalive probe.
    pub keepalive_idle: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_count: u32,
}

impl SocketOptions {
    /// Derived from the health settings: an idle flow to a dead peer is
    /// given up on (keepalive) about when the health checks would call it
    /// down.
    pub fn for_health(alive_interval: Duration) -> Self {
        let keepalive_interval =
            (alive_interval / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
        SocketOptions {
            keepalive_idle: alive_interval.clamp(Duration::from_secs(1), Duration::from_secs(300)),
            keepalive_interval,
            keepalive_count: 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn tunables_come_from_the_config() {
        let c = crate::config::parse(
            Path::new("t.yaml"),
            "master: [127.0.0.2, 127.0.0.3]\nid: m\nmaster_alive_interval: 5\nmaster_failback: true\nrandom_reauth_delay: 1\nsidecar:\n  rise: 3\n  drain_timeout: 5s",
        )
        .expect("valid");
        let t = Tunables::from_config(&c);
        assert_eq!(
            (t.health.rise, t.drain_timeout, t.policy.reauth_delay),
            (3, Duration::from_secs(5), Duration::from_secs(1))
        );
        assert!(t.policy.failback);
    }
}
