//! The minion-facing listeners: accept, pick an upstream, copy bytes.
//!
//! Each accepted connection reads the current [`Route`] (waiting, connection
//! held open, while no master is up), waits out the reconnect jitter, and
//! connects to the active master — or, if that master refuses or times out,
//! to the next candidate, inside the same minion connection (a failed connect
//! also tells `health`). Bytes are then copied
//! by [`duplex`]. Layer 4 only: payload is never decoded. Logs per session
//! at debug level only; state changes are the supervisor's to log.
//!
//! **Moving a session.** With `probe: zmtp` each session carries
//! [`Tracks`] (frame boundaries, the minion's greeting, READY and
//! subscriptions). When `duplex` ends with [`End::Move`] — the route moved
//! (reset or drain token) or the master's side closed — the old upstream is
//! closed (RST if the master is gone, FIN after a graceful switch), the
//! minion's connection is kept, and [`Forwarder::move_session`] connects
//! again through [`Forwarder::connect_upstream`] (same route, jitter and
//! fallbacks as a new session: a master that just died is refused and the
//! next one taken), opens the minion's ZMTP session there
//! ([`rejoin`]), sends the minion bytes the old master never got, and the
//! copy resumes. Failing that, the minion is reset, as before. Each outcome
//! is counted in `session_moves_total{port,how}`.
//!
//! **Salt's events** (`sidecar.salt_events`, [`notice`]): with every master
//! down the publish port refuses instead of holding, and a publish session
//! moved to another master is closed at its first quiet moment, so the
//! minion's alive check sees what a native failover minion would.
//!
//! **In-flight requests are not replayed.** A request the sidecar had
//! already written to the dead master is lost with it; the minion's request
//! channel times out and retries (Salt's `return_retry_timer` /
//! `return_retry_tries`, `auth_timeout` / `auth_tries`), exactly as without
//! a sidecar. Replaying needs the payload decoded (which requests are safe?)
//! and a copy of every request kept; a job return the dead master may have
//! processed would run twice; and a sign-in (`_auth`, safe to replay) is
//! not needed, since the minion re-authenticates on the first publication
//! from the new master that it cannot decrypt.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::master::{MasterId, Port};
use crate::config::settings::Tunables;
use crate::control::masters::Plane;
use crate::control::route::Route;
use crate::control::sessions::SessionTokens;
use crate::data::admit::{Newcomer, Newcomers};
use crate::data::duplex::{self, Cause, End};
use crate::data::track::Tracks;
use crate::limits::{Listener, Op};
use crate::metrics::{Metrics, MoveHow, NoticeReason};
use crate::net;

mod moving;
mod notice;
mod pace;
mod upstream;

pub use notice::{Notice, Phase};
pub use pace::Pacer;

use moving::{minion_closed, MoveError};
use upstream::Opening;

/// Accept queue length asked of the kernel for the minion listeners.
const ACCEPT_BACKLOG: i32 = 8192;

/// A connected upstream: the plane, the master, the socket, its session tokens.
type Upstream = (Arc<Plane>, MasterId, TcpStream, SessionTokens);

/// Shared state of both listeners.
pub struct Forwarder {
    /// Where to go, and the plane of masters the route refers to.
    pub route: watch::Receiver<Route>,
    pub metrics: Arc<Metrics>,
    /// Connect and drain timeouts, socket options: live across reloads.
    pub tunables: watch::Receiver<Arc<Tunables>>,
    /// One permit per minion connection, held or proxied, on both ports
    /// (`sidecar.max_sessions`, fitted to the open-file limit).
    pub sessions: Arc<Semaphore>,
    pub max_sessions: usize,
    /// Connections that have not spoken yet: at the cap, the oldest of them
    /// gives its slot to a newcomer.
    pub newcomers: Newcomers,
    /// The publish connections refused after a switch (`salt_events`);
    /// shared with `/status`.
    pub notice: Arc<Notice>,
    /// The gate a minion's sign-in passes after a switch (`pace`).
    pub pacer: Pacer,
}

/// How long a newcomer waits for the slot of the connection it evicted.
const EVICT_WAIT: Duration = Duration::from_millis(500);

/// A second loss of the upstream this soon after a move resets the session.
const RELOSS_WINDOW: Duration = Duration::from_secs(1);

// === impl Forwarder ===

impl Forwarder {
    /// Accepts minion connections on `listener` until `token` is cancelled.
    /// Sessions are spawned on `tracker` with a child of `token`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        port: Port,
        token: CancellationToken,
        tracker: TaskTracker,
    ) {
        // Accepted sockets inherit TCP_NODELAY from the listener (Linux),
        // which saves a system call per minion connection.
        let inherits_nodelay = set_listener_nodelay(&listener);
        // A failover makes every client reconnect at once: a longer accept
        // queue than tokio's 1024 keeps a burst from waiting out SYN
        // retransmits (the kernel caps it at net.core.somaxconn).
        // listen(2) on a listening socket only updates its backlog.
        if let Err(e) = socket2::SockRef::from(&listener).listen(ACCEPT_BACKLOG) {
            debug!(port = port.as_str(), error = %e, "could not raise the accept backlog");
        }
        loop {
            let accepted = tokio::select! {
                _ = token.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    if let Some(reason) = self.refuses(port) {
                        // Salt's alive check must find no connection.
                        self.metrics.reconnect_asked(port, reason);
                        net::reset_on_close(&stream);
                        drop(stream);
                        continue;
                    }
                    let Some(permit) = self.admit(port).await else {
                        // Over the cap: closed at once, so a local flood can
                        // never take the descriptors probes and the minion's
                        // own sessions need.
                        self.metrics
                            .resources
                            .refused(listener_label(port), self.max_sessions);
                        net::reset_on_close(&stream);
                        drop(stream);
                        continue;
                    };
                    if !inherits_nodelay {
                        let _ = stream.set_nodelay(true);
                    }
                    let fwd = self.clone();
                    let token = token.clone();
                    let newcomer = self.newcomers.admit();
                    if self.newcomers.len() > 2 * self.max_sessions {
                        self.newcomers.tidy();
                    }
                    tracker.spawn(async move {
                        tokio::select! {
                            biased;
                            () = newcomer.evicted() => {
                                debug!(port = port.as_str(), %peer, "connection that never introduced itself (no ZMTP greeting and READY, or no byte) closed: its slot went to a newcomer at the session cap");
                            }
                            () = fwd.session(stream, peer, port, token, &newcomer) => {}
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    if self.metrics.resources.check(Op::Accept, &e).is_none() {
                        warn!(port = port.as_str(), error = %e, "accept failed; retrying in 100 ms");
                    }
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    }

    /// Why a new minion connection on `port` is refused (`salt_events`):
    /// a publish connection while every master is down, or while a window
    /// after a switch is open ([`Notice`]).
    fn refuses(&self, port: Port) -> Option<NoticeReason> {
        if port != Port::Publish || !self.tunables.borrow().shows_switches() {
            return None;
        }
        if self.route.borrow().active.is_none() {
            Some(NoticeReason::AllDown)
        } else if self.notice.refusing(Instant::now()) {
            Some(NoticeReason::Switch)
        } else {
            None
        }
    }

    /// A session slot for a new connection on `port`: free, or, at the cap,
    /// the slot of the oldest connection that never sent a byte (`admit`).
    async fn admit(&self, port: Port) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.sessions.clone().try_acquire_owned() {
            return Some(permit);
        }
        if self.newcomers.evict_oldest_silent() {
            self.metrics.resources.evicted(listener_label(port));
            // The evicted session gives its slot back as it ends, at once.
            let freed = tokio::time::timeout(EVICT_WAIT, self.sessions.clone().acquire_owned());
            if let Ok(Ok(permit)) = freed.await {
                return Some(permit);
            }
        }
        None
    }

    async fn session(
        &self,
        mut minion: TcpStream,
        peer: SocketAddr,
        port: Port,
        shutdown: CancellationToken,
        newcomer: &Newcomer,
    ) {
        // Boxed: the connect phase (route wait, jitter, connect timeout) is
        // larger than the copy phase and would otherwise size the future an
        // idle session keeps for its whole life.
        let opened = Instant::now();
        let mut early = Vec::new();
        let connect = Box::pin(self.connect_upstream(port, Opening::New { since: opened }));
        let closed = Box::pin(minion_closed(&mut minion, &mut early));
        let Some(mut next) = (tokio::select! {
            biased;
            _ = shutdown.cancelled() => None,
            c = connect => c,
            // A held connection is released the moment the minion gives up
            // on it: a long outage holds no descriptor for a gone minion.
            () = closed => {
                debug!(port = port.as_str(), %peer, "minion closed its connection while waiting for a master");
                None
            }
        }) else {
            if !shutdown.is_cancelled() && self.refuses(port).is_some() {
                // Every master went down while it waited: refused, as new
                // ones are (`salt_events`).
                self.metrics.reconnect_asked(port, NoticeReason::AllDown);
                net::reset_on_close(&minion);
            }
            return;
        };
        // A connect that completed at once (`net::connect`) returned before
        // the minion's first bytes were read; they are there by now as a
        // rule (read after the connect, not before: under load they arrive
        // a little after the accept), and go out with the first send.
        if early.is_empty() {
            read_ready(&mut minion, &mut early);
        }
        // A ZeroMQ session is followed frame by frame so that a switch can
        // move it to the new master instead of cutting it.
        let movable = self.tunables.borrow().moves_sessions();
        let mut tracks = movable.then(|| Box::new(Tracks::default()));
        let mut last_move: Option<Instant> = None;
        // A publish session moved to another master, to be closed at its
        // first quiet moment so that the minion notices (`salt_events`).
        let mut leaving = false;
        let mut closing = None;
        loop {
            let (plane, master, mut upstream, tokens) = next;
            let label = plane.label(master);
            let counters = self.metrics.session(label, port);
            self.metrics
                .sessions_total
                .with_label_values(&[label, port.as_str()])
                .inc();
            counters.active.inc();
            debug!(port = port.as_str(), %peer, master = label, "session open");

            // A ret session stamps its requests' clock, which the master's
            // health task scans for an unanswered one (per message when the
            // session is followed, per read otherwise: `duplex::copy`).
            let answers = (port == Port::Ret
                && self.tunables.borrow().health.ret_answer_timeout.is_some())
            .then(|| plane.health.get(master.index()).map(|h| h.answers.clock()))
            .flatten();
            if !early.is_empty() {
                // What the minion sent while waiting goes first, in order.
                if let Err(e) = net::send_first(&mut upstream, &early).await {
                    counters.active.dec();
                    net::reset_on_close(&minion);
                    debug!(port = port.as_str(), %peer, master = label, error = %e, "session closed before its first bytes reached the master");
                    return;
                }
                let asked = match tracks.as_deref_mut() {
                    Some(t) => {
                        let before = t.up.messages();
                        t.up.feed(&early);
                        if t.up.introduced() {
                            newcomer.spoke();
                        }
                        t.up.messages() != before
                    }
                    None => {
                        newcomer.spoke();
                        true
                    }
                };
                if let (true, Some(clock)) = (asked, &answers) {
                    clock.asked();
                }
                counters.to_master.inc_by(early.len() as u64);
                early = Vec::new();
            }
            // Off the path of the first request: it is on its way already.
            // (A moved session's upstream was configured by the move.)
            if last_move.is_none() {
                self.configure(&upstream, &plane, master);
            }
            let ctl = duplex::Control {
                port,
                tokens: &tokens,
                answers: answers.as_deref(),
                // Shutdown of the sidecar drains like a failback does.
                shutdown: &shutdown,
                drain_timeout: self.tunables.borrow().drain_timeout,
                half_close_timeout: self.tunables.borrow().half_close_timeout,
                to_master: &counters.to_master,
                to_minion: &counters.to_minion,
                newcomer: Some(newcomer),
                evidence: plane
                    .health
                    .get(master.index())
                    .map(|h| h.evidence.port(port)),
            };
            // Leaving: a drain asked at once, not followed (never moved
            // again): it ends once quiet, or at the drain timeout.
            let leave_tokens;
            let ctl = if leaving {
                leave_tokens = SessionTokens {
                    drain: CancellationToken::new(),
                    ..tokens.clone()
                };
                leave_tokens.drain.cancel();
                duplex::Control {
                    tokens: &leave_tokens,
                    ..ctl
                }
            } else {
                ctl
            };
            let followed = if leaving { None } else { tracks.as_deref_mut() };
            let end = duplex::run(&mut minion, &mut upstream, ctl, followed).await;
            counters.active.dec();
            if leaving && matches!(end, End::Drained) && !shutdown.is_cancelled() {
                // Closed (FIN) at a quiet moment; the window refuses the
                // minion's reconnects until its alive check has seen it.
                let tunables = self.tunables.borrow().clone();
                self.notice
                    .open(Instant::now(), tunables.health.interval + notice::MARGIN);
                self.metrics.reconnect_asked(port, NoticeReason::Switch);
                debug!(port = port.as_str(), %peer, master = label, "publish session closed after a switch so the minion notices");
                return;
            }
            let (cause, carry) = match end {
                End::Move { cause, carry } => (cause, carry),
                end => {
                    if port == Port::Ret && matches!(end, End::Closed | End::MinionError(_)) {
                        self.notice.ret_closed(opened, Instant::now());
                    }
                    self.closed(&minion, &upstream, &plane, master, port, &end, &shutdown);
                    debug!(port = port.as_str(), %peer, master = label, end = ?end, "session closed");
                    return;
                }
            };
            // The old master is done with: gone (RST), or left at a message
            // boundary (FIN, as a peer that leaves).
            if cause != Cause::Switch {
                net::reset_on_close(&upstream);
            }
            drop(upstream);
            if cause == Cause::Lost {
                if let Some(h) = plane.health.get(master.index()) {
                    h.reprobe();
                }
            }
            let Some(t) = tracks.as_deref_mut() else {
                return; // a move needs the tracks: not reached
            };
            // A master that takes the session and drops it again at once
            // would make a loop: the second loss within a second resets.
            let looping =
                cause == Cause::Lost && last_move.is_some_and(|at| at.elapsed() < RELOSS_WINDOW);
            let moved = if looping {
                Err(MoveError::Looping)
            } else {
                // Boxed: a move (its handshake buffer and timer) is rare and
                // would otherwise size the future every idle session keeps.
                Box::pin(self.move_session(&mut minion, port, t, carry, &shutdown)).await
            };
            match moved {
                Ok(upstream) => {
                    self.metrics.session_moved(port, MoveHow::Preserved);
                    leaving = port == Port::Publish
                        && self.tunables.borrow().shows_switches()
                        && upstream.0.label(upstream.1) != label;
                    if leaving && closing.is_none() {
                        closing = Some(self.notice.closing());
                    }
                    debug!(port = port.as_str(), %peer, from = label, to = upstream.0.label(upstream.1), cause = cause.as_str(), "session moved to the new master");
                    last_move = Some(Instant::now());
                    next = upstream;
                }
                Err(MoveError::NoMaster) => {
                    self.metrics.reconnect_asked(port, NoticeReason::AllDown);
                    net::reset_on_close(&minion);
                    debug!(port = port.as_str(), %peer, from = label, "every master is down: publish session reset so the minion notices");
                    return;
                }
                Err(e) => {
                    self.metrics.session_moved(port, MoveHow::Reset);
                    net::reset_on_close(&minion);
                    debug!(port = port.as_str(), %peer, from = label, cause = cause.as_str(), error = %e, "session could not be moved; reset");
                    return;
                }
            }
        }
    }

    /// Closes a session that ended without a move, as its end asks, and
    /// counts a session a switch or its master's failure cut.
    #[allow(clippy::too_many_arguments)]
    fn closed(
        &self,
        minion: &TcpStream,
        upstream: &TcpStream,
        plane: &Plane,
        master: MasterId,
        port: Port,
        end: &End,
        shutdown: &CancellationToken,
    ) {
        let cut = match end {
            End::Reset => {
                net::reset_on_close(minion);
                net::reset_on_close(upstream);
                true
            }
            End::MasterError(_) => {
                net::reset_on_close(minion);
                if let Some(h) = plane.health.get(master.index()) {
                    h.reprobe();
                }
                true
            }
            End::MinionError(_) => {
                net::reset_on_close(upstream);
                false
            }
            End::SidecarError(e) => {
                // Our own shortage: counted as such, never the master's
                // failure, and no switch's doing (not a moved-or-reset).
                self.metrics.resources.check(Op::Forward, e);
                net::reset_on_close(minion);
                net::reset_on_close(upstream);
                false
            }
            End::Drained => !shutdown.is_cancelled(),
            // Neither side is waiting for anything: a plain close.
            End::HalfOpen => false,
            End::Closed | End::Move { .. } => false,
        };
        if cut {
            self.metrics.session_moved(port, MoveHow::Reset);
        }
    }
}

/// Reads what the minion has sent so far, without waiting: one poll of the
/// socket through `AsyncRead` (a short read tells tokio it is drained, so
/// the copy's first read waits for new bytes instead of finding `EAGAIN`).
/// An end of stream or an error is left for the copy to find. Not `async`:
/// its buffer would then be part of every session's future (memory per idle
/// connection); a pending poll leaves a no-op waker that the copy's first
/// poll replaces (readiness is kept by tokio, so no event is lost).
fn read_ready(minion: &mut TcpStream, early: &mut Vec<u8>) {
    let mut chunk = [0u8; 2048];
    let mut buf = ReadBuf::new(&mut chunk);
    let mut cx = Context::from_waker(Waker::noop());
    if let Poll::Ready(Ok(())) = Pin::new(minion).poll_read(&mut cx, &mut buf) {
        early.extend_from_slice(buf.filled());
    }
}

/// The `listener` label of a minion port.
fn listener_label(port: Port) -> Listener {
    match port {
        Port::Publish => Listener::Publish,
        Port::Ret => Listener::Ret,
    }
}

/// Sets TCP_NODELAY on a listening socket so that accepted sockets start
/// with it; false if that failed (then each accepted socket needs it).
fn set_listener_nodelay(listener: &TcpListener) -> bool {
    socket2::SockRef::from(listener)
        .set_tcp_nodelay(true)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        assert!(set_listener_nodelay(&listener));
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let _client = client.expect("connect");
        let (stream, _) = accepted.expect("accept");
        assert!(
            stream.nodelay().expect("nodelay"),
            "minion sockets need TCP_NODELAY"
        );
    }
}
