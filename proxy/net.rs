//! Layer 3: connecting to a master, one place for timeouts and socket
//! options. May import `config` and `metrics` only.
//!
//! Used by the health probes and by forwarding. Tries the master's addresses
//! in order within one overall timeout, then sets TCP_NODELAY and keepalive,
//! so an idle flow to a blackholed master (no RST) is ended in seconds, not
//! after the kernel's 15 minutes. Never reads payload; writes only what a
//! caller hands to [`send_first`].
//!
//! **No TCP_USER_TIMEOUT.** It would also end a flow whose master is alive
//! but reads slowly: the kernel applies it to zero-window probing too, and a
//! master reading 1 KiB/s on loopback keeps its window shut for a minute at a
//! time (it reopens one MSS, 64 KiB, at a time), while it acknowledges every
//! probe. A flow with data in flight to a master that answers nothing is
//! found instead when that master is suspected and still answers a `ping`
//! on a fresh connection: [`flow_stalled`] reads the kernel's own view of
//! the flow (retransmitting, unacknowledged) and the session is moved.
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
    Ok(())
}

/// Retransmissions of the same data without an acknowledgement after which
/// a flow counts as dead (on loopback the RTO starts at 200 ms: two take
/// 0.6 s; one can happen on a healthy lossy path).
const STALLED_RETRANSMITS: u64 = 2;

/// Whether the established flow `local` → `peer` has data in flight that
/// its peer has not acknowledged through [`STALLED_RETRANSMITS`]
/// retransmissions (a dead flow), as the kernel's TCP table says
/// (`/proc/net/tcp` or `tcp6`). `Some(false)` for a live flow, also one
/// whose peer keeps its window shut but answers the kernel's window probes
/// (a master reading slowly); `None` when the flow is not in the table or
/// the table cannot be read. Reads a procfs file: memory, not disk; called
/// only when a master is suspected, never per byte.
pub fn flow_stalled(local: SocketAddr, peer: SocketAddr) -> Option<bool> {
    let table = if local.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(table).ok()?;
    let flow = find_flow(&text, local, peer)?;
    Some(flow.stalled())
}

/// One row of the kernel's TCP table, as far as [`flow_stalled`] needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Flow {
    /// Bytes sent and not acknowledged, or not sent yet (`tx_queue`).
    queued: u64,
    /// The active timer: 1 retransmit, 2 keepalive, 4 zero-window probe.
    timer: u8,
    /// Retransmissions without an acknowledgement (or window probes).
    retransmits: u64,
}

impl Flow {
    fn stalled(self) -> bool {
        self.queued > 0 && self.timer == 1 && self.retransmits >= STALLED_RETRANSMITS
    }
}

/// Finds the established row of `local` → `peer` in a `/proc/net/tcp{,6}`
/// text.
fn find_flow(text: &str, local: SocketAddr, peer: SocketAddr) -> Option<Flow> {
    let (want_local, want_peer) = (proc_addr(local), proc_addr(peer));
    text.lines().skip(1).find_map(|line| {
        let mut f = line.split_whitespace().skip(1);
        let (l, r, st, queues, timer, retransmits) = (
            f.next()?,
            f.next()?,
            f.next()?,
            f.next()?,
            f.next()?,
            f.next()?,
        );
        if st != "01" || !l.eq_ignore_ascii_case(&want_local) || !r.eq_ignore_ascii_case(&want_peer)
        {
            return None;
        }
        let tx = queues.split(':').next()?;
        let tr = timer.split(':').next()?;
        Some(Flow {
            queued: u64::from_str_radix(tx, 16).ok()?,
            timer: u8::from_str_radix(tr, 16).ok()?,
            retransmits: u64::from_str_radix(retransmits, 16).ok()?,
        })
    })
}

/// An address as the kernel's TCP table spells it: each 32-bit word of the
/// address in the host's byte order, in hex, then `:` and the port in hex.
fn proc_addr(addr: SocketAddr) -> String {
    let words: Vec<u32> = match addr.ip() {
        IpAddr::V4(ip) => vec![u32::from_ne_bytes(ip.octets())],
        IpAddr::V6(ip) => ip
            .octets()
            .chunks_exact(4)
            .map(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
            .collect(),
    };
    let mut out: String = words.iter().map(|w| format!("{w:08X}")).collect();
    out.push_str(&format!(":{:04X}", addr.port()));
    out
}

/// Makes the next close of `stream` send RST instead of FIN.
pub fn reset_on_close(stream: &TcpStream) {
    // Best effort: if this fails the peer sees a FIN, which also ends the session.
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_table_tells_a_dead_flow_from_a_slow_reader() {
        let local: SocketAddr = "127.0.0.1:50234".parse().expect("addr");
        let peer: SocketAddr = "127.0.0.2:4506".parse().expect("addr");
        let (l, r) = (proc_addr(local), proc_addr(peer));
        if cfg!(target_endian = "little") {
            assert_eq!(l, "0100007F:C43A");
            assert_eq!(r, "0200007F:119A");
        }
        let row = |st: &str, tx: &str, tr: &str, re: &str| {
            format!("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:119A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: {l} {r} {st} {tx}:00000000 {tr}:0000004B {re}     0        0 2 1 0 20 4 30 10 -1\n")
        };
        let flow = |text: String| find_flow(&text, local, peer).map(Flow::stalled);
        // Retransmitting, nothing acknowledged: dead.
        assert_eq!(flow(row("01", "0000001F", "01", "00000003")), Some(true));
        // One retransmission: not yet.
        assert_eq!(flow(row("01", "0000001F", "01", "00000001")), Some(false));
        // Zero-window probing, answered: a slow reader, alive.
        assert_eq!(flow(row("01", "00010000", "04", "00000007")), Some(false));
        // Idle, keepalive timer: alive.
        assert_eq!(flow(row("01", "00000000", "02", "00000000")), Some(false));
        // Not established, or another flow: not found.
        assert_eq!(flow(row("08", "0000001F", "01", "00000003")), None);
        let other: SocketAddr = "127.0.0.3:4506".parse().expect("addr");
        assert_eq!(find_flow(&row("01", "1F", "01", "3"), local, other), None);
    }

    #[tokio::test]
    async fn a_live_flow_is_found_in_the_kernel_table_and_not_stalled() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (stream, _accepted) = tokio::join!(
            TcpStream::connect(listener.local_addr().expect("addr")),
            listener.accept()
        );
        let stream = stream.expect("connect");
        let (local, peer) = (
            stream.local_addr().expect("local"),
            stream.peer_addr().expect("peer"),
        );
        assert_eq!(flow_stalled(local, peer), Some(false));
    }

    #[tokio::test]
    async fn forwarding_sockets_get_nodelay_and_keepalive_and_no_user_timeout() {
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
        let opts = SocketOptions::for_health(Duration::from_secs(30));
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
        // No user timeout: it would cut a master that reads slowly (see the module doc).
        assert_eq!(sock.tcp_user_timeout().expect("user timeout"), None);
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
