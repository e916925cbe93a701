//! Connecting a session to a master: the route's candidates in order, the
//! pacing of sign-ins or the reconnect jitter for new connections (never
//! for moves), a lingering graceful switch, and what a failed connect tells
//! health.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use super::pace::Pass;
use super::{Forwarder, Upstream};
use crate::config::master::{MasterId, Port};
use crate::control::masters::Plane;
use crate::control::pace;
use crate::control::route::Route;
use crate::control::sessions::SessionTokens;
use crate::limits::Op;
use crate::net::{self, ConnectError};

/// How long to wait before retrying a connect that failed for the
/// sidecar's own exhaustion (EMFILE, ...).
const EXHAUSTED_RETRY: Duration = Duration::from_millis(500);

/// How much longer than its checks a minion's first connection waits for
/// the supervisor's word at an idle sidecar (see `arrive`).
const ARRIVAL_SLACK: Duration = Duration::from_secs(1);

/// What a connection to a master is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Opening {
    /// A new minion connection, accepted at `since`: it may go to the
    /// master a graceful switch is leaving, while that switch waits
    /// ([`Route::linger`]); after a switch it is paced (a sign-in).
    New { since: Instant },
    /// A session moving away from its master: never back to the one it
    /// leaves, and never delayed by the reconnect jitter: the minion keeps
    /// its connection and hears nothing meanwhile (a PUB queues nothing for
    /// a subscriber that is not connected yet), and a move is no sign-in
    /// (the minion signs in over a *new* request connection, when it first
    /// fails to decrypt the new master's publication: that one is jittered).
    Move,
}

/// How one connect attempt to a master ended.
pub(super) enum Attempt {
    Connected(TcpStream, SessionTokens),
    /// The master failed (health was told), or the route moved on.
    Failed,
    /// The sidecar ran out (EMFILE, ...): not the master's fault.
    Exhausted,
}

impl Forwarder {
    /// Connects to the first candidate that answers. While none is
    /// selected, or every candidate fails, the minion's connection is held
    /// and retried when the route changes (a publish connection with
    /// `salt_events` is not: `None`, as at shutdown).
    pub(super) async fn connect_upstream(&self, port: Port, opening: Opening) -> Option<Upstream> {
        // Holding, not closing: a closed connection makes libzmq reconnect
        // ~20 times a second, and each retry would become connects to masters
        // that are trying to recover.
        let mut route = self.route.clone();
        if let Opening::New { .. } = opening {
            self.arrive(&mut route).await;
        }
        loop {
            if route.borrow().active.is_none() && self.refuses(port).is_some() {
                // `salt_events`: a publish connection is not held while
                // every master is down; the minion's alive check must see
                // it gone (`notice`).
                return None;
            }
            if route.borrow().active.is_none() {
                debug!(
                    port = port.as_str(),
                    "holding the minion connection until a master is up"
                );
            }
            let (after, (reauth_by, pace_until), linger, candidates, plane) =
                match route.wait_for(|r| r.active.is_some()).await {
                    Ok(r) => (
                        r.connect_after,
                        (r.reauth_by, r.pace_until),
                        r.linger,
                        r.candidates().collect::<Vec<MasterId>>(),
                        r.plane.clone(),
                    ),
                    Err(_) => return None,
                };
            // A graceful switch still waiting for its sessions to move: to
            // the master it is leaving, at once (the jitter spreads minions
            // over the new master; this one is still serving them).
            if let (Some(m), Opening::New { .. }) = (linger, opening) {
                match self.try_master(&plane, m, port).await {
                    Attempt::Connected(stream, tokens) => return Some((plane, m, stream, tokens)),
                    Attempt::Failed | Attempt::Exhausted => {}
                }
            }
            // After a switch, for new connections only: a ZeroMQ sign-in
            // is paced by the new master's answers (`pace`), a tcp one
            // waits the reconnect jitter; a route that changed meanwhile
            // (another switch, an idle sidecar going back to its first
            // master) is read again.
            match (opening, self.paced(port), candidates.first()) {
                (Opening::New { since }, Some(true), Some(&m)) if pace_until > Instant::now() => {
                    tokio::select! {
                        pass = self.pace(&plane, m, (reauth_by, pace_until), since) => {
                            if pass == Pass::Stale {
                                // Held: the minion gives up on it and sends
                                // it again (the caller drops this one when
                                // it closes); sent late if it does not.
                                tokio::select! {
                                    () = tokio::time::sleep_until(since + pace::SEND_STALE_AFTER) => {}
                                    _ = route.changed() => continue,
                                }
                            }
                        }
                        _ = route.changed() => continue,
                    }
                }
                (Opening::New { .. }, None, _) if after > Instant::now() => {
                    tokio::time::sleep_until(after).await;
                    if route.has_changed().unwrap_or(false) {
                        continue;
                    }
                }
                _ => {}
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

    /// A new minion connection while the sidecar is idle: the minion is
    /// starting. The supervisor first checks the masters ranked before the
    /// active one (`Route::idle`); this waits for it, at most
    /// `connect_timeout` (its checks' limit) and [`ARRIVAL_SLACK`].
    async fn arrive(&self, route: &mut watch::Receiver<Route>) {
        let plane = {
            let r = route.borrow_and_update();
            if !r.idle {
                return;
            }
            r.plane.clone()
        };
        plane.sessions.open().arrive();
        let limit = self.tunables.borrow().connect_timeout + ARRIVAL_SLACK;
        if tokio::time::timeout(limit, route.wait_for(|r| !r.idle))
            .await
            .is_err()
        {
            debug!("a minion connection arrived at an idle sidecar; the supervisor did not answer in time: going on");
        }
    }

    /// Sets the forwarding socket options (keepalive, user timeout) on a
    /// connected upstream; the caller does it once the first bytes are sent.
    pub(super) fn configure(&self, upstream: &TcpStream, plane: &Plane, m: MasterId) {
        let socket_options = self.tunables.borrow().socket_options;
        if let Err(e) = net::configure(upstream, &socket_options) {
            debug!(master = plane.label(m), error = %e, "could not set upstream socket options");
        }
    }

    /// One connect attempt to master `m` for a session on `port`.
    /// The stream comes back without the forwarding socket options
    /// ([`Forwarder::configure`]).
    pub(super) async fn try_master(&self, plane: &Plane, m: MasterId, port: Port) -> Attempt {
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
