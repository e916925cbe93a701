//! The minion-facing listeners: accept, pick an upstream, copy bytes.
//!
//! Each accepted connection reads the current [`Route`] (waiting, connection
//! held open, while no master is up), waits out the reconnect jitter, and
//! connects to the active master — or, if that master refuses or times out,
//! to the next candidate, inside the same minion connection (a failed connect
//! also tells `health`). Bytes are then copied
//! by [`duplex`]. Layer 4 only: payload is never decoded. Logs per session
//! at debug level only; state changes are the supervisor's to log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::master::{MasterId, Port};
use crate::config::settings::Tunables;
use crate::control::masters::Plane;
use crate::control::route::Route;
use crate::control::sessions::SessionTokens;
use crate::data::duplex::{self, End};
use crate::metrics::Metrics;
use crate::net;

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
                    if !inherits_nodelay {
                        let _ = stream.set_nodelay(true);
                    }
                    let fwd = self.clone();
                    let token = token.clone();
                    tracker.spawn(async move { fwd.session(stream, peer, port, token).await });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(port = port.as_str(), error = %e, "accept failed; retrying in 100 ms");
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    }

    async fn session(
        &self,
        mut minion: TcpStream,
        peer: SocketAddr,
        port: Port,
        shutdown: CancellationToken,
    ) {
        // Boxed: the connect phase (route wait, jitter, connect timeout) is
        // larger than the copy phase and would otherwise size the future an
        // idle session keeps for its whole life.
        let connect = Box::pin(self.connect_upstream(port));
        let Some((plane, master, mut upstream, tokens)) = (tokio::select! {
            _ = shutdown.cancelled() => None,
            c = connect => c,
        }) else {
            return;
        };
        let label = plane.label(master);
        let counters = self.metrics.session(label, port);
        self.metrics
            .sessions_total
            .with_label_values(&[label, port.as_str()])
            .inc();
        counters.active.inc();
        debug!(port = port.as_str(), %peer, master = label, "session open");

        let ctl = duplex::Control {
            port,
            tokens: &tokens,
            // Shutdown of the sidecar drains like a failback does.
            shutdown: &shutdown,
            drain_timeout: self.tunables.borrow().drain_timeout,
            to_master: &counters.to_master,
            to_minion: &counters.to_minion,
        };
        let end = duplex::run(&mut minion, &mut upstream, ctl).await;
        counters.active.dec();
        match &end {
            End::Reset => {
                net::reset_on_close(&minion);
                net::reset_on_close(&upstream);
            }
            End::MasterError(_) => {
                net::reset_on_close(&minion);
                if let Some(h) = plane.health.get(master.index()) {
                    h.reprobe();
                }
            }
            End::MinionError(_) => net::reset_on_close(&upstream),
            End::Closed | End::Drained => {}
        }
        debug!(port = port.as_str(), %peer, master = label, end = ?end, "session closed");
    }

    /// Connects to the first candidate that answers. While none is
    /// selected, or every candidate fails, the minion's connection is held
    /// and retried when the route changes; `None` only at shutdown.
    async fn connect_upstream(&self, port: Port) -> Option<Upstream> {
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
            let (after, candidates, plane) = match route.wait_for(|r| r.active.is_some()).await {
                Ok(r) => (
                    r.connect_after,
                    r.candidates().collect::<Vec<MasterId>>(),
                    r.plane.clone(),
                ),
                Err(_) => return None,
            };
            // Reconnect jitter after a switch.
            if after > Instant::now() {
                tokio::time::sleep_until(after).await;
            }
            for m in candidates {
                if let Some((stream, tokens)) = self.try_master(&plane, m, port).await {
                    return Some((plane, m, stream, tokens));
                }
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

    /// One connect attempt to master `m` for a session on `port`.
    async fn try_master(
        &self,
        plane: &Plane,
        m: MasterId,
        port: Port,
    ) -> Option<(TcpStream, SessionTokens)> {
        let spec = plane.masters.get(m.index())?;
        // Register before connecting, then re-check the route: a switch
        // publishes the route before closing sessions, so a session that
        // slipped past the close sees the change here.
        let tokens = plane.sessions.join(m);
        let still = {
            let r = self.route.borrow();
            r.plane.generation == plane.generation && r.allows(m)
        };
        if !still {
            return None;
        }
        let addrs = plane
            .addrs
            .get(m.index())
            .map(|a| a.borrow().clone())
            .unwrap_or_default();
        let (connect_timeout, socket_options) = {
            let t = self.tunables.borrow();
            (t.connect_timeout, t.socket_options)
        };
        let started = Instant::now();
        let connected = tokio::select! {
            c = net::connect(&addrs, spec.port(port), connect_timeout) => c,
            _ = tokens.reset.cancelled() => return None,
        };
        match connected {
            Ok(stream) => {
                self.metrics
                    .upstream_connect_duration_seconds
                    .with_label_values(&[spec.label.as_str()])
                    .observe(started.elapsed().as_secs_f64());
                if let Err(e) = net::configure(&stream, &socket_options) {
                    debug!(master = %spec.label, error = %e, "could not set upstream socket options");
                }
                Some((stream, tokens))
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
                None
            }
        }
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
