//! What each minion key becomes in the sidecar config: the master list (as
//! failover), the alive check (added where Salt would never check),
//! failback, jitter and shuffle, ports, `id` and `transport`, and the
//! `sidecar:` section with its defaults. Values keep Salt's meaning;
//! whether they are valid is `config::parse`'s to say (`convert` runs it).

use std::fmt::Write as _;

use serde_json::Value;
use serde_saphyr::Spanned;

use super::minion::{no_master, RawMinion};
use super::writer::{scalar_text, yaml_str, Kind, Writer};
use super::{MINION_MASTER, MOVED_KEYS};
use crate::config::{self, ConfigError, DEFAULT_ALIVE_INTERVAL};

impl Writer<'_> {
    pub(super) fn write(
        &mut self,
        raw: RawMinion,
        cached_id: Option<&str>,
    ) -> Result<(), ConfigError> {
        let present = |key: &str| match key {
            "master_type" => raw.master_type.is_some(),
            "master_failback" => raw.master_failback.is_some(),
            "master_failback_interval" => raw.master_failback_interval.is_some(),
            "master_shuffle" => raw.master_shuffle.is_some(),
            "random_master" => raw.random_master.is_some(),
            _ => false,
        };
        self.remove = MOVED_KEYS.into_iter().filter(|k| present(k)).collect();

        self.master(&raw)?;
        self.health_checks(&raw);
        self.failback(&raw);
        let tcp = self.ports_id_transport(&raw, cached_id);
        self.sidecar(tcp);
        Ok(())
    }

    /// `master` and `master_type`: the list in order, as failover.
    fn master(&mut self, raw: &RawMinion) -> Result<(), ConfigError> {
        let file = self.file.display().to_string();
        let Some(masters) = &raw.master else {
            return Err(no_master(self.file));
        };
        let master_at = masters.referenced;
        self.locations.push(("master".into(), master_at));
        let entries = &masters.value.0;
        if entries.is_empty() {
            return Err(self.err(
                &master_at,
                "master",
                "is an empty list; list the masters in order of preference".into(),
            ));
        }
        let several = entries.len() > 1;
        let master_type = match &raw.master_type {
            None => None,
            Some(s) => Some((s.value.as_str().map(str::trim).unwrap_or(""), s)),
        };
        match master_type {
            Some(("func", s)) => return Err(self.err(&s.referenced, "master_type", "`func` makes the minion call a module for its master; salt-sidecar needs the masters written out: list them under `master:`".into())),
            Some(("disable", s)) => return Err(self.err(&s.referenced, "master_type", "`disable` runs the minion without a master; there is nothing for salt-sidecar to fail over".into())),
            _ => {}
        }
        self.out.push('\n');
        self.comment(&format!(
            "Salt's minion keys, with Salt's meaning (from {file})."
        ));
        let hot = several && matches!(master_type, None | Some(("str", _)));
        if hot {
            let how = if master_type.is_none() {
                "without `master_type` (Salt's default `str`)"
            } else {
                "with `master_type: str`"
            };
            self.warn(format!("{file} lists several masters {how}: the minion was connected to all of them at once (hot multi-master). salt-sidecar forwards to one master at a time, so they become failover in this order: a job published from a master that is not the active one no longer reaches this minion."));
        }
        self.comment("Masters in order of preference; add more to fail over between them.");
        self.out.push_str("master:\n");
        for (i, entry) in entries.iter().enumerate() {
            let at = if entry.referenced.line() > 0 {
                entry.referenced
            } else {
                master_at
            };
            let key = format!("master[{i}]");
            let text = match &entry.value {
                Value::String(s) if !s.trim().is_empty() => s.trim(),
                other => {
                    return Err(self.err(
                        &at,
                        &key,
                        format!(
                            "{} is not a master address; write a host name or IP address",
                            config::quoted(&other.to_string())
                        ),
                    ))
                }
            };
            let _ = writeln!(self.out, "  - {}", yaml_str(text));
            self.locations.push((key, at));
        }
        self.master_type(master_type);
        Ok(())
    }

    /// `master_type`: always failover; what it was, in the comment.
    fn master_type(&mut self, master_type: Option<(&str, &Spanned<Value>)>) {
        match master_type {
            Some((t, s)) => {
                self.locations.push(("master_type".into(), s.referenced));
                let comment = if t == "failover" {
                    "one master at a time, in this order".to_string()
                } else {
                    format!(
                        "was {}: the sidecar always does failover",
                        config::quoted(t)
                    )
                };
                let value = if matches!(t, "failover" | "str") {
                    "failover".to_string()
                } else {
                    yaml_str(t) // config::parse names what is wrong with it
                };
                self.entry(&format!("master_type: {value}"), &comment);
            }
            None => self.entry(
                "master_type: failover",
                "one master at a time, in this order",
            ),
        }
    }

    /// `master_alive_interval`: copied, or added when Salt would never check.
    fn health_checks(&mut self, raw: &RawMinion) {
        let file = self.file.display().to_string();
        let alive = raw
            .master_alive_interval
            .as_ref()
            .filter(|s| !matches!(scalar_text(&s.value, Kind::Number).as_str(), "0"));
        match alive {
            Some(s) => {
                self.alive = scalar_text(&s.value, Kind::Number);
                self.copy(
                    "master_alive_interval",
                    s,
                    Kind::Number,
                    "seconds between health checks of every master",
                )
            }
            None => {
                let secs = DEFAULT_ALIVE_INTERVAL.as_secs();
                self.alive = secs.to_string();
                self.warn(format!("{file} has no `master_alive_interval` (or 0): Salt does not schedule its alive check without it, so a failover minion never notices a dead master. salt-sidecar checks every master every {secs}s."));
                if let Some(s) = &raw.master_alive_interval {
                    self.locations
                        .push(("master_alive_interval".into(), s.referenced));
                }
                self.entry(
                    &format!("master_alive_interval: {secs}"),
                    "seconds between health checks (added)",
                );
            }
        }
    }

    /// Failback, reconnect jitter and shuffle.
    fn failback(&mut self, raw: &RawMinion) {
        self.copy_or(
            "master_failback",
            raw.master_failback.as_ref(),
            Kind::Bool,
            "false",
            "return to the first healthy master in the list",
        );
        match &raw.master_failback_interval {
            Some(s) => self.copy(
                "master_failback_interval",
                s,
                Kind::Number,
                "seconds a better master must stay healthy",
            ),
            None => self.comment(
                "master_failback_interval: not set; the sidecar waits one master_alive_interval",
            ),
        }
        self.copy_or(
            "random_reauth_delay",
            raw.random_reauth_delay.as_ref(),
            Kind::Number,
            "10",
            "reconnect after a switch at a random 0..N s",
        );
        // `random_master` is Salt's current name, `master_shuffle` the old one; either on means on.
        let shuffle = match (&raw.master_shuffle, &raw.random_master) {
            (Some(a), Some(b)) => {
                let on = [a, b]
                    .iter()
                    .any(|s| scalar_text(&s.value, Kind::Bool) == "true");
                Some(Spanned::new(Value::Bool(on), a.referenced, a.defined))
            }
            (Some(s), None) | (None, Some(s)) => Some(s.clone()),
            (None, None) => None,
        };
        self.copy_or(
            "master_shuffle",
            shuffle.as_ref(),
            Kind::Bool,
            "false",
            "true: stable per-minion order (rendezvous hash of id)",
        );
    }

    /// Ports, `id` and `transport`; returns whether the transport is tcp.
    fn ports_id_transport(&mut self, raw: &RawMinion, cached_id: Option<&str>) -> bool {
        self.copy_or(
            "publish_port",
            raw.publish_port.as_ref(),
            Kind::Number,
            "4505",
            "",
        );
        self.copy_or(
            "master_port",
            raw.master_port.as_ref(),
            Kind::Number,
            "4506",
            "",
        );
        match (&raw.id, cached_id) {
            (Some(s), _) => {
                self.locations.push(("id".into(), s.referenced));
                let id = match &s.value {
                    Value::String(v) => v.clone(),
                    other => other.to_string(),
                };
                self.entry(&format!("id: {}", yaml_str(&id)), "");
            }
            (None, Some(id)) => {
                let line = format!("id: {}", yaml_str(id));
                self.entry(&line, "from the minion's cached minion_id");
            }
            (None, None) => self.comment("id: not set; the sidecar uses this host's name (set it if the minion's id differs)"),
        }
        let transport = raw.transport.as_ref().map(|s| {
            self.locations.push(("transport".into(), s.referenced));
            scalar_text(&s.value, Kind::Text)
        });
        if let Some(t) = &transport {
            self.entry(&format!("transport: {t}"), "");
        }
        transport.as_deref() == Some("tcp")
    }

    /// The `sidecar:` section, every key with its default.
    fn sidecar(&mut self, tcp: bool) {
        self.out.push('\n');
        self.comment("salt-sidecar's own settings (config/example.yaml explains each).");
        self.out.push_str("sidecar:\n");
        let entries: [(&str, &str); 7] = [
            (
                &format!("  listen: {MINION_MASTER}"),
                "the minion's new `master:`",
            ),
            (
                "  admin: 127.0.0.1:9464",
                "/metrics /healthz /readyz /status and the admin API",
            ),
            (
                if tcp {
                    "  probe: ping"
                } else {
                    "  probe: zmtp"
                },
                if tcp {
                    "transport tcp: Salt's clear ping request on the ret port"
                } else {
                    "transport zeromq: check each master's ZMTP greeting"
                },
            ),
            ("  rise: 2", "consecutive good probes to mark a master up"),
            ("  fall: 2", "consecutive bad probes to mark it down"),
            ("  connect_timeout: 2s", "also bounds each probe"),
            (
                "  drain_timeout: 60s",
                "failback / shutdown: wait this long for sessions",
            ),
        ];
        for (line, comment) in entries {
            self.entry(line, comment);
        }
    }
}
