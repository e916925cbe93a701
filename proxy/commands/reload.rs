//! `salt-sidecar reload`: asks a running sidecar to re-read its config file
//! and reports its verdict.
//!
//! A client of the admin socket (`POST /admin/reload`): the sidecar answers
//! only once the new config is in force, or with the reason it refused it
//! (file, line and key), keeping the running one. `ExecReload=` of the unit
//! runs it, so `systemctl reload salt-sidecar` fails when the config is
//! refused and returns when the new one runs. Never reads the config
//! itself: the running sidecar decides, with the file it was started with.

use std::fmt;
use std::time::Duration;

use hyper::Method;

use crate::commands::status::{request, AdminAddr, ClientError};

/// What the sidecar said about the reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The new config is in force; the sidecar's one-line summary.
    Reloaded(String),
    /// The new config was refused and the running one stays; the reason
    /// (file, line and key of the first error, or what needs a restart).
    Refused(String),
}

/// Why no verdict came back.
#[derive(Debug, thiserror::Error)]
pub enum ReloadClientError {
    #[error("{0}; is salt-sidecar running, with this `sidecar.admin_socket`? (use --socket PATH)")]
    Unreachable(#[source] ClientError),
    #[error("{addr} answered {status}: {body}")]
    Unexpected {
        addr: AdminAddr,
        status: u16,
        body: String,
    },
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Reloaded(summary) | Verdict::Refused(summary) => f.write_str(summary),
        }
    }
}

/// Asks the sidecar behind `socket` to reload and waits up to `limit` for
/// its verdict.
pub async fn reload(socket: &AdminAddr, limit: Duration) -> Result<Verdict, ReloadClientError> {
    let reply = request(socket.clone(), Method::POST, "/admin/reload", limit)
        .await
        .map_err(ReloadClientError::Unreachable)?;
    verdict(socket, reply.status, reply.body.trim())
}

/// The verdict an admin reply carries: 200 reloaded, 409 refused; anything
/// else (403 on a TCP endpoint, 503 while shutting down or not applied in
/// time) is no verdict. Pure.
fn verdict(addr: &AdminAddr, status: u16, body: &str) -> Result<Verdict, ReloadClientError> {
    match status {
        200 => Ok(Verdict::Reloaded(
            body.strip_prefix("ok: ").unwrap_or(body).to_string(),
        )),
        409 => Ok(Verdict::Refused(
            body.strip_prefix("reload refused: ")
                .unwrap_or(body)
                .to_string(),
        )),
        _ => Err(ReloadClientError::Unexpected {
            addr: addr.clone(),
            status,
            body: body.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn replies_become_verdicts() {
        let addr = AdminAddr::Socket(PathBuf::from("/run/salt-sidecar/admin.sock"));
        assert_eq!(
            verdict(&addr, 200, "ok: reloaded: no change").expect("a verdict"),
            Verdict::Reloaded("reloaded: no change".into())
        );
        let refused = verdict(
            &addr,
            409,
            "reload refused: invalid config, keeping the running one: /etc/salt-sidecar/config.yaml:3:7: sidecar.rise: must be at least 1",
        )
        .expect("a verdict");
        assert_eq!(
            refused.to_string(),
            "invalid config, keeping the running one: /etc/salt-sidecar/config.yaml:3:7: sidecar.rise: must be at least 1"
        );
        assert!(matches!(refused, Verdict::Refused(_)));
        let err = verdict(
            &addr,
            403,
            "admin commands are accepted on the admin socket only",
        )
        .expect_err("no verdict");
        assert!(err.to_string().contains("answered 403"), "{err}");
        assert!(verdict(&addr, 503, "reload: not in force").is_err());
    }
}
