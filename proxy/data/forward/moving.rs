//! Moving a session: when `duplex` ends with [`End::Move`](crate::data::duplex::End),
//! the minion's connection is kept and [`Forwarder::move_session`] opens the
//! minion's ZMTP session on the master the route now names ([`rejoin`]), at once.

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::upstream::Opening;
use super::{Forwarder, Upstream};
use crate::config::master::Port;
use crate::data::duplex;
use crate::data::rejoin::{rejoin, RejoinError};
use crate::data::track::Tracks;
use std::time::Duration;

/// Bytes a minion may send while its connection waits for a route; they
/// are forwarded first once connected. A ZMTP greeting is 64 bytes, a Salt
/// tcp-transport request a few hundred; beyond this the minion waits on TCP.
const EARLY_MAX: usize = 16 * 1024;
/// How often a held connection whose early buffer is full is checked for a
/// close (it can no longer be read to notice one).
const FULL_HOLD_CHECK: Duration = Duration::from_secs(1);

/// Connect-and-handshake attempts when moving a session.
const REJOIN_ATTEMPTS: u32 = 3;

/// Why a session could not be moved to the new master (it is reset).
#[derive(Debug, thiserror::Error)]
pub(super) enum MoveError {
    #[error("the sidecar is stopping")]
    Shutdown,
    #[error("the minion closed its connection while waiting for a master")]
    MinionClosed,
    #[error("every master is down: the minion is to notice (salt_events)")]
    NoMaster,
    #[error("the new master dropped the session again within a second")]
    Looping,
    #[error("handshake with the new master: {0}")]
    Rejoin(#[from] RejoinError),
    #[error("sending to the new master: {0}")]
    Io(std::io::Error),
}

impl Forwarder {
    /// Opens a moving session on the master the route now names: connect
    /// (the same path and fallbacks as a new session, at once: no jitter;
    /// the minion's connection held meanwhile), replay the minion's handshake and
    /// subscriptions, then send the minion's bytes the old master did not
    /// get. Reads nothing from the minion but what it sends while waiting.
    pub(super) async fn move_session(
        &self,
        minion: &mut TcpStream,
        port: Port,
        tracks: &mut Tracks,
        carry: duplex::Carry,
        shutdown: &CancellationToken,
    ) -> Result<Upstream, MoveError> {
        let mut early = Vec::new();
        let mut attempt = 1;
        let (plane, m, mut stream, tokens) = loop {
            let connect = Box::pin(self.connect_upstream(port, Opening::Move));
            let closed = Box::pin(minion_closed(&mut *minion, &mut early));
            let (plane, m, mut stream, tokens) = tokio::select! {
                _ = shutdown.cancelled() => return Err(MoveError::Shutdown),
                c = connect => match c {
                    Some(c) => c,
                    None if shutdown.is_cancelled() => return Err(MoveError::Shutdown),
                    None => return Err(MoveError::NoMaster),
                },
                () = closed => return Err(MoveError::MinionClosed),
            };
            self.configure(&stream, &plane, m);
            let limit = self.tunables.borrow().connect_timeout;
            match rejoin(&mut stream, tracks, port, limit).await {
                Ok(down) => {
                    tracks.down = down;
                    break (plane, m, stream, tokens);
                }
                // A master that accepted and then failed the handshake (a
                // process being killed still has its listener for a moment):
                // tell health, and take the route again.
                Err(e) if attempt < REJOIN_ATTEMPTS => {
                    debug!(master = plane.label(m), port = port.as_str(), error = %e, "moving a session: handshake with the new master failed; trying again");
                    if let Some(h) = plane.health.get(m.index()) {
                        h.suspect();
                    }
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let to_master = self.metrics.session(plane.label(m), port).to_master;
        for bytes in [carry.bytes(), early.as_slice()] {
            if bytes.is_empty() {
                continue;
            }
            stream.write_all(bytes).await.map_err(MoveError::Io)?;
            tracks.up.feed(bytes);
            to_master.inc_by(bytes.len() as u64);
        }
        Ok((plane, m, stream, tokens))
    }
}

/// Resolves when the minion has closed (or reset) its connection, reading
/// what it sends meanwhile into `early` (up to [`EARLY_MAX`]) so the socket's
/// readiness is consumed and a later close is seen at once. Reads through
/// `AsyncRead`: a short read clears the readiness, so the usual first
/// request (one read) costs no second `recv` that would only say `EAGAIN`.
pub(super) async fn minion_closed(minion: &mut TcpStream, early: &mut Vec<u8>) {
    let mut chunk = [0u8; 2048];
    loop {
        let room = EARLY_MAX - early.len();
        if room == 0 {
            let Ok(ready) = minion.ready(Interest::READABLE).await else {
                return;
            };
            if ready.is_read_closed() || ready.is_error() {
                return;
            }
            // Full: the minion waits on TCP; look again now and then.
            tokio::time::sleep(FULL_HOLD_CHECK).await;
            continue;
        }
        let want = room.min(chunk.len());
        // Cancel-safe: the bytes of a read that completed are kept below
        // before the next await.
        match minion.read(&mut chunk[..want]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => early.extend_from_slice(&chunk[..n]),
        }
    }
}
