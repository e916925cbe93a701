//! One proxied session, from its first byte to its end.
//!
//! The two-way copy ([`copy`]) moves the bytes; either side's error ends the
//! session, EOF is passed on as a half-close. The session also watches its
//! tokens: `reset` ends it at once (the caller sends RST), `drain` ends it
//! once it is idle or at the drain deadline. Never logs.
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
//! next message boundary (never into the next message) and stops there. A
//! session that is inside a message, or cannot be followed, ends as before (RST, drain).
//!
//! This module is the policy: when a session ends, drains or moves. The
//! byte moving is [`copy`]'s.

mod buffer;
mod copy;
mod pump;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::master::Port;
use crate::control::answers::AnswerClock;
use crate::control::evidence::Evidence;
use crate::control::sessions::{SessionTokens, SwitchGate};
use crate::data::admit::Newcomer;
use crate::data::track::Tracks;

use crate::limits::Blame;
pub use buffer::Carry;
use copy::{Activity, Copy, Out, Pump, Stop};

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
    /// The sidecar itself ran out (descriptors, buffers, memory) on either
    /// side: the session ends, no master is blamed.
    SidecarError(io::Error),
    /// A switch away from this master (failover): close with RST.
    Reset,
    /// One side closed its write half and the other did not follow within
    /// `half_close_timeout` of the last bytes: both are closed (a master
    /// that never reads would otherwise hold the session, and its slot,
    /// for ever).
    HalfOpen,
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

/// What the copy needs besides the two sockets.
pub struct Control<'a> {
    pub port: Port,
    pub tokens: &'a SessionTokens,
    /// A ret session's request clock (`control::answers`): stamped per
    /// message on a followed (ZeroMQ) session, per read otherwise; also how
    /// the health task asks the session to look at its flow.
    pub answers: Option<&'a AnswerClock>,
    /// The sidecar is stopping (the parent of `tokens.drain`): drain as
    /// for a failback, but never move.
    pub shutdown: &'a CancellationToken,
    pub drain_timeout: Duration,
    /// How long a session may stay half-closed with nothing moving.
    pub half_close_timeout: Duration,
    pub to_master: &'a IntCounter,
    pub to_minion: &'a IntCounter,
    /// Marked on the minion's first bytes (`data::admit`).
    pub newcomer: Option<&'a Newcomer>,
    /// The master's evidence on this port (`control::evidence`): stamped on
    /// every read from the master; the health task asks through it for a
    /// ZMTP PING when the session has been quiet.
    pub evidence: Option<&'a Evidence>,
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
        half_reported: false,
    };
    (copy.up.answers, copy.down.answers) = (ctl.answers, ctl.answers);
    copy.up.newcomer = ctl.newcomer;
    copy.down.heard = ctl.evidence;
    let _registered = ctl.evidence.map(Evidence::register);
    let reset = ctl.tokens.reset.cancelled();
    tokio::pin!(reset);
    // Copying, until the end, a reset, or a drain request (a request to
    // look at the flow is answered on the way); no timer is held.
    // What follows (a stop, a switch, an end) runs once per session and is
    // boxed, so its timers do not size the future every idle session keeps.
    loop {
        tokio::select! {
            biased;
            _ = &mut reset => return Box::pin(copy.stop_now(Cause::Failover, End::Reset)).await,
            out = &mut copy => return Box::pin(copy.end(out, &ctl, &mut reset)).await,
            _ = drain_requested(&ctl) => break,
            // The master answers others but not this session's request: if
            // its flow is dead (the kernel retransmits, nothing is
            // acknowledged), the session moves to a new one.
            // The health task asks for a ZMTP PING: the first session that
            // can carry one sends it at its minion's message boundary.
            _ = ping_asked(ctl.evidence) => {
                if copy.can_ping() && ctl.evidence.is_some_and(Evidence::claim) {
                    copy.ping();
                }
            }
            _ = recheck_requested(ctl.answers) => {
                if Box::pin(flow_stalled(copy.master_flow())).await {
                    let dead = io::Error::from(io::ErrorKind::TimedOut);
                    return Box::pin(copy.stop_now(Cause::Lost, End::MasterError(dead))).await;
                }
            }
        }
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
            out = &mut copy => return Box::pin(copy.end(out, &ctl, &mut reset)).await,
            _ = &mut tick => {}
        }
    }
}

/// Whether the kernel's table shows the flow dead (`net::flow_stalled`),
/// read on a blocking thread: the table grows with the host's sockets, and
/// every session asked at once reads it.
async fn flow_stalled(flow: Option<(std::net::SocketAddr, std::net::SocketAddr)>) -> bool {
    let Some((local, peer)) = flow else {
        return false;
    };
    tokio::task::spawn_blocking(move || crate::net::flow_stalled(local, peer))
        .await
        .ok()
        .flatten()
        == Some(true)
}

/// Resolves when the health task asks this ret session to check its flow;
/// never for a session without a request clock.
async fn recheck_requested(answers: Option<&AnswerClock>) {
    match answers {
        Some(clock) => clock.recheck_requested().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the master's health task asks for a PING; never for a
/// session without evidence.
async fn ping_asked(evidence: Option<&Evidence>) {
    match evidence {
        Some(ev) => ev.asked().await,
        None => std::future::pending().await,
    }
}

/// Resolves when this session is asked to drain (failback, drain, and
/// shutdown: every drain token is a child of the shutdown token).
async fn drain_requested(ctl: &Control<'_>) {
    ctl.tokens.drain.cancelled().await
}

impl Activity {
    /// Idle: nothing moved for [`IDLE_QUIET`] and, on the ret port, the last
    /// bytes went to the minion (its last request was answered).
    fn is_idle(&self, port: Port) -> bool {
        let (up, down) = self.last();
        let quiet = self.now_us() >= up.max(down) + IDLE_QUIET.as_micros() as u64;
        quiet && self.answered(port)
    }

    /// How long nothing has moved either way.
    fn quiet_for(&self) -> Duration {
        let (up, down) = self.last();
        Duration::from_micros(self.now_us().saturating_sub(up.max(down)))
    }

    /// On the ret port, the last bytes went to the minion: no request is
    /// waiting for its answer from this master. Always on the publish port.
    fn answered(&self, port: Port) -> bool {
        let (up, down) = self.last();
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

impl Copy<'_> {
    /// Stops at once (failover, lost master) and moves if the session is at
    /// a boundary; `otherwise` if it is not (or cannot be followed).
    async fn stop_now(&mut self, cause: Cause, otherwise: End) -> End {
        if !self.candidate() {
            return otherwise;
        }
        self.stop = Stop::Now;
        match tokio::time::timeout(FLUSH_LIMIT, &mut *self).await {
            Ok(Out::Parked) if self.movable() => self.take_move(cause),
            Ok(Out::Failed(Blame::Minion, e)) => End::MinionError(e),
            Ok(Out::Failed(Blame::Sidecar, e)) => End::SidecarError(e),
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
                    out => return Box::pin(self.end(out, ctl, reset)).await,
                },
                _ = &mut tick => {}
            }
        }
    }

    /// The copy ended by itself: closed, an error, or a master's EOF; or
    /// one side closed its half ([`Copy::half_closed`]).
    async fn end<F: Future<Output = ()> + Unpin>(
        &mut self,
        out: Out,
        ctl: &Control<'_>,
        reset: &mut F,
    ) -> End {
        match out {
            Out::Closed | Out::Parked => End::Closed,
            Out::HalfClosed => self.half_closed(ctl, reset).await,
            Out::Failed(Blame::Minion, e) => End::MinionError(e),
            Out::Failed(Blame::Sidecar, e) => End::SidecarError(e),
            // The minion had closed its side: a master that resets now (a
            // stand-in or a busy master often does) ends a session the
            // minion left, not one the master cut.
            Out::Failed(Blame::Master, _) if self.up.done => End::Closed,
            Out::Failed(Blame::Master, e) => self.stop_now(Cause::Lost, End::MasterError(e)).await,
            Out::MasterEof => {
                let eof = || io::Error::from(io::ErrorKind::UnexpectedEof);
                self.stop_now(Cause::Lost, End::MasterError(eof())).await
            }
        }
    }

    /// One side closed its write half (passed on to the other): the copy
    /// goes on while the other side has something to say, and ends once
    /// nothing has moved for `half_close_timeout` (a peer that never reads
    /// never sees the FIN, and never closes its own half). A reset still
    /// ends it at once. Runs once per session, so its timer is no burden.
    async fn half_closed<F: Future<Output = ()> + Unpin>(
        &mut self,
        ctl: &Control<'_>,
        reset: &mut F,
    ) -> End {
        let mut tick = Box::pin(tokio::time::sleep(ctl.half_close_timeout));
        loop {
            let quiet = self.activity.quiet_for();
            let Some(left) = ctl
                .half_close_timeout
                .checked_sub(quiet)
                .filter(|d| !d.is_zero())
            else {
                return End::HalfOpen;
            };
            tick.as_mut().reset(Instant::now() + left);
            tokio::select! {
                biased;
                _ = &mut *reset => return End::Reset,
                out = &mut *self => return Box::pin(self.end(out, ctl, reset)).await,
                _ = &mut tick => {}
            }
        }
    }

    fn take_move(&mut self, cause: Cause) -> End {
        End::Move {
            cause,
            carry: self.take_carry(),
        }
    }
}
