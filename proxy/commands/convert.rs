//! `salt-sidecar convert-minion-config`: a salt-minion config in, the
//! sidecar's config out, plus the one change the minion needs.
//!
//! Owns reading a minion config loosely (any Salt key, Salt's YAML 1.1
//! booleans, `master` as a string or a list; keys the sidecar does not use
//! are ignored) and writing the sidecar YAML with comments. Values are copied
//! with Salt's meaning; validation is [`config::parse`]'s, run on the output
//! before it is returned, with its errors pointed back at the minion file's
//! lines. Never writes a file and never touches the minion config.

use std::fmt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::{Location, Spanned};

use crate::config::{self, ConfigError, OneOrList, DEFAULT_ALIVE_INTERVAL};

/// What the minion's `master:` becomes: the sidecar listens there.
pub const MINION_MASTER: &str = "127.0.0.1";

/// Minion keys that move to the sidecar and must leave the minion config:
/// with one `master: 127.0.0.1`, Salt refuses `master_type: failover` (it
/// wants a list) and its own alive check and failback would only watch the
/// sidecar. `publish_port`, `master_port` and `random_reauth_delay` stay.
pub const MOVED_KEYS: [&str; 6] = [
    "master_type",
    "master_alive_interval",
    "master_failback",
    "master_failback_interval",
    "master_shuffle",
    "random_master",
];

/// The result of converting one minion config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversion {
    /// The sidecar config, for `/etc/salt-sidecar/config.yaml`. It loads with
    /// [`config::parse`]; its header comment repeats the minion change.
    pub sidecar_yaml: String,
    /// What to change in the minion config.
    pub minion_change: MinionChange,
    /// Things the operator must know (also comments in `sidecar_yaml`).
    pub warnings: Vec<String>,
}

/// The minion side of the move: `master: 127.0.0.1` and the keys to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinionChange {
    /// The minion config that was converted.
    pub file: PathBuf,
    /// The minion's new `master:` ([`MINION_MASTER`]).
    pub master: &'static str,
    /// Keys of [`MOVED_KEYS`] present in the file, to delete from it.
    pub remove: Vec<&'static str>,
}

impl fmt::Display for MinionChange {
    /// One line, e.g. ``/etc/salt/minion: set `master: 127.0.0.1`; remove
    /// master_type, master_alive_interval; keep publish_port and master_port``.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: set `master: {}`", self.file.display(), self.master)?;
        if !self.remove.is_empty() {
            write!(f, "; remove {}", self.remove.join(", "))?;
        }
        write!(
            f,
            "; keep publish_port and master_port as they are (the sidecar listens on the same ports)"
        )
    }
}

/// Reads the minion config at `path` and converts it.
///
/// Without an `id:` in the file, the minion's cached id (`minion_id` next to
/// the file, as Salt keeps it in `/etc/salt/minion_id`) is used if present,
/// so the sidecar and `salt-sidecar enroll` name the minion as its masters do.
pub fn convert_minion_config(path: &Path) -> Result<Conversion, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        column: None,
        key: String::new(),
        message: format!("cannot read the minion config: {e}"),
    })?;
    let cached_id = path
        .parent()
        .and_then(|dir| std::fs::read_to_string(dir.join("minion_id")).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains('\n'));
    convert(path, &text, cached_id.as_deref())
}

/// Converts minion config text; `path` names it in messages and comments,
/// `cached_id` is the minion's `minion_id` file, used when there is no `id:`.
pub fn convert(
    path: &Path,
    text: &str,
    cached_id: Option<&str>,
) -> Result<Conversion, ConfigError> {
    let raw = parse_minion(path, text)?;
    let mut w = Writer::new(path);
    w.write(raw, cached_id)?;
    let Writer {
        out,
        warnings,
        locations,
        remove,
        file,
    } = w;
    let minion_change = MinionChange {
        file: file.to_path_buf(),
        master: MINION_MASTER,
        remove,
    };
    let sidecar_yaml = header(&minion_change, &warnings) + &out;
    // The output must load; where it does not, the minion file holds the
    // value at fault: point there.
    if let Err(e) = config::parse(path, &sidecar_yaml) {
        let at = locations
            .iter()
            .find(|(key, _)| *key == e.key)
            .map(|(_, l)| *l)
            .filter(|l| l.line() > 0);
        return Err(ConfigError {
            file: path.to_path_buf(),
            line: at.map(|l| l.line() as u32),
            column: at.map(|l| l.column() as u32),
            message: if e.key.starts_with("master[") && e.message.contains("is the sidecar itself")
            {
                format!("this minion already points at the sidecar ({}); was the file converted before? Convert the minion's original master list", e.message.split('`').nth(1).unwrap_or("127.0.0.1"))
            } else {
                e.message
            },
            key: e.key,
        });
    }
    Ok(Conversion {
        sidecar_yaml,
        minion_change,
        warnings,
    })
}

// === reading the minion config ===

/// The minion keys the sidecar uses; serde skips every other key.
#[derive(Debug, Deserialize)]
struct RawMinion {
    master: Option<Spanned<RawMasters>>,
    master_type: Option<Spanned<Value>>,
    master_alive_interval: Option<Spanned<Value>>,
    master_failback: Option<Spanned<Value>>,
    master_failback_interval: Option<Spanned<Value>>,
    random_reauth_delay: Option<Spanned<Value>>,
    master_shuffle: Option<Spanned<Value>>,
    random_master: Option<Spanned<Value>>,
    publish_port: Option<Spanned<Value>>,
    master_port: Option<Spanned<Value>>,
    id: Option<Spanned<Value>>,
    transport: Option<Spanned<Value>>,
}

/// `master:` as Salt takes it: one address or a list, each read as a YAML value.
type RawMasters = OneOrList<Value>;

fn no_master(file: &Path) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line: None,
        column: None,
        key: "master".into(),
        message: "no `master:` in this file; list the masters this minion fails over between (if they are set in /etc/salt/minion.d/*.conf, convert that file)".into(),
    }
}

/// Reads the keys the sidecar uses; an empty file (or only comments) reads as no keys.
fn parse_minion(path: &Path, text: &str) -> Result<RawMinion, ConfigError> {
    if text.trim().is_empty() {
        return Err(no_master(path));
    }
    let raw: Option<RawMinion> = serde_saphyr::from_str(text).map_err(|e| {
        let at = e.location();
        let message = config::yaml_message(&e);
        ConfigError {
            file: path.to_path_buf(),
            line: at.map(|l| l.line() as u32),
            column: at.map(|l| l.column() as u32),
            key: String::new(),
            message: format!("not a minion config: {message}"),
        }
    })?;
    raw.ok_or_else(|| no_master(path))
}

// === writing the sidecar config ===

/// Column where trailing comments start.
const COMMENT_COLUMN: usize = 32;

struct Writer<'a> {
    file: &'a Path,
    out: String,
    warnings: Vec<String>,
    /// Where each emitted key came from in the minion file (`master[1]` too).
    locations: Vec<(String, Location)>,
    remove: Vec<&'static str>,
}

impl<'a> Writer<'a> {
    fn new(file: &'a Path) -> Self {
        Writer {
            file,
            out: String::new(),
            warnings: Vec::new(),
            locations: Vec::new(),
            remove: Vec::new(),
        }
    }

    fn err(&self, at: &Location, key: &str, message: String) -> ConfigError {
        let known = Some(*at).filter(|l| l.line() > 0);
        ConfigError {
            file: self.file.to_path_buf(),
            line: known.map(|l| l.line() as u32),
            column: known.map(|l| l.column() as u32),
            key: key.to_string(),
            message,
        }
    }

    fn comment(&mut self, text: &str) {
        let _ = writeln!(self.out, "# {text}");
    }

    /// `key: value` with an aligned trailing comment.
    fn entry(&mut self, line: &str, comment: &str) {
        if comment.is_empty() {
            let _ = writeln!(self.out, "{line}");
        } else {
            let _ = writeln!(self.out, "{line:<COMMENT_COLUMN$}# {comment}");
        }
    }

    /// A warning: a comment above the key it concerns, and in `warnings`.
    fn warn(&mut self, text: String) {
        for line in wrap(&text, 76) {
            self.comment(&line);
        }
        self.warnings.push(text);
    }

    /// Copies a scalar key, Salt's spelling normalised (see [`scalar_text`]).
    fn copy(&mut self, key: &'static str, v: &Spanned<Value>, kind: Kind, comment: &str) {
        self.locations.push((key.into(), v.referenced));
        let line = format!("{key}: {}", scalar_text(&v.value, kind));
        self.entry(&line, comment);
    }

    /// [`copy`](Self::copy), or Salt's `default` when the key is missing.
    fn copy_or(
        &mut self,
        key: &'static str,
        v: Option<&Spanned<Value>>,
        kind: Kind,
        default: &str,
        comment: &str,
    ) {
        match v {
            Some(v) => self.copy(key, v, kind, comment),
            None => self.entry(&format!("{key}: {default}"), "Salt's default"),
        }
    }

    fn write(&mut self, raw: RawMinion, cached_id: Option<&str>) -> Result<(), ConfigError> {
        let present = |key: &str| match key {
            "master_type" => raw.master_type.is_some(),
            "master_alive_interval" => raw.master_alive_interval.is_some(),
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
            Some(s) => self.copy(
                "master_alive_interval",
                s,
                Kind::Number,
                "seconds between health checks of every master",
            ),
            None => {
                let secs = DEFAULT_ALIVE_INTERVAL.as_secs();
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

/// The comment block the sidecar YAML opens with.
fn header(change: &MinionChange, warnings: &[String]) -> String {
    let file = change.file.display();
    let mut h = String::new();
    let _ = writeln!(h, "# salt-sidecar configuration, converted from {file}");
    let _ = writeln!(
        h,
        "# by `salt-sidecar convert-minion-config`. Install it as /etc/salt-sidecar/config.yaml"
    );
    let _ = writeln!(
        h,
        "# and check it: salt-sidecar check-config --config /etc/salt-sidecar/config.yaml"
    );
    let _ = writeln!(h, "#");
    let _ = writeln!(h, "# Then change the minion ({file}):");
    let _ = writeln!(h, "#   master: {}", change.master);
    if !change.remove.is_empty() {
        let _ = writeln!(h, "#   and remove: {}", change.remove.join(", "));
    }
    let _ = writeln!(
        h,
        "# publish_port and master_port stay as they are: the sidecar listens on the same ports."
    );
    if !warnings.is_empty() {
        let _ = writeln!(
            h,
            "# {} warning(s) below: read them before rolling this out.",
            warnings.len()
        );
    }
    h
}

/// How a copied value is written.
#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Number,
    Text,
}

/// A value as the sidecar's YAML reads it with Salt's meaning: PyYAML's
/// YAML 1.1 booleans (`yes`, `On`) as `true`/`false`, numbers written as
/// strings as numbers; anything else quoted, for `config::parse` to reject.
fn scalar_text(v: &Value, kind: Kind) -> String {
    match (v, kind) {
        (Value::Bool(b), _) => b.to_string(),
        (Value::Number(n), _) => n.to_string(),
        (Value::String(s), Kind::Bool) => match s.trim().to_ascii_lowercase().as_str() {
            "yes" | "on" | "true" => "true".into(),
            "no" | "off" | "false" => "false".into(),
            _ => yaml_str(s),
        },
        (Value::String(s), Kind::Number) if s.trim().parse::<u64>().is_ok() => s.trim().to_string(),
        (Value::String(s), _) => yaml_str(s),
        (other, _) => yaml_str(&other.to_string()),
    }
}

/// A string as a YAML scalar: plain when it cannot be read as anything else,
/// else double-quoted (JSON's escaping is valid YAML).
fn yaml_str(s: &str) -> String {
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        && s.parse::<f64>().is_err()
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null"
        );
    if plain {
        s.to_string()
    } else {
        Value::String(s.to_string()).to_string()
    }
}

/// Splits text into lines of at most `width` characters, at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(text: &str) -> Result<Conversion, ConfigError> {
        convert(Path::new("/etc/salt/minion"), text, None)
    }

    /// The comment lines of a YAML text, joined by spaces (warnings are wrapped).
    fn comments(yaml: &str) -> String {
        let lines: Vec<&str> = yaml.lines().filter_map(|l| l.strip_prefix("# ")).collect();
        lines.join(" ")
    }

    /// The converted YAML loads, and here is what it means.
    fn loads(c: &Conversion) -> config::Config {
        config::parse(Path::new("/etc/salt-sidecar/config.yaml"), &c.sidecar_yaml)
            .unwrap_or_else(|e| panic!("{e}\n{}", c.sidecar_yaml))
    }

    const ARTICLE: &str = "\
# /etc/salt/minion
id: web-01
master:
  - 192.168.57.12
  - 192.168.57.13
master_type: failover
master_alive_interval: 60
master_failback: True
master_failback_interval: 30
random_reauth_delay: 60
log_level: warning
grains:
  roles: [web]
";

    #[test]
    fn a_minion_that_already_points_at_the_sidecar_is_refused_at_its_line() {
        for master in ["127.0.0.1", "localhost", "[127.0.0.1, 192.0.2.9]"] {
            let e = conv(&format!(
                "id: m\nmaster_alive_interval: 5\nmaster: {master}\n"
            ))
            .expect_err("a converted minion");
            assert_eq!((e.line, e.key.as_str()), (Some(3), "master[0]"), "{e}");
            assert!(e.message.contains("already points at the sidecar"), "{e}");
        }
        // Its publish port alone is enough to loop.
        let e = conv("id: m\nmaster_alive_interval: 5\nmaster: 127.0.0.1:14506\n")
            .expect_err("publish port 4505 is the sidecar's");
        assert!(e.message.contains("already points at the sidecar"), "{e}");
        // The sidecar listens on the minion's ports (publish_port 14505
        // here), so any master at 127.0.0.1 on them loops; another loopback
        // address does not.
        let e =
            conv("id: m\nmaster_alive_interval: 5\npublish_port: 14505\nmaster: 127.0.0.1:14506\n")
                .expect_err("the sidecar would listen on 127.0.0.1:14505/14506");
        assert_eq!(e.line, Some(4), "{e}");
        let c =
            conv("id: m\nmaster_alive_interval: 5\nmaster: 127.0.0.2\n").expect("not the sidecar");
        assert_eq!(loads(&c).masters()[0].label, "127.0.0.2");
    }

    #[test]
    fn the_articles_failover_block() {
        let c = conv(ARTICLE).unwrap();
        let cfg = loads(&c);
        let hosts: Vec<&str> = cfg.masters().iter().map(|m| m.label.as_str()).collect();
        assert_eq!(hosts, ["192.168.57.12", "192.168.57.13"]);
        assert_eq!(cfg.master_type, config::MasterType::Failover);
        assert_eq!(cfg.alive_interval.as_secs(), 60);
        assert!(cfg.failback);
        assert_eq!(cfg.failback_interval.as_secs(), 30);
        assert_eq!(cfg.reauth_delay.as_secs(), 60);
        assert!(!cfg.shuffle);
        assert_eq!(cfg.minion_id, "web-01");
        assert_eq!(cfg.sidecar.probe, config::ProbeKind::Zmtp);
        assert_eq!(cfg.sidecar.listen_publish.to_string(), "127.0.0.1:4505");
        assert_eq!(cfg.sidecar.listen_ret.to_string(), "127.0.0.1:4506");
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(
            c.minion_change.remove,
            [
                "master_type",
                "master_alive_interval",
                "master_failback",
                "master_failback_interval"
            ]
        );
        assert_eq!(
            c.minion_change.to_string(),
            "/etc/salt/minion: set `master: 127.0.0.1`; remove master_type, master_alive_interval, master_failback, master_failback_interval; keep publish_port and master_port as they are (the sidecar listens on the same ports)"
        );
        assert!(c.sidecar_yaml.contains("#   master: 127.0.0.1\n"));
        // Keys the sidecar does not know are not carried over.
        assert!(!c.sidecar_yaml.contains("log_level"));
        assert!(!c.sidecar_yaml.contains("grains"));
    }

    #[test]
    fn a_single_master_string() {
        let c = conv("master: salt.example.net\nid: db-3\n").unwrap();
        let cfg = loads(&c);
        assert_eq!(cfg.masters().len(), 1);
        assert_eq!(cfg.masters()[0].label, "salt.example.net");
        assert_eq!(cfg.masters()[0].publish_port, 4505);
        assert_eq!(cfg.masters()[0].ret_port, 4506);
        assert!(c.minion_change.remove.is_empty());
        // Salt never checked: the sidecar does, and says so.
        assert_eq!(cfg.alive_interval, DEFAULT_ALIVE_INTERVAL);
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("no `master_alive_interval`"));
        assert!(comments(&c.sidecar_yaml).contains(c.warnings[0].as_str()));
    }

    #[test]
    fn tcp_transport_probes_with_salts_ping() {
        let c = conv(
            "master: [salt-a, salt-b]\nmaster_type: failover\nmaster_alive_interval: 10\n\
             transport: tcp\npublish_port: 14505\nmaster_port: '14506'\n",
        )
        .unwrap();
        let cfg = loads(&c);
        assert_eq!(cfg.sidecar.probe, config::ProbeKind::Ping);
        assert!(c.sidecar_yaml.contains("transport: tcp\n"));
        assert!(c.sidecar_yaml.contains("  probe: ping "));
        assert_eq!(cfg.masters()[1].publish_port, 14505);
        assert_eq!(cfg.masters()[1].ret_port, 14506);
        assert_eq!(cfg.sidecar.listen_publish.port(), 14505);
        assert_eq!(cfg.sidecar.listen_ret.port(), 14506);
    }

    #[test]
    fn a_hot_multi_master_list_becomes_failover_with_a_warning() {
        for text in [
            "master:\n  - m1.example.net\n  - m2.example.net\nmaster_alive_interval: 30\n",
            "master:\n  - m1.example.net\n  - m2.example.net\nmaster_type: str\nmaster_alive_interval: 30\n",
        ] {
            let c = conv(text).unwrap();
            let cfg = loads(&c);
            assert_eq!(cfg.master_type, config::MasterType::Failover);
            assert_eq!(cfg.masters().len(), 2);
            assert_eq!(c.warnings.len(), 1, "{text}");
            let w = &c.warnings[0];
            assert!(w.contains("hot multi-master"), "{w}");
            assert!(w.contains("one master at a time"), "{w}");
            assert!(comments(&c.sidecar_yaml).contains(w.as_str()), "{}", c.sidecar_yaml);
        }
    }

    #[test]
    fn no_master_is_an_error_naming_the_file() {
        for text in ["", "id: web-01\nlog_level: debug\n", "# only a comment\n"] {
            let e = conv(text).unwrap_err();
            assert_eq!(e.key, "master");
            let msg = e.to_string();
            assert!(
                msg.starts_with("/etc/salt/minion: master: no `master:`"),
                "{msg}"
            );
        }
    }

    #[test]
    fn shuffle_either_name_and_yaml_1_1_booleans() {
        let c = conv(
            "master: [a.example, b.example]\nmaster_alive_interval: 5\nrandom_master: yes\nmaster_failback: On\n",
        )
        .unwrap();
        let cfg = loads(&c);
        assert!(cfg.shuffle);
        assert!(cfg.failback);
        assert_eq!(
            c.minion_change.remove,
            ["master_alive_interval", "master_failback", "random_master"]
        );
        let c =
            conv("master: [a.example, b.example]\nmaster_shuffle: false\nrandom_master: true\n")
                .unwrap();
        assert!(loads(&c).shuffle);
        assert!(c.sidecar_yaml.matches("master_shuffle:").count() == 1);
    }

    #[test]
    fn errors_point_at_the_minion_line() {
        // A bad master entry, found by config's own validation.
        let e = conv("id: x\nmaster:\n  - good.example\n  - 'bad host'\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("master[1]", Some(4)), "{e}");
        // A transport the sidecar does not forward.
        let e = conv("master: a.example\ntransport: ws\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("transport", Some(2)), "{e}");
        assert!(e.to_string().starts_with("/etc/salt/minion:2:"), "{e}");
        // master_type func: no list to fail over between.
        let e = conv("master: mymod.get_master\nmaster_type: func\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("master_type", Some(2)), "{e}");
        // Not YAML.
        let e = conv("master: [a, b\n").unwrap_err();
        assert!(e.line.is_some(), "{e}");
        assert!(e.message.starts_with("not a minion config"), "{e}");
        // A bad number.
        let e = conv("master: a.example\nmaster_alive_interval: often\n").unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.line),
            ("master_alive_interval", Some(2)),
            "{e}"
        );
    }

    #[test]
    fn the_cached_minion_id_is_used_without_an_id_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("minion");
        std::fs::write(&path, "master: salt\nmaster_alive_interval: 30\n").unwrap();
        std::fs::write(dir.path().join("minion_id"), "web-07.example.net\n").unwrap();
        let c = convert_minion_config(&path).unwrap();
        assert_eq!(loads(&c).minion_id, "web-07.example.net");
        // An `id:` in the file wins.
        std::fs::write(&path, "master: salt\nid: 'web 7'\n").unwrap();
        let c = convert_minion_config(&path).unwrap();
        assert_eq!(loads(&c).minion_id, "web 7");
        // A missing file names itself.
        let e = convert_minion_config(&dir.path().join("nope")).unwrap_err();
        assert!(
            e.to_string()
                .contains("nope: cannot read the minion config"),
            "{e}"
        );
    }

    #[test]
    fn values_that_yaml_would_misread_are_quoted() {
        assert_eq!(yaml_str("salt-a.example.net"), "salt-a.example.net");
        assert_eq!(yaml_str("salt-a:4506"), "salt-a:4506");
        assert_eq!(yaml_str("[::1]:4506"), "\"[::1]:4506\"");
        assert_eq!(yaml_str("10.5"), "\"10.5\"");
        assert_eq!(yaml_str("yes"), "\"yes\"");
        assert_eq!(yaml_str("a # b"), "\"a # b\"");
        let c =
            conv("master:\n  - '[::1]:4506'\n  - 'fe80::1'\nmaster_alive_interval: 1\n").unwrap();
        let cfg = loads(&c);
        assert_eq!(cfg.masters()[0].ret_port, 4506);
    }
}
