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
//!
//! Here: the routes and the read-only endpoints; `commands` has the
//! admin commands, `report` what `/readyz` and `/status` say.

mod commands;
mod report;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{mpsc, watch};

use crate::config::master::MasterId;
use crate::control::masters::Plane;
use crate::control::srv::SrvState;
use crate::control::supervisor::{Command, Snapshot};
use crate::data::forward::Notice;
use crate::metrics::Metrics;
use crate::ops::reload::Reloader;

use commands::{drain, pin, reload, undrain, unpin};

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
    /// Where the minion is in noticing a switch (`salt_events`).
    pub notice: Arc<Notice>,
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

// === read-only endpoints ===

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

// === impl Admin ===

impl Admin {
    /// The current masters (the plane a reload may replace).
    pub(super) fn plane(&self) -> Arc<Plane> {
        self.snapshot.borrow().plane.clone()
    }

    pub(super) fn label(&self, m: MasterId) -> String {
        self.plane().label(m).to_string()
    }
}

/// What the admin files' unit tests share: an [`Admin`] over four masters.
#[cfg(test)]
mod testing {
    use super::*;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    pub(super) const FOUR_MASTERS: &str = "master:\n  - 192.0.2.1\n  - Salt-B.example.net:14506\n  - salt-c.example.net\n  - salt-c.example.net:5506\nmaster_alive_interval: 5\n";

    /// An admin over four masters, none probed, with an empty order.
    pub(super) fn admin() -> Admin {
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
            reauth_by: tokio::time::Instant::now(),
            pace_until: tokio::time::Instant::now(),
            linger: None,
            idle: false,
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
            notice: Default::default(),
        }
    }
}
