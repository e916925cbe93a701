//! `salt-sidecar check-config`: every check `run` makes before it starts
//! serving, and a summary of what it would run with (the masters in the
//! order this minion prefers them, the listeners, health and failback).
//!
//! Reads the config file and looks at the admin socket's directories; never
//! binds, connects or starts anything. `main` prints the [`Report`] and
//! exits 78 (as `run` would) when the config is refused.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::{self, Config};
use crate::control::select::preference_order;
use crate::limits::DEFAULT_MAX_SESSIONS;
use crate::ops::listen::{check_socket_dir, Strictness};

/// What `check-config` found.
#[derive(Debug)]
pub struct Report {
    /// Worth a warning, printed first (the config is still valid).
    pub warnings: Vec<String>,
    /// The summary of a config `run` would accept (for stdout), or why `run`
    /// would refuse it (file, line and key; for stderr, exit 78).
    pub verdict: Result<String, String>,
}

/// Checks the config at `path` as `run` would.
pub fn check_config(path: &Path) -> Report {
    let c = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            return Report {
                warnings: Vec::new(),
                verdict: Err(e.to_string()),
            }
        }
    };
    // `run` also judges the directories' owners, against its own user
    // (which check-config's may not be): that part is left to it.
    let socket = &c.sidecar.admin_socket.path;
    let verdict = match check_socket_dir(socket, Strictness::Check) {
        Err(e) => Err(format!("{}: sidecar.admin_socket: {e}", path.display())),
        Ok(()) => Ok(summary(path, &c)),
    };
    Report {
        warnings: c.warnings,
        verdict,
    }
}

/// What `run` would run with, one fact a line. Pure.
fn summary(path: &Path, c: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: ok", path.display());
    let _ = writeln!(out, "  minion id:       {}", c.minion_id);
    if let Some(srv) = c.srv() {
        let _ = writeln!(
            out,
            "  masters:         the targets of the SRV record {} (publish port {}, ret port from each record), by priority and weight; `salt-sidecar status` shows them",
            srv.name, srv.publish_port
        );
    } else {
        let _ = writeln!(out, "  masters (in the order this minion prefers them):");
    }
    for id in preference_order(c) {
        if let Some(m) = c.masters().get(id.index()) {
            let _ = writeln!(
                out,
                "    - {} (publish {}, ret {})",
                m.label, m.publish_port, m.ret_port
            );
        }
    }
    let _ = writeln!(
        out,
        "  listen:          publish {}, ret {}",
        c.sidecar.listen_publish, c.sidecar.listen_ret
    );
    let _ = writeln!(
        out,
        "  admin:           {} (read-only), socket {} (mode {:04o}{})",
        c.sidecar.admin,
        c.sidecar.admin_socket.path.display(),
        c.sidecar.admin_socket.mode,
        c.sidecar
            .admin_socket
            .group
            .as_ref()
            .map_or_else(String::new, |g| format!(", group {} ({})", g.name, g.gid))
    );
    let _ = writeln!(
        out,
        "  max sessions:    {} (fitted to the open-file limit at start)",
        c.sidecar.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS)
    );
    let _ = writeln!(
        out,
        "  health:          {} probe every {}s, rise {}, fall {}, timeout {}",
        c.sidecar.probe.as_str(),
        c.alive_interval.as_secs(),
        c.sidecar.rise,
        c.sidecar.fall,
        humantime::format_duration(c.sidecar.connect_timeout)
    );
    let _ = writeln!(
        out,
        "  failback:        {}",
        if c.failback {
            format!("after {}s healthy", c.failback_interval.as_secs())
        } else {
            "off".into()
        }
    );
    let _ = writeln!(
        out,
        "  reconnect delay: random in [0, {}s]",
        c.reauth_delay.as_secs()
    );
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{check_config, summary};
    use crate::config::parse;

    fn summary_of(text: &str) -> String {
        let path = Path::new("s.yaml");
        let c = parse(path, text).unwrap_or_else(|e| panic!("{e}"));
        summary(path, &c)
    }

    #[test]
    fn the_summary_says_what_run_would_run_with() {
        let text = "master:\n  - salt-a\n  - salt-b:14506\nmaster_alive_interval: 5\n\
                    master_failback: true\nmaster_failback_interval: 20\nrandom_reauth_delay: 3\n\
                    id: web-01\nsidecar:\n  admin_socket: /run/s/admin.sock\n  admin_socket_group: root\n  \
                    connect_timeout: 500ms\n  max_sessions: 100\n";
        assert_eq!(
            summary_of(text),
            "s.yaml: ok\n\
             \x20 minion id:       web-01\n\
             \x20 masters (in the order this minion prefers them):\n\
             \x20   - salt-a (publish 4505, ret 4506)\n\
             \x20   - salt-b:14506 (publish 4505, ret 14506)\n\
             \x20 listen:          publish 127.0.0.1:4505, ret 127.0.0.1:4506\n\
             \x20 admin:           127.0.0.1:9464 (read-only), socket /run/s/admin.sock (mode 0660, group root (0))\n\
             \x20 max sessions:    100 (fitted to the open-file limit at start)\n\
             \x20 health:          zmtp probe every 5s, rise 2, fall 2, timeout 500ms\n\
             \x20 failback:        after 20s healthy\n\
             \x20 reconnect delay: random in [0, 3s]\n"
        );
    }

    #[test]
    fn the_summary_of_an_srv_config_names_the_record_and_failback_off() {
        let out = summary_of(
            "sidecar:\n  master_srv: _salt._tcp.example.net\nmaster_alive_interval: 5\nid: x\n",
        );
        assert!(
            out.contains("  masters:         the targets of the SRV record _salt._tcp.example.net (publish port 4505, ret port from each record), by priority and weight; `salt-sidecar status` shows them\n"),
            "{out}"
        );
        assert!(!out.contains("    - "), "no listed master: {out}");
        assert!(out.contains("  failback:        off\n"), "{out}");
        assert!(
            out.contains(&format!(
                "  max sessions:    {} (fitted",
                crate::limits::DEFAULT_MAX_SESSIONS
            )),
            "{out}"
        );
    }

    #[test]
    fn a_refused_config_is_the_loaders_message_without_warnings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "master: [a, b]\nmaster_type: str\n").expect("write");
        let report = check_config(&path);
        assert!(report.warnings.is_empty());
        let why = report.verdict.expect_err("refused");
        assert!(
            why.starts_with(&format!(
                "{}:2:14: master_type: `str` with several masters",
                path.display()
            )),
            "{why}"
        );
    }

    #[test]
    fn an_admin_socket_in_a_directory_others_may_write_is_refused_after_the_warnings() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let open = dir.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            format!(
                "master: [a, b]\nsidecar:\n  admin_socket: {}/admin.sock\n",
                open.display()
            ),
        )
        .expect("write");
        let report = check_config(&path);
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(report.warnings[0].contains("master_alive_interval"));
        let why = report.verdict.expect_err("refused");
        assert!(
            why.starts_with(&format!("{}: sidecar.admin_socket: ", path.display()))
                && why.contains("0777"),
            "{why}"
        );
        // The same directory made safe: the summary.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let ok = check_config(&path).verdict.expect("accepted");
        assert!(ok.starts_with(&format!("{}: ok\n", path.display())), "{ok}");
    }
}
