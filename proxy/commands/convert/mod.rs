//! `salt-sidecar convert-minion-config`: a salt-minion config in, the
//! sidecar's config out, plus the one change the minion needs.
//!
//! Owns reading a minion config loosely (any Salt key, Salt's YAML 1.1
//! booleans, `master` as a string or a list; keys the sidecar does not use
//! are ignored) and writing the sidecar YAML with comments. Values are copied
//! with Salt's meaning; validation is [`config::parse`]'s, run on the output
//! before it is returned, with its errors pointed back at the minion file's
//! lines. Never writes a file and never touches the minion config.
//!
//! Here: the result and the steps; `minion` reads the minion file,
//! `keys` decides what each key becomes, `writer` writes the YAML.

mod keys;
mod minion;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::{self, ConfigError};

use minion::parse_minion;
use writer::{header, Writer};

/// What the minion's `master:` becomes: the sidecar listens there.
pub const MINION_MASTER: &str = "127.0.0.1";

/// Minion keys that move to the sidecar and must leave the minion config:
/// with one `master: 127.0.0.1`, Salt refuses `master_type: failover` (it
/// wants a list) and its failback would only watch the sidecar.
/// `publish_port`, `master_port` and `random_reauth_delay` stay, and so does
/// `master_alive_interval` (set to the sidecar's): the minion's own alive
/// check is what fires `__master_disconnected` and, from Salt 3006, its
/// start event on the new master through the sidecar (`sidecar.salt_events`).
pub const MOVED_KEYS: [&str; 5] = [
    "master_type",
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
    /// The minion's `master_alive_interval` (seconds), the sidecar's too.
    pub alive_interval: String,
}

impl fmt::Display for MinionChange {
    /// One line, e.g. ``/etc/salt/minion: set `master: 127.0.0.1` and
    /// `master_alive_interval: 5`; remove master_type; keep publish_port and
    /// master_port``.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: set `master: {}` and `master_alive_interval: {}` (the sidecar's: the minion's own alive check fires Salt's events through it)",
            self.file.display(),
            self.master,
            self.alive_interval
        )?;
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
        alive,
    } = w;
    let minion_change = MinionChange {
        file: file.to_path_buf(),
        master: MINION_MASTER,
        remove,
        alive_interval: alive,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_ALIVE_INTERVAL;

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
            ["master_type", "master_failback", "master_failback_interval"]
        );
        assert_eq!(
            c.minion_change.to_string(),
            "/etc/salt/minion: set `master: 127.0.0.1` and `master_alive_interval: 60` (the sidecar's: the minion's own alive check fires Salt's events through it); remove master_type, master_failback, master_failback_interval; keep publish_port and master_port as they are (the sidecar listens on the same ports)"
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
        assert_eq!(c.minion_change.remove, ["master_failback", "random_master"]);
        assert_eq!(c.minion_change.alive_interval, "5", "kept on the minion");
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
    fn addresses_that_yaml_would_misread_load_as_written() {
        let c =
            conv("master:\n  - '[::1]:4506'\n  - 'fe80::1'\nmaster_alive_interval: 1\n").unwrap();
        let cfg = loads(&c);
        assert_eq!(cfg.masters()[0].ret_port, 4506);
    }
}
