//! Re-reading the config file while running (SIGHUP, `POST /admin/reload`).
//!
//! A reload validates the file exactly like start-up. An invalid file is
//! refused with its reason and the running config stays. A valid one has its
//! *tunables* (health timing and thresholds, probe kind, timeouts, failback,
//! reconnect jitter) published on a `watch` channel that health, forwarding
//! and the supervisor read live. A changed master list (masters, their order
//! or ports, shuffle, id) becomes a new [`Plane`] that carries over what it
//! can; the supervisor swaps to it: sessions to masters that stay are not
//! touched, sessions to removed masters drain. Changes that need new sockets
//! (the listeners, the admin address) are refused with the reason: restart
//! to apply them. Owns no sockets.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use crate::config::{self, Config, ConfigError};
use crate::control::health;
use crate::control::masters::{Plane, PlaneBuilder};
use crate::control::route::Route;
use crate::control::select::Policy;
use crate::control::supervisor::Command;
use crate::net::SocketOptions;

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
    #[error("{0} cannot change by reload (new sockets); restart salt-sidecar to apply it (keeping the running config)")]
    NeedsRestart(String),
}

/// The keys whose change a reload cannot apply, or `None`.
pub fn restart_needed(old: &Config, new: &Config) -> Option<String> {
    let mut changed = Vec::new();
    let (o, n) = (&old.sidecar, &new.sidecar);
    if (o.listen_publish, o.listen_ret) != (n.listen_publish, n.listen_ret) {
        changed.push("`sidecar.listen*`");
    }
    if (o.admin, o.admin_allow_remote) != (n.admin, n.admin_allow_remote) {
        changed.push("`sidecar.admin`");
    }
    (!changed.is_empty()).then(|| changed.join(", "))
}

/// Whether the masters (as a list, in this minion's order) differ.
fn masters_changed(old: &Config, new: &Config) -> bool {
    old.masters != new.masters || old.shuffle != new.shuffle || old.minion_id != new.minion_id
}

/// Re-reads the config on demand and publishes what changed.
pub struct Reloader {
    path: PathBuf,
    current: Mutex<Config>,
    tunables: watch::Sender<Arc<Tunables>>,
    commands: mpsc::Sender<Command>,
    /// Builds the plane for a changed master list.
    builder: PlaneBuilder,
    /// The current plane, to carry state over from.
    route: watch::Receiver<Route>,
    generation: AtomicU64,
    /// One reload at a time (SIGHUP and the admin API may race).
    busy: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(
        config: Config,
        tunables: watch::Sender<Arc<Tunables>>,
        commands: mpsc::Sender<Command>,
        builder: PlaneBuilder,
        route: watch::Receiver<Route>,
    ) -> Self {
        Reloader {
            path: config.source.clone(),
            current: Mutex::new(config),
            tunables,
            commands,
            builder,
            route,
            generation: AtomicU64::new(0),
            busy: tokio::sync::Mutex::new(()),
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
        let _one_at_a_time = self.busy.lock().await;
        let new = config::load(&self.path)?;
        let old = match self.current.lock() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if let Some(what) = restart_needed(&old, &new) {
            return Err(ReloadError::NeedsRestart(what));
        }
        let mut parts = Vec::new();
        let tunables = Arc::new(Tunables::from_config(&new));
        if *self.tunables.borrow() != tunables {
            // The supervisor applies the policy to the selector; health and
            // forwarding read the rest from the channel. Published before a
            // new plane starts, so its health tasks use the new settings.
            let _ = self
                .commands
                .send(Command::SetPolicy(tunables.policy))
                .await;
            self.tunables.send_replace(tunables);
            parts.push("settings".to_string());
        }
        if masters_changed(&old, &new) {
            let current: Arc<Plane> = self.route.borrow().plane.clone();
            let generation = current
                .generation
                .max(self.generation.load(Ordering::Relaxed))
                + 1;
            self.generation.store(generation, Ordering::Relaxed);
            let plane = self.builder.build(generation, &new.masters, Some(&current));
            let names = |from: &Plane, missing_in: &Plane| -> String {
                let v: Vec<&str> = from
                    .masters
                    .iter()
                    .filter(|m| missing_in.find(m).is_none())
                    .map(|m| m.label.as_str())
                    .collect();
                v.join(", ")
            };
            parts.push(format!(
                "masters (added: [{}], removed: [{}])",
                names(&plane, &current),
                names(&current, &plane)
            ));
            let order = crate::ops::app::preference_order(&new);
            let _ = self.commands.send(Command::Reload { plane, order }).await;
        }
        for w in &new.warnings {
            tracing::warn!("{w}");
        }
        if let Ok(mut c) = self.current.lock() {
            *c = new;
        }
        Ok(if parts.is_empty() {
            "no change".into()
        } else {
            format!(
                "applied {}; sessions to kept masters untouched",
                parts.join(" and ")
            )
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
    fn listener_changes_need_a_restart_and_master_changes_do_not() {
        let old = parse("");
        let reordered = config::parse(
            Path::new("t.yaml"),
            "master: [127.0.0.3, 127.0.0.2]\nid: m\nmaster_alive_interval: 5\n",
        )
        .expect("valid");
        assert_eq!(restart_needed(&old, &reordered), None);
        assert!(masters_changed(&old, &reordered));
        assert!(!masters_changed(&old, &parse("master_failback: true")));
        let moved = parse("sidecar:\n  listen: 127.0.0.9");
        assert!(restart_needed(&old, &moved).is_some_and(|w| w.contains("listen")));
    }
}
