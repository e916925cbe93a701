//! What a master's live minion sessions say about it, so that its health
//! task need not open a probe connection of its own (a fleet is cheap for
//! its masters).
//!
//! Per master and port, an [`Evidence`] keeps when the master was last
//! *heard* on a live session: the copy loop stamps it on every read from the
//! master (one clock read and one relaxed store, no allocation, no system
//! call), so an answered request, a publication or any ZMTP traffic counts.
//! When the sessions have been quiet, the health task asks them for a
//! **ZMTP PING** ([`Evidence::ask`]): every followed session of that port is
//! woken, the first one that can carry it (both peers ZMTP ≥ 3.1, both
//! directions handshaken, between two messages of the minion and with
//! nothing unsent either way) claims it ([`Evidence::claim`]) and writes a
//! 9-byte PING command (TTL 0: the master arms no timer) towards the master
//! at that boundary. The master's libzmq answers PONG from its I/O thread —
//! no new connection, no handshake, no Python — and the PONG is passed on
//! to the minion, whose libzmq ignores an unsolicited PONG. Any bytes from
//! the master after the ask count as the answer. A session registers for
//! the life of its copy ([`Evidence::register`]); with none registered, or
//! none able to carry a PING, the health task probes as before.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::master::Port;

/// The ZMTP 3.1 PING command the sessions inject: flags (command), size 7,
/// then `\x04PING` and a TTL of 0 (tenths of a second; 0: the master sets
/// no TTL timer, so a late next PING never closes the session).
pub const PING: [u8; 9] = [0x04, 0x07, 0x04, b'P', b'I', b'N', b'G', 0x00, 0x00];

/// One master's evidence on one port. See the module doc.
#[derive(Debug)]
pub struct Evidence {
    epoch: Instant,
    /// µs since `epoch` plus one of the last read from the master on any
    /// live session of this port; 0: never.
    heard_us: AtomicU64,
    /// The latest PING request (a sequence number; 0: none yet).
    asked: AtomicU64,
    /// The latest request a session has claimed.
    claimed: AtomicU64,
    /// Wakes the sessions for a request.
    ask: Notify,
    /// Wakes the health task: a session that sent a PING read from the
    /// master since.
    heard: Notify,
    /// Live sessions registered on this port.
    sessions: AtomicUsize,
}

impl Default for Evidence {
    fn default() -> Self {
        Evidence {
            epoch: Instant::now(),
            heard_us: AtomicU64::new(0),
            asked: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            ask: Notify::new(),
            heard: Notify::new(),
            sessions: AtomicUsize::new(0),
        }
    }
}

/// A session's registration with its master's [`Evidence`]: counted while
/// it lives.
#[derive(Debug)]
pub struct Registered<'a>(&'a Evidence);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What became of a PING request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PingOutcome {
    /// The master was heard after the request (its PONG, or anything).
    Answered,
    /// A session sent the PING and the master said nothing within the bound.
    Unanswered,
    /// No session could carry it (mid-message, ZMTP 3.0, none open).
    NotSent,
}

impl Evidence {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }

    /// The master's bytes were read on a live session (the copy loop, per
    /// read): one clock read, one relaxed store.
    #[inline]
    pub fn heard(&self) {
        self.heard_us.store(self.now_us(), Ordering::Relaxed);
    }

    /// A session that sent a PING read the master's next bytes: wakes the
    /// health task waiting for the answer (once per PING, not per read).
    pub fn answered(&self) {
        self.heard();
        self.heard.notify_waiters();
    }

    /// When the master was last heard on a live session of this port.
    pub fn last_heard(&self) -> Option<Instant> {
        match self.heard_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(self.epoch + Duration::from_micros(us - 1)),
        }
    }

    /// Heard after `t`?
    pub fn heard_since(&self, t: Instant) -> bool {
        self.last_heard().is_some_and(|h| h > t)
    }

    /// Registers a live session (for as long as the guard lives).
    pub fn register(&self) -> Registered<'_> {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        Registered(self)
    }

    /// Live sessions registered on this port.
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Resolves when the health task asks for a PING (sessions wait on it).
    pub async fn asked(&self) {
        self.ask.notified().await
    }

    /// Claims the latest request for this session: true for exactly one
    /// claimant per request (the session then sends the PING).
    pub fn claim(&self) -> bool {
        let asked = self.asked.load(Ordering::Relaxed);
        asked != 0 && self.claimed.fetch_max(asked, Ordering::Relaxed) < asked
    }

    /// Asks the sessions of this port for one PING and waits, up to
    /// `bound`, for the master to be heard after it. Gives up early
    /// (`NotSent`) when no session claimed it within `claim_bound`.
    pub async fn ping(&self, bound: Duration, claim_bound: Duration) -> PingOutcome {
        let start = Instant::now();
        let seq = self.asked.fetch_add(1, Ordering::Relaxed) + 1;
        let heard = self.heard.notified();
        tokio::pin!(heard);
        heard.as_mut().enable();
        self.ask.notify_waiters();
        let step = claim_bound.max(Duration::from_millis(1));
        loop {
            if self.heard_since(start) {
                return PingOutcome::Answered;
            }
            let elapsed = start.elapsed();
            let claimed = self.claimed.load(Ordering::Relaxed) >= seq;
            if !claimed && elapsed >= claim_bound {
                return PingOutcome::NotSent;
            }
            if elapsed >= bound {
                return if claimed {
                    PingOutcome::Unanswered
                } else {
                    PingOutcome::NotSent
                };
            }
            let wait = step.min(bound - elapsed);
            tokio::select! {
                _ = heard.as_mut() => {
                    heard.set(self.heard.notified());
                    heard.as_mut().enable();
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// A master's evidence on both ports.
#[derive(Debug, Default)]
pub struct PortsEvidence {
    publish: Evidence,
    ret: Evidence,
}

impl PortsEvidence {
    pub fn port(&self, port: Port) -> &Evidence {
        match port {
            Port::Publish => &self.publish,
            Port::Ret => &self.ret,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn heard_is_remembered_and_compared() {
        let ev = Evidence::default();
        assert_eq!(ev.last_heard(), None);
        let before = Instant::now();
        tokio::time::advance(Duration::from_millis(10)).await;
        ev.heard();
        assert!(ev.heard_since(before));
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(!ev.heard_since(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn one_claimant_per_request_and_registrations_are_counted() {
        let ev = Evidence::default();
        assert!(!ev.claim(), "nothing asked");
        let (a, b) = (ev.register(), ev.register());
        assert_eq!(ev.sessions(), 2);
        drop(a);
        assert_eq!(ev.sessions(), 1);
        let waiting = ev.ping(Duration::from_millis(100), Duration::from_millis(20));
        tokio::pin!(waiting);
        // Not claimed: gives up after the claim bound.
        assert_eq!(waiting.await, PingOutcome::NotSent);
        assert!(ev.claim(), "the request is still there to claim");
        assert!(!ev.claim(), "once");
        drop(b);
    }

    #[tokio::test(start_paused = true)]
    async fn a_claimed_ping_is_answered_by_the_master_or_not() {
        let ev = std::sync::Arc::new(Evidence::default());
        let session = ev.clone();
        let answering = tokio::spawn(async move {
            session.asked().await;
            assert!(session.claim());
            tokio::time::sleep(Duration::from_millis(3)).await;
            session.answered();
        });
        tokio::task::yield_now().await;
        let out = ev
            .ping(Duration::from_millis(500), Duration::from_millis(20))
            .await;
        assert_eq!(out, PingOutcome::Answered);
        answering.await.expect("session");

        let session = ev.clone();
        let silent = tokio::spawn(async move {
            session.asked().await;
            assert!(session.claim());
        });
        tokio::task::yield_now().await;
        let start = Instant::now();
        let out = ev
            .ping(Duration::from_millis(500), Duration::from_millis(20))
            .await;
        assert_eq!(out, PingOutcome::Unanswered);
        assert!(start.elapsed() >= Duration::from_millis(500));
        silent.await.expect("session");
    }
}
