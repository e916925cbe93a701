//! The operator's side of the sidecar: `sidecar.admin` (the read-only TCP
//! endpoint: metrics, health, status; loopback unless `admin_allow_remote`)
//! and `sidecar.admin_socket`, `admin_socket_mode`, `admin_socket_group`
//! (the Unix socket the admin commands go through, and who may use it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::values::socket_or;
use super::{loc, quoted, Ctx};
use crate::config::host;
use crate::config::raw::RawSidecar;
use crate::config::{
    AdminSocket, ConfigError, SocketGroup, DEFAULT_ADMIN, DEFAULT_ADMIN_SOCKET, MAX_SOCKET_PATH,
};

impl RawSidecar {
    /// `admin`, `admin_allow_remote`: the admin endpoint.
    pub(super) fn admin(
        &self,
        cx: &Ctx<'_>,
        listen_publish: SocketAddr,
        listen_ret: SocketAddr,
    ) -> Result<(SocketAddr, bool), ConfigError> {
        let admin = socket_or(cx, self.admin.as_ref(), "sidecar.admin", DEFAULT_ADMIN)?;
        if admin == listen_publish || admin == listen_ret {
            return Err(cx.err(
                self.admin.as_ref().map(|s| &s.referenced),
                "sidecar.admin",
                format!("{admin} is already a minion listener"),
            ));
        }
        let admin_allow_remote = self.admin_allow_remote.as_ref().is_some_and(|s| s.value);
        if !admin.ip().is_loopback() && !admin_allow_remote {
            return Err(cx.err(
            self.admin.as_ref().map(|s| &s.referenced),
            "sidecar.admin",
            format!("{admin} is not a loopback address; the admin endpoint has no authentication, so exposing it needs `admin_allow_remote: true` (admin commands are still accepted from loopback only)"),
        ));
        }
        Ok((admin, admin_allow_remote))
    }

    /// `admin_socket`, `admin_socket_mode`, `admin_socket_group`: where the
    /// admin commands are accepted, and who may send them.
    pub(super) fn admin_socket(&self, cx: &Ctx<'_>) -> Result<AdminSocket, ConfigError> {
        let path = match &self.admin_socket {
            None => PathBuf::from(DEFAULT_ADMIN_SOCKET),
            Some(s) if !Path::new(s.value.trim()).is_absolute() => {
                return Err(cx.err(
                    loc(s),
                    "sidecar.admin_socket",
                    format!("{} is not an absolute path", quoted(&s.value)),
                ))
            }
            Some(s) => PathBuf::from(s.value.trim()),
        };
        let mode = match &self.admin_socket_mode {
            None => 0o660,
            Some(s) => {
                let text = s.value.trim();
                match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
                    Ok(m) if m <= 0o777 => m,
                    _ => return Err(cx.err(
                        loc(s),
                        "sidecar.admin_socket_mode",
                        format!("{} is not a file mode; write it in octal and quoted, e.g. \"0660\" (owner and group may send admin commands)", quoted(text)),
                    )),
                }
            }
        };
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(cx.err(
                self.admin_socket.as_ref().map(|s| &s.referenced),
                "sidecar.admin_socket",
                format!(
                    "the path has {} bytes; a Unix socket path has at most {MAX_SOCKET_PATH} (the kernel's sun_path); choose a shorter one",
                    path.as_os_str().len()
                ),
            ));
        }
        let group = match &self.admin_socket_group {
            None => None,
            Some(s) if s.value.trim().is_empty() || s.value.contains(['/', ':', '\n']) => {
                return Err(cx.err(
                    loc(s),
                    "sidecar.admin_socket_group",
                    format!("{} is not a group name or id", quoted(&s.value)),
                ))
            }
            Some(s) => {
                let name = s.value.trim().to_string();
                let Some(gid) = host::group_id(&name) else {
                    return Err(cx.err(
                        loc(s),
                        "sidecar.admin_socket_group",
                        format!("no group {} in /etc/group (give a group name from /etc/group or a numeric id)", quoted(&name)),
                    ));
                };
                Some(SocketGroup { name, gid })
            }
        };
        Ok(AdminSocket { path, mode, group })
    }
}

/// A warning when the admin socket's mode lets every local user connect
/// (and so drain, pin or reload the sidecar).
pub(super) fn open_admin_socket(socket: &AdminSocket) -> Option<String> {
    (socket.mode & 0o007 != 0).then(|| {
        format!(
            "`sidecar.admin_socket_mode` {:04o} lets every local user send admin commands (drain, pin, reload) on {}; use \"0660\" with `admin_socket_group` for the operators",
            socket.mode,
            socket.path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;

    use crate::config::{SocketGroup, DEFAULT_ADMIN, DEFAULT_ADMIN_SOCKET, MAX_SOCKET_PATH};

    use super::super::testing::{assert_refused, load, sidecar};

    #[test]
    fn the_admin_endpoint_defaults_to_loopback_9464() {
        let c = load(&sidecar(""));
        assert_eq!(c.sidecar.admin, DEFAULT_ADMIN);
        assert_eq!(c.sidecar.admin.to_string(), "127.0.0.1:9464");
        assert!(!c.sidecar.admin_allow_remote);
        let c = load(&sidecar("admin: \"[::1]:19464\""));
        assert_eq!(
            c.sidecar.admin,
            "[::1]:19464".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn the_admin_endpoint_is_not_a_listener_nor_remote_unless_allowed() {
        assert_refused(
            &sidecar("admin: 127.0.0.1:4506"),
            "t.yaml:4:10: sidecar.admin: 127.0.0.1:4506 is already a minion listener",
        );
        assert_refused(
            &sidecar("admin: 0.0.0.0:9464"),
            "t.yaml:4:10: sidecar.admin: 0.0.0.0:9464 is not a loopback address; the admin endpoint has no authentication, so exposing it needs `admin_allow_remote: true`",
        );
        assert_refused(
            &sidecar("admin: 127.0.0.1:0"),
            "t.yaml:4:10: sidecar.admin: port 0 would pick a random port the minion cannot know; give a port",
        );
        assert_refused(
            &sidecar("admin: 0.0.0.0:9464\nadmin_allow_remote: sure"),
            "t.yaml:5:23: sidecar.admin_allow_remote: invalid boolean",
        );
        let c = load(&sidecar("admin: 0.0.0.0:9464\nadmin_allow_remote: true"));
        assert!(c.sidecar.admin_allow_remote);
    }

    #[test]
    fn the_admin_socket_defaults_to_the_runtime_directory_mode_0660() {
        let c = load(&sidecar(""));
        let socket = &c.sidecar.admin_socket;
        assert_eq!(socket.path, Path::new(DEFAULT_ADMIN_SOCKET));
        assert_eq!(socket.mode, 0o660);
        assert_eq!(socket.group, None);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn the_admin_socket_path_is_absolute_and_fits_sun_path() {
        let at = |len: usize| format!("/{}", "s".repeat(len - 1));
        let c = load(&sidecar(&format!("admin_socket: {}", at(MAX_SOCKET_PATH))));
        assert_eq!(
            c.sidecar.admin_socket.path.as_os_str().len(),
            MAX_SOCKET_PATH
        );
        assert_refused(
            &sidecar(&format!("admin_socket: {}", at(MAX_SOCKET_PATH + 1))),
            "t.yaml:4:17: sidecar.admin_socket: the path has 108 bytes; a Unix socket path has at most 107 (the kernel's sun_path); choose a shorter one",
        );
        assert_refused(
            &sidecar("admin_socket: admin.sock"),
            "t.yaml:4:17: sidecar.admin_socket: `admin.sock` is not an absolute path",
        );
    }

    #[test]
    fn the_admin_socket_mode_is_octal_up_to_0777() {
        let mode = |v: &str| {
            load(&sidecar(&format!("admin_socket_mode: \"{v}\"")))
                .sidecar
                .admin_socket
                .mode
        };
        assert_eq!(mode("0600"), 0o600);
        assert_eq!(mode("0o640"), 0o640);
        assert_eq!(mode("0777"), 0o777);
        assert_refused(
            &sidecar("admin_socket_mode: \"01000\""),
            "t.yaml:4:22: sidecar.admin_socket_mode: `01000` is not a file mode; write it in octal and quoted, e.g. \"0660\"",
        );
        assert_refused(
            &sidecar("admin_socket_mode: rw-rw----"),
            "t.yaml:4:22: sidecar.admin_socket_mode: `rw-rw----` is not a file mode",
        );
    }

    #[test]
    fn a_socket_everyone_may_use_is_a_warning() {
        let c = load(&sidecar("admin_socket_mode: \"0666\""));
        assert_eq!(
            c.warnings,
            ["`sidecar.admin_socket_mode` 0666 lets every local user send admin commands (drain, pin, reload) on /run/salt-sidecar/admin.sock; use \"0660\" with `admin_socket_group` for the operators"]
        );
    }

    #[test]
    fn the_admin_socket_group_is_found_in_etc_group() {
        let group = |v: &str| {
            load(&sidecar(&format!("admin_socket_group: \"{v}\"")))
                .sidecar
                .admin_socket
                .group
        };
        assert_eq!(
            group("root"),
            Some(SocketGroup {
                name: "root".into(),
                gid: 0
            })
        );
        assert_eq!(
            group("4242"),
            Some(SocketGroup {
                name: "4242".into(),
                gid: 4242
            }),
            "a number is taken as the id"
        );
        assert_refused(
            &sidecar("admin_socket_group: no-such-group-25"),
            "t.yaml:4:23: sidecar.admin_socket_group: no group `no-such-group-25` in /etc/group (give a group name from /etc/group or a numeric id)",
        );
        assert_refused(
            &sidecar("admin_socket_group: \"a:b\""),
            "t.yaml:4:23: sidecar.admin_socket_group: `a:b` is not a group name or id",
        );
    }
}
