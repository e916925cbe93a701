//! The two-way byte copy of one proxied session.
//!
//! Each direction waits for readiness, then borrows a buffer from a
//! per-thread pool only while bytes are in flight, so an idle session holds no
//! buffer: just its two sockets' registrations and a small future. EOF on one
//! side shuts down the write side of the other (half-close); either side's
//! error ends the session. Bytes are counted per read into pre-resolved
//! counters. The session also watches its tokens: `reset` ends it at once (the
//! caller sends RST), `drain` ends it once it is idle or at the drain
//! deadline. Never logs.
//!
//! A ZeroMQ session (`probe: zmtp`) is also followed frame by frame
//! ([`Tracks`]: each direction's tracker is fed the bytes as they are
//! written, headers parsed, bodies skipped) so that a switch or a lost master
//! can *move* it instead: the copy stops at a message boundary and returns
//! [`End::Move`], with the minion's bytes read but not yet sent
//! ([`Carry`]), for `forward` to open the session on the new master. On a
//! failover (reset) or a lost master, nothing more is sent to the old master
//! and nothing more read from it; what was read from it is flushed to the
//! minion. On a graceful switch (drain), the copy goes on until the session
//! is idle as a drain would have it (last request answered, [`IDLE_QUIET`]
//! of quiet) and so is every other session the switch asked to move (they
//! move together: [`SwitchGate`]); then it reads each side only up to its
//! next message boundary (never into the next message) and stops there. A session that
//! is inside a message, or cannot be followed, ends as before (RST, drain).
//!
//! Cost per burst is what the benchmark (`scripts/bench`) measures: one
//! `recv` of up to [`CHUNK`] bytes into a buffer that was zeroed once, when
//! the pool first made it, then `send`; a short read tells tokio the socket
//! is drained (edge-triggered epoll), so no `recv` is wasted on `EAGAIN`.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::master::Port;
use crate::control::answers::AnswerClock;
use crate::control::sessions::{SessionTokens, SwitchGate};
use crate::zmtp::track::{Track, Tracks};

/// Bytes moved per read at most, and the size of a borrowed buffer. 64 KiB
/// is the loopback MTU and about what one read of a busy socket returns;
/// 16 KiB halved single-stream throughput in the benchmark.
const CHUNK: usize = 64 * 1024;
/// Idle buffers a thread keeps for the next burst (the rest are freed).
const POOL_MAX: usize = 8;
/// Quiet time after which a draining session counts as idle. Long enough for
/// a real minion to receive a job published just before, run it and send its
/// return: a Salt 3008 minion needs 0.3-0.7 s for a `test.arg` on a busy
/// 2-core box, and it drops the returns it forwards while it reconnects after
/// its publish session closed ("Error dispatching event"), so with 250 ms a
/// failback lost the returns of the jobs published in its last second
/// (tests/salt_e2e.rs, scenario failback).
pub const IDLE_QUIET: Duration = Duration::from_secs(2);
/// How often a draining session checks whether it has become idle.
const DRAIN_STEP: Duration = Duration::from_millis(100);

/// How long past its drain timeout a session that a graceful switch asked
/// to move waits for the answer to its last request before it is ended.
const LAST_CALL: Duration = Duration::from_secs(5);
/// How long a moving session may take to pass on to the minion what the old
/// master had sent (the minion's socket may be full); past it, reset.
const FLUSH_LIMIT: Duration = Duration::from_secs(1);

/// How a session ended. The errors are read only through `Debug` (the
/// "session closed" log line), which the dead-code lint does not count.
#[derive(Debug)]
#[allow(dead_code)]
pub enum End {
    /// Both sides closed their write halves.
    Closed,
    /// The minion's side failed (reset, broken pipe).
    MinionError(io::Error),
    /// The master's side failed: worth a re-probe.
    MasterError(io::Error),
    /// A switch away from this master (failover): close with RST.
    Reset,
    /// Drained after a graceful switch (idle, or the drain deadline passed).
    Drained,
    /// A ZeroMQ session at a message boundary, ready to be opened on the
    /// new master; the old upstream is done with. `carry`: minion bytes read
    /// but not sent to the old master, to go to the new one first.
    Move { cause: Cause, carry: Carry },
}

/// Why a session moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The route moved away from a master that is down (reset token).
    Failover,
    /// A graceful switch: failback, drain, admin, reload (drain token).
    Switch,
    /// The master closed or reset the session.
    Lost,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Failover => "failover",
            Cause::Switch => "switch",
            Cause::Lost => "master_lost",
        }
    }
}

/// Minion bytes a moving session read but did not send: `buf[pos..end]`.
/// The buffer goes back to the pool when dropped.
pub struct Carry {
    buf: Option<Box<[u8]>>,
    pos: usize,
    end: usize,
}

impl Carry {
    pub fn bytes(&self) -> &[u8] {
        self.buf
            .as_deref()
            .and_then(|b| b.get(self.pos..self.end))
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for Carry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Carry({} bytes)", self.end - self.pos)
    }
}

impl Drop for Carry {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            pool::give(buf);
        }
    }
}

/// What the copy needs besides the two sockets.
pub struct Control<'a> {
    pub port: Port,
    pub tokens: &'a SessionTokens,
    /// A tcp-transport ret session's request clock (`control::answers`):
    /// stamped once per read, minion bytes start it, master bytes stop it.
    pub answers: Option<&'a AnswerClock>,
    /// The sidecar is stopping (the parent of `tokens.drain`): drain as
    /// for a failback, but never move.
    pub shutdown: &'a CancellationToken,
    pub drain_timeout: Duration,
    pub to_master: &'a IntCounter,
    pub to_minion: &'a IntCounter,
}

/// Copies between `minion` and `master` until the session ends. With
/// `tracks` (a ZeroMQ session), a switch or a lost master may end it with
/// [`End::Move`] instead of a reset or a drain (see the module doc).
pub async fn run(
    minion: &mut TcpStream,
    master: &mut TcpStream,
    ctl: Control<'_>,
    tracks: Option<&mut Tracks>,
) -> End {
    let activity = Activity::new();
    let (minion_r, minion_w) = minion.split();
    let (master_r, master_w) = master.split();
    let (up_track, down_track) = match tracks {
        Some(t) => (Some(&mut t.up), Some(&mut t.down)),
        None => (None, None),
    };
    let mut copy = Copy {
        up: Pump::new(
            minion_r,
            master_w,
            ctl.to_master,
            &activity.to_master_us,
            up_track,
        ),
        down: Pump::new(
            master_r,
            minion_w,
            ctl.to_minion,
            &activity.to_minion_us,
            down_track,
        ),
        activity: &activity,
        stop: Stop::No,
    };
    (copy.up.answers, copy.down.answers) = (ctl.answers, ctl.answers);
    let reset = ctl.tokens.reset.cancelled();
    tokio::pin!(reset);
    // Copying, until the end, a reset, or a drain request; no timer is held.
    // What follows (a stop, a switch, an end) runs once per session and is
    // boxed, so its timers do not size the future every idle session keeps.
    tokio::select! {
        biased;
        _ = &mut reset => return Box::pin(copy.stop_now(Cause::Failover, End::Reset)).await,
        out = &mut copy => return Box::pin(copy.end(out)).await,
        _ = drain_requested(&ctl) => {}
    }
    // A graceful switch moves a followed session; shutdown drains it.
    if !ctl.shutdown.is_cancelled() && copy.candidate() {
        return Box::pin(copy.switch(&ctl, &mut reset)).await;
    }
    // Draining: keep copying; end once idle or at the deadline. Only a
    // draining session pays for a timer (boxed, so idle sessions stay small).
    let deadline = Instant::now() + ctl.drain_timeout;
    let mut tick = Box::pin(tokio::time::sleep_until(Instant::now()));
    loop {
        let now = Instant::now();
        if activity.is_idle(ctl.port) || now >= deadline {
            return End::Drained;
        }
        tick.as_mut().reset(deadline.min(now + DRAIN_STEP));
        tokio::select! {
            biased;
            _ = &mut reset => return End::Reset,
            out = &mut copy => return Box::pin(copy.end(out)).await,
            _ = &mut tick => {}
        }
    }
}

/// Resolves when this session is asked to drain (failback, drain, and
/// shutdown: every drain token is a child of the shutdown token).
async fn drain_requested(ctl: &Control<'_>) {
    ctl.tokens.drain.cancelled().await
}

/// Last activity per direction, in µs since the session started (plus one;
/// µs, not ms: a request and the answer before it can fall in one ms).
struct Activity {
    start: Instant,
    to_master_us: AtomicU64,
    to_minion_us: AtomicU64,
}

// === impl Activity ===

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            to_master_us: AtomicU64::new(0),
            to_minion_us: AtomicU64::new(0),
        }
    }

    /// Now, in µs since the start plus one: 0 in a slot means "never".
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64 + 1
    }

    fn touch(&self, slot: &AtomicU64) {
        slot.store(self.now_us(), Ordering::Relaxed);
    }

    /// Idle: nothing moved for [`IDLE_QUIET`] and, on the ret port, the last
    /// bytes went to the minion (its last request was answered).
    fn is_idle(&self, port: Port) -> bool {
        let up = self.to_master_us.load(Ordering::Relaxed);
        let down = self.to_minion_us.load(Ordering::Relaxed);
        let quiet = self.now_us() >= up.max(down) + IDLE_QUIET.as_micros() as u64;
        quiet && self.answered(port)
    }

    /// How long nothing has moved either way.
    fn quiet_for(&self) -> Duration {
        let up = self.to_master_us.load(Ordering::Relaxed);
        let down = self.to_minion_us.load(Ordering::Relaxed);
        Duration::from_micros(self.now_us().saturating_sub(up.max(down)))
    }

    /// On the ret port, the last bytes went to the minion: no request is
    /// waiting for its answer from this master. Always on the publish port.
    fn answered(&self, port: Port) -> bool {
        let up = self.to_master_us.load(Ordering::Relaxed);
        let down = self.to_minion_us.load(Ordering::Relaxed);
        port == Port::Publish || down >= up
    }
}

/// One session's place at a [`SwitchGate`]: busy until it says idle;
/// leaving (a move, an end) counts as idle.
struct Waiting<'a> {
    gate: &'a SwitchGate,
    busy: bool,
}

impl<'a> Waiting<'a> {
    fn new(gate: &'a SwitchGate) -> Self {
        gate.busy();
        Waiting { gate, busy: true }
    }

    fn set_idle(&mut self, idle: bool) {
        if idle == self.busy {
            if idle {
                self.gate.idle();
            } else {
                self.gate.busy();
            }
            self.busy = !idle;
        }
    }

    /// This session and every other one at the gate are idle.
    fn all_idle(&self) -> bool {
        !self.busy && self.gate.all_idle()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.busy {
            self.gate.idle();
        }
    }
}

/// Which side an I/O error came from.
enum Side {
    Minion(io::Error),
    Master(io::Error),
}

/// How the copy stopped.
enum Out {
    /// Both directions passed their EOF on.
    Closed,
    Failed(Side),
    /// The master closed its side of a followed session: not passed on yet.
    MasterEof,
    /// Both directions stopped as asked ([`Stop`]).
    Parked,
}

/// Whether, and how, the copy is to stop for a move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    No,
    /// Read each side only up to its next message boundary, then stop.
    AtBoundary,
    /// Send nothing more to the master and read nothing more from it; pass
    /// on to the minion what was already read.
    Now,
}

/// Both directions of one session, polled as one future (no task or future
/// per direction): ready when both have passed their EOF on, or at the
/// first error, or when both have stopped as `stop` asks.
struct Copy<'a> {
    /// minion → master
    up: Pump<'a>,
    /// master → minion
    down: Pump<'a>,
    activity: &'a Activity,
    stop: Stop,
}

// === impl Copy ===

impl Copy<'_> {
    /// A followed session whose handshakes are done and that can still be
    /// followed: a switch tries to move it.
    fn candidate(&self) -> bool {
        match (&self.up.track, &self.down.track) {
            (Some(up), Some(down)) => up.handshaken() && down.handshaken() && !self.up.done,
            _ => false,
        }
    }

    /// Stopped at a message boundary on both sides, ready to move.
    fn movable(&self) -> bool {
        let at = |t: &Option<&mut Track>| t.as_deref().is_some_and(Track::at_boundary);
        !self.up.done && at(&self.up.track) && at(&self.down.track) && !self.down.pending()
    }

    /// Stops at once (failover, lost master) and moves if the session is at
    /// a boundary; `otherwise` if it is not (or cannot be followed).
    async fn stop_now(&mut self, cause: Cause, otherwise: End) -> End {
        if !self.candidate() {
            return otherwise;
        }
        self.stop = Stop::Now;
        match tokio::time::timeout(FLUSH_LIMIT, &mut *self).await {
            Ok(Out::Parked) if self.movable() => self.take_move(cause),
            Ok(Out::Failed(Side::Minion(e))) => End::MinionError(e),
            _ => otherwise,
        }
    }

    /// A graceful switch of a followed session: it keeps copying until it
    /// is idle as a drain would have it (the last request answered, nothing
    /// moved for [`IDLE_QUIET`]) and so is every other session this switch
    /// asked to move ([`SwitchGate`]); then each stops at the next boundary
    /// on both sides and moves. Not at the first answer: a job the old master
    /// published just before reaches the minion on the publish session and
    /// its return, sent a moment later, must still go to that master (Salt
    /// 3006.30, failback with a job stream: 1 return of 50 landed in the
    /// other master's job cache). Not each on its own: a minion whose publish
    /// session moved while its ret session stayed signs in to one master and
    /// hears the other (Salt 3008: a storm of sign-ins, returns lost). Past
    /// the drain timeout each moves on its own once its last request is
    /// answered (never cutting a request in flight), or is ended as a drain
    /// ends it [`LAST_CALL`] later; a reset meanwhile stops it at once.
    async fn switch<F: Future<Output = ()> + Unpin>(
        &mut self,
        ctl: &Control<'_>,
        reset: &mut F,
    ) -> End {
        let deadline = Instant::now() + ctl.drain_timeout;
        // Past the deadline a session moves on its own as soon as its last
        // request is answered; one whose answer never comes is ended as a
        // drain ends it, this much later.
        let last_call = deadline + LAST_CALL;
        let mut waiting = Waiting::new(&ctl.tokens.gate);
        // One step before the first look, so every session woken by the
        // same switch has counted itself busy.
        let mut tick = Box::pin(tokio::time::sleep_until(Instant::now() + DRAIN_STEP));
        let mut first = true;
        let mut late = false;
        loop {
            let now = Instant::now();
            if now >= last_call {
                return End::Drained;
            }
            if now >= deadline && !late {
                late = true;
                tracing::debug!(
                    port = ctl.port.as_str(),
                    idle = self.activity.is_idle(ctl.port),
                    answered = self.activity.answered(ctl.port),
                    quiet_ms = self.activity.quiet_for().as_millis() as u64,
                    others_idle = ctl.tokens.gate.all_idle(),
                    "graceful switch: drain timeout before the switch's sessions were all idle; moving once answered"
                );
            }
            if !first && self.stop == Stop::No {
                waiting.set_idle(self.activity.is_idle(ctl.port));
                if waiting.all_idle() || (late && self.activity.answered(ctl.port)) {
                    self.stop = Stop::AtBoundary;
                }
            }
            if !first {
                let next = if late { last_call } else { deadline };
                tick.as_mut().reset(next.min(now + DRAIN_STEP));
            }
            first = false;
            tokio::select! {
                biased;
                _ = &mut *reset => return self.stop_now(Cause::Failover, End::Reset).await,
                out = &mut *self => match out {
                    // A request slipped through before the stop: wait for
                    // its answer and quiet again.
                    Out::Parked if !self.activity.answered(ctl.port) => self.resume(),
                    Out::Parked if self.movable() => return self.take_move(Cause::Switch),
                    Out::Parked => return End::Drained,
                    out => return self.end(out).await,
                },
                _ = &mut tick => {}
            }
        }
    }

    /// The copy ended by itself: closed, an error, or a master's EOF.
    async fn end(&mut self, out: Out) -> End {
        match out {
            Out::Closed | Out::Parked => End::Closed,
            Out::Failed(Side::Minion(e)) => End::MinionError(e),
            // The minion had closed its side: a master that resets now (a
            // stand-in or a busy master often does) ends a session the
            // minion left, not one the master cut.
            Out::Failed(Side::Master(_)) if self.up.done => End::Closed,
            Out::Failed(Side::Master(e)) => self.stop_now(Cause::Lost, End::MasterError(e)).await,
            Out::MasterEof => {
                let eof = || io::Error::from(io::ErrorKind::UnexpectedEof);
                self.stop_now(Cause::Lost, End::MasterError(eof())).await
            }
        }
    }

    /// Copies on after a stop.
    fn resume(&mut self) {
        self.stop = Stop::No;
        self.up.parked = false;
        self.down.parked = false;
    }

    fn take_move(&mut self, cause: Cause) -> End {
        let up = &mut self.up;
        let carry = Carry {
            buf: up.buf.take(),
            pos: up.pos,
            end: up.end,
        };
        (up.pos, up.end) = (0, 0);
        End::Move { cause, carry }
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
                return Poll::Ready(Out::Failed(f.side(Side::Minion, Side::Master)))
            }
            Poll::Ready(Ok(_)) | Poll::Pending => {}
        }
        match this.down.poll_copy(cx, activity, this.up.done, stop, false) {
            Poll::Ready(Err(f)) => {
                return Poll::Ready(Out::Failed(f.side(Side::Master, Side::Minion)))
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
                            return Poll::Ready(Out::Failed(Side::Minion(e)));
                        }
                    }
                }
            }
            Poll::Ready(Ok(_)) | Poll::Pending => {}
        }
        if this.up.done && this.down.done {
            return Poll::Ready(Out::Closed);
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

/// An error of one direction: reading its source or writing its sink.
enum Fault {
    Read(io::Error),
    Write(io::Error),
}

impl Fault {
    /// Attributes the error to a side: `reader` owns the source socket.
    fn side(self, reader: fn(io::Error) -> Side, writer: fn(io::Error) -> Side) -> Side {
        match self {
            Fault::Read(e) => reader(e),
            Fault::Write(e) => writer(e),
        }
    }
}

/// What a direction reports when it is ready.
enum Flow {
    /// The source's EOF was seen (and passed on, unless held).
    Eof,
    /// The source's EOF was seen and not passed on: a followed master's
    /// stream, whose end [`Copy`] decides about.
    HeldEof,
    /// Stopped as asked.
    Parked,
}

/// One direction: `from` → `to`.
struct Pump<'a> {
    from: ReadHalf<'a>,
    to: WriteHalf<'a>,
    counter: &'a IntCounter,
    /// This direction's last-activity slot in [`Activity`].
    slot: &'a AtomicU64,
    /// Follows the frames written (ZeroMQ sessions only).
    track: Option<&'a mut Track>,
    /// The session's request clock (tcp-transport ret sessions only).
    answers: Option<&'a AnswerClock>,
    /// Borrowed from the pool while `buf[pos..end]` waits to be written.
    buf: Option<Box<[u8]>>,
    pos: usize,
    end: usize,
    /// EOF seen and passed on.
    done: bool,
    /// Stopped for a move.
    parked: bool,
}

// === impl Pump ===

impl<'a> Pump<'a> {
    fn new(
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
            buf: None,
            pos: 0,
            end: 0,
            done: false,
            parked: false,
        }
    }

    /// Bytes read and not yet written.
    fn pending(&self) -> bool {
        self.pos < self.end
    }

    /// Moves bytes until the source has none or the sink takes no more.
    /// `Ready(Ok)` once the source's EOF has been seen (`done`), or once
    /// stopped as `stop` asks (`parked`); `other_done`: the opposite
    /// direction has finished, so both sockets are about to be closed and
    /// the half-close is left to `close` (its FIN). `to_master`: this is the
    /// minion's direction, whose unsent bytes a `Stop::Now` keeps for the
    /// next master instead of sending them.
    fn poll_copy(
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
            if let Some(buf) = &self.buf {
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
                        let before = track.data_seen();
                        track.feed(buf.get(self.pos..self.pos + n).unwrap_or_default());
                        // A followed session is active when data passes,
                        // not when ZMTP heartbeats do (see `read` below).
                        if track.data_seen() != before {
                            activity.touch(self.slot);
                        }
                    }
                    self.pos += n;
                }
            }
            // Reading for a move: never past the next message boundary.
            let limit = match (stop, self.track.as_deref()) {
                (Stop::No, _) => CHUNK,
                (Stop::AtBoundary, Some(track)) => track.to_boundary().min(CHUNK),
                (Stop::AtBoundary, None) | (Stop::Now, _) => 0,
            };
            if limit == 0 {
                self.release();
                self.parked = true;
                return Poll::Ready(Ok(Flow::Parked));
            }
            // Nothing in flight: wait for readiness without a buffer.
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
                self.done = true;
                // A followed master's EOF is the copy's to decide about.
                if !to_master && self.track.is_some() {
                    return Poll::Ready(Ok(Flow::HeldEof));
                }
                if !other_done {
                    // Half-close: pass the EOF on, keep the other direction.
                    if let Poll::Ready(Err(e)) = Pin::new(&mut self.to).poll_shutdown(cx) {
                        if e.kind() != io::ErrorKind::NotConnected {
                            return Poll::Ready(Err(Fault::Write(e)));
                        }
                    }
                }
                return Poll::Ready(Ok(Flow::Eof));
            }
            self.counter.inc_by(n as u64);
            // Unfollowed (or no longer followable) bytes count as activity
            // when read; a followed session's when they carry data (above):
            // heartbeats (PING/PONG) both ways every few seconds would keep
            // a minion that does nothing from ever being idle, and a PING
            // from the master answered by the minion's PONG would look like
            // a request waiting for its answer.
            if self
                .track
                .as_deref()
                .is_none_or(|t| t.unmovable().is_some() || !t.handshaken())
            {
                activity.touch(self.slot);
            }
            if let Some(clock) = self.answers {
                if to_master {
                    clock.asked();
                } else {
                    clock.answered();
                }
            }
            (self.pos, self.end) = (0, n);
        }
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

/// Per-thread buffers of [`CHUNK`] bytes. Zeroed once when made (safe Rust
/// reads only into initialised memory), then reused as they are: a buffer
/// lent out is overwritten by the read before any byte of it is sent.
mod pool {
    use super::{RefCell, CHUNK, POOL_MAX};

    thread_local! {
        static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn take() -> Box<[u8]> {
        FREE.try_with(|free| free.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_else(|| vec![0u8; CHUNK].into_boxed_slice())
    }

    pub(super) fn give(buf: Box<[u8]>) {
        // At thread exit the pool is gone: the buffer is simply freed.
        let _ = FREE.try_with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < POOL_MAX {
                free.push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.expect("connect"), accepted.expect("accept").0)
    }

    struct Session {
        /// The minion's end and the master's end of the proxied session.
        minion: TcpStream,
        master: TcpStream,
        tokens: SessionTokens,
        shutdown: CancellationToken,
        up: IntCounter,
        down: IntCounter,
        end: tokio::task::JoinHandle<End>,
    }

    fn counter() -> IntCounter {
        IntCounter::new("bytes", "test").expect("counter")
    }

    async fn session(port: Port) -> Session {
        let (minion, mut proxy_minion) = pair().await;
        let (mut proxy_master, master) = pair().await;
        let shutdown = CancellationToken::new();
        let tokens = SessionTokens {
            drain: shutdown.child_token(),
            ..SessionTokens::default()
        };
        let (up, down) = (counter(), counter());
        let end = tokio::spawn({
            let (tokens, shutdown, up, down) =
                (tokens.clone(), shutdown.clone(), up.clone(), down.clone());
            async move {
                let ctl = Control {
                    port,
                    tokens: &tokens,
                    answers: None,
                    shutdown: &shutdown,
                    drain_timeout: Duration::from_secs(10),
                    to_master: &up,
                    to_minion: &down,
                };
                run(&mut proxy_minion, &mut proxy_master, ctl, None).await
            }
        });
        Session {
            minion,
            master,
            tokens,
            shutdown,
            up,
            down,
            end,
        }
    }

    #[tokio::test]
    async fn bytes_pass_both_ways_with_half_close_and_are_counted() {
        let mut s = session(Port::Ret).await;
        // More than one buffer's worth, to cross chunk boundaries.
        let big: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 251) as u8).collect();
        s.minion.write_all(&big).await.expect("write");
        s.minion.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        s.master.read_to_end(&mut got).await.expect("read to EOF");
        assert!(got == big, "minion → master byte-exact, then EOF");
        // The other direction still works after the minion's half-close.
        s.master.write_all(b"reply").await.expect("reply");
        s.master.shutdown().await.expect("master half-close");
        let mut reply = Vec::new();
        s.minion
            .read_to_end(&mut reply)
            .await
            .expect("reply to EOF");
        assert_eq!(reply, b"reply");
        assert!(matches!(s.end.await.expect("join"), End::Closed));
        assert_eq!(s.up.get(), big.len() as u64);
        assert_eq!(s.down.get(), 5);
    }

    #[tokio::test]
    async fn reset_ends_an_idle_session_at_once() {
        let s = session(Port::Publish).await;
        s.tokens.reset.cancel();
        let end = tokio::time::timeout(Duration::from_secs(5), s.end)
            .await
            .expect("ends")
            .expect("join");
        assert!(matches!(end, End::Reset));
    }

    #[tokio::test]
    async fn drain_waits_for_the_answer_then_ends_when_quiet() {
        let mut s = session(Port::Ret).await;
        s.minion.write_all(b"request").await.expect("request");
        let mut req = [0u8; 7];
        s.master
            .read_exact(&mut req)
            .await
            .expect("request through");
        s.shutdown.cancel();
        // Unanswered request: not idle, however quiet.
        tokio::time::sleep(IDLE_QUIET * 2).await;
        assert!(!s.end.is_finished(), "drained before the answer");
        s.master.write_all(b"answer").await.expect("answer");
        let mut ans = [0u8; 6];
        s.minion.read_exact(&mut ans).await.expect("answer through");
        let end = tokio::time::timeout(Duration::from_secs(5), s.end)
            .await
            .expect("ends")
            .expect("join");
        assert!(matches!(end, End::Drained));
    }

    #[tokio::test]
    async fn drain_keeps_a_publish_session_that_just_carried_a_job() {
        // A job published just before a failback: the minion must get to run it
        // and send its return before its publish session closes (a Salt minion
        // drops the returns it forwards while it reconnects after that close).
        let mut s = session(Port::Publish).await;
        s.master.write_all(b"job").await.expect("publish");
        let mut job = [0u8; 3];
        s.minion.read_exact(&mut job).await.expect("job through");
        let asked = Instant::now();
        s.tokens.drain.cancel();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!s.end.is_finished(), "closed 1 s after a job was published");
        let end = tokio::time::timeout(Duration::from_secs(5), s.end)
            .await
            .expect("ends")
            .expect("join");
        assert!(matches!(end, End::Drained), "{end:?}");
        assert!(asked.elapsed() >= IDLE_QUIET - Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_side_that_fails_is_named() {
        let s = session(Port::Ret).await;
        socket2::SockRef::from(&s.master)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(s.master); // RST towards the sidecar's master side
        let end = tokio::time::timeout(Duration::from_secs(5), s.end)
            .await
            .expect("ends")
            .expect("join");
        assert!(matches!(end, End::MasterError(_)), "{end:?}");
    }

    #[tokio::test]
    async fn a_master_reset_after_the_minion_left_is_a_close_not_a_cut() {
        let mut s = session(Port::Ret).await;
        s.minion.shutdown().await.expect("the minion leaves");
        let mut rest = Vec::new();
        s.master
            .read_to_end(&mut rest)
            .await
            .expect("EOF reaches the master");
        socket2::SockRef::from(&s.master)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(s.master); // and it answers with RST
        let end = tokio::time::timeout(Duration::from_secs(5), s.end)
            .await
            .expect("ends")
            .expect("join");
        assert!(matches!(end, End::Closed), "{end:?}");
    }

    /// A followed (ZeroMQ) session whose handshakes have passed through.
    struct Followed {
        minion: TcpStream,
        master: TcpStream,
        tokens: SessionTokens,
        /// The session's end, and the sidecar's minion-side socket (kept
        /// open, as `forward` keeps it for a move).
        end: tokio::task::JoinHandle<(End, TcpStream)>,
    }

    async fn followed(port: Port) -> Followed {
        followed_with(port, SessionTokens::default()).await
    }

    /// A followed session watching `tokens` (clones share one switch's gate).
    async fn followed_with(port: Port, tokens: SessionTokens) -> Followed {
        followed_draining_in(port, tokens, Duration::from_secs(10)).await
    }

    /// [`followed_with`] with its drain timeout.
    async fn followed_draining_in(
        port: Port,
        tokens: SessionTokens,
        drain_timeout: Duration,
    ) -> Followed {
        use crate::zmtp::{encode_ready, greeting_null, SocketType};
        let (mut minion, mut proxy_minion) = pair().await;
        let (mut proxy_master, mut master) = pair().await;
        let end = tokio::spawn({
            let tokens = tokens.clone();
            async move {
                let (shutdown, up, down) = (CancellationToken::new(), counter(), counter());
                let mut tracks = Tracks::default();
                let ctl = Control {
                    port,
                    tokens: &tokens,
                    answers: None,
                    shutdown: &shutdown,
                    drain_timeout,
                    to_master: &up,
                    to_minion: &down,
                };
                let end = run(&mut proxy_minion, &mut proxy_master, ctl, Some(&mut tracks)).await;
                (end, proxy_minion)
            }
        });
        let mine = [
            greeting_null(false).to_vec(),
            encode_ready(SocketType::of_minion(port)),
        ]
        .concat();
        let theirs = [
            greeting_null(false).to_vec(),
            encode_ready(SocketType::of_master(port)),
        ]
        .concat();
        minion.write_all(&mine).await.expect("minion handshake");
        master.write_all(&theirs).await.expect("master handshake");
        let mut got = vec![0u8; mine.len()];
        master
            .read_exact(&mut got)
            .await
            .expect("minion's handshake through");
        let mut got = vec![0u8; theirs.len()];
        minion
            .read_exact(&mut got)
            .await
            .expect("master's handshake through");
        Followed {
            minion,
            master,
            tokens,
            end,
        }
    }

    async fn ended(end: tokio::task::JoinHandle<(End, TcpStream)>) -> (End, TcpStream) {
        tokio::time::timeout(Duration::from_secs(5), end)
            .await
            .expect("ends")
            .expect("join")
    }

    /// The minion sends a DEALER request with `payload`; returns it as the
    /// master read it (whole, through the session).
    async fn ask(s: &mut Followed, payload: &[u8]) -> Vec<u8> {
        let request = crate::zmtp::encode_message(&[b"", payload]);
        s.minion.write_all(&request).await.expect("request");
        let mut got = vec![0u8; request.len()];
        s.master
            .read_exact(&mut got)
            .await
            .expect("request through");
        assert_eq!(got, request);
        got
    }

    /// One exchange each way, so both streams are past a whole message.
    async fn exchange(s: &mut Followed) {
        let request = ask(s, b"ping 1").await;
        let mut got = vec![0u8; request.len()];
        s.master.write_all(&request).await.expect("reply");
        s.minion.read_exact(&mut got).await.expect("reply through");
    }

    #[tokio::test]
    async fn a_followed_session_moves_when_its_master_closes_between_messages() {
        let mut s = followed(Port::Ret).await;
        exchange(&mut s).await;
        drop(s.master);
        let (end, _kept) = ended(s.end).await;
        assert!(
            matches!(&end, End::Move { cause: Cause::Lost, carry } if carry.bytes().is_empty()),
            "{end:?}"
        );
        // The minion saw nothing: no EOF, no reset.
        let mut b = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(200), s.minion.read(&mut b)).await;
        assert!(
            read.is_err(),
            "the minion's connection was touched: {read:?}"
        );
    }

    #[tokio::test]
    async fn a_master_that_dies_inside_a_message_resets_the_session() {
        let mut s = followed(Port::Publish).await;
        exchange(&mut s).await;
        // A 10-byte frame of which only 3 body bytes arrive.
        s.master
            .write_all(&[0x00, 10, 1, 2, 3])
            .await
            .expect("part");
        let mut part = [0u8; 5];
        s.minion.read_exact(&mut part).await.expect("part through");
        drop(s.master);
        let (end, _kept) = ended(s.end).await;
        assert!(matches!(end, End::MasterError(_)), "{end:?}");
    }

    #[tokio::test]
    async fn a_failover_between_messages_moves_at_once() {
        let mut s = followed(Port::Ret).await;
        exchange(&mut s).await;
        s.tokens.reset.cancel();
        let (end, _kept) = ended(s.end).await;
        assert!(
            matches!(
                end,
                End::Move {
                    cause: Cause::Failover,
                    ..
                }
            ),
            "{end:?}"
        );
    }

    #[tokio::test]
    async fn a_graceful_switch_waits_for_the_answer_and_quiet_then_moves() {
        let mut s = followed(Port::Ret).await;
        let request = ask(&mut s, b"ping 2").await;
        let mut got = vec![0u8; request.len()];
        s.tokens.drain.cancel();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!s.end.is_finished(), "moved before the answer");
        s.master.write_all(&request).await.expect("answer");
        s.minion.read_exact(&mut got).await.expect("answer through");
        // The minion may still send a return for a job of the old master.
        tokio::time::sleep(IDLE_QUIET / 2).await;
        assert!(!s.end.is_finished(), "moved before {IDLE_QUIET:?} of quiet");
        let (end, _kept) = ended(s.end).await;
        assert_switch_move(&end);
    }

    #[tokio::test]
    async fn the_sessions_of_one_switch_move_together_once_all_are_idle() {
        let tokens = SessionTokens::default();
        let publish = followed_with(Port::Publish, tokens.clone()).await;
        let mut ret = followed_with(Port::Ret, tokens.clone()).await;
        // A request on the ret session is waiting for its answer.
        let request = ask(&mut ret, b"return 7").await;
        let mut got = vec![0u8; request.len()];
        tokens.drain.cancel();
        // The publish session is idle after IDLE_QUIET, but waits for the
        // ret session.
        tokio::time::sleep(IDLE_QUIET + Duration::from_millis(500)).await;
        assert!(
            !publish.end.is_finished(),
            "publish moved while ret was busy"
        );
        assert!(!ret.end.is_finished(), "ret moved before its answer");
        ret.master.write_all(&request).await.expect("answer");
        ret.minion
            .read_exact(&mut got)
            .await
            .expect("answer through");
        let answered = Instant::now();
        let (p_end, _) = ended(publish.end).await;
        let (r_end, _) = ended(ret.end).await;
        for end in [&p_end, &r_end] {
            assert_switch_move(end);
        }
        let took = answered.elapsed();
        assert!(
            took >= IDLE_QUIET - Duration::from_millis(200)
                && took < IDLE_QUIET + Duration::from_secs(2),
            "both moved {took:?} after the answer"
        );
    }

    #[tokio::test]
    async fn heartbeats_do_not_keep_a_session_from_moving() {
        // ZMTP 3.1 PING (TTL 1 s) and PONG: command frames.
        const PING: [u8; 9] = [0x04, 0x07, 0x04, b'P', b'I', b'N', b'G', 0x00, 0x0a];
        const PONG: [u8; 7] = [0x04, 0x05, 0x04, b'P', b'O', b'N', b'G'];
        let mut s = followed(Port::Ret).await;
        s.tokens.drain.cancel();
        let drained = Instant::now();
        // The master pings, the minion pongs (its bytes last, as a request
        // would be), every 500 ms: data never moves, so the session is
        // idle after IDLE_QUIET and moves.
        let end = loop {
            s.master.write_all(&PING).await.expect("ping");
            let mut got = [0u8; PING.len()];
            s.minion.read_exact(&mut got).await.expect("ping through");
            s.minion.write_all(&PONG).await.expect("pong");
            let mut got = [0u8; PONG.len()];
            s.master.read_exact(&mut got).await.expect("pong through");
            tokio::time::sleep(Duration::from_millis(500)).await;
            if s.end.is_finished() {
                break ended(s.end).await.0;
            }
            assert!(
                drained.elapsed() < IDLE_QUIET + Duration::from_secs(3),
                "heartbeats kept the session from moving"
            );
        };
        assert_switch_move(&end);
    }

    /// `end` moves the session for a graceful switch.
    fn assert_switch_move(end: &End) {
        assert!(
            matches!(
                end,
                End::Move {
                    cause: Cause::Switch,
                    ..
                }
            ),
            "{end:?}"
        );
    }

    #[tokio::test]
    async fn a_session_never_idle_moves_after_the_drain_timeout_once_answered() {
        let drain = Duration::from_secs(1);
        let mut s = followed_draining_in(Port::Ret, SessionTokens::default(), drain).await;
        s.tokens.drain.cancel();
        let drained = Instant::now();
        // A request every 200 ms, each answered after 50 ms: never quiet.
        let mut asked = 0u32;
        let end = loop {
            if s.end.is_finished() {
                break ended(s.end).await.0;
            }
            let mut got = ask(&mut s, format!("r{asked}").as_bytes()).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            s.master.write_all(&got).await.expect("answer");
            tokio::time::timeout(Duration::from_secs(2), s.minion.read_exact(&mut got))
                .await
                .expect("answer through: none cut")
                .expect("answer read");
            asked += 1;
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert!(drained.elapsed() < drain + LAST_CALL, "never moved");
        };
        assert_switch_move(&end);
        let took = drained.elapsed();
        assert!(
            took >= drain && took < drain + Duration::from_secs(1),
            "moved {took:?} after the drain (timeout {drain:?}), {asked} requests all answered"
        );
    }
}
