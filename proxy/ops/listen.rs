//! Serving the admin router on its two endpoints, within budgets.
//!
//! - TCP (`sidecar.admin`, loopback by default): the read-only endpoints for
//!   Prometheus and people (`/metrics`, `/healthz`, `/readyz`, `/status`).
//!   A request whose `Host` is not an IP literal, `localhost` or this host's
//!   name is refused (DNS rebinding: a web page must not read `/status`).
//! - A Unix socket (`sidecar.admin_socket`, mode 0660): everything, including
//!   the commands (pin, unpin, drain, undrain, reload); file permissions say
//!   who may send them, as with HAProxy's stats socket.
//!
//! Each endpoint has a connection cap (over it, closed at accept and
//! counted), a header-read timeout, a bounded request head, and a maximum
//! connection age, so no client can hold descriptors or memory for long.
//! Accept errors from exhaustion are counted as the sidecar's own. The router
//! ([`super::admin`]) learns which endpoint a request came on from the
//! [`Via`] extension.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, HOST};
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::config::AdminSocket;
use crate::limits::{Listener, Op};
use crate::metrics::Metrics;

/// A client must send its whole request head within this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed (gracefully, between requests) after this long,
/// idle or not; a Prometheus scrape just reconnects.
pub const CONNECTION_MAX_AGE: Duration = Duration::from_secs(30);
/// Largest request head (request line and headers) read into memory
/// (hyper's minimum buffer).
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Which endpoint a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The TCP endpoint, from this peer: read-only.
    Tcp(SocketAddr),
    /// The Unix socket: commands allowed (its file mode decided who).
    Socket,
}

/// Why the admin socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{path}: {what}: {source}")]
    Io {
        path: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{0}: another salt-sidecar is serving this admin socket")]
    InUse(String),
    #[error("{0}: exists and is not a socket; refusing to replace it")]
    NotASocket(String),
    #[error("{path}: no group {group} in /etc/group")]
    NoGroup { path: String, group: String },
}

/// Creates the admin socket: its directory if missing, a stale socket file
/// replaced, then the mode and group from the config.
pub fn bind_socket(cfg: &AdminSocket) -> Result<UnixListener, SocketError> {
    let path = &cfg.path;
    let shown = path.display().to_string();
    let io = |what: &'static str| {
        let shown = shown.clone();
        move |source| SocketError::Io {
            path: shown,
            what,
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("cannot create its directory"))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(shown));
            }
            std::fs::remove_file(path).map_err(io("cannot remove the stale socket"))?;
        }
        Ok(_) => return Err(SocketError::NotASocket(shown)),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(io("cannot listen"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.mode))
        .map_err(io("cannot set its mode"))?;
    if let Some(group) = &cfg.group {
        let gid = group_id(group).ok_or_else(|| SocketError::NoGroup {
            path: shown.clone(),
            group: group.clone(),
        })?;
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io("cannot set its group"))?;
    }
    Ok(listener)
}

/// A group's id: numeric, or looked up in /etc/group (no NSS: the binary is
/// static).
fn group_id(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse() {
        return Some(gid);
    }
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == group).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// What both endpoints share.
#[derive(Clone)]
pub struct Endpoint {
    pub router: Router,
    pub metrics: Arc<Metrics>,
    pub max_connections: usize,
    pub token: CancellationToken,
}

// === impl Endpoint ===

impl Endpoint {
    /// Serves the read-only endpoints on `listener` until cancelled.
    pub async fn serve_tcp(self, listener: TcpListener) {
        let accept = || async {
            let (stream, peer) = listener.accept().await?;
            Ok((stream, Via::Tcp(peer)))
        };
        self.serve(Listener::Admin, accept).await;
    }

    /// Serves every endpoint, commands included, on the Unix socket at
    /// `path` until cancelled; removes the socket file at the end.
    pub async fn serve_socket(self, listener: UnixListener, path: &Path) {
        let accept = || async {
            let (stream, _) = listener.accept().await?;
            Ok((stream, Via::Socket))
        };
        self.serve(Listener::AdminSocket, accept).await;
        let _ = std::fs::remove_file(path);
    }

    /// Accepts with `accept` until cancelled, one task per connection within
    /// the cap; waits for the connections to end.
    async fn serve<S, F, Fut>(self, label: Listener, mut accept: F)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = io::Result<(S, Via)>>,
    {
        let conns = Arc::new(Semaphore::new(self.max_connections));
        let tracker = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = self.token.cancelled() => break,
                a = accept() => a,
            };
            match accepted {
                Ok((stream, via)) => {
                    let Some(permit) = self.permit(&conns, label) else {
                        continue;
                    };
                    tracker.spawn(self.clone().connection(stream, via, permit));
                }
                Err(e) => self.accept_failed(&e).await,
            }
        }
        tracker.close();
        tracker.wait().await;
    }

    /// A connection slot, or `None` (the connection is dropped, counted).
    fn permit(&self, conns: &Arc<Semaphore>, listener: Listener) -> Option<OwnedSemaphorePermit> {
        let permit = conns.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.metrics
                .resources
                .refused(listener, self.max_connections);
        }
        permit
    }

    async fn accept_failed(&self, e: &io::Error) {
        if self.metrics.resources.check(Op::Admin, e).is_none() {
            warn!(error = %e, "admin endpoint: accept failed; retrying in 100 ms");
        }
        tokio::select! {
            _ = self.token.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }

    /// One HTTP/1.1 connection, bounded in time and size.
    async fn connection<S>(self, stream: S, via: Via, _permit: OwnedSemaphorePermit)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let router = self.router.clone();
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let router = router.clone();
            async move {
                if let Via::Tcp(_) = via {
                    if let Err(why) = host_allowed(&req) {
                        return Ok::<_, Infallible>(refuse(&why));
                    }
                }
                req.extensions_mut().insert(via);
                router.oneshot(req.map(Body::new)).await
            }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_REQUEST_HEAD)
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let age = tokio::time::sleep(CONNECTION_MAX_AGE);
        tokio::pin!(age);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = &mut age => {
                conn.as_mut().graceful_shutdown();
                tokio::time::timeout(HEADER_READ_TIMEOUT, conn.as_mut()).await.unwrap_or(Ok(()))
            }
            _ = self.token.cancelled() => {
                conn.as_mut().graceful_shutdown();
                tokio::time::timeout(HEADER_READ_TIMEOUT, conn.as_mut()).await.unwrap_or(Ok(()))
            }
        };
        if let Err(e) = result {
            debug!(?via, error = %e, "admin connection ended");
        }
    }
}

/// A 403 with a one-line reason.
fn refuse(why: &str) -> Response<Body> {
    let mut resp = Response::new(Body::from(format!("{why}\n")));
    *resp.status_mut() = StatusCode::FORBIDDEN;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// `Host` must name this machine by address or as `localhost` (or by its
/// own host name), so a web page that rebinds its DNS name to 127.0.0.1
/// cannot read the endpoint.
fn host_allowed<B>(req: &Request<B>) -> Result<(), String> {
    let Some(value) = req.headers().get(HOST) else {
        return Ok(());
    };
    let host = value.to_str().unwrap_or("");
    if is_local_host_header(host, &gethostname::gethostname().to_string_lossy()) {
        Ok(())
    } else {
        Err(format!(
            "Host `{}` refused: use an IP address or localhost (protection against DNS rebinding)",
            host.chars().take(80).collect::<String>()
        ))
    }
}

/// Whether a `Host` header value is an IP literal, `localhost`, or
/// `own_name` (each with an optional port).
fn is_local_host_header(value: &str, own_name: &str) -> bool {
    let value = value.trim();
    let host = if let Some(rest) = value.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.starts_with(':') => v6,
            _ => return false,
        }
    } else {
        match value.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            Some(_) => return false,
            None => value,
        }
    };
    let name = host.trim_end_matches('.');
    host.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || (!own_name.is_empty() && name.eq_ignore_ascii_case(own_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_names_pass_the_host_check() {
        let ok = |h: &str| is_local_host_header(h, "minion-01");
        assert!(ok("127.0.0.1:9464"));
        assert!(ok("127.0.0.1"));
        assert!(ok("[::1]:9464"));
        assert!(ok("[::1]"));
        assert!(ok("localhost:9464"));
        assert!(ok("LOCALHOST."));
        assert!(ok("minion-01:9464"), "the host's own name");
        assert!(ok("192.0.2.10:9464"), "an address is not a rebinding");
        assert!(!ok("evil.example:9464"));
        assert!(!ok("evil.example"));
        assert!(!ok("localhost.evil.example"));
        assert!(!ok("[::1]x"));
        assert!(!ok("127.0.0.1:94x4"));
        assert!(!ok(""));
    }

    #[test]
    fn group_ids_resolve_by_number_or_name() {
        assert_eq!(group_id("0"), Some(0));
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-here"), None);
    }

    #[tokio::test]
    async fn the_socket_gets_its_mode_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = AdminSocket {
            path: dir.path().join("sub/admin.sock"),
            mode: 0o660,
            group: None,
        };
        let listener = bind_socket(&cfg).expect("bind");
        let mode = std::fs::metadata(&cfg.path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o660);
        assert!(
            matches!(bind_socket(&cfg), Err(SocketError::InUse(_))),
            "a live socket is not taken over"
        );
        drop(listener);
        bind_socket(&cfg).expect("a stale socket file is replaced");
        let file = dir.path().join("file");
        std::fs::write(&file, "x").expect("write");
        let cfg = AdminSocket { path: file, ..cfg };
        assert!(matches!(bind_socket(&cfg), Err(SocketError::NotASocket(_))));
    }
}
