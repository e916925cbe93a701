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
//! to apply them.
//!
//! With `sidecar.master_srv`, the masters come from the SRV follower
//! (`control::srv`) instead of the file: [`Reloader::follow_srv`] applies
//! each new set of targets through the same [`Change::Masters`], in the
//! order of their priority and weight for this minion. Owns no sockets.
//!
//! [`Reloader::reload`] returns once the accepted config is in force: the
//! tunables are published before it returns, a new policy is queued to the
//! supervisor ahead of any later command, and a new master list is waited
//! for until the supervisor routes by it (`salt-sidecar reload` and
//! `systemctl reload` report only then).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use crate::config::master::{MasterId, MasterSpec};
use crate::config::settings::Tunables;
use crate::config::{self, Config, ConfigError};
use crate::control::masters::{Plane, PlaneBuilder};
use crate::control::route::Route;
use crate::control::select::{preference_order, srv_order};
use crate::control::srv::SrvState;
use crate::control::supervisor::Command;
use crate::ops::systemd::Notifier;

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("invalid config, keeping the running one: {0}")]
    Invalid(#[from] ConfigError),
    #[error("{0} cannot change by reload (new sockets); restart salt-sidecar to apply it (keeping the running config)")]
    NeedsRestart(String),
    #[error("the new config was accepted but is not in force after {0:?} (the supervisor did not take the new masters); see `salt-sidecar status`")]
    NotApplied(std::time::Duration),
}

/// How long a reload waits for the supervisor to route by new masters.
const APPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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
    if o.admin_socket != n.admin_socket {
        changed.push("`sidecar.admin_socket*`");
    }
    if (o.max_sessions, o.listen_allow_remote) != (n.max_sessions, n.listen_allow_remote) {
        changed.push("`sidecar.max_sessions`/`listen_allow_remote`");
    }
    // The SRV follower runs for one record, and orders by one minion id.
    if old.srv() != new.srv() && (old.srv().is_some() || new.srv().is_some()) {
        changed.push("`sidecar.master_srv` (or its `publish_port`)");
    } else if old.srv().is_some() && old.minion_id != new.minion_id {
        changed.push("`id` (with `sidecar.master_srv`)");
    }
    (!changed.is_empty()).then(|| changed.join(", "))
}

/// Whether the masters (as a list, in this minion's order) differ.
fn masters_changed(old: &Config, new: &Config) -> bool {
    old.masters() != new.masters() || old.shuffle != new.shuffle || old.minion_id != new.minion_id
}

/// The change from the running masters `old` to `new` (in this minion's
/// `order`): a reloaded list, or a new answer of the SRV record. Pure.
pub fn masters_change(old: &[MasterSpec], new: Vec<MasterSpec>, order: Vec<MasterId>) -> Change {
    let missing = |from: &[MasterSpec], other: &[MasterSpec]| -> Vec<String> {
        from.iter()
            .filter(|m| !other.iter().any(|o| o.same_master(m)))
            .map(|m| m.label.clone())
            .collect()
    };
    Change::Masters {
        added: missing(&new, old),
        removed: missing(old, &new),
        masters: new,
        order,
    }
}

/// One thing a reload changes, for the applier to carry out.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// New live settings: the policy goes to the supervisor, the rest to the
    /// tunables channel health and forwarding read.
    Tunables(Tunables),
    /// The master list changed: a new plane, in this minion's new order.
    /// `added`/`removed` name masters by label (same host and ports = same
    /// master, whatever its rank).
    Masters {
        masters: Vec<MasterSpec>,
        order: Vec<MasterId>,
        added: Vec<String>,
        removed: Vec<String>,
    },
}

/// What changes from `old` to `new`, in the order to apply it (tunables
/// first, so a new plane's health tasks start with the new settings); or why
/// the change needs a restart. Pure.
pub fn diff(old: &Config, new: &Config) -> Result<Vec<Change>, ReloadError> {
    if let Some(what) = restart_needed(old, new) {
        return Err(ReloadError::NeedsRestart(what));
    }
    let mut changes = Vec::new();
    let tunables = Tunables::from_config(new);
    if Tunables::from_config(old) != tunables {
        changes.push(Change::Tunables(tunables));
    }
    if masters_changed(old, new) {
        changes.push(masters_change(
            old.masters(),
            new.masters().to_vec(),
            preference_order(new),
        ));
    }
    Ok(changes)
}

/// How long a reload waits for the config file to be read (a hung network
/// file system); the running config stays.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads and validates the config file on a blocking thread, so a slow
/// file never stalls the runtime that forwards (`config::load` itself
/// refuses FIFOs, devices and files over 1 MiB).
async fn load_off_runtime(path: &Path) -> Result<Config, ConfigError> {
    let owned = path.to_path_buf();
    let fail = |message: String| ConfigError::whole_file(path, message);
    match tokio::time::timeout(
        READ_TIMEOUT,
        tokio::task::spawn_blocking(move || config::load(&owned)),
    )
    .await
    {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(e)) => Err(fail(format!("reading the config file failed: {e}"))),
        Err(_) => Err(fail(format!(
            "reading the config file took longer than {}s",
            READ_TIMEOUT.as_secs()
        ))),
    }
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
    /// systemd hears `RELOADING=1`, then `READY=1`, around each reload.
    notifier: Notifier,
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
            notifier: Notifier::disabled(),
        }
    }

    /// Tells `notifier` (systemd) when a reload starts and ends.
    pub fn notifying(mut self, notifier: Notifier) -> Self {
        self.notifier = notifier;
        self
    }

    /// Reloads from the file the sidecar was started with; logs the outcome
    /// (one line) and returns a one-line summary or the reason for refusal.
    pub async fn reload(&self) -> Result<String, ReloadError> {
        self.notifier.reloading();
        let result = self.try_reload().await;
        let active = {
            let route = self.route.borrow();
            route.active.map_or_else(
                || "no master is up".to_string(),
                |m| format!("active master {}", route.plane.label(m)),
            )
        };
        self.notifier.ready(&match &result {
            Ok(_) => format!("{active} (reloaded)"),
            Err(_) => format!("{active} (reload refused; the previous config runs)"),
        });
        match &result {
            Ok(summary) => info!(file = %self.path.display(), "reload: {summary}"),
            Err(e) => error!(file = %self.path.display(), "reload refused: {e}"),
        }
        result
    }

    async fn try_reload(&self) -> Result<String, ReloadError> {
        let _one_at_a_time = self.busy.lock().await;
        let new = load_off_runtime(&self.path).await?;
        let old = match self.current.lock() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mut parts = Vec::new();
        let mut plane = None;
        for change in diff(&old, &new)? {
            let (part, generation) = self.apply(change).await;
            parts.push(part);
            plane = generation.or(plane);
        }
        for w in &new.warnings {
            tracing::warn!("{w}");
        }
        if let Ok(mut c) = self.current.lock() {
            *c = new;
        }
        // Sent: the new config is the running one even if the wait ends early.
        if let Some(generation) = plane {
            self.wait_in_force(generation).await?;
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

    /// Applies each new set of masters the SRV follower publishes, like a
    /// reloaded list (kept masters keep their sessions and health, removed
    /// ones drain, added ones are probed before use), until `token` ends.
    pub async fn follow_srv(
        self: Arc<Self>,
        mut answers: watch::Receiver<SrvState>,
        token: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let (record, masters) = {
                let state = answers.borrow_and_update();
                (state.record.clone(), state.masters.clone())
            };
            if !masters.is_empty() {
                self.apply_srv(&record, masters.to_vec()).await;
            }
            tokio::select! {
                _ = token.cancelled() => return,
                changed = answers.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Applies one SRV answer's masters, if they differ from the running ones.
    async fn apply_srv(&self, record: &str, masters: Vec<MasterSpec>) {
        let _one_at_a_time = self.busy.lock().await;
        let running = self.route.borrow().plane.masters.clone();
        if running == masters {
            return;
        }
        let minion_id = match self.current.lock() {
            Ok(c) => c.minion_id.clone(),
            Err(p) => p.into_inner().minion_id.clone(),
        };
        let order = srv_order(&minion_id, &masters);
        let labels: Vec<&str> = order
            .iter()
            .map(|m| masters[m.index()].label.as_str())
            .collect();
        let order_text = format!("{labels:?}");
        let (summary, _) = self.apply(masters_change(&running, masters, order)).await;
        info!(record, order = %order_text, "SRV record changed: applied {summary}; sessions to kept masters untouched");
    }

    /// Waits until the supervisor routes by the plane of `generation`.
    async fn wait_in_force(&self, generation: u64) -> Result<(), ReloadError> {
        let mut route = self.route.clone();
        let in_force = tokio::time::timeout(
            APPLY_TIMEOUT,
            route.wait_for(|r| r.plane.generation >= generation),
        )
        .await
        .is_ok_and(|seen| seen.is_ok());
        // Not seen: the supervisor ended (shutting down), or did not get to it in time.
        if in_force {
            Ok(())
        } else {
            Err(ReloadError::NotApplied(APPLY_TIMEOUT))
        }
    }

    /// Carries out one change; returns its part of the summary, and the
    /// generation of the new plane when it sent one.
    async fn apply(&self, change: Change) -> (String, Option<u64>) {
        match change {
            Change::Tunables(tunables) => {
                // The supervisor applies the policy to the selector; health and
                // forwarding read the rest from the channel. Published before a
                // new plane starts, so its health tasks use the new settings.
                let _ = self
                    .commands
                    .send(Command::SetPolicy(tunables.policy))
                    .await;
                self.tunables.send_replace(Arc::new(tunables));
                ("settings".to_string(), None)
            }
            Change::Masters {
                masters,
                order,
                added,
                removed,
            } => {
                let current: Arc<Plane> = self.route.borrow().plane.clone();
                let generation = current
                    .generation
                    .max(self.generation.load(Ordering::Relaxed))
                    + 1;
                self.generation.store(generation, Ordering::Relaxed);
                let plane = self.builder.build(generation, &masters, Some(&current));
                let _ = self.commands.send(Command::Reload { plane, order }).await;
                let summary = format!(
                    "masters (added: [{}], removed: [{}])",
                    added.join(", "),
                    removed.join(", ")
                );
                (summary, Some(generation))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(yaml: &str) -> Config {
        config::parse(Path::new("t.yaml"), yaml).expect("valid")
    }

    /// Each change as one short line, so the table reads like the config.
    fn summary(changes: Result<Vec<Change>, ReloadError>) -> Vec<String> {
        match changes {
            Err(e) => vec![format!("refused: {e}")],
            Ok(changes) => changes
                .iter()
                .map(|c| match c {
                    Change::Tunables(_) => "tunables".to_string(),
                    Change::Masters {
                        masters,
                        order,
                        added,
                        removed,
                    } => {
                        let order: Vec<&str> = order
                            .iter()
                            .map(|m| masters[m.index()].label.as_str())
                            .collect();
                        format!("masters {order:?} +{added:?} -{removed:?}")
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn diff_by_table() {
        const BASE: &str = "master: [127.0.0.2, 127.0.0.3]\nid: m\nmaster_alive_interval: 5\n";
        let cases: &[(&str, &str, &[&str])] = &[
            ("identical", BASE, &[]),
            (
                "tunables only",
                "master: [127.0.0.2, 127.0.0.3]\nid: m\nmaster_alive_interval: 5\nmaster_failback: true\nrandom_reauth_delay: 1\nsidecar:\n  rise: 3\n  drain_timeout: 5s\n",
                &["tunables"],
            ),
            (
                "reordered: same masters, new order",
                "master: [127.0.0.3, 127.0.0.2]\nid: m\nmaster_alive_interval: 5\n",
                &[r#"masters ["127.0.0.3", "127.0.0.2"] +[] -[]"#],
            ),
            (
                "one replaced",
                "master: [127.0.0.2, 127.0.0.4]\nid: m\nmaster_alive_interval: 5\n",
                &[r#"masters ["127.0.0.2", "127.0.0.4"] +["127.0.0.4"] -["127.0.0.3"]"#],
            ),
            (
                "a port moved: another master",
                "master: [127.0.0.2, '127.0.0.3:4510']\nid: m\nmaster_alive_interval: 5\n",
                &[r#"masters ["127.0.0.2", "127.0.0.3:4510"] +["127.0.0.3:4510"] -["127.0.0.3"]"#],
            ),
            (
                "tunables first, then masters",
                "master: [127.0.0.2]\nid: m\nmaster_alive_interval: 7\n",
                &["tunables", r#"masters ["127.0.0.2"] +[] -["127.0.0.3"]"#],
            ),
            (
                "listeners need a restart",
                "master: [127.0.0.2, 127.0.0.3]\nid: m\nmaster_alive_interval: 5\nsidecar:\n  listen: 127.0.0.9\n",
                &["refused: `sidecar.listen*` cannot change by reload (new sockets); restart salt-sidecar to apply it (keeping the running config)"],
            ),
            (
                "so does the admin address, whatever else changes",
                "master: [127.0.0.4]\nid: m\nsidecar:\n  admin: 127.0.0.1:9999\n",
                &["refused: `sidecar.admin` cannot change by reload (new sockets); restart salt-sidecar to apply it (keeping the running config)"],
            ),
        ];
        let old = parse(BASE);
        for (name, new, want) in cases {
            assert_eq!(summary(diff(&old, &parse(new))), *want, "{name}");
        }
    }

    /// With `sidecar.master_srv` the file names no masters: settings reload
    /// as usual; another record, another publish port, another id, or a
    /// switch between list and record need a restart.
    #[test]
    fn diff_with_an_srv_record() {
        const SRV: &str =
            "id: m\nmaster_alive_interval: 5\nsidecar:\n  master_srv: _salt._tcp.example.net\n";
        let restart = |what: &str| {
            format!("refused: {what} cannot change by reload (new sockets); restart salt-sidecar to apply it (keeping the running config)")
        };
        let cases: &[(&str, &str, Vec<String>)] = &[
            ("identical", SRV, vec![]),
            (
                "settings",
                "id: m\nmaster_alive_interval: 9\nsidecar:\n  master_srv: _salt._tcp.example.net\n",
                vec!["tunables".into()],
            ),
            (
                "another record",
                "id: m\nmaster_alive_interval: 5\nsidecar:\n  master_srv: _salt._tcp.example.org\n",
                vec![restart("`sidecar.master_srv` (or its `publish_port`)")],
            ),
            (
                "another publish port (the listener's too)",
                "id: m\nmaster_alive_interval: 5\npublish_port: 14505\nsidecar:\n  master_srv: _salt._tcp.example.net\n",
                vec![restart("`sidecar.listen*`, `sidecar.master_srv` (or its `publish_port`)")],
            ),
            (
                "another id",
                "id: n\nmaster_alive_interval: 5\nsidecar:\n  master_srv: _salt._tcp.example.net\n",
                vec![restart("`id` (with `sidecar.master_srv`)")],
            ),
            (
                "a list instead",
                "master: [127.0.0.2]\nid: m\nmaster_alive_interval: 5\n",
                vec![restart("`sidecar.master_srv` (or its `publish_port`)")],
            ),
        ];
        let old = parse(SRV);
        for (name, new, want) in cases {
            assert_eq!(summary(diff(&old, &parse(new))), *want, "{name}");
        }
        // And from a list to a record.
        let list = parse("master: [127.0.0.2]\nid: m\nmaster_alive_interval: 5\n");
        assert_eq!(
            summary(diff(&list, &old)),
            [restart("`sidecar.master_srv` (or its `publish_port`)")]
        );
    }

    /// An SRV answer's change, as the applier sees it: masters named by
    /// label, same host and ports = same master (a new weight is not a new
    /// master).
    #[test]
    fn an_srv_answer_changes_the_masters_like_a_reload() {
        use crate::config::master::{label_for, Host, SrvRank};
        let m = |id: u16, host: &str, weight: u16| MasterSpec {
            id: MasterId(id),
            host: Host::Name(host.into()),
            publish_port: 4505,
            ret_port: 4506,
            label: label_for(&Host::Name(host.into()), 4505, 4506, (4505, 4506)),
            srv: Some(SrvRank {
                priority: 10,
                weight,
            }),
        };
        let old = vec![m(0, "a.example", 1), m(1, "b.example", 1)];
        let new = vec![m(0, "b.example", 5), m(1, "c.example", 1)];
        let order = vec![MasterId(0), MasterId(1)];
        assert_eq!(
            summary(Ok(vec![masters_change(&old, new, order)])),
            [r#"masters ["b.example", "c.example"] +["c.example"] -["a.example"]"#]
        );
    }
}
