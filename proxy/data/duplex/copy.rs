//! The mechanics of one session's two-way copy: moving bytes, nothing
//! about when a session should end (that is `duplex`'s policy).
//!
//! [`Copy`] polls both directions ([`Pump`], `pump.rs`) as one future. Each direction
//! waits for readiness, then borrows a buffer from a per-thread pool only
//! while bytes are in flight, so an idle session holds no buffer. EOF on one
//! side shuts down the write side of the other (half-close); a followed
//! master's EOF is held for the policy to decide. A [`Stop`] parks the copy:
//! at the next message boundary of each side (as the session's [`Track`]s
//! say), or at once (the minion's unsent bytes kept as a [`Carry`]).
//! Activity is stamped per direction ([`Activity`], with the pump's other
//! word, [`Stop`]); the request clock of a
//! watched ret session is stamped per read. Never logs.
//!
//! Cost per burst is what the benchmark (`scripts/bench`) measures: one
//! `recv` of up to [`CHUNK`](super::buffer::CHUNK) bytes into a buffer that was zeroed once, when
//! the pool first made it, then `send`; a short read tells tokio the socket
//! is drained (edge-triggered epoll), so no `recv` is wasted on `EAGAIN`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

use super::buffer::Carry;
use super::pump::Flow;
pub(super) use super::pump::{Activity, Pump, Stop};
use crate::data::track::Track;
use crate::limits::Blame;

/// How the copy stopped.
pub(super) enum Out {
    /// Both directions passed their EOF on.
    Closed,
    /// An I/O error, and who is to blame for it.
    Failed(Blame, io::Error),
    /// The master closed its side of a followed session: not passed on yet.
    MasterEof,
    /// Both directions stopped as asked ([`Stop`]).
    Parked,
    /// One side has closed its write half (passed on) and the other has
    /// not yet: reported once, the copy goes on.
    HalfClosed,
}

/// Both directions of one session, polled as one future (no task or future
/// per direction): ready when both have passed their EOF on, or at the
/// first error, or when both have stopped as `stop` asks.
pub(super) struct Copy<'a> {
    /// minion → master
    pub(super) up: Pump<'a>,
    /// master → minion
    pub(super) down: Pump<'a>,
    pub(super) activity: &'a Activity,
    pub(super) stop: Stop,
    /// [`Out::HalfClosed`] was reported.
    pub(super) half_reported: bool,
}

// === impl Copy ===

impl Copy<'_> {
    /// A followed session whose handshakes are done and that can still be
    /// followed: a switch tries to move it.
    pub(super) fn candidate(&self) -> bool {
        match (&self.up.track, &self.down.track) {
            (Some(up), Some(down)) => up.handshaken() && down.handshaken() && !self.up.done,
            _ => false,
        }
    }

    /// Stopped at a message boundary on both sides, ready to move.
    pub(super) fn movable(&self) -> bool {
        let at = |t: &Option<&mut Track>| t.as_deref().is_some_and(Track::at_boundary);
        !self.up.done && at(&self.up.track) && at(&self.down.track) && !self.down.pending()
    }

    /// Whether this session can carry a ZMTP PING to the master at the
    /// minion stream's current message boundary: both peers speak
    /// ZMTP ≥ 3.1 (a 3.1 peer answers PING with PONG, and ignores an
    /// unsolicited PONG: libzmq's `process_heartbeat_message`), both
    /// directions are past their handshakes and followable, the minion's
    /// side is between two messages and nothing is unsent either way, and
    /// no stop is asked.
    pub(super) fn can_ping(&self) -> bool {
        let (Some(up), Some(down)) = (self.up.track.as_deref(), self.down.track.as_deref()) else {
            return false;
        };
        let speaks_3_1 = |t: &Track| t.minor().is_some_and(|m| m >= 1);
        self.stop == Stop::No
            && !self.up.done
            && !self.down.done
            && !self.up.inject
            && !self.up.pending()
            && !self.down.pending()
            && up.at_boundary()
            && down.handshaken()
            && speaks_3_1(up)
            && speaks_3_1(down)
    }

    /// Writes a PING to the master before the minion's next bytes (only
    /// after [`Copy::can_ping`]); the master's next bytes answer it.
    pub(super) fn ping(&mut self) {
        self.up.inject = true;
        self.down.pinged = true;
    }

    /// The flow to the master: its local and peer addresses.
    pub(super) fn master_flow(&self) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
        let from = &self.down.from;
        Some((from.local_addr().ok()?, from.peer_addr().ok()?))
    }

    /// Copies on after a stop.
    pub(super) fn resume(&mut self) {
        self.stop = Stop::No;
        self.up.parked = false;
        self.down.parked = false;
    }

    /// Takes the minion's bytes read but not sent, for the next master.
    pub(super) fn take_carry(&mut self) -> Carry {
        let up = &mut self.up;
        let carry = Carry {
            buf: up.buf.take(),
            pos: up.pos,
            end: up.end,
        };
        (up.pos, up.end) = (0, 0);
        carry
    }
}

impl Future for Copy<'_> {
    type Output = Out;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let (activity, stop) = (this.activity, this.stop);
        // The minion's side never stops "now": its bytes are kept, not sent.
        let up_stop = stop;
        match this
            .up
            .poll_copy(cx, activity, this.down.done, up_stop, true)
        {
            Poll::Ready(Err(f)) => {
                let (blame, e) = f.blame(Blame::Minion, Blame::Master);
                return Poll::Ready(Out::Failed(blame, e));
            }
            Poll::Ready(Ok(_)) | Poll::Pending => {}
        }
        match this.down.poll_copy(cx, activity, this.up.done, stop, false) {
            Poll::Ready(Err(f)) => {
                let (blame, e) = f.blame(Blame::Master, Blame::Minion);
                return Poll::Ready(Out::Failed(blame, e));
            }
            Poll::Ready(Ok(Flow::HeldEof)) => {
                // A followed session's master closed: move it if it can be
                // moved; else pass the half-close on as for any session.
                let followed = this.up.track.as_deref().is_some_and(Track::handshaken)
                    && this.down.track.as_deref().is_some_and(Track::handshaken);
                if followed && !this.up.done {
                    return Poll::Ready(Out::MasterEof);
                }
                if !this.up.done {
                    if let Poll::Ready(Err(e)) = Pin::new(&mut this.down.to).poll_shutdown(cx) {
                        if e.kind() != io::ErrorKind::NotConnected {
                            return Poll::Ready(Out::Failed(Blame::io(Blame::Minion, &e), e));
                        }
                    }
                }
            }
            Poll::Ready(Ok(_)) | Poll::Pending => {}
        }
        if this.up.done && this.down.done {
            return Poll::Ready(Out::Closed);
        }
        if (this.up.done || this.down.done) && !this.half_reported && stop == Stop::No {
            this.half_reported = true;
            return Poll::Ready(Out::HalfClosed);
        }
        if stop != Stop::No
            && (this.up.parked || this.up.done)
            && (this.down.parked || this.down.done)
        {
            return Poll::Ready(Out::Parked);
        }
        Poll::Pending
    }
}
