//! The admin commands, `POST /admin/pin|unpin|drain|undrain|reload`:
//! accepted on the Unix socket only, each checked (the master it names,
//! no stray parameters), sent to the supervisor (or the reloader), and
//! answered once the supervisor's snapshot shows it applied.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use tracing::info;

use super::{Admin, Line};
use crate::config::master::{MasterId, MasterSpec};
use crate::control::supervisor::{Command, Snapshot};
use crate::ops::listen::Via;
use crate::ops::reload::ReloadError;

/// How long a command waits for the supervisor to apply it.
const APPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// `?master=X`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MasterParam {
    master: Option<String>,
}

/// No parameters at all.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NoParams {}

pub(super) async fn pin(
    State(admin): State<Arc<Admin>>,
    Extension(via): Extension<Via>,
    headers: HeaderMap,
    query: Result<Query<MasterParam>, QueryRejection>,
) -> Line {
    let m = match admin.command_target(via, &headers, query) {
        Ok(m) => m,
        Err(line) => return line,
    };
    let label = admin.label(m);
    admin
        .apply(
            Command::Pin(m),
            |s| s.pinned == Some(m),
            format!("pinned to {label}"),
        )
        .await
}

/// `POST /admin/reload`: re-read the config file, as SIGHUP does.
pub(super) async fn reload(
    State(admin): State<Arc<Admin>>,
    Extension(via): Extension<Via>,
    headers: HeaderMap,
    query: Result<Query<NoParams>, QueryRejection>,
) -> Line {
    if let Err(line) = admin.parameterless(via, &headers, &query, "/admin/reload") {
        return line;
    }
    // Answered once the accepted config is in force (`salt-sidecar reload`
    // and so `systemctl reload` wait for this verdict).
    match admin.reloader.reload().await {
        Ok(summary) => Line(StatusCode::OK, format!("ok: reloaded: {summary}")),
        Err(e @ ReloadError::NotApplied(_)) => {
            Line(StatusCode::SERVICE_UNAVAILABLE, format!("reload: {e}"))
        }
        Err(e) => Line(StatusCode::CONFLICT, format!("reload refused: {e}")),
    }
}

pub(super) async fn unpin(
    State(admin): State<Arc<Admin>>,
    Extension(via): Extension<Via>,
    headers: HeaderMap,
    query: Result<Query<NoParams>, QueryRejection>,
) -> Line {
    if let Err(line) = admin.parameterless(via, &headers, &query, "/admin/unpin") {
        return line;
    }
    if admin.snapshot.borrow().pinned.is_none() {
        return Line(StatusCode::OK, "not pinned; nothing to do".into());
    }
    admin
        .apply(Command::Unpin, |s| s.pinned.is_none(), "unpinned".into())
        .await
}

pub(super) async fn drain(
    State(admin): State<Arc<Admin>>,
    Extension(via): Extension<Via>,
    headers: HeaderMap,
    query: Result<Query<MasterParam>, QueryRejection>,
) -> Line {
    set_drained(&admin, via, &headers, query, true).await
}

pub(super) async fn undrain(
    State(admin): State<Arc<Admin>>,
    Extension(via): Extension<Via>,
    headers: HeaderMap,
    query: Result<Query<MasterParam>, QueryRejection>,
) -> Line {
    set_drained(&admin, via, &headers, query, false).await
}

/// Drains (`drain = true`) or undrains the master the query names.
async fn set_drained(
    admin: &Admin,
    via: Via,
    headers: &HeaderMap,
    query: Result<Query<MasterParam>, QueryRejection>,
    drain: bool,
) -> Line {
    let m = match admin.command_target(via, headers, query) {
        Ok(m) => m,
        Err(line) => return line,
    };
    let label = admin.label(m);
    let applied = move |s: &Snapshot| s.drained.get(m.index()).copied().unwrap_or(false) == drain;
    let (command, done) = if drain {
        (Command::Drain(m), format!("draining {label}"))
    } else {
        (Command::Undrain(m), format!("undrained {label}"))
    };
    admin.apply(command, applied, done).await
}

fn bad_query(e: &QueryRejection) -> Line {
    Line(
        StatusCode::BAD_REQUEST,
        format!("bad query: {}", e.body_text()),
    )
}

// === impl Admin ===

impl Admin {
    /// Admin commands come through the Unix socket only: on TCP any local
    /// user could send them (and a browser page could try).
    fn allowed(&self, via: Via, _headers: &HeaderMap) -> Result<(), Line> {
        match via {
            Via::Socket => Ok(()),
            Via::Tcp(_) => Err(Line(
                StatusCode::FORBIDDEN,
                format!(
                    "admin commands are accepted on the admin socket only ({}; e.g. `curl --unix-socket {} -X POST http://localhost/admin/...`); this TCP endpoint serves /metrics /healthz /readyz /status",
                    self.socket.display(),
                    self.socket.display()
                ),
            )),
        }
    }

    /// A command that takes no parameters: allowed here, with none given;
    /// else the 4xx to answer.
    fn parameterless(
        &self,
        via: Via,
        headers: &HeaderMap,
        query: &Result<Query<NoParams>, QueryRejection>,
        path: &str,
    ) -> Result<(), Line> {
        self.allowed(via, headers)?;
        if query.is_err() {
            return Err(Line(
                StatusCode::BAD_REQUEST,
                format!("bad query: {path} takes no parameters"),
            ));
        }
        Ok(())
    }

    /// The master a command names, or the 4xx to answer.
    fn command_target(
        &self,
        via: Via,
        headers: &HeaderMap,
        query: Result<Query<MasterParam>, QueryRejection>,
    ) -> Result<MasterId, Line> {
        self.allowed(via, headers)?;
        let Query(param) = query.map_err(|e| bad_query(&e))?;
        let Some(text) = param.master else {
            return Err(Line(
                StatusCode::BAD_REQUEST,
                "missing ?master=: give a master's label or id as shown by /status".into(),
            ));
        };
        self.find_master(&text).ok_or_else(|| {
            let known: Vec<String> = self
                .plane()
                .masters
                .iter()
                .map(|m| format!("{} (id {})", m.label, m.id.0))
                .collect();
            Line(
                StatusCode::NOT_FOUND,
                format!("no master `{}`; known: {}", text.trim(), known.join(", ")),
            )
        })
    }

    /// [`find_master`] among the current plane's masters.
    pub fn find_master(&self, text: &str) -> Option<MasterId> {
        find_master(&self.plane().masters, text)
    }

    /// Sends `command`, waits until the snapshot satisfies `applied`, logs
    /// and answers `done` with the resulting active master.
    async fn apply(
        &self,
        command: Command,
        applied: impl FnMut(&Snapshot) -> bool,
        done: String,
    ) -> Line {
        let mut snapshot = self.snapshot.clone();
        if self.commands.send(command).await.is_err() {
            return Line(
                StatusCode::SERVICE_UNAVAILABLE,
                "the sidecar is shutting down".into(),
            );
        }
        let active = match tokio::time::timeout(APPLY_TIMEOUT, snapshot.wait_for(applied)).await {
            Ok(Ok(s)) => s.active,
            Ok(Err(_)) => {
                return Line(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the sidecar is shutting down".into(),
                )
            }
            Err(_) => {
                return Line(
                    StatusCode::ACCEPTED,
                    format!("{done} requested; not applied within {APPLY_TIMEOUT:?}, see /status"),
                )
            }
        };
        info!("admin: {done}");
        let active = active.map_or_else(
            || "none (no master is usable)".to_string(),
            |m| self.label(m),
        );
        Line(StatusCode::OK, format!("ok: {done}; active: {active}"))
    }
}

/// A master by label (as in metrics), by host when that is unambiguous,
/// or by id (its index in the configured list, `1` or `#1`).
fn find_master(masters: &[MasterSpec], text: &str) -> Option<MasterId> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Some(m) = masters.iter().find(|m| m.label == text) {
        return Some(m.id);
    }
    if let Some(m) = masters.iter().find(|m| m.label.eq_ignore_ascii_case(text)) {
        return Some(m.id);
    }
    let by_host: Vec<&MasterSpec> = masters
        .iter()
        .filter(|m| m.host.to_string().eq_ignore_ascii_case(text))
        .collect();
    if let [m] = by_host.as_slice() {
        return Some(m.id);
    }
    let index: u16 = text.strip_prefix('#').unwrap_or(text).parse().ok()?;
    masters.get(usize::from(index)).map(|m| m.id)
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, StatusCode};

    use super::find_master;
    use crate::ops::admin::testing::{admin, FOUR_MASTERS};
    use crate::ops::listen::Via;

    #[test]
    fn masters_are_found_by_label_host_or_id() {
        let masters = crate::config::parse(std::path::Path::new("t.yaml"), FOUR_MASTERS)
            .expect("config")
            .masters()
            .to_vec();
        let find = |t: &str| find_master(&masters, t).map(|m| m.0);
        assert_eq!(find("192.0.2.1"), Some(0));
        assert_eq!(find(" salt-b.example.net:14506 "), Some(1));
        assert_eq!(
            find("SALT-B.EXAMPLE.NET:14506"),
            Some(1),
            "labels ignore case"
        );
        assert_eq!(find("salt-b.example.net"), Some(1), "a unique host");
        assert_eq!(
            find("salt-c.example.net"),
            Some(2),
            "the label wins over the host"
        );
        assert_eq!(find("salt-c.example.net:5506"), Some(3));
        assert_eq!(find("1"), Some(1));
        assert_eq!(find("#3"), Some(3));
        assert_eq!(find("4"), None);
        assert_eq!(find("-1"), None);
        assert_eq!(find("99999999999"), None);
        assert_eq!(find(""), None);
        assert_eq!(find("salt-d.example.net"), None);
    }

    #[test]
    fn admin_commands_need_the_unix_socket() {
        let a = admin();
        let none = HeaderMap::new();
        assert!(a.allowed(Via::Socket, &none).is_ok());
        let tcp = Via::Tcp("127.0.0.1:40000".parse().expect("addr"));
        let refused = a.allowed(tcp, &none).expect_err("tcp");
        assert_eq!(refused.0, StatusCode::FORBIDDEN);
        assert!(
            refused.1.contains("/run/salt-sidecar/admin.sock"),
            "names the socket: {}",
            refused.1
        );
    }
}
