//! Re-reading the config file while running (SIGHUP, `POST /admin/reload`).
//!
//! A reload validates the file exactly like start-up. An invalid file is
//! refused with its reason and the running config stays. A valid one has its
//! *tunables* (health timing and thresholds, probe kind, timeouts, failback,
//! reconnect jitter) published on a `watch` channel that health, forwarding
//! and the supervisor read live: no session is touched. Changes that need new
//! sockets or a new master list (listeners, admin address, masters, their
//! order, shuffle, id) are refused with the reason, for now; the running
//! config stays. Owns no sockets.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use crate::config::{self, Config, ConfigError};
use crate::health;
use crate::select::Policy;
use crate::supervisor::Command;
use crate::upstream::SocketOptions;

/// Everything a reload can change live.
#[derive(Clone, Debug, PartialEq)]
pub struct Tunables {
    pub health: health::Settings,
    pub policy: Policy,
    pub connect_timeout: Duration,
    pub drain_timeout: Duration,
    pub socket_options: SocketOptions,
}

impl Tunables {
    pub fn from_config(c: &Config) -> Self {
        let sc = &c.sidecar;
        Tunables {
            health: health::Settings {
                kind: sc.probe,
                interval: c.alive_interval,
                timeout: sc.connect_timeout,
                rise: sc.rise,
                fall: sc.fall,
            },
            policy: Policy {
                failback: c.failback,
                failback_interval: c.failback_interval,
                reauth_delay: c.reauth_delay,
                recycle_base: Duration::from_secs(1).min(c.alive_interval),
                recycle_cap: c.alive_interval,
                startup_grace: sc.connect_timeout + Duration::from_millis(500),
            },
            connect_timeout: sc.connect_timeout,
            drain_timeout: sc.drain_timeout,
            socket_options: SocketOptions::for_health(
                c.alive_interval,
                sc.fall,
                sc.connect_timeout,
            ),
        }
    }
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("invalid config, keeping the running one: {0}")]
    Invalid(#[from] ConfigError),
    #[error("{0} cannot change by reload yet; restart salt-sidecar to apply it (keeping the running config)")]
    NeedsRestart(String),
}

/// The keys whose change a reload cannot apply, or `None`.
pub fn restart_needed(old: &Config, new: &Config) -> Option<String> {
    let mut changed = Vec::new();
    if old.masters != new.masters {
        changed.push("`master` (the list, its order or ports)");
    }
    if old.shuffle != new.shuffle {
        changed.push("`master_shuffle`");
    }
    if old.minion_id != new.minion_id {
        changed.push("`id`");
    }
    if old.master_type != new.master_type {
        changed.push("`master_type`");
    }
    let (o, n) = (&old.sidecar, &new.sidecar);
    if (o.listen_publish, o.listen_ret) != (n.listen_publish, n.listen_ret) {
        changed.push("`sidecar.listen*`");
    }
    if (o.admin, o.admin_allow_remote) != (n.admin, n.admin_allow_remote) {
        changed.push("`sidecar.admin`");
    }
    (!changed.is_empty()).then(|| changed.join(", "))
}

/// Re-reads the config on demand and publishes the new tunables.
pub struct Reloader {
    path: PathBuf,
    current: Mutex<Config>,
    tunables: watch::Sender<Arc<Tunables>>,
    commands: mpsc::Sender<Command>,
}

impl Reloader {
    pub fn new(
        config: Config,
        tunables: watch::Sender<Arc<Tunables>>,
        commands: mpsc::Sender<Command>,
    ) -> Self {
        Reloader {
            path: config.source.clone(),
            current: Mutex::new(config),
            tunables,
            commands,
        }
    }

    /// Reloads from the file the sidecar was started with; logs the outcome
    /// (one line) and returns a one-line summary or the reason for refusal.
    pub async fn reload(&self) -> Result<String, ReloadError> {
        let result = self.try_reload().await;
        match &result {
            Ok(summary) => info!(file = %self.path.display(), "reload: {summary}"),
            Err(e) => error!(file = %self.path.display(), "reload refused: {e}"),
        }
        result
    }

    async fn try_reload(&self) -> Result<String, ReloadError> {
        let new = config::load(&self.path)?;
        let old = match self.current.lock() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if let Some(what) = restart_needed(&old, &new) {
            return Err(ReloadError::NeedsRestart(what));
        }
        let tunables = Tunables::from_config(&new);
        let changed = *self.tunables.borrow() != Arc::new(tunables.clone());
        if changed {
            // The supervisor applies the policy part to the selector; health and
            // forwarding read the rest from the channel.
            let _ = self
                .commands
                .send(Command::SetPolicy(tunables.policy))
                .await;
            self.tunables.send_replace(Arc::new(tunables));
        }
        for w in &new.warnings {
            tracing::warn!("{w}");
        }
        if let Ok(mut c) = self.current.lock() {
            *c = new;
        }
        Ok(if changed {
            "applied; open sessions untouched".into()
        } else {
            "no change".into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(extra: &str) -> Config {
        config::parse(
            Path::new("t.yaml"),
            &format!("master: [127.0.0.2, 127.0.0.3]\nid: m\nmaster_alive_interval: 5\n{extra}"),
        )
        .expect("valid")
    }

    #[test]
    fn tunables_apply_live() {
        let old = parse("");
        let new = parse("master_failback: true\nrandom_reauth_delay: 1\nsidecar:\n  rise: 3\n  drain_timeout: 5s");
        assert_eq!(restart_needed(&old, &new), None);
        let t = Tunables::from_config(&new);
        assert_eq!(
            (t.health.rise, t.drain_timeout, t.policy.reauth_delay),
            (3, Duration::from_secs(5), Duration::from_secs(1))
        );
        assert!(t.policy.failback);
    }

    #[test]
    fn master_list_and_listener_changes_need_a_restart() {
        let old = parse("");
        let reordered = config::parse(
            Path::new("t.yaml"),
            "master: [127.0.0.3, 127.0.0.2]\nid: m\nmaster_alive_interval: 5\n",
        )
        .expect("valid");
        assert!(restart_needed(&old, &reordered).is_some_and(|w| w.contains("`master`")));
        let moved = parse("sidecar:\n  listen: 127.0.0.9");
        assert!(restart_needed(&old, &moved).is_some_and(|w| w.contains("listen")));
    }
}
