//! The admin HTTP routes, served by [`super::listen`] on `sidecar.admin`
//! (TCP, default 127.0.0.1:9464) and on `sidecar.admin_socket` (Unix).
//!
//! Serves `GET /metrics` (Prometheus text), `/healthz` (the process
//! answers), `/readyz` (200 only while a master is selected and up, and the
//! sidecar has not run out of resources lately), `/status` (JSON, see
//! [`crate::ops::api`]), and the admin commands
//! `POST /admin/pin|unpin|drain|undrain|reload`, which it hands to the
//! supervisor and answers once the supervisor's snapshot shows them applied.
//! Every error is a 4xx with a one-line reason. Admin commands are accepted
//! on the Unix socket only (its file mode says who may send them), never on
//! TCP, where any local user or a browser page could reach them.
//!
//! It owns no state and makes no decision: it reads metrics, health
//! handles and the supervisor's [`Snapshot`], and sends [`Command`]s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::clock;
use crate::config::master::{MasterId, MasterSpec, Port};
use crate::control::masters::Plane;
use crate::control::srv::SrvState;
use crate::control::supervisor::{Command, Snapshot};
use crate::limits::LastError;
use crate::metrics::Metrics;
use crate::ops::api::{
    HealthState, LastResourceError, MasterStatus, ResourceStatus, SessionCounts, SrvStatus,
    StatusReport,
};
use crate::ops::listen::Via;
use crate::ops::reload::{ReloadError, Reloader};

/// How long a command waits for the supervisor to apply it.
const APPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// `/readyz` says "not ready" for this long after the sidecar ran out of a
/// resource (EMFILE, ...).
const RESOURCE_ERROR_WINDOW: Duration = Duration::from_secs(30);

/// What the endpoint reads and where it sends commands.
pub struct Admin {
    pub minion_id: String,
    pub metrics: Arc<Metrics>,
    /// The selector's state and the plane of masters it refers to.
    pub snapshot: watch::Receiver<Snapshot>,
    /// The SRV follower's state, with `sidecar.master_srv`.
    pub srv: Option<watch::Receiver<SrvState>>,
    pub commands: mpsc::Sender<Command>,
    pub reloader: Arc<Reloader>,
    /// Where commands are accepted (named in the refusal on TCP).
    pub socket: PathBuf,
    /// The session cap in force and its permits (shown by `/status`).
    pub max_sessions: usize,
    pub sessions: Arc<tokio::sync::Semaphore>,
}

/// A plain-text answer of one line.
struct Line(StatusCode, String);

impl IntoResponse for Line {
    fn into_response(self) -> Response {
        // One line, whatever the reason contains.
        let mut text = self.1.replace(['\r', '\n'], " ");
        text.push('\n');
        (self.0, [(CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
    }
}

/// `?master=X`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MasterParam {
    master: Option<String>,
}

/// No parameters at all.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// The routes (public for in-process tests).
pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/admin/pin", post(pin))
        .route("/admin/unpin", post(unpin))
        .route("/admin/drain", post(drain))
        .route("/admin/undrain", post(undrain))
        .route("/admin/reload", post(reload))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(admin)
}

// === handlers ===

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    (
        [(CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        admin.metrics.render_off_runtime().await,
    )
        .into_response()
}

async fn healthz() -> Line {
    Line(StatusCode::OK, "ok: salt-sidecar is running".into())
}

async fn readyz(State(admin): State<Arc<Admin>>) -> Line {
    let snapshot = admin.snapshot.borrow().clone();
    match admin.readiness(&snapshot) {
        Ok(why) => Line(StatusCode::OK, format!("ready: {why}")),
        Err(why) => Line(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
    }
}

async fn status(State(admin): State<Arc<Admin>>) -> Response {
    let report = admin.report();
    match serde_json::to_string_pretty(&report) {
        Ok(mut json) => {
            json.push('\n');
            ([(CONTENT_TYPE, "application/json")], json).into_response()
        }
        Err(e) => Line(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the status: {e}"),
        )
        .into_response(),
    }
}

async fn pin(
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
async fn reload(
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

async fn unpin(
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

async fn drain(
    State(admin): State<Arc<Admin>>,
    Extension(via): Extension<Via>,
    headers: HeaderMap,
    query: Result<Query<MasterParam>, QueryRejection>,
) -> Line {
    set_drained(&admin, via, &headers, query, true).await
}

async fn undrain(
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

async fn not_found(uri: Uri) -> Line {
    Line(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {}; try /metrics, /healthz, /readyz, /status, or POST /admin/pin|unpin|drain|undrain|reload",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Line {
    let want = if uri.path().starts_with("/admin/") {
        "POST"
    } else {
        "GET"
    };
    Line(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}; use {want}", uri.path()),
    )
}

fn bad_query(e: &QueryRejection) -> Line {
    Line(
        StatusCode::BAD_REQUEST,
        format!("bad query: {}", e.body_text()),
    )
}

// === impl Admin ===

impl Admin {
    /// The current masters (the plane a reload may replace).
    fn plane(&self) -> Arc<Plane> {
        self.snapshot.borrow().plane.clone()
    }

    fn label(&self, m: MasterId) -> String {
        self.plane().label(m).to_string()
    }

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

    /// `Ok(why)` when a master is selected and up, else `Err(why not)`.
    fn readiness(&self, snapshot: &Snapshot) -> Result<String, String> {
        // At the cap the next minion connection is refused at accept: a
        // minion that reconnects now would find no way in.
        if self.sessions.available_permits() == 0 {
            return Err(format!(
                "the session cap is full (all {} of sidecar.max_sessions in use): the next minion connection is refused; see salt_sidecar_connections_refused_total",
                self.max_sessions
            ));
        }
        if let Some(e) = self.metrics.resources.recent(RESOURCE_ERROR_WINDOW) {
            return Err(format!(
                "{} ({} failed {:.0} s ago; see salt_sidecar_resource_errors_total)",
                e.resource.describe(),
                e.op.as_str(),
                e.at.elapsed().as_secs_f64()
            ));
        }
        let Some(m) = snapshot.active else {
            if let (Some(srv), true) = (&self.srv, snapshot.plane.masters.is_empty()) {
                let srv = srv.borrow();
                return Err(format!(
                    "no masters yet: the SRV record {} has not answered with any ({})",
                    srv.record,
                    srv.last_error
                        .as_deref()
                        .unwrap_or("waiting for its first answer")
                ));
            }
            return Err(
                "no master is selected (none is up yet, or all are down or drained)".into(),
            );
        };
        let label = snapshot.plane.label(m);
        let up = snapshot
            .plane
            .health
            .get(m.index())
            .and_then(|h| h.status().up)
            .unwrap_or(false);
        match (up, snapshot.pinned == Some(m)) {
            (true, _) => Ok(format!("{label} is active and up")),
            (false, true) => Err(format!("{label} is pinned but down")),
            (false, false) => Err(format!("{label} is active but down")),
        }
    }

    /// The resource budget and exhaustion, for `/status`.
    fn resources(&self) -> ResourceStatus {
        let (last, errors, refused) = self.metrics.resources.summary();
        ResourceStatus {
            fd_limit: rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|l| l.0)
                .unwrap_or(0),
            max_sessions: self.max_sessions,
            connections_open: self
                .max_sessions
                .saturating_sub(self.sessions.available_permits()),
            resource_errors: errors,
            connections_refused: refused,
            last_error: last.map(|e: LastError| LastResourceError {
                op: e.op.as_str().to_string(),
                kind: e.resource.as_str().to_string(),
                what: e.resource.describe().to_string(),
                age_seconds: e.at.elapsed().as_secs_f64(),
            }),
        }
    }

    /// The `/status` document, now.
    pub fn report(&self) -> StatusReport {
        let snapshot = self.snapshot.borrow().clone();
        let now = SystemTime::now();
        let ready = self.readiness(&snapshot);
        let sessions = |label: &str, port: Port| {
            self.metrics
                .sessions_active
                .with_label_values(&[label, port.as_str()])
                .get()
        };
        let masters = snapshot
            .order
            .iter()
            .enumerate()
            .filter_map(|(rank, id)| {
                let spec = snapshot.plane.masters.get(id.index())?;
                let probe = snapshot
                    .plane
                    .health
                    .get(id.index())
                    .map(|h| h.status())
                    .unwrap_or_default();
                let label = spec.label.as_str();
                Some(MasterStatus {
                    id: id.0,
                    rank,
                    master: spec.label.clone(),
                    host: spec.host.to_string(),
                    publish_port: spec.publish_port,
                    ret_port: spec.ret_port,
                    priority: spec.srv.map(|r| r.priority),
                    weight: spec.srv.map(|r| r.weight),
                    addresses: snapshot
                        .plane
                        .addrs
                        .get(id.index())
                        .map(|a| a.borrow().to_vec())
                        .unwrap_or_default(),
                    health: match probe.up {
                        Some(true) => HealthState::Up,
                        Some(false) => HealthState::Down,
                        None => HealthState::Unknown,
                    },
                    last_probe: probe
                        .last_probe
                        .map(|t| humantime::format_rfc3339_millis(t).to_string()),
                    last_probe_age_seconds: probe
                        .last_probe
                        .map(|t| now.duration_since(t).unwrap_or_default().as_secs_f64()),
                    last_result: probe.last_result,
                    active: snapshot.active == Some(*id),
                    pinned: snapshot.pinned == Some(*id),
                    drained: snapshot.drained.get(id.index()).copied().unwrap_or(false),
                    sessions: SessionCounts {
                        publish: sessions(label, Port::Publish),
                        ret: sessions(label, Port::Ret),
                    },
                })
            })
            .collect();
        let last_switch =
            Some(self.metrics.last_switch_timestamp_seconds.get()).filter(|t| *t > 0.0);
        let now_unix = clock::unix(now).as_secs_f64();
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            minion_id: self.minion_id.clone(),
            ready: ready.is_ok(),
            ready_reason: ready.unwrap_or_else(|e| e),
            active: snapshot.active.map(|m| self.label(m).to_string()),
            pinned: snapshot.pinned.map(|m| self.label(m).to_string()),
            last_switch_unix_seconds: last_switch,
            last_switch_age_seconds: last_switch.map(|t| (now_unix - t).max(0.0)),
            masters,
            srv: self.srv.as_ref().map(|rx| srv_status(&rx.borrow(), now)),
            resources: Some(self.resources()),
        }
    }
}

/// The SRV follower's state as `/status` shows it.
fn srv_status(state: &SrvState, now: SystemTime) -> SrvStatus {
    SrvStatus {
        record: state.record.clone(),
        last_refresh: state
            .last_refresh
            .map(|t| humantime::format_rfc3339_millis(t).to_string()),
        last_refresh_age_seconds: state
            .last_refresh
            .map(|t| now.duration_since(t).unwrap_or_default().as_secs_f64()),
        ttl_seconds: state.ttl.map(|t| t.as_secs()),
        targets: state.masters.len(),
        last_error: state.last_error.clone(),
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
    use super::*;
    use tokio_util::sync::CancellationToken;

    const FOUR_MASTERS: &str = "master:\n  - 192.0.2.1\n  - Salt-B.example.net:14506\n  - salt-c.example.net\n  - salt-c.example.net:5506\nmaster_alive_interval: 5\n";

    /// An admin over four masters, none probed, with an empty order.
    fn admin() -> Admin {
        let config =
            crate::config::parse(std::path::Path::new("t.yaml"), FOUR_MASTERS).expect("config");
        let masters = config.masters().to_vec();
        let n = masters.len();
        let metrics = Metrics::new(
            &masters,
            &crate::control::select::Reason::COUNTED.map(|r| r.as_str()),
        )
        .expect("metrics");
        let plane = Arc::new(Plane {
            generation: 0,
            masters,
            addrs: (0..n)
                .map(|_| watch::channel(Arc::from(Vec::new())).1)
                .collect(),
            health: (0..n)
                .map(|_| Arc::new(crate::control::health::HealthHandle::default()))
                .collect(),
            sessions: Arc::new(crate::control::sessions::Sessions::new(
                n,
                &CancellationToken::new(),
            )),
            token: CancellationToken::new(),
        });
        let (_, snapshot) = watch::channel(Snapshot {
            plane: plane.clone(),
            active: None,
            pinned: None,
            order: Vec::new(),
            drained: Vec::new(),
        });
        let (commands, _) = mpsc::channel(1);
        let (tunables_tx, tunables_rx) = watch::channel(Arc::new(
            crate::config::settings::Tunables::from_config(&config),
        ));
        let builder = crate::control::masters::PlaneBuilder {
            tracker: tokio_util::task::TaskTracker::new(),
            metrics: metrics.clone(),
            transitions: mpsc::channel(1).0,
            tunables: tunables_rx,
            root: CancellationToken::new(),
            listeners: [config.sidecar.listen_publish, config.sidecar.listen_ret],
            liveness: Arc::new(crate::control::liveness::Liveness::new(
                tokio::time::Instant::now(),
                Duration::ZERO,
            )),
        };
        let route = watch::channel(crate::control::route::Route {
            plane,
            active: None,
            fallbacks: Vec::new(),
            connect_after: tokio::time::Instant::now(),
            linger: None,
        })
        .1;
        let reloader = Arc::new(Reloader::new(
            config,
            tunables_tx,
            commands.clone(),
            builder,
            route,
        ));
        Admin {
            minion_id: "t".into(),
            metrics,
            snapshot,
            srv: None,
            commands,
            reloader,
            socket: PathBuf::from("/run/salt-sidecar/admin.sock"),
            max_sessions: 10,
            sessions: Arc::new(tokio::sync::Semaphore::new(10)),
        }
    }

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

    #[test]
    fn readiness_needs_an_active_master_that_is_up() {
        let a = admin();
        let plane = a.plane();
        let snap = |active: Option<u16>, pinned: Option<u16>| Snapshot {
            plane: plane.clone(),
            active: active.map(MasterId),
            pinned: pinned.map(MasterId),
            order: (0..4).map(MasterId).collect(),
            drained: vec![false; 4],
        };
        assert!(a.readiness(&snap(None, None)).is_err());
        // Health unknown (never probed) is not up.
        let why = a
            .readiness(&snap(Some(1), Some(1)))
            .expect_err("pinned, unknown");
        assert!(why.contains("pinned but down"), "{why}");
        let report = a.report();
        assert!(!report.ready);
        assert_eq!(report.masters.len(), 0, "the default snapshot has no order");
    }

    #[test]
    fn a_full_session_cap_is_not_ready() {
        let a = admin();
        let plane = a.plane();
        let snap = Snapshot {
            plane,
            active: None,
            pinned: None,
            order: (0..4).map(MasterId).collect(),
            drained: vec![false; 4],
        };
        let held = a
            .sessions
            .clone()
            .try_acquire_many_owned(10)
            .expect("10 permits");
        let why = a.readiness(&snap).expect_err("cap full");
        assert!(why.contains("session cap is full"), "{why}");
        assert!(why.contains("all 10 of sidecar.max_sessions"), "{why}");
        drop(held);
        let why = a.readiness(&snap).expect_err("no master");
        assert!(!why.contains("session cap"), "{why}");
    }
}
