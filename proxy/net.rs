//! Layer 3: connecting to a master, one place for timeouts and socket
//! options. May import `config` and `metrics` only.
//!
//! Used by the health probes and by forwarding. Tries the master's addresses
//! in order within one overall timeout, then sets TCP_NODELAY, keepalive and
//! TCP_USER_TIMEOUT so a blackholed master (no RST) is noticed in seconds, not
//! after the kernel's 15 minutes. Never reads payload; writes only what a
//! caller hands to [`send_first`].
//!
//! **No wake-up for a connect that is already done.** On loopback (and often
//! on a LAN) the handshake completes inside `connect()`, which still says
//! `EINPROGRESS`; one `getpeername` tells, and the stream is handed back at
//! once instead of after a turn of the event loop (an `epoll_wait` and a
//! task wake-up per minion connection). Otherwise it waits for writability
//! and reads `SO_ERROR`, as tokio's own connect does.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::AsyncWriteExt;
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
        match timeout_at(deadline, connect_addr(addr)).await {
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

/// Connects to one address (see the module doc: a connect that completed
/// inside `connect()` costs no wait).
async fn connect_addr(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    // Connected already (the peer's address is known), or still in progress
    // (ENOTCONN, also after a failure: SO_ERROR below says which).
    let done = socket.peer_addr().is_ok();
    let stream = TcpStream::from_std(socket.into())?;
    if !done {
        stream.writable().await?;
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
    }
    Ok(stream)
}

/// Writes `bytes` to a freshly connected `stream`: first straight to the
/// socket (a new registration has no readiness yet, so a write through tokio
/// would wait a turn of the event loop for the first event), the rest, if
/// the socket takes less, through tokio.
pub async fn send_first(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
    let sent = match SockRef::from(&*stream).send_with_flags(bytes, libc::MSG_NOSIGNAL) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
        Err(e) => return Err(e),
    };
    match bytes.get(sent..) {
        Some(rest) if !rest.is_empty() => {
            // The socket options may not be set yet: without TCP_NODELAY a
            // short tail would wait for the acknowledgement of the rest.
            stream.set_nodelay(true)?;
            stream.write_all(rest).await
        }
        _ => Ok(()),
    }
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

    /// Polls `fut` once, without the event loop: what a session gets
    /// before its first `epoll_wait`.
    fn poll_once<F: std::future::Future>(fut: std::pin::Pin<&mut F>) -> Option<F::Output> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match fut.poll(&mut cx) {
            std::task::Poll::Ready(out) => Some(out),
            std::task::Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn a_loopback_connect_and_its_first_bytes_need_no_turn_of_the_event_loop() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        // The handshake completes inside connect() on loopback unless the
        // kernel defers its softirq work; most of 20 must take the fast path.
        let addrs = [ip];
        let mut at_once = 0;
        for i in 0..20u8 {
            let mut connect = std::pin::pin!(connect(&addrs, port, Duration::from_secs(5)));
            let mut stream = match poll_once(connect.as_mut()) {
                Some(c) => {
                    at_once += 1;
                    c.expect("connect")
                }
                None => connect.await.expect("connect"),
            };
            let first = [i; 64];
            {
                let mut send = std::pin::pin!(send_first(&mut stream, &first));
                match poll_once(send.as_mut()) {
                    Some(r) => r.expect("send"),
                    None => panic!("64 bytes to a fresh connection waited for the event loop"),
                }
            }
            let (mut accepted, _) = listener.accept().await.expect("accept");
            let mut got = [0u8; 64];
            accepted.read_exact(&mut got).await.expect("read");
            assert_eq!(got, [i; 64]);
        }
        assert!(
            at_once >= 15,
            "only {at_once} of 20 connects completed at once"
        );
    }

    #[tokio::test]
    async fn first_bytes_larger_than_the_socket_takes_all_arrive_in_order() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut stream = connect(
            &["127.0.0.1".parse().expect("ip")],
            port,
            Duration::from_secs(5),
        )
        .await
        .expect("connect");
        SockRef::from(&stream)
            .set_send_buffer_size(4096)
            .expect("sndbuf");
        let bytes: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut accepted, _) = listener.accept().await.expect("accept");
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            accepted.read_to_end(&mut got).await.expect("read");
            got
        });
        send_first(&mut stream, &bytes).await.expect("send");
        drop(stream);
        assert!(
            reader.await.expect("reader") == bytes,
            "bytes lost or reordered"
        );
    }
}
