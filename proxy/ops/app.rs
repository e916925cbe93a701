//! Wires the modules together for one validated [`Config`] and runs them
//! until shutdown.
//!
//! Order: metrics → listeners bound, the admin endpoint's too (so a port
//! clash fails before anything starts) → DNS → health tasks → supervisor →
//! reloader (and, with `sidecar.master_srv`, the SRV follower feeding it)
//! → admin endpoint → accept loops. Shutdown (the
//! token) stops accepting, asks every session to drain, and waits at most
//! `drain_timeout` for them. Owns no policy of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::clock;
use crate::config::master::Port;
use crate::config::settings::{Policy, Tunables};
use crate::config::Config;
use crate::control::liveness::{Liveness, SUPERVISOR_TICK};
use crate::control::masters::{Plane, PlaneBuilder};
use crate::control::select::{jitter_seed, preference_order, Reason, Selector};
use crate::control::srv;
use crate::control::supervisor::{Command, Snapshot, Supervisor};
use crate::data::forward::{Forwarder, Notice};
use crate::limits::{self, Budget};
use crate::metrics::Metrics;
use crate::ops::admin::{self, Admin};
use crate::ops::listen;
use crate::ops::reload::Reloader;
use crate::ops::systemd::{self, Notifier};

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({port} port): {source}")]
    Bind {
        addr: SocketAddr,
        port: Port,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} (admin endpoint, `sidecar.admin`): {source}")]
    AdminBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the admin socket (`sidecar.admin_socket`): {0}")]
    AdminSocket(#[from] listen::SocketError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("socket activation (LISTEN_FDS from systemd): {0}")]
    Activation(#[source] std::io::Error),
}

impl StartError {
    /// A setting of the config file is the cause (exit status 78, like an
    /// invalid file): an admin socket directory others can write.
    pub fn is_config(&self) -> bool {
        matches!(self, StartError::AdminSocket(e) if e.is_unsafe_dir())
    }
}

/// A started sidecar: handles for the admin API and for shutdown.
pub struct Running {
    pub metrics: Arc<Metrics>,
    pub commands: mpsc::Sender<Command>,
    pub route: watch::Receiver<crate::control::route::Route>,
    /// The selector's state as the admin endpoint shows it.
    pub snapshot: watch::Receiver<Snapshot>,
    pub listen_publish: SocketAddr,
    pub listen_ret: SocketAddr,
    pub admin: SocketAddr,
    /// The admin socket (commands).
    pub admin_socket: std::path::PathBuf,
    /// Re-reads the config file (SIGHUP, `POST /admin/reload`).
    pub reloader: Arc<Reloader>,
    tracker: TaskTracker,
    token: CancellationToken,
    tunables: watch::Receiver<Arc<Tunables>>,
    /// systemd's notify socket (`STOPPING=1` when the drain starts).
    notifier: Notifier,
}

/// Raises the open-file limit as far as allowed and splits it (see
/// [`Budget`]); logs the outcome once.
fn fd_budget(config: &Config) -> Budget {
    let limit = match limits::raise_nofile() {
        Ok((before, after)) => {
            if after > before {
                info!(
                    from = before,
                    to = after,
                    "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"
                );
            }
            after
        }
        Err(e) => {
            warn!(error = %e, "cannot read or raise the open-file limit; assuming 1024");
            1024
        }
    };
    // With an SRV record, room for as many masters as it may name.
    let masters = match config.srv() {
        Some(_) => srv::MAX_TARGETS,
        None => config.masters().len(),
    };
    let budget = Budget::plan(limit, masters, config.sidecar.max_sessions);
    if let Some(wanted) = budget.lowered_from {
        warn!(
            wanted,
            max_sessions = budget.max_sessions,
            fd_limit = limit,
            "sidecar.max_sessions lowered to fit the open-file limit (raise LimitNOFILE)"
        );
    }
    if budget.max_sessions < 2 {
        error!(
            fd_limit = limit,
            needed = budget.minimum_fd_limit(),
            "the open-file limit is too low for even one minion; raise it (ulimit -n, LimitNOFILE)"
        );
    }
    info!(
        fd_limit = budget.fd_limit,
        reserved = budget.reserve,
        max_sessions = budget.max_sessions,
        max_admin_connections = budget.max_admin,
        "resource budget"
    );
    budget
}

/// Starts every task of the sidecar for `config`; returns once listening.
pub async fn start(config: &Config, token: CancellationToken) -> Result<Running, StartError> {
    for w in &config.warnings {
        warn!("{w}");
    }
    for n in &config.notes {
        info!("{n}");
    }
    let metrics = Metrics::new(config.masters(), &Reason::COUNTED.map(Reason::as_str))?;
    let sc = &config.sidecar;
    let budget = fd_budget(config);
    let notifier = Notifier::from_env();
    let listeners = Listeners::bind(config).await?;
    let (listen_publish, listen_ret, admin_addr) = listeners.addrs(config);

    let tracker = TaskTracker::new();
    let liveness = Arc::new(Liveness::new(Instant::now(), Duration::ZERO));
    let (transitions_tx, transitions_rx) = mpsc::channel(64);
    let initial = Tunables::from_config(config);
    let policy = initial.policy;
    let (tunables_tx, tunables_rx) = watch::channel(Arc::new(initial));
    let builder = PlaneBuilder {
        tracker: tracker.clone(),
        metrics: metrics.clone(),
        transitions: transitions_tx,
        tunables: tunables_rx.clone(),
        root: token.clone(),
        listeners: [listen_publish, listen_ret],
        liveness: liveness.clone(),
    };
    let plane = builder.build(0, config.masters(), None);
    let watchdog = systemd::watchdog_period();
    let supervisor = supervisor(
        config,
        plane,
        policy,
        &metrics,
        (liveness.clone(), watchdog.map(|_| SUPERVISOR_TICK)),
        tunables_rx.clone(),
    );
    let (route_rx, snapshot_rx) = (
        supervisor.route.subscribe(),
        supervisor.snapshot.subscribe(),
    );
    let (commands_tx, commands_rx) = mpsc::channel(16);
    tracker.spawn(supervisor.run(transitions_rx, commands_rx, token.clone()));

    let reloader = Arc::new(
        Reloader::new(
            config.clone(),
            tunables_tx,
            commands_tx.clone(),
            builder,
            route_rx.clone(),
        )
        .notifying(notifier.clone()),
    );
    // With `sidecar.master_srv`, the record's targets are the masters: each
    // new set is applied by the reloader, like a reloaded list.
    let srv_state = config.srv().map(|source| {
        let answers = srv::start(
            source,
            [listen_publish, listen_ret],
            &metrics,
            &tracker,
            &token,
        );
        tracker.spawn(reloader.clone().follow_srv(answers.clone(), token.clone()));
        answers
    });
    let sessions = Arc::new(Semaphore::new(budget.max_sessions));
    let notice = Arc::new(Notice::default());
    let admin = Arc::new(Admin {
        minion_id: config.minion_id.clone(),
        metrics: metrics.clone(),
        snapshot: snapshot_rx.clone(),
        srv: srv_state,
        commands: commands_tx.clone(),
        reloader: reloader.clone(),
        socket: sc.admin_socket.path.clone(),
        max_sessions: budget.max_sessions,
        sessions: sessions.clone(),
        notice: notice.clone(),
    });
    let endpoint = listen::Endpoint {
        router: admin::router(admin),
        metrics: metrics.clone(),
        max_connections: budget.max_admin,
        token: token.clone(),
    };
    tracker.spawn(endpoint.clone().serve_tcp(listeners.admin));
    let socket_path = sc.admin_socket.path.clone();
    let admin_socket = listeners.admin_socket;
    tracker.spawn(async move { endpoint.serve_socket(admin_socket, &socket_path).await });
    info!(admin = %admin_addr, "admin endpoint: /metrics /healthz /readyz /status");
    info!(socket = %sc.admin_socket.path.display(), "admin socket: /status and the commands /admin/pin|unpin|drain|undrain|reload");

    let forwarder = Arc::new(Forwarder {
        route: route_rx.clone(),
        metrics: metrics.clone(),
        tunables: tunables_rx.clone(),
        sessions,
        max_sessions: budget.max_sessions,
        newcomers: Default::default(),
        notice: notice.clone(),
        pacer: Default::default(),
    });
    for (listener, port) in [
        (listeners.publish, Port::Publish),
        (listeners.ret, Port::Ret),
    ] {
        tracker.spawn(
            forwarder
                .clone()
                .serve(listener, port, token.clone(), tracker.clone()),
        );
    }
    info!(publish = %listen_publish, ret = %listen_ret, activated = listeners.activated, "listening for the minion");
    let first_verdict = sc.connect_timeout + Duration::from_millis(500);
    tracker.spawn(notify_service(
        notifier.clone(),
        snapshot_rx.clone(),
        first_verdict,
        token.clone(),
    ));
    if let Some(period) = watchdog {
        info!(
            period_ms = period.as_millis() as u64,
            "systemd watchdog: fed while the control loop makes progress"
        );
        tracker.spawn(systemd::watchdog(
            notifier.clone(),
            period,
            liveness,
            token.clone(),
        ));
    }
    Ok(Running {
        metrics,
        commands: commands_tx,
        route: route_rx,
        snapshot: snapshot_rx,
        listen_publish,
        listen_ret,
        admin: admin_addr,
        admin_socket: sc.admin_socket.path.clone(),
        reloader,
        tracker,
        token,
        tunables: tunables_rx,
        notifier,
    })
}

/// Tells systemd: `READY=1` once the first probe round has a verdict for
/// every master (or after `first_verdict`, whatever it says), then a
/// `STATUS=` line whenever the selection changes.
async fn notify_service(
    notifier: Notifier,
    mut snapshot: watch::Receiver<Snapshot>,
    first_verdict: Duration,
    token: CancellationToken,
) {
    let deadline = Instant::now() + first_verdict;
    // Health handles have no change event of their own: looked at briefly.
    while Instant::now() < deadline {
        let probed = snapshot
            .borrow()
            .plane
            .health
            .iter()
            .all(|h| h.status().last_probe.is_some());
        if probed {
            break;
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    let mut line = status_line(&snapshot.borrow_and_update());
    notifier.ready(&line);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            changed = snapshot.changed() => if changed.is_err() { return },
        }
        let now = status_line(&snapshot.borrow_and_update());
        if now != line {
            notifier.status(&now);
            line = now;
        }
    }
}

/// One line for `systemctl status`: the active master and its health.
fn status_line(s: &Snapshot) -> String {
    match s.active {
        Some(m) => {
            let up = s
                .plane
                .health
                .get(m.index())
                .and_then(|h| h.status().up)
                .unwrap_or(false);
            let how = match (up, s.pinned == Some(m)) {
                (true, true) => "up, pinned",
                (true, false) => "up",
                (false, true) => "down, pinned",
                (false, false) => "down",
            };
            format!("active master {} ({how})", s.plane.label(m))
        }
        None => "no master is up".to_string(),
    }
}

/// The three sockets, bound before anything starts (a port clash fails
/// start-up at once).
struct Listeners {
    publish: TcpListener,
    ret: TcpListener,
    /// The minion listeners came from systemd (socket activation).
    activated: bool,
    admin: TcpListener,
    admin_socket: tokio::net::UnixListener,
}

impl Listeners {
    async fn bind(config: &Config) -> Result<Listeners, StartError> {
        let sc = &config.sidecar;
        let bind = |addr: SocketAddr, port: Port| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, port, source })
        };
        // Socket activation: systemd holds the minion listeners across
        // restarts (config/salt-sidecar.socket); bind what it did not pass.
        let passed = systemd::activated_listeners().map_err(StartError::Activation)?;
        let activated = passed.publish.is_some() || passed.ret.is_some();
        let adopt = |l: Option<std::net::TcpListener>| l.map(TcpListener::from_std).transpose();
        let publish = match adopt(passed.publish).map_err(StartError::Activation)? {
            Some(l) => l,
            None => bind(sc.listen_publish, Port::Publish).await?,
        };
        let ret = match adopt(passed.ret).map_err(StartError::Activation)? {
            Some(l) => l,
            None => bind(sc.listen_ret, Port::Ret).await?,
        };
        let admin = TcpListener::bind(sc.admin)
            .await
            .map_err(|source| StartError::AdminBind {
                addr: sc.admin,
                source,
            })?;
        let admin_socket = listen::bind_socket(&sc.admin_socket)?;
        Ok(Listeners {
            publish,
            ret,
            activated,
            admin,
            admin_socket,
        })
    }

    /// The bound addresses (port 0 in the config becomes the real one).
    fn addrs(&self, config: &Config) -> (SocketAddr, SocketAddr, SocketAddr) {
        let sc = &config.sidecar;
        (
            self.publish.local_addr().unwrap_or(sc.listen_publish),
            self.ret.local_addr().unwrap_or(sc.listen_ret),
            self.admin.local_addr().unwrap_or(sc.admin),
        )
    }
}

/// The supervisor for the first plane, its selector in this minion's order.
fn supervisor(
    config: &Config,
    plane: Arc<Plane>,
    policy: Policy,
    metrics: &Arc<Metrics>,
    (liveness, alive_tick): (Arc<Liveness>, Option<Duration>),
    tunables: watch::Receiver<Arc<Tunables>>,
) -> Supervisor {
    let order = preference_order(config);
    let labels: Vec<&str> = order.iter().map(|m| plane.label(*m)).collect();
    let masters = match config.srv() {
        Some(srv) => format!("from the SRV record {}", srv.name),
        None => format!("{labels:?}"),
    };
    info!(
        minion_id = %config.minion_id,
        order = %masters,
        probe = config.sidecar.probe.as_str(),
        alive_interval_s = config.alive_interval.as_secs(),
        failback = config.failback,
        "salt-sidecar starting"
    );
    let unix_nanos = clock::unix(std::time::SystemTime::now()).as_nanos() as u64;
    let seed = jitter_seed(&config.minion_id, unix_nanos);
    let selector = Selector::new(order, policy, seed, Instant::now());
    let (route, _) = watch::channel(Supervisor::current_route(&selector, &plane, None));
    let (snapshot, _) = watch::channel(Supervisor::current_snapshot(&selector, &plane));
    Supervisor {
        selector,
        plane,
        early: Vec::new(),
        route,
        snapshot,
        metrics: metrics.clone(),
        liveness,
        alive_tick,
        tunables,
        linger: None,
        last_busy: None,
        was_open: false,
        arrival: None,
    }
}

impl Running {
    /// Waits for the shutdown token, then drains sessions (bounded by the
    /// drain timeout). Returns `false` if sessions had to be abandoned.
    pub async fn wait(self) -> bool {
        self.token.cancelled().await;
        self.notifier.stopping();
        self.tracker.close();
        let drain_timeout = self.tunables.borrow().drain_timeout;
        let deadline = drain_timeout + Duration::from_millis(500);
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                drain_timeout_s = drain_timeout.as_secs(),
                "drain timeout: closing the remaining sessions"
            );
            return false;
        }
        info!("all sessions closed; bye");
        true
    }
}
