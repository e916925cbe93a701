//! One direction of a session's copy (`from` → `to`): readiness, a pooled
//! buffer only while bytes are in flight, EOF passed on (or held for a
//! followed master), a stop at the next message boundary, the ZMTP PING
//! written on the master's behalf, and the stamps on each read (activity,
//! the request clock, the master's evidence). [`Copy`](super::copy::Copy)
//! polls two of them as one future. Never logs.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::Instant;

use super::buffer::{pool, CHUNK};
use crate::control::answers::AnswerClock;
use crate::control::evidence::{Evidence, PING};
use crate::data::admit::Newcomer;
use crate::data::track::Track;
use crate::limits::Blame;

/// Last activity per direction, in µs since the session started (plus one;
/// µs, not ms: a request and the answer before it can fall in one ms).
pub(super) struct Activity {
    start: Instant,
    pub(super) to_master_us: AtomicU64,
    pub(super) to_minion_us: AtomicU64,
}

// === impl Activity ===

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            start: Instant::now(),
            to_master_us: AtomicU64::new(0),
            to_minion_us: AtomicU64::new(0),
        }
    }

    /// Now, in µs since the start plus one: 0 in a slot means "never".
    pub(super) fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64 + 1
    }

    pub(super) fn touch(&self, slot: &AtomicU64) {
        slot.store(self.now_us(), Ordering::Relaxed);
    }

    /// µs of the last bytes towards the master and towards the minion.
    pub(super) fn last(&self) -> (u64, u64) {
        (
            self.to_master_us.load(Ordering::Relaxed),
            self.to_minion_us.load(Ordering::Relaxed),
        )
    }
}

/// Whether, and how, the copy is to stop for a move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    No,
    /// Read each side only up to its next message boundary, then stop.
    AtBoundary,
    /// Send nothing more to the master and read nothing more from it; pass
    /// on to the minion what was already read.
    Now,
}

/// An error of one direction: reading its source or writing its sink.
pub(super) enum Fault {
    Read(io::Error),
    Write(io::Error),
}

impl Fault {
    /// Who is to blame: `reader` owns the source socket, `writer` the
    /// sink; the sidecar when the error says it ran out.
    pub(super) fn blame(self, reader: Blame, writer: Blame) -> (Blame, io::Error) {
        match self {
            Fault::Read(e) => (Blame::io(reader, &e), e),
            Fault::Write(e) => (Blame::io(writer, &e), e),
        }
    }
}

/// What a direction reports when it is ready.
pub(super) enum Flow {
    /// The source's EOF was seen (and passed on, unless held).
    Eof,
    /// The source's EOF was seen and not passed on: a followed master's
    /// stream, whose end [`Copy`] decides about.
    HeldEof,
    /// Stopped as asked.
    Parked,
}

/// What one read gave.
enum Filled {
    Bytes(usize),
    Eof,
}

/// One direction: `from` → `to`.
pub(super) struct Pump<'a> {
    pub(super) from: ReadHalf<'a>,
    pub(super) to: WriteHalf<'a>,
    counter: &'a IntCounter,
    /// This direction's last-activity slot in [`Activity`].
    slot: &'a AtomicU64,
    /// Follows the frames written (ZeroMQ sessions only).
    pub(super) track: Option<&'a mut Track>,
    /// The session's request clock (ret sessions with
    /// `sidecar.ret_answer_timeout`): stamped per read for an unfollowed
    /// stream (transport tcp), per message for a followed one (ZeroMQ).
    pub(super) answers: Option<&'a AnswerClock>,
    /// The minion's connection, marked on its first bytes (minion → master
    /// direction only).
    pub(super) newcomer: Option<&'a Newcomer>,
    /// The master's evidence, stamped on every read from it (master →
    /// minion direction only: `control::evidence`).
    pub(super) heard: Option<&'a Evidence>,
    /// A ZMTP PING to write to the master before the next read (minion →
    /// master direction, set at a message boundary: [`Copy::ping`]).
    pub(super) inject: bool,
    /// A PING went to the master: its next bytes are the answer the
    /// health task waits for (master → minion direction).
    pub(super) pinged: bool,
    /// Borrowed from the pool while `buf[pos..end]` waits to be written.
    pub(super) buf: Option<Box<[u8]>>,
    pub(super) pos: usize,
    pub(super) end: usize,
    /// EOF seen and passed on.
    pub(super) done: bool,
    /// Stopped for a move.
    pub(super) parked: bool,
}

// === impl Pump ===

impl<'a> Pump<'a> {
    pub(super) fn new(
        from: ReadHalf<'a>,
        to: WriteHalf<'a>,
        counter: &'a IntCounter,
        slot: &'a AtomicU64,
        track: Option<&'a mut Track>,
    ) -> Self {
        Pump {
            from,
            to,
            counter,
            slot,
            track,
            answers: None,
            newcomer: None,
            heard: None,
            inject: false,
            pinged: false,
            buf: None,
            pos: 0,
            end: 0,
            done: false,
            parked: false,
        }
    }

    /// Bytes read and not yet written.
    pub(super) fn pending(&self) -> bool {
        self.pos < self.end
    }

    /// Moves bytes until the source has none or the sink takes no more.
    /// `Ready(Ok)` once the source's EOF has been seen (`done`), or once
    /// stopped as `stop` asks (`parked`); `other_done`: the opposite
    /// direction has finished, so both sockets are about to be closed and
    /// the half-close is left to `close` (its FIN). `to_master`: this is the
    /// minion's direction, whose unsent bytes a `Stop::Now` keeps for the
    /// next master instead of sending them.
    pub(super) fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        activity: &Activity,
        other_done: bool,
        stop: Stop,
        to_master: bool,
    ) -> Poll<Result<Flow, Fault>> {
        if self.done {
            return Poll::Ready(Ok(Flow::Eof));
        }
        if self.parked {
            return Poll::Ready(Ok(Flow::Parked));
        }
        loop {
            if stop == Stop::Now && to_master {
                self.parked = true;
                return Poll::Ready(Ok(Flow::Parked));
            }
            ready!(self.poll_flush(cx, activity, to_master))?;
            if self.inject {
                // At a boundary of the minion's stream, nothing unsent
                // (`Copy::ping`): the PING goes out as the next frame.
                self.inject = false;
                if stop == Stop::No {
                    let buf = self.buf.get_or_insert_with(pool::take);
                    if let Some(slot) = buf.get_mut(..PING.len()) {
                        slot.copy_from_slice(&PING);
                        (self.pos, self.end) = (0, PING.len());
                        continue;
                    }
                }
            }
            let limit = self.read_limit(stop);
            if limit == 0 {
                self.release();
                self.parked = true;
                return Poll::Ready(Ok(Flow::Parked));
            }
            match ready!(self.poll_fill(cx, limit))? {
                Filled::Bytes(n) => self.stamp_read(n, activity, to_master),
                Filled::Eof => return self.pass_eof(cx, other_done, to_master),
            }
        }
    }

    /// Writes what was read and not yet written (`Ready` once all of it
    /// is), feeding the tracker what went out. A followed session is active
    /// when data passes, not when ZMTP heartbeats do (see `stamp_read`); its
    /// request clock starts when a whole message has gone to the master and
    /// stops when a whole one has come back (a frame header announcing 2^62
    /// bytes and nothing after it is no answer).
    fn poll_flush(
        &mut self,
        cx: &mut Context<'_>,
        activity: &Activity,
        to_master: bool,
    ) -> Poll<Result<(), Fault>> {
        let Some(buf) = &self.buf else {
            return Poll::Ready(Ok(()));
        };
        while self.pos < self.end {
            let n = match Pin::new(&mut self.to).poll_write(cx, &buf[self.pos..self.end]) {
                // Backpressure: keep the buffer (it holds the bytes).
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Fault::Write(e))),
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(Fault::Write(io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => n,
            };
            if let Some(track) = self.track.as_deref_mut() {
                let (data, messages) = (track.data_seen(), track.messages());
                track.feed(buf.get(self.pos..self.pos + n).unwrap_or_default());
                if track.data_seen() != data {
                    activity.touch(self.slot);
                }
                if let Some(newcomer) = self.newcomer.filter(|_| track.introduced()) {
                    newcomer.spoke();
                }
                if track.messages() != messages {
                    if let Some(clock) = self.answers {
                        if to_master {
                            clock.asked();
                        } else {
                            clock.answered();
                        }
                    }
                }
            }
            self.pos += n;
        }
        Poll::Ready(Ok(()))
    }

    /// How much the next read may take: a move reads only up to the next
    /// message boundary (0: stop here).
    fn read_limit(&self, stop: Stop) -> usize {
        match (stop, self.track.as_deref()) {
            (Stop::No, _) => CHUNK,
            (Stop::AtBoundary, Some(track)) => track.to_boundary().min(CHUNK),
            (Stop::AtBoundary, None) | (Stop::Now, _) => 0,
        }
    }

    /// Reads up to `limit` bytes into a borrowed buffer; with nothing to
    /// read, waits for readiness without one.
    fn poll_fill(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<Result<Filled, Fault>> {
        match self.from.as_ref().poll_read_ready(cx) {
            Poll::Pending => {
                self.release();
                return Poll::Pending;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(Fault::Read(e))),
            Poll::Ready(Ok(())) => {}
        }
        let buf = self.buf.get_or_insert_with(pool::take);
        let mut read = ReadBuf::new(&mut buf[..limit]);
        match Pin::new(&mut self.from).poll_read(cx, &mut read) {
            // Readiness was stale (tokio cleared it): give the buffer back.
            Poll::Pending => {
                self.release();
                return Poll::Pending;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(Fault::Read(e))),
            Poll::Ready(Ok(())) => {}
        }
        let n = read.filled().len();
        if n == 0 {
            self.release();
            return Poll::Ready(Ok(Filled::Eof));
        }
        (self.pos, self.end) = (0, n);
        Poll::Ready(Ok(Filled::Bytes(n)))
    }

    /// Counts `n` bytes just read. Unfollowed (or no longer followable)
    /// bytes count as activity when read, and a tcp-transport ret session's
    /// request clock is stamped here; a followed session's when they carry
    /// data (`poll_flush`): heartbeats (PING/PONG) both ways every few
    /// seconds would keep a minion that does nothing from ever being idle,
    /// and a PING from the master answered by the minion's PONG would look
    /// like a request waiting for its answer.
    fn stamp_read(&mut self, n: usize, activity: &Activity, to_master: bool) {
        self.counter.inc_by(n as u64);
        if let Some(heard) = self.heard {
            if self.pinged {
                self.pinged = false;
                heard.answered();
            } else {
                heard.heard();
            }
        }
        if let (Some(newcomer), None) = (self.newcomer, self.track.as_deref()) {
            newcomer.spoke();
        }
        if self
            .track
            .as_deref()
            .is_none_or(|t| t.unmovable().is_some() || !t.handshaken())
        {
            activity.touch(self.slot);
        }
        if self.track.is_none() {
            if let Some(clock) = self.answers {
                if to_master {
                    clock.asked();
                } else {
                    clock.answered();
                }
            }
        }
    }

    /// The source's EOF: a followed master's is the copy's to decide about
    /// (held); otherwise passed on as a half-close, unless the other
    /// direction is done too (both sockets are about to close).
    fn pass_eof(
        &mut self,
        cx: &mut Context<'_>,
        other_done: bool,
        to_master: bool,
    ) -> Poll<Result<Flow, Fault>> {
        self.done = true;
        if !to_master && self.track.is_some() {
            return Poll::Ready(Ok(Flow::HeldEof));
        }
        if !other_done {
            if let Poll::Ready(Err(e)) = Pin::new(&mut self.to).poll_shutdown(cx) {
                if e.kind() != io::ErrorKind::NotConnected {
                    return Poll::Ready(Err(Fault::Write(e)));
                }
            }
        }
        Poll::Ready(Ok(Flow::Eof))
    }

    /// Returns the buffer to the pool; only called with nothing in flight.
    fn release(&mut self) {
        if let Some(buf) = self.buf.take() {
            pool::give(buf);
        }
        (self.pos, self.end) = (0, 0);
    }
}

impl Drop for Pump<'_> {
    fn drop(&mut self) {
        // Unsent bytes of a session that ended are dropped with it.
        if let Some(buf) = self.buf.take() {
            pool::give(buf);
        }
    }
}
