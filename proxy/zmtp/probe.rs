//! One health probe of one port of one master.
//!
//! `tcp`: a connect. `zmtp`: read the master's 10-byte signature, answer a
//! NULL-mechanism greeting, read its greeting and READY, check the socket
//! type (PUB on publish, ROUTER on ret), send our READY and close — a complete
//! handshake, so the master logs nothing. `ping` (transport tcp; also the
//! re-probe of a master suspected hung on either transport, see
//! `control::health`): a connect on the publish port; on the ret port Salt's
//! clear `ping` request — in Salt's tcp framing, or as a ZeroMQ REQ peer of
//! the master's ROUTER after a ZMTP handshake — whose reply a live master
//! sends at once and a stuck one never does: its libzmq I/O thread (or its
//! kernel) still completes every handshake, but the request waits for a
//! worker (any reaction of the master counts: only silence fails it). Its ret-port connection is kept
//! by the master's health task while a reply is owed, and no second ping is
//! sent before that reply ([`PingLine`]); *when* to ping is `health`'s
//! call (not in a master's first seconds). The
//! whole probe is bounded by one timeout and reads a bounded number of
//! bytes. Hysteresis is `health`'s job.

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::master::Port;
use crate::config::{ProbeKind, Transport};
use crate::limits::{Blame, Resource};
use crate::metrics::{CheckResult, ConnectErrorKind};
use crate::net::{self, ConnectError};
use crate::zmtp::saltreq;
use crate::zmtp::{self, SocketType, ZmtpError};

/// Largest frame we accept while waiting for READY.
const MAX_FRAME: usize = 64 * 1024;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect failed: {0}")]
    Connect(#[from] ConnectError),
    #[error("timed out")]
    Timeout,
    #[error("connection closed during the handshake")]
    Closed,
    #[error("connection reset: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a ZeroMQ master: {0}")]
    Protocol(#[from] ZmtpError),
    #[error("no answer to a `ping` request")]
    Unanswered,
    /// A ZMTP PING sent on a live minion session got no bytes back.
    #[error("no answer to a ZMTP PING on a minion session")]
    PingUnanswered,
    /// The sidecar itself ran out (EMFILE, ...): no verdict on the master.
    #[error("not probed: {}", .0.describe())]
    Exhausted(Resource, #[source] std::io::Error),
}

impl ProbeError {
    /// The `result` label for `health_checks_total`.
    pub fn result(&self) -> CheckResult {
        match self {
            ProbeError::Connect(e) => match e.kind() {
                ConnectErrorKind::Refused => CheckResult::Refused,
                ConnectErrorKind::Timeout => CheckResult::Timeout,
                ConnectErrorKind::Unresolved => CheckResult::Unresolved,
                ConnectErrorKind::Unreachable | ConnectErrorKind::Other => CheckResult::Other,
            },
            ProbeError::Timeout | ProbeError::Unanswered | ProbeError::PingUnanswered => {
                CheckResult::Timeout
            }
            ProbeError::Closed | ProbeError::Io(_) => CheckResult::Reset,
            ProbeError::Protocol(_) => CheckResult::Protocol,
            // Never counted: health skips the check (see `exhausted`).
            ProbeError::Exhausted(..) => CheckResult::Other,
        }
    }

    /// Who is to blame: the sidecar for its own exhaustion (no verdict on
    /// the master), the master for anything else.
    pub fn blame(&self) -> Blame {
        match self {
            ProbeError::Exhausted(..) => Blame::Sidecar,
            _ => Blame::Master,
        }
    }

    /// The sidecar's own error, to count in `resource_errors_total`.
    pub fn own_error(&self) -> Option<&std::io::Error> {
        match self {
            ProbeError::Exhausted(_, e) => Some(e),
            _ => None,
        }
    }
}

/// Probes `port` of a master at `addrs`, all within `limit`.
pub async fn probe(
    kind: ProbeKind,
    addrs: &[IpAddr],
    tcp_port: u16,
    port: Port,
    limit: Duration,
) -> Result<(), ProbeError> {
    let attempt = async {
        let stream = connect(addrs, tcp_port, limit).await?;
        match kind {
            ProbeKind::Tcp => Ok(()),
            ProbeKind::Ping if port == Port::Publish => Ok(()),
            ProbeKind::Ping => exchange_ping(stream).await,
            ProbeKind::Zmtp => handshake(stream, port).await,
        }
    };
    match timeout(limit, attempt).await {
        Ok(result) => result,
        Err(_) if kind == ProbeKind::Ping && port == Port::Ret => Err(ProbeError::Unanswered),
        Err(_) => Err(ProbeError::Timeout),
    }
}

/// Connects to a master for a probe: the sidecar's own exhaustion is told
/// apart from the master's failure.
///
/// With `TCP_NODELAY`: a probe writes its READY and, for a `ping`, its
/// request right after it, and the master's libzmq answers READY with
/// nothing, so with Nagle's algorithm the request waited for the master's
/// delayed acknowledgement of READY (40 ms on Linux): every clear `ping`
/// to a real Salt master took 45-50 ms instead of a few, which the sign-in
/// pacing read as a crowd (fleet lab, 2026-12-07).
async fn connect(
    addrs: &[IpAddr],
    tcp_port: u16,
    limit: Duration,
) -> Result<TcpStream, ProbeError> {
    let stream = net::connect(addrs, tcp_port, limit)
        .await
        .map_err(|e| match e.exhaustion() {
            Some(r) => match e {
                ConnectError::Io { source, .. } => ProbeError::Exhausted(r, source),
                other => ProbeError::Connect(other),
            },
            None => ProbeError::Connect(e),
        })?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Rounds an unanswered ping is waited for on its kept connection before
/// the connection is given up and a fresh ping sent (a master hung that
/// long; it may log the reply it cannot send).
const MAX_WAITED: u32 = 16;

/// One master's `ping` probes of its ret port, kept by its health task.
///
/// **At most one ping in flight.** A ping that times out leaves its
/// connection open, and later rounds send nothing more: they wait for that
/// ping's reply (which proves the master alive when it comes), then the
/// connection is closed. So a Salt master never has two of the sidecar's
/// requests at once: a 3008 tcp-transport master whose request router gets
/// two requests before its connection to its workers is up can stop
/// answering every request for good (reproduced: two pings about 1 s apart
/// in the first seconds after its ret port opened). And a master that is
/// slow to answer (3008 loads its modules for seconds after it starts)
/// never finds the connection gone when it replies, which it would log as
/// an error with a traceback (`StreamClosedError`, "Task exception was never
/// retrieved"). One descriptor per master, as for any probe.
#[derive(Debug, Default)]
pub struct PingLine {
    stream: Option<TcpStream>,
    /// How `stream` speaks (ZeroMQ: handshaken as a REQ peer).
    transport: Option<Transport>,
    /// Bytes of replies read but not yet complete.
    buf: Vec<u8>,
    /// A ping was sent on `stream` and its reply has not been read.
    owed: bool,
    /// Rounds that waited for the owed ping's reply without sending one.
    waited: u32,
}

impl PingLine {
    /// Sends Salt's clear `ping` request to the ret port of the master at
    /// `addrs` (unless one is still owed a reply: then that reply is
    /// waited for) and waits for a reply, all within `limit`. The master is
    /// alive if a reply or any other bytes (e.g. a TLS alert: a master with
    /// Salt's `ssl:`) arrive; a hung master's kernel accepts the connection
    /// and the request, and nothing comes back: [`ProbeError::Unanswered`].
    pub async fn ping(
        &mut self,
        transport: Transport,
        addrs: &[IpAddr],
        ret_port: u16,
        handshake: Duration,
        limit: Duration,
    ) -> Result<(), ProbeError> {
        if self.transport.is_some_and(|t| t != transport) {
            self.close(); // a reload changed the transport
        }
        let exchange = self.exchange(transport, addrs, ret_port, handshake.min(limit));
        match timeout(limit, exchange).await {
            Ok(Ok(())) => {
                if !self.owed {
                    self.close();
                }
                Ok(())
            }
            Ok(Err(e)) => {
                self.close();
                Err(e)
            }
            Err(_) => {
                // Cut short before a ping was sent (connect or handshake:
                // a frozen master), or the ping waited too long (a mute
                // one: its handshake was done).
                let sent = self.owed;
                if !sent || self.waited >= MAX_WAITED {
                    self.close();
                }
                Err(if sent {
                    ProbeError::Unanswered
                } else {
                    ProbeError::Timeout
                })
            }
        }
    }

    /// Closes the kept connection (nothing is owed, or it is given up).
    pub fn close(&mut self) {
        self.stream = None;
        self.transport = None;
        self.buf.clear();
        self.owed = false;
        self.waited = 0;
    }

    async fn exchange(
        &mut self,
        transport: Transport,
        addrs: &[IpAddr],
        ret_port: u16,
        limit: Duration,
    ) -> Result<(), ProbeError> {
        // A reply that came in since the last round pays what is owed, but
        // says nothing about now; a close means a fresh connection.
        if self.take_buffered()? {
            self.close();
        }
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                // Connect and handshake within `limit` (the probe timeout): a
                // frozen master fails here, however long a reply may take.
                let opened = timeout(limit, async {
                    let mut stream = connect(addrs, ret_port, limit).await?;
                    let buf = if transport == Transport::Zeromq {
                        // As a REQ peer: what comes after READY is replies.
                        greet(&mut stream, Port::Ret, SocketType::Req).await?
                    } else {
                        Vec::new()
                    };
                    Ok::<_, ProbeError>((stream, buf))
                })
                .await;
                let (stream, buf) = opened.map_err(|_| ProbeError::Timeout)??;
                self.buf = buf;
                self.transport = Some(transport);
                self.stream.insert(stream)
            }
        };
        if self.owed {
            // Never a second request while one is unanswered: wait for it.
            self.waited += 1;
        } else {
            match transport {
                Transport::Tcp => stream.write_all(saltreq::PING).await?,
                Transport::Zeromq => {
                    // REQ: an empty delimiter frame, then the request.
                    let request = zmtp::encode_message(&[b"", saltreq::PING_BODY]);
                    stream.write_all(&request).await?;
                }
            }
            self.owed = true;
        }
        let mut chunk = [0u8; 1024];
        loop {
            let n = match &mut self.stream {
                Some(stream) => stream.read(&mut chunk).await?,
                None => return Err(ProbeError::Closed),
            };
            if n == 0 {
                return Err(ProbeError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
            match self.settle() {
                Settled::Replies(0) => {}
                Settled::Replies(_) => return Ok(()),
                Settled::NotSalt => {
                    // Alive, but not speaking Salt's framing: start afresh.
                    self.close();
                    return Ok(());
                }
                Settled::Broken(e) => return Err(e.into()),
            }
        }
    }

    /// Reads what arrived since the last round without waiting; true if
    /// the master closed the connection (or it failed).
    fn take_buffered(&mut self) -> Result<bool, ProbeError> {
        let Some(stream) = &self.stream else {
            return Ok(false);
        };
        let mut chunk = [0u8; 1024];
        loop {
            match stream.try_read(&mut chunk) {
                Ok(0) => return Ok(true),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return Ok(true),
            }
            if self.buf.len() > MAX_FRAME {
                return Ok(true);
            }
        }
        Ok(matches!(
            self.settle(),
            Settled::NotSalt | Settled::Broken(_)
        ))
    }

    /// Counts the complete replies in `buf`; a reply pays what is owed.
    fn settle(&mut self) -> Settled {
        let mut replies = 0;
        loop {
            let next = match self.transport {
                // A frame that cannot be a reply (malformed, or announcing
                // more than any ping's reply) is no answer: a broken master.
                Some(Transport::Zeromq) => match zmtp_reply(&self.buf) {
                    Err(e) => return Settled::Broken(e),
                    Ok(next) => Ok(next),
                },
                _ => saltreq::message_len(&self.buf)
                    .map(|len| len.map(|len| (len, true)))
                    .map_err(|_| ()),
            };
            match next {
                Ok(Some((len, reply))) => {
                    self.buf.drain(..len);
                    if reply {
                        self.owed = false;
                        self.waited = 0;
                        replies += 1;
                    }
                }
                Ok(None) if self.buf.len() > MAX_FRAME => return Settled::NotSalt,
                Ok(None) => return Settled::Replies(replies),
                Err(()) => return Settled::NotSalt,
            }
        }
    }
}

/// The first frame in `buf` of a ZeroMQ REQ peer's stream: its length, and
/// whether it ends a reply (the last frame of a data message; commands such
/// as heartbeats are no reply). `Ok(None)`: not complete yet.
fn zmtp_reply(buf: &[u8]) -> Result<Option<(usize, bool)>, ZmtpError> {
    Ok(match zmtp::decode_frame(buf, MAX_FRAME)? {
        Some((zmtp::Frame::Message { more, .. }, len)) => Some((len, !more)),
        Some((zmtp::Frame::Command { .. }, len)) => Some((len, false)),
        None => None,
    })
}

/// What the bytes read from a ping connection were.
enum Settled {
    /// This many complete replies.
    Replies(u32),
    /// Not Salt's framing (e.g. TLS).
    NotSalt,
    /// A ZeroMQ master sent a frame no reply can be.
    Broken(ZmtpError),
}

/// Salt's clear `ping` request on a connected ret port. The master is
/// alive if it reacts at all: its reply (read to its end, so the master's
/// write completes), other bytes (e.g. a TLS alert: a master with Salt's
/// `ssl:`), or a close. Only silence fails it — a hung process's kernel
/// accepts the connection and the request, and nothing comes back.
async fn exchange_ping(mut stream: TcpStream) -> Result<(), ProbeError> {
    stream.write_all(saltreq::PING).await?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        match saltreq::message_len(&buf) {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if buf.len() > MAX_FRAME => break,
            Ok(None) => {}
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let _ = stream.shutdown().await;
    Ok(())
}

/// The ZMTP 3 handshake as a peer of the master's socket.
pub async fn handshake(mut stream: TcpStream, port: Port) -> Result<(), ProbeError> {
    greet(&mut stream, port, SocketType::of_minion(port)).await?;
    // The master has seen a well-behaved peer; now it sees it leave.
    stream.shutdown().await?;
    Ok(())
}

/// Exchanges greetings and READY with the master's socket on `port` (NULL
/// mechanism, its socket type checked), announcing `ours`; returns the
/// bytes read past the master's READY (none, as a rule: a master sends
/// nothing more before it is asked).
async fn greet(
    stream: &mut TcpStream,
    port: Port,
    ours: SocketType,
) -> Result<Vec<u8>, ProbeError> {
    let expected = SocketType::of_master(port);
    let mut greeting = [0u8; zmtp::GREETING_LEN];
    read_exact(stream, &mut greeting[..zmtp::SIGNATURE_LEN]).await?;
    zmtp::check_signature(&greeting[..zmtp::SIGNATURE_LEN])?;
    stream.write_all(&zmtp::greeting_null(false)).await?;
    read_exact(stream, &mut greeting[zmtp::SIGNATURE_LEN..]).await?;
    // A CURVE/PLAIN master would never send READY to a NULL peer: fail now.
    zmtp::parse_greeting(&greeting)?.require_null()?;

    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    let used = loop {
        if let Some((frame, used)) = zmtp::decode_frame(&buf, MAX_FRAME)? {
            zmtp::expect_socket_type(&frame, expected)?;
            break used;
        }
        if buf.len() > MAX_FRAME + 16 {
            return Err(ZmtpError::Malformed("READY too large").into());
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(ProbeError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    stream.write_all(&zmtp::encode_ready(ours)).await?;
    buf.drain(..used);
    Ok(buf)
}

async fn read_exact(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), ProbeError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ProbeError::Closed),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::net::TcpListener;

    /// What a stand-in ret port saw.
    #[derive(Default)]
    struct Seen {
        conns: AtomicUsize,
        pings: AtomicUsize,
        /// Replies it could not deliver (the connection was gone).
        lost: AtomicUsize,
    }

    impl Seen {
        fn get(&self, what: fn(&Seen) -> &AtomicUsize) -> usize {
            what(self).load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn probe_connections_send_without_waiting_for_acknowledgements() {
        // A probe writes READY and then its request: with Nagle's algorithm
        // the request would wait for the master's delayed ACK (40 ms).
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stream = connect(&[Ipv4Addr::LOCALHOST.into()], port, Duration::from_secs(2))
            .await
            .expect("connect");
        assert!(stream.nodelay().expect("nodelay"), "TCP_NODELAY is set");
    }

    /// A ret port that answers each ping after `delay` on the connection it
    /// came on.
    async fn slow_master(delay: Duration) -> (u16, Arc<Seen>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                s.conns.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    let (mut rd, wr) = stream.into_split();
                    let wr = Arc::new(tokio::sync::Mutex::new(wr));
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 256];
                    while let Ok(n) = rd.read(&mut chunk).await {
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Ok(Some(len)) = saltreq::message_len(&buf) {
                            buf.drain(..len);
                            s.pings.fetch_add(1, Ordering::SeqCst);
                            let (wr, s) = (wr.clone(), s.clone());
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let reply =
                                    b"\x82\xa4head\x81\xa3mid\x01\xa4body\x81\xa3cmd\xa4ping";
                                if wr.lock().await.write_all(reply).await.is_err() {
                                    s.lost.fetch_add(1, Ordering::SeqCst);
                                }
                            });
                        }
                    }
                });
            }
        });
        (port, seen)
    }

    #[tokio::test]
    async fn an_unanswered_ping_is_waited_for_not_followed_by_another() {
        let (port, seen) = slow_master(Duration::from_millis(400)).await;
        let addrs = [IpAddr::from(Ipv4Addr::LOCALHOST)];
        let mut line = PingLine::default();
        let limit = Duration::from_millis(150);
        for _ in 0..2 {
            let r = line.ping(Transport::Tcp, &addrs, port, limit, limit).await;
            assert!(matches!(r, Err(ProbeError::Unanswered)), "{r:?}");
        }
        assert_eq!(
            seen.get(|s| &s.pings),
            1,
            "the second round sent no ping while the first was unanswered"
        );
        // The late reply arrives while this round waits: the master is alive.
        line.ping(
            Transport::Tcp,
            &addrs,
            port,
            Duration::from_secs(2),
            Duration::from_secs(2),
        )
        .await
        .expect("a late reply proves the master alive");
        assert!(line.stream.is_none(), "nothing owed: closed");
        line.ping(
            Transport::Tcp,
            &addrs,
            port,
            Duration::from_secs(2),
            Duration::from_secs(2),
        )
        .await
        .expect("answered");
        assert_eq!(seen.get(|s| &s.pings), 2);
        assert_eq!(
            seen.get(|s| &s.conns),
            2,
            "one connection per answered ping"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            seen.get(|s| &s.lost),
            0,
            "no reply found its connection gone"
        );
    }

    #[tokio::test]
    async fn a_reply_that_came_between_rounds_pays_the_debt_and_a_fresh_ping_goes_out() {
        let (port, seen) = slow_master(Duration::from_millis(300)).await;
        let addrs = [IpAddr::from(Ipv4Addr::LOCALHOST)];
        let mut line = PingLine::default();
        let r = line
            .ping(
                Transport::Tcp,
                &addrs,
                port,
                Duration::from_millis(100),
                Duration::from_millis(100),
            )
            .await;
        assert!(matches!(r, Err(ProbeError::Unanswered)), "{r:?}");
        // The reply comes while no round runs; it says nothing about now.
        tokio::time::sleep(Duration::from_millis(500)).await;
        line.ping(
            Transport::Tcp,
            &addrs,
            port,
            Duration::from_secs(2),
            Duration::from_secs(2),
        )
        .await
        .expect("answered");
        assert_eq!(seen.get(|s| &s.pings), 2, "a fresh ping for this round");
        assert_eq!(seen.get(|s| &s.conns), 1, "on the kept connection");
        assert_eq!(seen.get(|s| &s.lost), 0);
    }

    #[tokio::test]
    async fn a_silent_port_is_unanswered_and_a_prompt_one_is_closed_after_its_reply() {
        let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let port = silent.local_addr().expect("addr").port();
        let addrs = [IpAddr::from(Ipv4Addr::LOCALHOST)];
        let mut line = PingLine::default();
        let r = line
            .ping(
                Transport::Tcp,
                &addrs,
                port,
                Duration::from_millis(200),
                Duration::from_millis(200),
            )
            .await;
        assert!(matches!(r, Err(ProbeError::Unanswered)), "{r:?}");
        let (port, seen) = slow_master(Duration::ZERO).await;
        let mut line = PingLine::default();
        for _ in 0..3 {
            line.ping(
                Transport::Tcp,
                &addrs,
                port,
                Duration::from_secs(2),
                Duration::from_secs(2),
            )
            .await
            .expect("answered");
            assert!(line.stream.is_none(), "nothing owed: closed");
        }
        assert_eq!(seen.get(|s| &s.conns), 3);
    }
}
