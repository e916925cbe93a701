//! One health probe of one port of one master.
//!
//! `tcp`: a connect. `zmtp`: read the master's 10-byte signature, answer a
//! NULL-mechanism greeting, read its greeting and READY, check the socket
//! type (PUB on publish, ROUTER on ret), send our READY and close — a complete
//! handshake, so the master logs nothing. [`ping`] (the re-probe of a
//! tcp-transport master suspected hung, see `control::health`): connect to
//! the ret port, send Salt's clear `ping` request and read the reply, which a
//! live master sends at once and a hung one never does (any reaction of
//! the master counts: only silence fails it). The whole probe is
//! bounded by one timeout and reads a bounded number of bytes. Hysteresis
//! is `health`'s job.

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::master::Port;
use crate::config::ProbeKind;
use crate::limits::Resource;
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
            ProbeError::Timeout | ProbeError::Unanswered => CheckResult::Timeout,
            ProbeError::Closed | ProbeError::Io(_) => CheckResult::Reset,
            ProbeError::Protocol(_) => CheckResult::Protocol,
            // Never counted: health skips the check (see `exhausted`).
            ProbeError::Exhausted(..) => CheckResult::Other,
        }
    }

    /// The sidecar's own exhaustion, not the master's failure.
    pub fn exhausted(&self) -> Option<(Resource, &std::io::Error)> {
        match self {
            ProbeError::Exhausted(r, e) => Some((*r, e)),
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
async fn connect(
    addrs: &[IpAddr],
    tcp_port: u16,
    limit: Duration,
) -> Result<TcpStream, ProbeError> {
    net::connect(addrs, tcp_port, limit)
        .await
        .map_err(|e| match e.exhaustion() {
            Some(r) => match e {
                ConnectError::Io { source, .. } => ProbeError::Exhausted(r, source),
                other => ProbeError::Connect(other),
            },
            None => ProbeError::Connect(e),
        })
}

/// Sends Salt's clear `ping` request to the ret port of a tcp-transport
/// master at `addrs` and waits for its reply, all within `limit`; a
/// frozen master accepts the connection (its kernel does) and answers
/// nothing: [`ProbeError::Unanswered`].
pub async fn ping(addrs: &[IpAddr], ret_port: u16, limit: Duration) -> Result<(), ProbeError> {
    probe(ProbeKind::Ping, addrs, ret_port, Port::Ret, limit).await
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
    let (expected, ours) = (SocketType::of_master(port), SocketType::of_minion(port));
    let mut greeting = [0u8; zmtp::GREETING_LEN];
    read_exact(&mut stream, &mut greeting[..zmtp::SIGNATURE_LEN]).await?;
    zmtp::check_signature(&greeting[..zmtp::SIGNATURE_LEN])?;
    stream.write_all(&zmtp::greeting_null(false)).await?;
    read_exact(&mut stream, &mut greeting[zmtp::SIGNATURE_LEN..]).await?;
    // A CURVE/PLAIN master would never send READY to a NULL peer: fail now.
    zmtp::parse_greeting(&greeting)?.require_null()?;

    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some((frame, _)) = zmtp::decode_frame(&buf, MAX_FRAME)? {
            zmtp::expect_socket_type(&frame, expected)?;
            break;
        }
        if buf.len() > MAX_FRAME + 16 {
            return Err(ZmtpError::Malformed("READY too large").into());
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(ProbeError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    // Complete the handshake so the master sees a well-behaved peer leave.
    stream.write_all(&zmtp::encode_ready(ours)).await?;
    stream.shutdown().await?;
    Ok(())
}

async fn read_exact(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), ProbeError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ProbeError::Closed),
        Err(e) => Err(e.into()),
    }
}
