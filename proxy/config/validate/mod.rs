//! Raw structs to the typed [`Config`]: this file runs the sections in a
//! fixed order (the first error found is the one reported) and assembles the
//! result; each section checks its own keys in a file of its own:
//!
//! - `masters`: who the masters are: `master:`, `master_type`,
//!   `sidecar.master_srv` (and `master_shuffle` with it), no self-loop;
//! - `salt`: Salt's other minion keys: ports, timers, `id`, `transport`;
//! - `listen`: the minion's listeners (`sidecar.listen*`);
//! - `admin`: the admin endpoint and its Unix socket (`sidecar.admin*`);
//! - `health`: how masters are judged (`sidecar.probe`, `rise`, `fall`,
//!   `connect_timeout`, `ret_answer_timeout`);
//! - `sessions`: the minion's sessions (`drain_timeout`,
//!   `half_close_timeout`, `move_sessions`, `salt_events`, `max_sessions`);
//! - `values` (checks of one value shared by the sections) and `text`
//!   (addresses as written, and user values as a message shows them).
//!
//! Every error names the file, line and key. Pure, except that `id`
//! defaults to the host name and a socket group is looked up in
//! `/etc/group`.

mod admin;
mod health;
mod listen;
mod masters;
mod salt;
mod sessions;
mod text;
mod values;

pub(crate) use text::one_line;
pub use text::{parse_host_port, quoted};

use std::path::Path;

use serde_saphyr::{Location, Spanned};

use crate::config::raw::{RawConfig, RawSidecar};
use crate::config::{
    Config, ConfigError, ProbeKind, SidecarConfig, DEFAULT_PUBLISH_PORT, DEFAULT_RET_PORT,
};

/// Collects the location of a value for error messages.
struct Ctx<'a> {
    file: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, at: Option<&Location>, key: &str, message: impl Into<String>) -> ConfigError {
        let known = at.filter(|l| l.line() > 0);
        ConfigError {
            file: self.file.to_path_buf(),
            line: known.map(|l| l.line() as u32),
            column: known.map(|l| l.column() as u32),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

fn loc<T>(s: &Spanned<T>) -> Option<&Location> {
    Some(&s.referenced)
}

impl RawConfig {
    pub(crate) fn validate(self, file: &Path) -> Result<Config, ConfigError> {
        let cx = Ctx { file };
        let mut warnings = Vec::new();
        let mut notes = Vec::new();

        let publish_port = values::port_or(
            &cx,
            self.publish_port.as_ref(),
            "publish_port",
            DEFAULT_PUBLISH_PORT,
        )?;
        let ret_port = values::port_or(
            &cx,
            self.master_port.as_ref(),
            "master_port",
            DEFAULT_RET_PORT,
        )?;
        let mut sidecar = self.sidecar.map(|s| s.value).unwrap_or_default();
        let srv_raw = sidecar.master_srv.take();
        let answer_raw = sidecar.ret_answer_timeout.take();
        let (source, locations) =
            masters::source(&cx, self.master, srv_raw, publish_port, ret_port)?;
        let master_type =
            masters::master_type(&cx, self.master_type.as_ref(), &source, &mut notes)?;
        let alive_interval =
            salt::alive_interval(&cx, self.master_alive_interval.as_ref(), &mut warnings)?;
        let failback = self.master_failback.as_ref().is_some_and(|s| s.value);
        let failback_interval =
            salt::failback_interval(&cx, self.master_failback_interval.as_ref(), alive_interval)?;
        let reauth_delay = salt::reauth_delay(&cx, self.random_reauth_delay.as_ref())?;
        let shuffle = masters::shuffle(&cx, self.master_shuffle.as_ref(), &source)?;
        let minion_id = salt::minion_id(&cx, self.id.as_ref())?;
        let transport_probe = salt::transport_probe(&cx, self.transport.as_ref())?;

        let sidecar = sidecar.validate(&cx, publish_port, ret_port, transport_probe)?;
        let sidecar = SidecarConfig {
            ret_answer_timeout: health::ret_answer_timeout(
                &cx,
                answer_raw.as_ref(),
                alive_interval,
                transport_probe,
                sidecar.probe,
            )?,
            ..sidecar
        };
        masters::no_self_loop(&cx, masters::listed(&source), &locations, &sidecar)?;
        if let Some(warning) = admin::open_admin_socket(&sidecar.admin_socket) {
            warnings.push(warning);
        }

        Ok(Config {
            source: file.to_path_buf(),
            master_source: source,
            master_type,
            alive_interval,
            failback,
            failback_interval,
            reauth_delay,
            shuffle,
            minion_id,
            sidecar,
            warnings,
            notes,
        })
    }
}

impl RawSidecar {
    /// The `sidecar:` section, but for `ret_answer_timeout` (which needs the
    /// alive interval: set by the caller) and `master_srv` (a master source).
    fn validate(
        self,
        cx: &Ctx<'_>,
        publish_port: u16,
        ret_port: u16,
        transport_probe: Option<ProbeKind>,
    ) -> Result<SidecarConfig, ConfigError> {
        let (listen_publish, listen_ret) = self.listeners(cx, publish_port, ret_port)?;
        let listen_allow_remote = self.listen_allow_remote(cx, listen_publish, listen_ret)?;
        let (admin, admin_allow_remote) = self.admin(cx, listen_publish, listen_ret)?;
        let probe = self.probe(cx, transport_probe)?;
        let health::Counts {
            rise,
            fall,
            connect_timeout,
        } = self.counts(cx)?;
        let (drain_timeout, half_close_timeout) = self.session_timeouts(cx)?;
        Ok(SidecarConfig {
            listen_publish,
            listen_ret,
            admin,
            admin_allow_remote,
            probe,
            rise,
            fall,
            connect_timeout,
            drain_timeout,
            half_close_timeout,
            // Needs the alive interval and the transport: set by the caller.
            ret_answer_timeout: None,
            move_sessions: self.move_sessions.as_ref().is_none_or(|s| s.value),
            salt_events: self.salt_events.as_ref().is_none_or(|s| s.value),
            listen_allow_remote,
            max_sessions: self.max_sessions(cx)?,
            admin_socket: self.admin_socket(cx)?,
        })
    }
}

/// What the sections' unit tests share: a config text in, what the user
/// would see out.
#[cfg(test)]
mod testing {
    use std::path::Path;

    use crate::config::{parse, Config};

    /// The file name every test config is given.
    pub(super) const FILE: &str = "t.yaml";

    /// `text` loaded; panics with the error a user would see.
    pub(super) fn load(text: &str) -> Config {
        parse(Path::new(FILE), text).unwrap_or_else(|e| panic!("should load: {e}\n{text}"))
    }

    /// The error `text` is refused with, as `check-config` prints it.
    pub(super) fn refused(text: &str) -> String {
        match parse(Path::new(FILE), text) {
            Ok(_) => panic!("should be refused:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    /// Asserts that `text` is refused with a message that starts with
    /// `want` (`file:line:col: key: message`).
    #[track_caller]
    pub(super) fn assert_refused(text: &str, want: &str) {
        let shown = refused(text);
        assert!(
            shown.starts_with(want),
            "\n  got:  {shown}\n  want: {want}…\n{text}"
        );
    }

    /// Two masters (so no note-free surprises) and then `extra`.
    pub(super) fn with(extra: &str) -> String {
        format!("master: [salt-a, salt-b]\nmaster_alive_interval: 5\n{extra}")
    }

    /// Two masters and a `sidecar:` section made of `lines` (each indented;
    /// none: no section).
    pub(super) fn sidecar(lines: &str) -> String {
        if lines.is_empty() {
            return with("");
        }
        let body: String = lines.lines().map(|l| format!("  {l}\n")).collect();
        with(&format!("sidecar:\n{body}"))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{assert_refused, load, with};

    #[test]
    fn the_minimal_config_takes_every_default() {
        let c = load("master: salt\nmaster_alive_interval: 5\nid: web-01\n");
        assert_eq!(c.source.to_str(), Some("t.yaml"));
        assert_eq!(c.minion_id, "web-01");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(c.notes.is_empty(), "{:?}", c.notes);
    }

    #[test]
    fn a_salt_key_error_comes_before_a_sidecar_key_error() {
        // Two errors: the one reported is the first in validation order.
        assert_refused(
            &with("master_type: nope\nsidecar:\n  rise: 0\n"),
            "t.yaml:3:14: master_type: `nope` is not a master_type",
        );
        assert_refused(
            "master: [a, b]\nmaster_alive_interval: 0\ntransport: ws\n",
            "t.yaml:2:24: master_alive_interval: must be at least 1 second",
        );
    }

    #[test]
    fn the_listeners_are_checked_before_the_admin_endpoint_and_the_probe() {
        assert_refused(
            &with("sidecar:\n  listen: nowhere\n  admin: 0.0.0.0:9464\n  probe: ping\n"),
            "t.yaml:4:11: sidecar.listen: `nowhere` is not an IP address",
        );
        assert_refused(
            &with("sidecar:\n  admin: 0.0.0.0:9464\n  probe: ping\n"),
            "t.yaml:4:10: sidecar.admin: 0.0.0.0:9464 is not a loopback address",
        );
    }

    #[test]
    fn the_self_loop_check_comes_after_the_sidecar_section() {
        assert_refused(
            "master: [127.0.0.1]\nmaster_alive_interval: 5\nsidecar:\n  rise: 0\n",
            "t.yaml:4:9: sidecar.rise: must be between 1 and 100",
        );
        assert_refused(
            "master: [127.0.0.1]\nmaster_alive_interval: 5\n",
            "t.yaml:1:10: master[0]: `127.0.0.1` is the sidecar itself (its listener 127.0.0.1:4505)",
        );
    }
}
