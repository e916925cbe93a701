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

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, Interest, ReadBuf};
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
use crate::data::rejoin::{rejoin, RejoinError};
use crate::data::track::Tracks;
use crate::limits::{Listener, Op};
use crate::metrics::{Metrics, MoveHow};
use crate::net::{self, ConnectError};

/// Accept queue length asked of the kernel for the minion listeners.
const ACCEPT_BACKLOG: i32 = 8192;

/// A connected upstream: the plane, the master, the socket, its session tokens.
type Upstream = (Arc<Plane>, MasterId, TcpStream, SessionTokens);

/// Bytes a minion may send while its connection waits for a route; they
/// are forwarded first once connected. A ZMTP greeting is 64 bytes, a Salt
/// tcp-transport request a few hundred; beyond this the minion waits on TCP.
const EARLY_MAX: usize = 16 * 1024;
/// How often a held connection whose early buffer is full is checked for a
/// close (it can no longer be read to notice one).
const FULL_HOLD_CHECK: Duration = Duration::from_secs(1);
/// How long to wait before retrying a connect that failed for the
/// sidecar's own exhaustion (EMFILE, ...).
const EXHAUSTED_RETRY: Duration = Duration::from_millis(500);

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
}

/// How long a newcomer waits for the slot of the connection it evicted.
const EVICT_WAIT: Duration = Duration::from_millis(500);

/// A second loss of the upstream this soon after a move resets the session.
const RELOSS_WINDOW: Duration = Duration::from_secs(1);

/// Connect-and-handshake attempts when moving a session.
const REJOIN_ATTEMPTS: u32 = 3;

/// Why a session could not be moved to the new master (it is reset).
#[derive(Debug, thiserror::Error)]
enum MoveError {
    #[error("the sidecar is stopping")]
    Shutdown,
    #[error("the minion closed its connection while waiting for a master")]
    MinionClosed,
    #[error("the new master dropped the session again within a second")]
    Looping,
    #[error("handshake with the new master: {0}")]
    Rejoin(#[from] RejoinError),
    #[error("sending to the new master: {0}")]
    Io(std::io::Error),
}

/// What a connection to a master is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opening {
    /// A new minion connection: it may go to the master a graceful switch
    /// is leaving, while that switch waits ([`Route::linger`]).
    New,
    /// A session moving away from its master: never back to the one it
    /// leaves, and never delayed by the reconnect jitter: the minion keeps
    /// its connection and hears nothing meanwhile (a PUB queues nothing for
    /// a subscriber that is not connected yet), and a move is no sign-in
    /// (the minion signs in over a *new* request connection, when it first
    /// fails to decrypt the new master's publication: that one is jittered).
    Move,
}

/// How one connect attempt to a master ended.
enum Attempt {
    Connected(TcpStream, SessionTokens),
    /// The master failed (health was told), or the route moved on.
    Failed,
    /// The sidecar ran out (EMFILE, ...): not the master's fault.
    Exhausted,
}

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
        let mut early = Vec::new();
        let connect = Box::pin(self.connect_upstream(port, Opening::New));
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
                        if introduced(&t.up) {
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
            };
            let end = duplex::run(&mut minion, &mut upstream, ctl, tracks.as_deref_mut()).await;
            counters.active.dec();
            let (cause, carry) = match end {
                End::Move { cause, carry } => (cause, carry),
                end => {
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
                    debug!(port = port.as_str(), %peer, from = label, to = upstream.0.label(upstream.1), cause = cause.as_str(), "session moved to the new master");
                    last_move = Some(Instant::now());
                    next = upstream;
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
            End::Drained => !shutdown.is_cancelled(),
            // Neither side is waiting for anything: a plain close.
            End::HalfOpen => false,
            End::Closed | End::Move { .. } => false,
        };
        if cut {
            self.metrics.session_moved(port, MoveHow::Reset);
        }
    }

    /// Opens a moving session on the master the route now names: connect
    /// (the same path and fallbacks as a new session, at once: no jitter;
    /// the minion's connection held meanwhile), replay the minion's handshake and
    /// subscriptions, then send the minion's bytes the old master did not
    /// get. Reads nothing from the minion but what it sends while waiting.
    async fn move_session(
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
                c = connect => c.ok_or(MoveError::Shutdown)?,
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

    /// Connects to the first candidate that answers. While none is
    /// selected, or every candidate fails, the minion's connection is held
    /// and retried when the route changes; `None` only at shutdown.
    async fn connect_upstream(&self, port: Port, opening: Opening) -> Option<Upstream> {
        // Holding, not closing: a closed connection makes libzmq reconnect
        // ~20 times a second, and each retry would become connects to masters
        // that are trying to recover.
        let mut route = self.route.clone();
        loop {
            if route.borrow().active.is_none() {
                debug!(
                    port = port.as_str(),
                    "holding the minion connection until a master is up"
                );
            }
            let (after, linger, candidates, plane) =
                match route.wait_for(|r| r.active.is_some()).await {
                    Ok(r) => (
                        r.connect_after,
                        r.linger,
                        r.candidates().collect::<Vec<MasterId>>(),
                        r.plane.clone(),
                    ),
                    Err(_) => return None,
                };
            // A graceful switch still waiting for its sessions to move: to
            // the master it is leaving, at once (the jitter spreads minions
            // over the new master; this one is still serving them).
            if let (Some(m), Opening::New) = (linger, opening) {
                match self.try_master(&plane, m, port).await {
                    Attempt::Connected(stream, tokens) => return Some((plane, m, stream, tokens)),
                    Attempt::Failed | Attempt::Exhausted => {}
                }
            }
            // Reconnect jitter after a switch, for new connections only;
            // a route that changed meanwhile (another switch, an idle
            // sidecar going back to its first master) is read again.
            if opening == Opening::New && after > Instant::now() {
                tokio::time::sleep_until(after).await;
                if route.has_changed().unwrap_or(false) {
                    continue;
                }
            }
            let mut exhausted = false;
            for m in candidates {
                match self.try_master(&plane, m, port).await {
                    Attempt::Connected(stream, tokens) => return Some((plane, m, stream, tokens)),
                    Attempt::Failed => {}
                    Attempt::Exhausted => {
                        exhausted = true;
                        break;
                    }
                }
            }
            if exhausted {
                // Our own shortage: the route stays, the master is not
                // blamed; try again shortly, still holding the minion.
                tokio::time::sleep(EXHAUSTED_RETRY).await;
                continue;
            }
            // Every candidate failed; each failure told health, which will
            // change the route shortly. Hold the connection until it does.
            debug!(
                port = port.as_str(),
                "no master reachable; holding the minion connection until the route changes"
            );
            route.changed().await.ok()?;
        }
    }

    /// Sets the forwarding socket options (keepalive, user timeout) on a
    /// connected upstream; the caller does it once the first bytes are sent.
    fn configure(&self, upstream: &TcpStream, plane: &Plane, m: MasterId) {
        let socket_options = self.tunables.borrow().socket_options;
        if let Err(e) = net::configure(upstream, &socket_options) {
            debug!(master = plane.label(m), error = %e, "could not set upstream socket options");
        }
    }

    /// One connect attempt to master `m` for a session on `port`.
    /// The stream comes back without the forwarding socket options
    /// ([`Forwarder::configure`]).
    async fn try_master(&self, plane: &Plane, m: MasterId, port: Port) -> Attempt {
        let Some(spec) = plane.masters.get(m.index()) else {
            return Attempt::Failed;
        };
        // Register before connecting, then re-check the route: a switch
        // publishes the route before closing sessions, so a session that
        // slipped past the close sees the change here.
        let tokens = plane.sessions.join(m);
        let still = {
            let r = self.route.borrow();
            r.plane.generation == plane.generation && r.allows(m)
        };
        if !still {
            return Attempt::Failed;
        }
        let addrs = plane
            .addrs
            .get(m.index())
            .map(|a| a.borrow().clone())
            .unwrap_or_default();
        let connect_timeout = self.tunables.borrow().connect_timeout;
        let started = Instant::now();
        let connected = tokio::select! {
            c = net::connect(&addrs, spec.port(port), connect_timeout) => c,
            _ = tokens.reset.cancelled() => return Attempt::Failed,
        };
        match connected {
            Ok(stream) => {
                self.metrics
                    .upstream_connect_duration_seconds
                    .with_label_values(&[spec.label.as_str()])
                    .observe(started.elapsed().as_secs_f64());
                Attempt::Connected(stream, tokens)
            }
            Err(ConnectError::Io { source, .. })
                if self.metrics.resources.check(Op::Connect, &source).is_some() =>
            {
                Attempt::Exhausted
            }
            Err(e) => {
                self.metrics
                    .upstream_connect_errors_total
                    .with_label_values(&[spec.label.as_str(), e.kind().as_str()])
                    .inc();
                debug!(master = %spec.label, port = port.as_str(), error = %e, "upstream connect failed; trying the next master");
                if let Some(h) = plane.health.get(m.index()) {
                    h.suspect();
                }
                Attempt::Failed
            }
        }
    }
}

/// Resolves when the minion has closed (or reset) its connection, reading
/// what it sends meanwhile into `early` (up to [`EARLY_MAX`]) so the socket's
/// readiness is consumed and a later close is seen at once. Reads through
/// `AsyncRead`: a short read clears the readiness, so the usual first
/// request (one read) costs no second `recv` that would only say `EAGAIN`.
async fn minion_closed(minion: &mut TcpStream, early: &mut Vec<u8>) {
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

/// A followed minion stream has introduced itself: its ZMTP greeting and
/// READY have passed, or it is no ZMTP stream at all (Salt's tcp
/// transport), whose first bytes are its first request. Until then, at the
/// session cap, it may give its slot to a newcomer (`data::admit`).
pub fn introduced(up: &crate::data::track::Track) -> bool {
    up.handshaken() || up.unmovable().is_some()
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
