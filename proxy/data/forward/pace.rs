//! Pacing the minion's sign-in after a switch (ZeroMQ ret connections):
//! the sidecar asks the new master a clear Salt `ping` and lets the new
//! connection through once the master answers in time, or at the bound
//! (`random_reauth_delay` after the switch). `control::pace` decides; this
//! module asks, waits, counts and logs.
//!
//! One asker at a time per sidecar: other new connections wait for its
//! verdict, and once the gate is open for a switch every new connection
//! goes at once (a minion signs in once; its later connections are
//! returns). One log line per switch that paced anything.

use tokio::sync::Mutex;
use tokio::time::{sleep_until, Instant};
use tracing::info;

use super::Forwarder;
use crate::config::master::{MasterId, Port};
use crate::config::Transport;
use crate::control::masters::Plane;
use crate::control::pace::{self, Answer, Next};
use crate::metrics::{PaceAsk, PaceOutcome};
use crate::zmtp::probe::PingLine;

/// The gate of the last switch.
#[derive(Debug, Default)]
pub struct Pacer {
    /// The bound (`Route::reauth_by`) of the switch whose gate is open.
    opened: Mutex<Option<Instant>>,
}

impl Forwarder {
    /// Whether a new connection on `port` is paced by the new master's
    /// answers (a ZeroMQ ret connection: a sign-in) instead of waiting the
    /// reconnect jitter. A ZeroMQ publish connection waits for neither: it
    /// costs the master a handshake, and the minion opens it only after
    /// its sign-in. (tcp transport: both ports keep the jitter; a 3008
    /// tcp master can wedge on early requests, see `probe::PingLine`.)
    pub(super) fn paced(&self, port: Port) -> Option<bool> {
        self.tunables
            .borrow()
            .moves_sessions()
            .then_some(port == Port::Ret)
    }

    /// Returns once a sign-in may go to `m`, the new master of the switch
    /// whose bound is `by`.
    pub(super) async fn pace(&self, plane: &Plane, m: MasterId, by: Instant) {
        let mut opened = self.pacer.opened.lock().await;
        if *opened == Some(by) || Instant::now() >= by {
            return;
        }
        let started = Instant::now();
        let outcome = self.until_answered(plane, m, by).await;
        *opened = Some(by);
        let waited = started.elapsed();
        let label = plane.label(m);
        self.metrics
            .sign_ins_paced_total
            .with_label_values(&[label, outcome.as_str()])
            .inc();
        self.metrics
            .sign_in_pace_wait_seconds
            .observe(waited.as_secs_f64());
        info!(
            master = label,
            outcome = outcome.as_str(),
            waited_ms = waited.as_millis() as u64,
            "sign-ins let through to the new master"
        );
    }

    async fn until_answered(&self, plane: &Plane, m: MasterId, by: Instant) -> PaceOutcome {
        let mut rng = fastrand::Rng::new();
        sleep_until((Instant::now() + pace::first_wait(rng.f64())).min(by)).await;
        let mut slow = 0u32;
        loop {
            let now = Instant::now();
            if now >= by {
                return PaceOutcome::Bound;
            }
            let answer = self.ask(plane, m, (by - now).min(pace::ASK_LIMIT)).await;
            match pace::after_ask(answer, slow, rng.f64()) {
                Next::Go if slow == 0 => return PaceOutcome::AtOnce,
                Next::Go => return PaceOutcome::Paced,
                Next::Wait(d) => {
                    slow += 1;
                    sleep_until((Instant::now() + d).min(by)).await;
                }
            }
        }
    }

    /// One clear `ping` to `m`'s ret port on a fresh connection, within
    /// `limit`.
    async fn ask(&self, plane: &Plane, m: MasterId, limit: std::time::Duration) -> Answer {
        let addrs = plane
            .addrs
            .get(m.index())
            .map(|a| a.borrow().to_vec())
            .unwrap_or_default();
        let Some(spec) = plane.masters.get(m.index()) else {
            return Answer {
                answered: false,
                took: limit,
            };
        };
        let handshake = self.tunables.borrow().connect_timeout;
        let started = Instant::now();
        let mut line = PingLine::default();
        let answered = line
            .ping(Transport::Zeromq, &addrs, spec.ret_port, handshake, limit)
            .await
            .is_ok();
        line.close();
        let took = started.elapsed();
        let result = match (answered, took <= pace::TARGET) {
            (true, true) => PaceAsk::Fast,
            (true, false) => PaceAsk::Slow,
            (false, _) => PaceAsk::Unanswered,
        };
        self.metrics
            .sign_in_pace_asks_total
            .with_label_values(&[spec.label.as_str(), result.as_str()])
            .inc();
        Answer { answered, took }
    }
}
