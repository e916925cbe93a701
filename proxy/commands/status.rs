//! `salt-sidecar status`: the client side of the admin endpoint.
//!
//! Owns a small HTTP/1.1 client for the admin endpoint (hyper, one request
//! per connection, bounded by a timeout) and the table printed for an
//! operator; reads the `/status` document with the schema of
//! `ops::api`. Never serves HTTP and never touches a running
//! sidecar's state: everything here is a client.

use std::fmt;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};

pub use crate::ops::api::{
    HealthState, LastResourceError, MasterStatus, MinionNotice, ResourceStatus, SessionCounts,
    SrvStatus, StatusReport,
};

/// Largest answer the client reads (a Prometheus query answer, a `/status`).
const MAX_BODY: usize = 4 << 20;

/// Where a client reaches a sidecar: its admin socket (everything,
/// commands included) or its TCP endpoint (read-only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminAddr {
    Socket(PathBuf),
    Tcp(SocketAddr),
}

impl fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminAddr::Socket(path) => write!(f, "{}", path.display()),
            AdminAddr::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

impl From<SocketAddr> for AdminAddr {
    fn from(addr: SocketAddr) -> Self {
        AdminAddr::Tcp(addr)
    }
}

impl From<PathBuf> for AdminAddr {
    fn from(path: PathBuf) -> Self {
        AdminAddr::Socket(path)
    }
}

impl From<&PathBuf> for AdminAddr {
    fn from(path: &PathBuf) -> Self {
        AdminAddr::Socket(path.clone())
    }
}

impl From<&Path> for AdminAddr {
    fn from(path: &Path) -> Self {
        AdminAddr::Socket(path.to_path_buf())
    }
}

/// Why a request to an HTTP endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: AdminAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no answer in time")]
    Timeout(AdminAddr),
    #[error("{addr}: {source}")]
    Http {
        addr: AdminAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("{addr}: invalid request: {source}")]
    Request {
        addr: AdminAddr,
        #[source]
        source: hyper::http::Error,
    },
    #[error("{addr}: the answer is larger than {MAX_BODY} bytes or was cut off")]
    Body { addr: AdminAddr },
}

/// Why `salt-sidecar status` could not show the status.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(
        "{0}; is the sidecar running, with `sidecar.admin_socket` (or, with --admin, `sidecar.admin`) here? (use --socket PATH or --admin ADDR)"
    )]
    Unreachable(#[source] ClientError),
    #[error("{addr}/status answered {status}: {body}")]
    Refused {
        addr: AdminAddr,
        status: u16,
        body: String,
    },
    #[error("{addr}/status is not a salt-sidecar status document: {source}")]
    Invalid {
        addr: AdminAddr,
        #[source]
        source: serde_json::Error,
    },
}

/// An HTTP answer: status code and body text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// One HTTP/1.1 request to `addr` (`path` includes any query string), on
/// its own connection, all of it bounded by `limit`.
pub async fn request(
    addr: impl Into<AdminAddr>,
    method: Method,
    path: &str,
    limit: Duration,
) -> Result<Reply, ClientError> {
    let addr = addr.into();
    let timeout = ClientError::Timeout(addr.clone());
    tokio::time::timeout(limit, request_inner(addr, method, path))
        .await
        .unwrap_or(Err(timeout))
}

async fn request_inner(addr: AdminAddr, method: Method, path: &str) -> Result<Reply, ClientError> {
    let connect = |source| ClientError::Connect {
        addr: addr.clone(),
        source,
    };
    match &addr {
        AdminAddr::Socket(socket) => {
            let stream = UnixStream::connect(socket).await.map_err(connect)?;
            exchange(
                TokioIo::new(stream),
                &addr,
                "localhost".into(),
                method,
                path,
            )
            .await
        }
        AdminAddr::Tcp(tcp) => {
            let stream = TcpStream::connect(tcp).await.map_err(connect)?;
            exchange(TokioIo::new(stream), &addr, tcp.to_string(), method, path).await
        }
    }
}

/// Sends one request on a connected stream and reads the whole answer.
async fn exchange<S>(
    io: TokioIo<S>,
    addr: &AdminAddr,
    host: String,
    method: Method,
    path: &str,
) -> Result<Reply, ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http = |source| ClientError::Http {
        addr: addr.clone(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(http)?;
    let conn = tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, host)
        .body(Body::empty())
        .map_err(|source| ClientError::Request {
            addr: addr.clone(),
            source,
        })?;
    let resp = sender.send_request(req).await.map_err(http)?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = axum::body::to_bytes(Body::new(resp.into_body()), MAX_BODY)
        .await
        .map_err(|_| ClientError::Body { addr: addr.clone() })?;
    conn.abort();
    Ok(Reply {
        status,
        content_type,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// `GET /status` from the admin endpoint at `admin`, parsed.
pub async fn fetch(
    admin: &AdminAddr,
    limit: Duration,
) -> Result<(StatusReport, String), StatusError> {
    let reply = request(admin.clone(), Method::GET, "/status", limit)
        .await
        .map_err(StatusError::Unreachable)?;
    if reply.status != 200 {
        return Err(StatusError::Refused {
            addr: admin.clone(),
            status: reply.status,
            body: reply.body.trim().to_string(),
        });
    }
    let report = serde_json::from_str(&reply.body).map_err(|source| StatusError::Invalid {
        addr: admin.clone(),
        source,
    })?;
    Ok((report, reply.body))
}

/// The report as an operator reads it.
pub fn render_table(report: &StatusReport, admin: &AdminAddr) -> String {
    let mut out = summary(report, admin);
    out.push('\n');
    let srv = report.srv.is_some();
    let mut header: Vec<&str> = HEADER.to_vec();
    if srv {
        header.insert(3, "PRIO/WEIGHT");
    }
    let rows: Vec<Vec<String>> = report.masters.iter().map(|m| row(m, srv)).collect();
    out.push_str(&columns(&header, &rows));
    out.push_str("\nSESSIONS are open minion sessions (publish/ret); rows in preference order.\n");
    if srv {
        out.push_str("PRIO/WEIGHT: the SRV record's priority (lowest first) and weight (share of minions).\n");
    }
    out
}

/// The `minion:` line while the minion is noticing a switch (`salt_events`).
fn notice_line(n: MinionNotice) -> &'static str {
    match n {
        MinionNotice::Closing => "noticing the switch: its moved publish session is closed at its first quiet moment",
        MinionNotice::Refusing => "noticing the switch: its publish connections are refused until it signs in again (it hears no publication)",
    }
}

/// The `srv:` line: the record, and how fresh its answer is.
fn srv_line(s: &SrvStatus) -> String {
    let mut line = match (s.last_refresh_age_seconds, s.ttl_seconds) {
        (Some(a), Some(ttl)) => format!(
            "{}: {} targets, refreshed {} (TTL {ttl}s)",
            s.record,
            s.targets,
            age(a)
        ),
        (Some(a), None) => format!("{}: {} targets, refreshed {}", s.record, s.targets, age(a)),
        (None, _) => format!("{}: no answer yet", s.record),
    };
    if let Some(e) = &s.last_error {
        let _ = write!(line, "; last lookup: {e}");
        if s.targets > 0 {
            line.push_str(" (the last good targets stay in use)");
        }
    }
    line
}

/// The lines above the table: who, whether ready, which master.
fn summary(report: &StatusReport, admin: &AdminAddr) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "salt-sidecar {} for minion {} (admin {admin})",
        report.version, report.minion_id
    );
    let _ = writeln!(
        out,
        "ready:       {}: {}",
        if report.ready { "yes" } else { "NO" },
        report.ready_reason
    );
    let _ = writeln!(
        out,
        "active:      {}",
        report.active.as_deref().unwrap_or("none")
    );
    if let Some(p) = &report.pinned {
        let _ = writeln!(
            out,
            "pinned:      {p} (POST /admin/unpin on the admin socket to release)"
        );
    }
    let _ = writeln!(
        out,
        "last switch: {}",
        report
            .last_switch_age_seconds
            .map_or_else(|| "none since start".to_string(), age)
    );
    if let Some(srv) = &report.srv {
        let _ = writeln!(out, "srv:         {}", srv_line(srv));
    }
    if let Some(n) = report.minion_notice {
        let _ = writeln!(out, "minion:      {}", notice_line(n));
    }
    if let Some(r) = &report.resources {
        let _ = writeln!(
            out,
            "resources:   {} of {} minion connections, fd limit {}; ran out {} times, refused {} over cap{}",
            r.connections_open,
            r.max_sessions,
            r.fd_limit,
            r.resource_errors,
            r.connections_refused,
            r.last_error.as_ref().map_or_else(String::new, |e| format!(
                " (last: {} {}, {})",
                e.op,
                e.kind,
                age(e.age_seconds)
            ))
        );
    }
    out
}

const HEADER: [&str; 8] = [
    "",
    "ID",
    "MASTER",
    "ADDRESSES",
    "HEALTH",
    "STATE",
    "SESSIONS",
    "LAST PROBE",
];

/// One master's row, in [`HEADER`]'s columns (with `srv`, its priority
/// and weight after MASTER).
fn row(m: &MasterStatus, srv: bool) -> Vec<String> {
    let mut state = Vec::new();
    if m.active {
        state.push("active");
    }
    if m.pinned {
        state.push("pinned");
    }
    if m.drained {
        state.push("drained");
    }
    if state.is_empty() {
        state.push("standby");
    }
    let addresses = if m.addresses.is_empty() {
        "unresolved".to_string()
    } else {
        m.addresses
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let probe = match (m.last_probe_age_seconds, &m.last_result) {
        (Some(a), Some(r)) => format!("{}: {r}", age(a)),
        (Some(a), None) => age(a),
        _ => "never".to_string(),
    };
    let mut cells = vec![
        if m.active { "*" } else { "" }.to_string(),
        m.id.to_string(),
        m.master.clone(),
        addresses,
        m.health.as_str().to_string(),
        state.join(","),
        format!("{}/{}", m.sessions.publish, m.sessions.ret),
        probe,
    ];
    if srv {
        let rank = match (m.priority, m.weight) {
            (Some(p), Some(w)) => format!("{p}/{w}"),
            _ => "-".to_string(),
        };
        cells.insert(3, rank);
    }
    cells
}

/// The header and rows with each column as wide as its widest cell (the
/// last column unpadded).
fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths.iter().copied()).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$} ");
            }
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line(header);
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    out
}

/// `0.4s ago`, `3m 12s ago`, `2h 5m ago`.
fn age(seconds: f64) -> String {
    let s = if seconds.is_finite() {
        seconds.max(0.0)
    } else {
        0.0
    };
    if s < 60.0 {
        return format!("{s:.1}s ago");
    }
    let whole = s as u64;
    let (h, m, sec) = (whole / 3600, (whole % 3600) / 60, whole % 60);
    if h > 0 {
        format!("{h}h {m}m ago")
    } else {
        format!("{m}m {sec}s ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> StatusReport {
        let master = |id: u16, label: &str, active: bool| MasterStatus {
            id,
            rank: usize::from(id),
            master: label.to_string(),
            host: label.to_string(),
            publish_port: 4505,
            ret_port: 4506,
            priority: None,
            weight: None,
            addresses: vec![IpAddr::from([192, 0, 2, 10 + id as u8])],
            health: if active {
                HealthState::Up
            } else {
                HealthState::Down
            },
            last_probe: Some("2025-01-01T00:00:00Z".into()),
            last_probe_age_seconds: Some(0.4),
            last_result: Some(if active {
                "probes ok".into()
            } else {
                "publish port 4505: connection refused".into()
            }),
            active,
            pinned: false,
            drained: !active,
            sessions: SessionCounts {
                publish: i64::from(active),
                ret: 2 * i64::from(active),
            },
        };
        StatusReport {
            version: "0.1.0".into(),
            minion_id: "web-01".into(),
            ready: true,
            ready_reason: "salt-b.example.net is active and up".into(),
            active: Some("salt-b.example.net".into()),
            pinned: None,
            last_switch_unix_seconds: Some(1.7e9),
            last_switch_age_seconds: Some(192.0),
            masters: vec![
                master(0, "salt-a.example.net", false),
                master(1, "salt-b.example.net", true),
            ],
            srv: None,
            resources: Some(ResourceStatus {
                fd_limit: 524_288,
                max_sessions: 1024,
                connections_open: 2,
                resource_errors: 3,
                connections_refused: 0,
                last_error: Some(LastResourceError {
                    op: "probe".into(),
                    kind: "emfile".into(),
                    what: "the sidecar is at its open-file limit (EMFILE)".into(),
                    age_seconds: 65.0,
                }),
            }),
            minion_notice: None,
        }
    }

    #[test]
    fn the_table_marks_the_active_master_and_aligns_columns() {
        let t = render_table(
            &report(),
            &AdminAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 9464))),
        );
        assert!(
            t.contains("ready:       yes: salt-b.example.net is active and up"),
            "{t}"
        );
        assert!(t.contains("last switch: 3m 12s ago"), "{t}");
        assert!(
            t.contains("resources:   2 of 1024 minion connections, fd limit 524288; ran out 3 times, refused 0 over cap (last: probe emfile, 1m 5s ago)"),
            "{t}"
        );
        let lines: Vec<&str> = t.lines().collect();
        let head = lines
            .iter()
            .position(|l| l.contains("MASTER") && l.contains("HEALTH"))
            .expect("header");
        let a = lines[head + 1];
        let b = lines[head + 2];
        assert!(
            a.contains("salt-a.example.net") && a.contains("down") && a.contains("drained"),
            "{a}"
        );
        assert!(
            b.starts_with('*') && b.contains("active") && b.contains("1/2"),
            "{b}"
        );
        let col = |l: &str, w: &str| l.find(w);
        assert_eq!(
            col(lines[head], "HEALTH"),
            col(a, "down"),
            "columns align:\n{t}"
        );
        assert!(
            a.contains("0.4s ago: publish port 4505: connection refused"),
            "{a}"
        );
    }

    #[test]
    fn while_the_minion_notices_a_switch_the_table_says_so() {
        let addr = AdminAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 9464)));
        assert!(!render_table(&report(), &addr).contains("minion:"));
        let mut r = report();
        r.minion_notice = Some(MinionNotice::Refusing);
        let t = render_table(&r, &addr);
        assert!(
            t.contains("minion:      noticing the switch: its publish connections are refused until it signs in again"),
            "{t}"
        );
    }

    #[test]
    fn with_an_srv_record_the_table_shows_it_and_each_priority_and_weight() {
        let mut r = report();
        for (m, (p, w)) in r.masters.iter_mut().zip([(10, 60), (10, 20)]) {
            m.priority = Some(p);
            m.weight = Some(w);
        }
        r.srv = Some(SrvStatus {
            record: "_salt._tcp.example.net".into(),
            last_refresh: Some("2025-01-01T00:00:00Z".into()),
            last_refresh_age_seconds: Some(2.5),
            ttl_seconds: Some(30),
            targets: 2,
            last_error: Some("lookup failed: request timed out".into()),
        });
        let t = render_table(&r, &AdminAddr::Socket("/run/s.sock".into()));
        assert!(
            t.contains("srv:         _salt._tcp.example.net: 2 targets, refreshed 2.5s ago (TTL 30s); last lookup: lookup failed: request timed out (the last good targets stay in use)"),
            "{t}"
        );
        let lines: Vec<&str> = t.lines().collect();
        let head = lines
            .iter()
            .position(|l| l.contains("PRIO/WEIGHT"))
            .expect("header");
        assert!(lines[head + 1].contains(" 10/60 "), "{t}");
        assert_eq!(
            lines[head].find("PRIO/WEIGHT"),
            lines[head + 2].find("10/20"),
            "columns align:\n{t}"
        );
        let text = serde_json::to_string(&r).expect("serialize");
        assert!(text.contains("\"priority\":10,\"weight\":60"), "{text}");
        assert_eq!(
            serde_json::from_str::<StatusReport>(&text).expect("parse"),
            r
        );
    }

    #[test]
    fn the_document_round_trips_through_json() {
        let r = report();
        let text = serde_json::to_string_pretty(&r).expect("serialize");
        assert!(text.contains("\"health\": \"up\""), "{text}");
        let back: StatusReport = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, r);
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(0.04), "0.0s ago");
        assert_eq!(age(59.94), "59.9s ago");
        assert_eq!(age(61.0), "1m 1s ago");
        assert_eq!(age(7_500.0), "2h 5m ago");
        assert_eq!(age(f64::NAN), "0.0s ago");
        assert_eq!(age(-3.0), "0.0s ago");
    }
}
