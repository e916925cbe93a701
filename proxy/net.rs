//! Layer 3: connecting to a master, one place for timeouts and socket
//! options. May import `config` and `metrics` only.
//!
//! Used by the health probes and by forwarding. Tries the master's addresses
//! in order within one overall timeout, then sets TCP_NODELAY, keepalive and
//! TCP_USER_TIMEOUT so a blackholed master (no RST) is noticed in seconds, not
//! after the kernel's 15 minutes. Never reads or writes payload.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use crate::config::settings::SocketOptions;
use crate::limits::Resource;
use crate::metrics::ConnectErrorKind;

/// Why a connect to a master failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no address known (DNS has not resolved the name)")]
    Unresolved,
    #[error("{addr}: connect timed out")]
    Timeout { addr: SocketAddr },
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

impl ConnectError {
    /// The sidecar's own exhaustion (EMFILE on `socket()`, ...), which says
    /// nothing about the master.
    pub fn exhaustion(&self) -> Option<Resource> {
        match self {
            ConnectError::Io { source, .. } => Resource::of(source),
            _ => None,
        }
    }

    pub fn kind(&self) -> ConnectErrorKind {
        match self {
            ConnectError::Unresolved => ConnectErrorKind::Unresolved,
            ConnectError::Timeout { .. } => ConnectErrorKind::Timeout,
            ConnectError::Io { source, .. } => match source.kind() {
                io::ErrorKind::ConnectionRefused => ConnectErrorKind::Refused,
                io::ErrorKind::TimedOut => ConnectErrorKind::Timeout,
                io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::PermissionDenied => ConnectErrorKind::Unreachable,
                _ => ConnectErrorKind::Other,
            },
        }
    }
}

/// Connects to the first of `addrs` that accepts, all within `timeout`.
pub async fn connect(
    addrs: &[IpAddr],
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let deadline = Instant::now() + timeout;
    let mut last = ConnectError::Unresolved;
    for ip in addrs {
        let addr = SocketAddr::new(*ip, port);
        match timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            // Our own exhaustion: the next address would fail the same way.
            Ok(Err(source)) if Resource::of(&source).is_some() => {
                return Err(ConnectError::Io { addr, source })
            }
            Ok(Err(source)) => last = ConnectError::Io { addr, source },
            Err(_) => return Err(ConnectError::Timeout { addr }),
        }
    }
    Err(last)
}

/// Sets the forwarding socket options on an upstream socket.
pub fn configure(stream: &TcpStream, opts: &SocketOptions) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let sock = SockRef::from(stream);
    sock.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(opts.keepalive_idle)
            .with_interval(opts.keepalive_interval)
            .with_retries(opts.keepalive_count),
    )?;
    sock.set_tcp_user_timeout(Some(opts.user_timeout))?;
    Ok(())
}

/// Makes the next close of `stream` send RST instead of FIN.
pub fn reset_on_close(stream: &TcpStream) {
    // Best effort: if this fails the peer sees a FIN, which also ends the session.
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forwarding_sockets_get_nodelay_keepalive_and_user_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stream = connect(
            &["127.0.0.1".parse().expect("ip")],
            port,
            Duration::from_secs(1),
        )
        .await
        .expect("connect");
        let opts = SocketOptions::for_health(Duration::from_secs(30), 2, Duration::from_secs(2));
        configure(&stream, &opts).expect("configure");
        let sock = SockRef::from(&stream);
        assert!(stream.nodelay().expect("nodelay"));
        assert!(sock.keepalive().expect("keepalive"));
        assert_eq!(
            sock.tcp_keepalive_time().expect("idle"),
            Duration::from_secs(30)
        );
        assert_eq!(
            sock.tcp_keepalive_interval().expect("interval"),
            Duration::from_secs(15)
        );
        assert_eq!(sock.tcp_keepalive_retries().expect("count"), 3);
        // fall × interval + connect timeout: a blackholed master is given up on in ~a minute, not 15.
        assert_eq!(
            sock.tcp_user_timeout().expect("user timeout"),
            Some(Duration::from_secs(62))
        );
    }

    #[tokio::test]
    async fn connect_errors_are_classified_for_metrics() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let e = connect(
            &["127.0.0.1".parse().expect("ip")],
            port,
            Duration::from_secs(1),
        )
        .await
        .expect_err("refused");
        assert_eq!(e.kind(), ConnectErrorKind::Refused);
        let e = connect(&[], port, Duration::from_secs(1))
            .await
            .expect_err("nothing to try");
        assert_eq!(e.kind(), ConnectErrorKind::Unresolved);
    }
}
