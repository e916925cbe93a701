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
    /// Like OpenSSH's StrictModes: another user could replace the socket.
    #[error("{dir}: {why}, so another user could replace the admin socket with their own; use a directory only root or salt-sidecar's user can write (the default, /run/salt-sidecar, which systemd's RuntimeDirectory= makes)")]
    UnsafeDir { dir: String, why: String },
}

impl SocketError {
    /// The directory is unsafe: a configuration error (another path is the fix).
    pub fn is_unsafe_dir(&self) -> bool {
        matches!(self, SocketError::UnsafeDir { .. })
    }
}

/// Creates the admin socket at `cfg.path` with its mode and group and no
/// window in which another user could connect to it or swap it: its
/// directory (created if missing) must pass [`check_socket_dir`]; the
/// socket is bound inside a private staging directory (mode 0700) next to
/// it, given its mode and group there, and renamed into place, which also
/// replaces a stale socket atomically. (On Linux, `fchmod`/`fchown` on a
/// socket's descriptor do not change the file `bind` made, so they cannot
/// close that window.)
pub fn bind_socket(cfg: &AdminSocket) -> Result<UnixListener, SocketError> {
    use std::os::unix::fs::DirBuilderExt;
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
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io("not a file path")(io::ErrorKind::InvalidInput.into()));
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(io("cannot create its directory"))?;
    check_socket_dir(path, Strictness::Run)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(shown));
            }
            // A stale socket: the rename below replaces it.
        }
        Ok(_) => return Err(SocketError::NotASocket(shown)),
        Err(_) => {}
    }
    let mut staging_name = std::ffi::OsString::from(".");
    staging_name.push(name);
    staging_name.push(format!(".{}.staging", std::process::id()));
    let staging = dir.join(staging_name);
    // Left over by a crash of a process with this pid: ours to remove
    // (the directory passed the check, so nobody else could have made it).
    if std::fs::symlink_metadata(&staging).is_ok() {
        std::fs::remove_dir_all(&staging).map_err(io("cannot remove an old staging directory"))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(io("cannot create its staging directory"))?;
    let staged = staging.join(name);
    let placed = (|| {
        let listener = UnixListener::bind(&staged).map_err(io("cannot listen"))?;
        // Inside the 0700 directory nobody else can swap the file: these
        // name the socket bind just made.
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(cfg.mode))
            .map_err(io("cannot set its mode"))?;
        if let Some(group) = &cfg.group {
            std::os::unix::fs::lchown(&staged, None, Some(group.gid))
                .map_err(io("cannot set its group"))?;
        }
        std::fs::rename(&staged, path).map_err(io("cannot move it into place"))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&staging);
    placed
}

/// How strictly [`check_socket_dir`] judges owners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    /// `run`: every directory on the way is owned by root or this process's
    /// user.
    Run,
    /// `check-config`, whose user may not be the service's: owners are not
    /// judged (only "writable by others").
    Check,
}

/// OpenSSH's StrictModes for the admin socket's directory and each one
/// above it (those that exist): owned by root or the sidecar's user, and
/// not writable by group or others unless sticky (`/tmp`'s mode 1777 keeps
/// others from renaming or removing the socket). A directory systemd made
/// for this service (`RuntimeDirectory=`, listed in `$RUNTIME_DIRECTORY`) is
/// accepted as it is: its owner and mode come from the unit.
pub fn check_socket_dir(socket: &Path, strictness: Strictness) -> Result<(), SocketError> {
    use std::os::unix::fs::MetadataExt;
    let Some(dir) = socket.parent() else {
        return Ok(());
    };
    let runtime_dirs = std::env::var_os("RUNTIME_DIRECTORY").unwrap_or_default();
    if std::env::split_paths(&runtime_dirs).any(|d| d == dir) {
        return Ok(());
    }
    let euid = effective_uid();
    for dir in dir.ancestors() {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue; // created later, by this process (mode 0755)
        };
        let unsafe_dir = |why: String| SocketError::UnsafeDir {
            dir: dir.display().to_string(),
            why,
        };
        let mode = meta.mode();
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(unsafe_dir(format!(
                "mode {:04o} lets {} write to it, without the sticky bit",
                mode & 0o7777,
                if mode & 0o002 != 0 {
                    "every user"
                } else {
                    "its group"
                }
            )));
        }
        let owner = meta.uid();
        if strictness == Strictness::Run && owner != 0 && Some(owner) != euid {
            return Err(unsafe_dir(format!(
                "it belongs to uid {owner}, neither root nor salt-sidecar's user{}",
                euid.map_or_else(String::new, |u| format!(" ({u})"))
            )));
        }
    }
    Ok(())
}

/// This process's effective user id (from /proc: no unsafe libc call).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
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
