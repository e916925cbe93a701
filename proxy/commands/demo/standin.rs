//! A stand-in Salt master for the `demo` command and tests, plus the demo
//! minion's client ([`ZmtpClient`]).
//!
//! Owns two listeners and every connection accepted on them. Each connection
//! speaks just enough ZMTP 3.0 with the NULL mechanism that a health probe
//! sees a real-looking PUB on the publish port and ROUTER on the ret port:
//! the publish port sends `<name>:tick <n>` every 200 ms and ignores what the
//! subscriber sends; the ret port answers every message with the same frames,
//! the last one replaced by `<name>:<payload>`. Stopping (or dropping) the
//! stand-in aborts every connection with `SO_LINGER` 0, so a proxy sees a
//! reset, as when a real master is killed.
//!
//! It never speaks Salt's own protocol (no auth, no payload encoding), never
//! buffers more than one bounded message per connection, and never lets a
//! peer's misbehaviour go further than closing that one connection with a
//! `debug` log line.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{self, Instant, MissedTickBehavior};
use tracing::debug;

use crate::config::master::Port;
use crate::zmtp::{self, Frame, SocketType, ZmtpError};

/// Largest frame body accepted from a peer.
pub const MAX_FRAME: usize = 1 << 20;
/// Largest multipart message accepted from a peer, summed over its frames.
const MAX_MESSAGE: usize = 1 << 20;
/// Most frames in one message accepted from a peer.
const MAX_PARTS: usize = 64;
/// How long the stand-in waits for a peer's greeting, then for its READY.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval between two publish-port ticks.
const TICK_EVERY: Duration = Duration::from_millis(200);
/// Pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Read buffer growth step.
const READ_CHUNK: usize = 8 * 1024;

/// Where an exchange was when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Connecting, greetings, READY commands.
    Handshake,
    /// Sending a message or waiting for one.
    Exchange,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Handshake => "during the ZMTP handshake",
            Phase::Exchange => "while exchanging messages",
        })
    }
}

/// Why a stand-in connection or a [`ZmtpClient`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum StandinError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Protocol(#[from] ZmtpError),
    #[error("timed out {0}")]
    Timeout(Phase),
    #[error("peer closed the connection {0}")]
    Closed(Phase),
    #[error("message larger than {MAX_MESSAGE} bytes or {MAX_PARTS} frames")]
    MessageTooLarge,
}

/// A running stand-in master. Dropping it, or [`StandinMaster::stop`], closes
/// both listeners and resets every open connection.
#[derive(Debug)]
pub struct StandinMaster {
    publish_addr: SocketAddr,
    ret_addr: SocketAddr,
    listeners: [JoinHandle<()>; 2],
    connections: Arc<Mutex<Connections>>,
}

/// Every connection task, shared by both listeners and the owner.
#[derive(Debug, Default)]
struct Connections {
    /// Set once by stop/drop: listeners spawn nothing afterwards.
    stopped: bool,
    tasks: JoinSet<()>,
}

impl StandinMaster {
    /// Binds the publish and ret listeners (two distinct addresses; port 0
    /// picks a free port) and serves them until stopped. Replies and ticks
    /// are prefixed with `name`.
    pub async fn start(
        name: &str,
        publish: SocketAddr,
        ret: SocketAddr,
    ) -> io::Result<StandinMaster> {
        let publish_listener = TcpListener::bind(publish).await?;
        let ret_listener = TcpListener::bind(ret).await?;
        let publish_addr = publish_listener.local_addr()?;
        let ret_addr = ret_listener.local_addr()?;
        let name: Arc<str> = Arc::from(name);
        let connections = Arc::new(Mutex::new(Connections::default()));
        let listeners = [(publish_listener, Port::Publish), (ret_listener, Port::Ret)].map(
            |(listener, port)| {
                tokio::spawn(accept_loop(
                    listener,
                    port,
                    Arc::clone(&name),
                    Arc::clone(&connections),
                ))
            },
        );
        debug!(%name, %publish_addr, %ret_addr, "stand-in master started");
        Ok(StandinMaster {
            publish_addr,
            ret_addr,
            listeners,
            connections,
        })
    }

    /// The bound publish (PUB-like) address.
    pub fn publish_addr(&self) -> SocketAddr {
        self.publish_addr
    }

    /// The bound ret (ROUTER-like) address.
    pub fn ret_addr(&self) -> SocketAddr {
        self.ret_addr
    }

    /// Closes both listeners and resets every open connection, like a killed
    /// master. No connection is served after this returns; the sockets
    /// themselves close as soon as the runtime reaps the aborted tasks.
    pub fn stop(self) {
        drop(self);
    }

    /// Like [`StandinMaster::stop`], but returns only once every listener
    /// and connection socket is closed — as when a master process is killed.
    pub async fn kill(mut self) {
        self.shutdown();
        for listener in &mut self.listeners {
            // Aborted: the result is a cancellation error, which is the point.
            let _ = listener.await;
        }
        let mut tasks = std::mem::take(&mut lock(&self.connections).tasks);
        while tasks.join_next().await.is_some() {}
    }

    fn shutdown(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
        let mut connections = lock(&self.connections);
        connections.stopped = true;
        connections.tasks.abort_all();
    }
}

impl Drop for StandinMaster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock(connections: &Mutex<Connections>) -> MutexGuard<'_, Connections> {
    // A panic elsewhere cannot leave `Connections` inconsistent: keep going.
    connections.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept_loop(
    listener: TcpListener,
    port: Port,
    name: Arc<str>,
    connections: Arc<Mutex<Connections>>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                debug!(%port, %error, "stand-in accept failed");
                time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Linger 0: closing this socket, even by aborting its task, sends RST.
        if let Err(error) = stream.set_zero_linger() {
            debug!(%port, %peer, %error, "stand-in could not set SO_LINGER 0");
        }
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%port, %peer, %error, "stand-in could not set TCP_NODELAY");
        }
        let mut connections = lock(&connections);
        if connections.stopped {
            return;
        }
        while connections.tasks.try_join_next().is_some() {}
        let name = Arc::clone(&name);
        connections.tasks.spawn(async move {
            match serve(stream, port, &name).await {
                Ok(()) => debug!(%port, %peer, "stand-in connection closed by peer"),
                Err(error) => debug!(%port, %peer, %error, "stand-in connection dropped"),
            }
        });
    }
}

/// One accepted connection, from greeting to close.
async fn serve(stream: TcpStream, port: Port, name: &str) -> Result<(), StandinError> {
    let mut wire = Wire::new(stream);
    wire.send(&zmtp::greeting_null(true)).await?;
    let greeting = time::timeout(HANDSHAKE_TIMEOUT, wire.greeting())
        .await
        .map_err(|_| StandinError::Timeout(Phase::Handshake))??;
    greeting.require_null()?;
    let socket_type = SocketType::of_master(port);
    wire.send(&zmtp::encode_ready(socket_type)).await?;
    // A health probe closes here, having read our READY: a quiet Ok.
    let Some(ready) = time::timeout(HANDSHAKE_TIMEOUT, wire.frame())
        .await
        .map_err(|_| StandinError::Timeout(Phase::Handshake))??
    else {
        return Ok(());
    };
    zmtp::peer_socket_type(&ready.as_frame())?;
    match port {
        Port::Publish => publish(wire, name).await,
        Port::Ret => answer(wire, name).await,
    }
}

/// Publish port: a tick every [`TICK_EVERY`]; whatever the subscriber sends
/// (subscriptions) is read and ignored.
async fn publish(mut wire: Wire, name: &str) -> Result<(), StandinError> {
    enum Event {
        Tick,
        Received(Option<OwnedFrame>),
    }
    let mut ticks = time::interval_at(Instant::now() + TICK_EVERY, TICK_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut count: u64 = 0;
    loop {
        // `Wire::frame` is cancel-safe: a partial frame stays in the buffer.
        let event = tokio::select! {
            _ = ticks.tick() => Event::Tick,
            frame = wire.frame() => Event::Received(frame?),
        };
        match event {
            Event::Tick => {
                count = count.wrapping_add(1);
                let body = format!("{name}:tick {count}");
                wire.send(&zmtp::encode_message(&[body.as_bytes()])).await?;
            }
            Event::Received(Some(_)) => {}
            Event::Received(None) => return Ok(()),
        }
    }
}

/// Ret port: every message comes back with its last frame replaced by
/// `<name>:<last frame>` (so an empty delimiter frame is mirrored as is).
async fn answer(mut wire: Wire, name: &str) -> Result<(), StandinError> {
    while let Some(mut parts) = wire.message().await? {
        if let Some(last) = parts.last_mut() {
            let mut reply = Vec::with_capacity(name.len() + 1 + last.len());
            reply.extend_from_slice(name.as_bytes());
            reply.push(b':');
            reply.extend_from_slice(last);
            *last = reply;
        }
        let frames: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        wire.send(&zmtp::encode_message(&frames)).await?;
    }
    Ok(())
}

/// A frame copied out of the read buffer.
#[derive(Debug)]
enum OwnedFrame {
    Command { name: Vec<u8>, data: Vec<u8> },
    Message { more: bool, body: Vec<u8> },
}

impl OwnedFrame {
    fn as_frame(&self) -> Frame<'_> {
        match self {
            OwnedFrame::Command { name, data } => Frame::Command { name, data },
            OwnedFrame::Message { more, body } => Frame::Message { more: *more, body },
        }
    }
}

impl From<Frame<'_>> for OwnedFrame {
    fn from(frame: Frame<'_>) -> Self {
        match frame {
            Frame::Command { name, data } => OwnedFrame::Command {
                name: name.to_vec(),
                data: data.to_vec(),
            },
            Frame::Message { more, body } => OwnedFrame::Message {
                more,
                body: body.to_vec(),
            },
        }
    }
}

/// A TCP stream with a bounded read buffer, read as ZMTP.
#[derive(Debug)]
struct Wire {
    stream: TcpStream,
    buf: BytesMut,
}

impl Wire {
    fn new(stream: TcpStream) -> Self {
        Wire {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads more bytes into the buffer; `false` at end of stream.
    /// Cancel-safe.
    async fn fill(&mut self) -> io::Result<bool> {
        self.buf.reserve(READ_CHUNK);
        Ok(self.stream.read_buf(&mut self.buf).await? != 0)
    }

    /// The peer's greeting, failing as soon as its bytes rule one out.
    async fn greeting(&mut self) -> Result<zmtp::Greeting, StandinError> {
        loop {
            if let Some(greeting) = zmtp::decode_greeting(&self.buf)? {
                self.buf.advance(zmtp::GREETING_LEN);
                return Ok(greeting);
            }
            if !self.fill().await? {
                return Err(StandinError::Closed(Phase::Handshake));
            }
        }
    }

    /// The next frame; `None` when the peer closed cleanly between frames.
    /// Cancel-safe: bytes read so far stay buffered.
    async fn frame(&mut self) -> Result<Option<OwnedFrame>, StandinError> {
        loop {
            if let Some((frame, used)) = zmtp::decode_frame(&self.buf, MAX_FRAME)? {
                let frame = OwnedFrame::from(frame);
                self.buf.advance(used);
                return Ok(Some(frame));
            }
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(StandinError::Closed(Phase::Exchange))
                };
            }
        }
    }

    /// The next complete data message (commands in between are skipped);
    /// `None` when the peer closed cleanly between messages.
    async fn message(&mut self) -> Result<Option<Vec<Vec<u8>>>, StandinError> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let mut size: usize = 0;
        loop {
            match self.frame().await? {
                None if parts.is_empty() => return Ok(None),
                None => return Err(StandinError::Closed(Phase::Exchange)),
                Some(OwnedFrame::Command { name, .. }) => {
                    debug!(command = %name.escape_ascii(), "ignoring ZMTP command");
                }
                Some(OwnedFrame::Message { more, body }) => {
                    size = size.saturating_add(body.len());
                    if size > MAX_MESSAGE || parts.len() >= MAX_PARTS {
                        return Err(StandinError::MessageTooLarge);
                    }
                    parts.push(body);
                    if !more {
                        return Ok(Some(parts));
                    }
                }
            }
        }
    }
}

/// The demo minion's side: one ZMTP connection (NULL mechanism).
#[derive(Debug)]
pub struct ZmtpClient {
    wire: Wire,
    peer: SocketType,
}

impl ZmtpClient {
    /// Connects and completes the handshake (greetings and READY both ways)
    /// within `timeout`. The peer may be of any socket type. A `Sub` or
    /// `XSub` client then subscribes to everything.
    pub async fn connect(
        addr: SocketAddr,
        socket_type: SocketType,
        timeout: Duration,
    ) -> Result<ZmtpClient, StandinError> {
        time::timeout(timeout, Self::handshake(addr, socket_type))
            .await
            .map_err(|_| StandinError::Timeout(Phase::Handshake))?
    }

    async fn handshake(addr: SocketAddr, socket_type: SocketType) -> Result<Self, StandinError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut wire = Wire::new(stream);
        wire.send(&zmtp::greeting_null(false)).await?;
        wire.greeting().await?.require_null()?;
        wire.send(&zmtp::encode_ready(socket_type)).await?;
        let ready = wire
            .frame()
            .await?
            .ok_or(StandinError::Closed(Phase::Handshake))?;
        let peer = zmtp::peer_socket_type(&ready.as_frame())?;
        if matches!(socket_type, SocketType::Sub | SocketType::XSub) {
            // ZMTP 3.0 subscription: a message of 0x01 then the (empty) prefix.
            wire.send(&zmtp::encode_message(&[&[1]])).await?;
        }
        Ok(ZmtpClient { wire, peer })
    }

    /// The socket type the peer announced in its READY.
    pub fn peer_socket_type(&self) -> SocketType {
        self.peer
    }

    /// Sends `[b"", payload]` as a DEALER would and returns the payload of
    /// the reply's last frame. After an error (including a timeout) the
    /// connection is in an unknown state: drop the client.
    pub async fn request(
        &mut self,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, StandinError> {
        time::timeout(timeout, async {
            self.wire
                .send(&zmtp::encode_message(&[b"", payload]))
                .await?;
            let mut parts = self.next_message().await?;
            Ok(parts.pop().unwrap_or_default())
        })
        .await
        .map_err(|_| StandinError::Timeout(Phase::Exchange))?
    }

    /// The next message the peer sends (e.g. a tick from a PUB), one
    /// `Vec` per frame.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Vec<Vec<u8>>, StandinError> {
        time::timeout(timeout, self.next_message())
            .await
            .map_err(|_| StandinError::Timeout(Phase::Exchange))?
    }

    async fn next_message(&mut self) -> Result<Vec<Vec<u8>>, StandinError> {
        self.wire
            .message()
            .await?
            .ok_or(StandinError::Closed(Phase::Exchange))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    async fn start(name: &str) -> StandinMaster {
        StandinMaster::start(name, loopback(), loopback())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn request_gets_a_prefixed_reply() {
        let master = start("A").await;
        assert_ne!(master.publish_addr(), master.ret_addr());
        let mut client = ZmtpClient::connect(master.ret_addr(), SocketType::Dealer, WAIT)
            .await
            .unwrap();
        assert_eq!(client.peer_socket_type(), SocketType::Router);
        assert_eq!(client.request(b"ping 7", WAIT).await.unwrap(), b"A:ping 7");
        assert_eq!(client.request(b"", WAIT).await.unwrap(), b"A:");
        let big = vec![b'x'; 100_000];
        let reply = client.request(&big, WAIT).await.unwrap();
        assert_eq!(reply.len(), 100_002);
        assert!(reply.starts_with(b"A:xxx"));
    }

    #[tokio::test]
    async fn reply_mirrors_the_frames() {
        let master = start("B").await;
        let mut client = ZmtpClient::connect(master.ret_addr(), SocketType::Dealer, WAIT)
            .await
            .unwrap();
        let request: [&[u8]; 3] = [b"id", b"", b"q"];
        client
            .wire
            .send(&zmtp::encode_message(&request))
            .await
            .unwrap();
        let reply = client.recv(WAIT).await.unwrap();
        assert_eq!(reply, vec![b"id".to_vec(), b"".to_vec(), b"B:q".to_vec()]);
    }

    #[tokio::test]
    async fn publish_port_ticks() {
        let master = start("P").await;
        let mut client = ZmtpClient::connect(master.publish_addr(), SocketType::Sub, WAIT)
            .await
            .unwrap();
        assert_eq!(client.peer_socket_type(), SocketType::Pub);
        assert_eq!(client.recv(WAIT).await.unwrap(), vec![b"P:tick 1".to_vec()]);
        assert_eq!(client.recv(WAIT).await.unwrap(), vec![b"P:tick 2".to_vec()]);
    }

    #[tokio::test]
    async fn stop_fails_the_next_request_promptly() {
        let master = start("A").await;
        let ret = master.ret_addr();
        let mut client = ZmtpClient::connect(ret, SocketType::Dealer, WAIT)
            .await
            .unwrap();
        assert_eq!(client.request(b"one", WAIT).await.unwrap(), b"A:one");
        master.stop();
        let outcome = time::timeout(Duration::from_secs(2), client.request(b"two", WAIT)).await;
        // A reset (SO_LINGER 0), not an orderly close: what a killed master gives.
        match outcome {
            Ok(Err(StandinError::Io(error)))
                if matches!(
                    error.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) => {}
            other => panic!("expected a connection reset, got {other:?}"),
        }
        let again = time::timeout(
            Duration::from_secs(2),
            ZmtpClient::connect(ret, SocketType::Dealer, WAIT),
        )
        .await;
        assert!(matches!(again, Ok(Err(_))), "{again:?}");
    }

    #[tokio::test]
    async fn stop_resets_publish_subscribers() {
        let master = start("A").await;
        let mut client = ZmtpClient::connect(master.publish_addr(), SocketType::Sub, WAIT)
            .await
            .unwrap();
        drop(master);
        let outcome = time::timeout(Duration::from_secs(2), async {
            loop {
                if let Err(error) = client.recv(WAIT).await {
                    return error;
                }
            }
        })
        .await;
        assert!(
            matches!(outcome, Ok(StandinError::Io(_) | StandinError::Closed(_))),
            "{outcome:?}"
        );
    }

    /// What a health probe does: signature, greeting, READY, close.
    async fn probe(addr: SocketAddr, expected: SocketType) -> Result<(), StandinError> {
        let mut stream = TcpStream::connect(addr).await?;
        let mut signature = [0u8; zmtp::SIGNATURE_LEN];
        stream.read_exact(&mut signature).await?;
        zmtp::check_signature(&signature)?;
        stream.write_all(&zmtp::greeting_null(false)).await?;
        let mut wire = Wire::new(stream);
        wire.buf.extend_from_slice(&signature);
        wire.greeting().await?.require_null()?;
        let ready = wire
            .frame()
            .await?
            .ok_or(StandinError::Closed(Phase::Handshake))?;
        zmtp::expect_socket_type(&ready.as_frame(), expected)?;
        Ok(())
    }

    #[tokio::test]
    async fn probes_leave_the_standin_serving() {
        let master = start("A").await;
        let mut client = ZmtpClient::connect(master.ret_addr(), SocketType::Dealer, WAIT)
            .await
            .unwrap();
        for _ in 0..3 {
            probe(master.publish_addr(), SocketType::Pub).await.unwrap();
            probe(master.ret_addr(), SocketType::Router).await.unwrap();
        }
        assert!(matches!(
            probe(master.ret_addr(), SocketType::Pub).await,
            Err(StandinError::Protocol(ZmtpError::WrongSocketType { .. }))
        ));
        // Garbage and an early close are only that connection's problem.
        let mut junk = TcpStream::connect(master.ret_addr()).await.unwrap();
        junk.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        drop(TcpStream::connect(master.publish_addr()).await.unwrap());
        assert_eq!(client.request(b"still", WAIT).await.unwrap(), b"A:still");
        let mut fresh = ZmtpClient::connect(master.ret_addr(), SocketType::Dealer, WAIT)
            .await
            .unwrap();
        assert_eq!(fresh.request(b"new", WAIT).await.unwrap(), b"A:new");
    }

    #[tokio::test]
    async fn oversized_frames_close_only_that_connection() {
        let master = start("A").await;
        let mut hostile = ZmtpClient::connect(master.ret_addr(), SocketType::Dealer, WAIT)
            .await
            .unwrap();
        let mut header = vec![0x02];
        header.extend_from_slice(&u64::MAX.to_be_bytes());
        hostile.wire.send(&header).await.unwrap();
        assert!(hostile.recv(WAIT).await.is_err());
        let mut client = ZmtpClient::connect(master.ret_addr(), SocketType::Dealer, WAIT)
            .await
            .unwrap();
        assert_eq!(client.request(b"ok", WAIT).await.unwrap(), b"A:ok");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peers_are_dropped_after_the_handshake_timeout() {
        let master = start("A").await;
        let mut stream = TcpStream::connect(master.ret_addr()).await.unwrap();
        let mut greeting = [0u8; zmtp::GREETING_LEN];
        stream.read_exact(&mut greeting).await.unwrap();
        let mut rest = Vec::new();
        // With time paused, the 5 s timeout elapses as soon as all is idle.
        let read = time::timeout(Duration::from_secs(60), stream.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    }

    #[tokio::test]
    async fn client_rejects_a_non_zmtp_server() {
        let listener = TcpListener::bind(loopback()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await.unwrap();
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink).await;
        });
        let result = ZmtpClient::connect(addr, SocketType::Dealer, WAIT).await;
        assert!(
            matches!(result, Err(StandinError::Protocol(ZmtpError::BadSignature))),
            "{result:?}"
        );
        server.abort();
    }
}
