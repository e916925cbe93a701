//! Opens a minion's ZMTP session on a new master, as the minion would have:
//! the minion's own greeting and READY (same Socket-Type, same Identity),
//! then its subscriptions. The new master's greeting and READY are read,
//! checked (NULL, a compatible ZMTP 3 version, PUB or ROUTER as the port
//! wants) and discarded: the minion already had a greeting and a READY and
//! must not see a second. Reads exactly the handshake's bytes, never past
//! it, so whatever the master sends next is relayed to the minion whole.
//! Bounded by one timeout; no state beyond the stream and the tracks.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::master::Port;
use crate::data::track::{Track, Tracks};
use crate::zmtp::{self as codec, push_frame, SocketType, ZmtpError, FLAG_COMMAND, GREETING_LEN};

/// Largest READY accepted from a new master.
const MAX_READY: usize = 64 * 1024;

/// Why a session could not be opened on the new master.
#[derive(Debug, thiserror::Error)]
pub enum RejoinError {
    #[error("the minion's handshake was not captured")]
    NotCaptured,
    #[error("timed out")]
    Timeout,
    #[error("connection closed during the handshake")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] ZmtpError),
    #[error("the new master speaks ZMTP 3.{new}, the session was 3.{old}")]
    Version { old: u8, new: u8 },
}

/// Hands the session in `tracks` to the master behind `stream` (connected,
/// nothing sent yet) and returns the tracker of that master's stream, at a
/// message boundary. `tracks.up` must be past the minion's handshake.
pub async fn rejoin(
    stream: &mut TcpStream,
    tracks: &Tracks,
    port: Port,
    limit: Duration,
) -> Result<Track, RejoinError> {
    match tokio::time::timeout(limit, handshake(stream, tracks, port)).await {
        Ok(r) => r,
        Err(_) => Err(RejoinError::Timeout),
    }
}

async fn handshake(
    stream: &mut TcpStream,
    tracks: &Tracks,
    port: Port,
) -> Result<Track, RejoinError> {
    let (Some(minion_greeting), Some(ready)) = (tracks.up.greeting(), tracks.up.ready_body())
    else {
        return Err(RejoinError::NotCaptured);
    };
    stream.write_all(minion_greeting).await?;
    let mut greeting = [0u8; GREETING_LEN];
    read_exact(stream, &mut greeting).await?;
    let parsed = codec::parse_greeting(&greeting)?;
    parsed.require_null()?;
    if parsed.major != 3 {
        return Err(ZmtpError::UnsupportedVersion {
            major: parsed.major,
        }
        .into());
    }
    // The minion framed everything so far for the version it agreed with
    // the old master (the lower of the two minors): the new one must agree
    // on the same.
    let ours = minion_greeting[11];
    let old = tracks.down.minor().unwrap_or(ours).min(ours);
    let new = parsed.minor.min(ours);
    if old != new {
        return Err(RejoinError::Version { old, new });
    }
    let mut out = Vec::with_capacity(ready.len() + 16);
    push_frame(&mut out, FLAG_COMMAND, ready);
    stream.write_all(&out).await?;

    // The master's READY: flags, size, body, read exactly.
    let mut frame = vec![0u8; 2];
    read_exact(stream, &mut frame).await?;
    let header = if frame[0] & codec::FLAG_LONG != 0 {
        frame.resize(9, 0);
        read_exact(stream, &mut frame[2..]).await?;
        9
    } else {
        2
    };
    let size = match frame.get(1..header) {
        Some(s) if s.len() == 8 => u64::from_be_bytes(<[u8; 8]>::try_from(s).unwrap_or_default()),
        Some(&[s]) => u64::from(s),
        _ => return Err(ZmtpError::Malformed("READY header").into()),
    };
    let size = usize::try_from(size)
        .ok()
        .filter(|s| *s <= MAX_READY)
        .ok_or(ZmtpError::FrameTooLarge(size))?;
    frame.resize(header + size, 0);
    read_exact(stream, &mut frame[header..]).await?;
    let (decoded, _) =
        codec::decode_frame(&frame, MAX_READY)?.ok_or(ZmtpError::Malformed("READY cut short"))?;
    codec::expect_socket_type(&decoded, SocketType::of_master(port))?;

    // The handshake is done on both sides: now the subscriptions, as the
    // minion's SUB sends them on every reconnect.
    let subs = tracks.up.subscriptions();
    if !subs.is_empty() {
        stream.write_all(&subs.encode()).await?;
    }
    Ok(Track::master_after_handshake(greeting))
}

async fn read_exact(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), RejoinError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(RejoinError::Closed),
        Err(e) => Err(e.into()),
    }
}
