//! Unanswered requests on ret sessions: the passive half of hung-master
//! detection on both transports (`sidecar.ret_answer_timeout`).
//!
//! A ret session is request → reply (ZeroMQ REQ → ROUTER: one reply per
//! request; Salt's tcp transport likewise). Its copy loop stamps an
//! [`AnswerClock`]: a request sent after the master last answered starts
//! the clock, the master's answer stops it (one relaxed load or store per
//! read, no allocation). A ZeroMQ session is stamped per message, as its
//! tracker sees them go by: a whole data message to the master starts it,
//! data from the master stops it, heartbeats do neither. A tcp-transport
//! session is stamped per read: minion bytes start it, master bytes stop it. Each master keeps a list
//! of its sessions' clocks ([`Answers`]); its health task scans it and,
//! when a request has waited longer than the bound, suspects the master
//! and re-probes it (`health`). Each master also remembers when it last
//! answered any of its sessions ([`Answers::answered_since`]): a master that
//! answers other minions is busy, not stuck. Payload is never decoded on the
//! copy path. No I/O, no logging.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// One ret session's request clock: since when a request has been waiting
/// for the master's first byte back.
#[derive(Debug)]
pub struct AnswerClock {
    /// The master's shared epoch and last answer.
    heard: Arc<Heard>,
    /// µs since `start` plus one when the oldest unanswered request's first
    /// bytes were read; 0: nothing is waiting.
    asked_us: AtomicU64,
    /// The `asked_us` a suspicion was already raised for (one per wait).
    suspected_us: AtomicU64,
    /// Asks the session to look at its flow: its request waits past the
    /// bound although the master answers on a fresh connection.
    recheck: Notify,
}

impl AnswerClock {
    fn new(heard: Arc<Heard>) -> Self {
        AnswerClock {
            heard,
            asked_us: AtomicU64::new(0),
            suspected_us: AtomicU64::new(0),
            recheck: Notify::new(),
        }
    }

    /// Resolves when the health task asks this session to check its flow
    /// ([`Answers::recheck_overdue`]).
    pub async fn recheck_requested(&self) {
        self.recheck.notified().await
    }

    /// How long the oldest request has waited at `now`, if one is waiting.
    fn waiting(&self, now: Instant) -> Option<Duration> {
        let asked = self.asked_us.load(Ordering::Relaxed);
        (asked != 0).then(|| now.saturating_duration_since(self.heard.at(asked)))
    }

    /// The minion sent bytes to the master: starts the clock unless a
    /// request is already waiting (the oldest one counts).
    #[inline]
    pub fn asked(&self) {
        if self.asked_us.load(Ordering::Relaxed) == 0 {
            self.asked_us.store(self.heard.now_us(), Ordering::Relaxed);
        }
    }

    /// The master sent bytes to the minion: nothing is waiting. The first
    /// answer to a request also marks the master as heard (one clock read
    /// per request, none per read).
    #[inline]
    pub fn answered(&self) {
        if self.asked_us.load(Ordering::Relaxed) != 0 {
            self.asked_us.store(0, Ordering::Relaxed);
            self.heard
                .last_us
                .fetch_max(self.heard.now_us(), Ordering::Relaxed);
        }
    }

    /// When the oldest request reaches `bound`, if one is waiting and no
    /// suspicion was raised for it yet.
    fn due(&self, bound: Duration) -> Option<Instant> {
        let asked = self.asked_us.load(Ordering::Relaxed);
        (asked != 0 && self.suspected_us.load(Ordering::Relaxed) != asked)
            .then(|| self.heard.at(asked) + bound)
    }

    /// How long the oldest request has waited at `now`, if one is waiting
    /// and no suspicion was raised for it yet; marks it suspected when it
    /// has waited at least `bound`.
    fn overdue(&self, now: Instant, bound: Duration) -> Option<Duration> {
        let asked = self.asked_us.load(Ordering::Relaxed);
        if self.suspected_us.load(Ordering::Relaxed) == asked {
            return None;
        }
        let waited = self.waiting(now).filter(|w| *w >= bound)?;
        self.suspected_us.store(asked, Ordering::Relaxed);
        Some(waited)
    }
}

/// When a master last answered a request, on any of its sessions: µs since
/// `epoch` plus one (0: never). Shared by its sessions' clocks, whose
/// stamps count from the same epoch.
#[derive(Debug)]
struct Heard {
    epoch: Instant,
    last_us: AtomicU64,
}

impl Heard {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }

    /// The instant of a stamp taken by [`Heard::now_us`].
    fn at(&self, us: u64) -> Instant {
        self.epoch + Duration::from_micros(us.saturating_sub(1))
    }
}

impl Default for Heard {
    fn default() -> Self {
        Heard {
            epoch: Instant::now(),
            last_us: AtomicU64::new(0),
        }
    }
}

/// The request clocks of one master's open ret sessions.
#[derive(Debug, Default)]
pub struct Answers {
    clocks: Mutex<Vec<Weak<AnswerClock>>>,
    heard: Arc<Heard>,
}

impl Answers {
    /// Has the master answered a request, on any session, at or after
    /// `asked`? (A master that answers other minions while one request
    /// waits is busy, not stuck.)
    pub fn answered_since(&self, asked: Instant) -> bool {
        let last = self.heard.last_us.load(Ordering::Relaxed);
        last != 0 && self.heard.at(last) >= asked
    }

    /// A clock for a new ret session; dropped with the session (the list
    /// forgets it at the next scan).
    pub fn clock(&self) -> Arc<AnswerClock> {
        let clock = Arc::new(AnswerClock::new(self.heard.clone()));
        if let Ok(mut clocks) = self.clocks.lock() {
            clocks.push(Arc::downgrade(&clock));
        }
        clock
    }

    /// The longest wait among requests that have waited at least `bound`
    /// and were not suspected before (each is marked suspected); forgets
    /// the clocks of closed sessions.
    pub fn overdue(&self, bound: Duration) -> Option<Duration> {
        let now = Instant::now();
        let mut clocks = self.clocks.lock().ok()?;
        let mut worst = None;
        clocks.retain(|weak| match weak.upgrade() {
            Some(clock) => {
                if let Some(w) = clock.overdue(now, bound) {
                    worst = worst.max(Some(w));
                }
                true
            }
            None => false,
        });
        worst
    }

    /// The earliest instant a request waiting now (and not suspected yet)
    /// reaches `bound`; `None` while no request waits.
    pub fn next_due(&self, bound: Duration) -> Option<Instant> {
        let clocks = self.clocks.lock().ok()?;
        clocks
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|clock| clock.due(bound))
            .min()
    }

    /// Asks every session whose request has waited at least `bound` to
    /// check its flow: the master answered a `ping` on a fresh connection,
    /// so a request still unanswered may sit in a dead flow. Returns how
    /// many were asked.
    pub fn recheck_overdue(&self, bound: Duration) -> usize {
        let now = Instant::now();
        let Ok(clocks) = self.clocks.lock() else {
            return 0;
        };
        let mut asked = 0;
        for clock in clocks.iter().filter_map(Weak::upgrade) {
            if clock.waiting(now).is_some_and(|w| w >= bound) {
                clock.recheck.notify_one();
                asked += 1;
            }
        }
        asked
    }

    /// Sessions being watched (open ret sessions with a clock).
    pub fn watched(&self) -> usize {
        self.clocks
            .lock()
            .map(|c| c.iter().filter(|w| w.strong_count() > 0).count())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_waiting_past_the_bound_is_overdue_once() {
        let answers = Answers::default();
        let clock = answers.clock();
        let bound = Duration::from_secs(2);
        assert_eq!(answers.overdue(bound), None, "nothing asked yet");
        clock.asked();
        tokio::time::advance(Duration::from_secs(1)).await;
        clock.asked(); // more of the same request: the oldest bytes count
        assert_eq!(answers.overdue(bound), None, "within the bound");
        tokio::time::advance(Duration::from_millis(1500)).await;
        let waited = answers.overdue(bound).expect("overdue");
        assert!(waited >= Duration::from_millis(2500), "{waited:?}");
        assert_eq!(answers.overdue(bound), None, "one suspicion per wait");
        clock.answered();
        clock.asked();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(
            answers.overdue(bound).is_some(),
            "a new wait is a new suspicion"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn only_sessions_waiting_past_the_bound_are_asked_to_recheck() {
        let answers = Answers::default();
        let (late, early, idle) = (answers.clock(), answers.clock(), answers.clock());
        late.asked();
        tokio::time::advance(Duration::from_secs(2)).await;
        early.asked();
        assert_eq!(answers.recheck_overdue(Duration::from_secs(1)), 1);
        let asked = tokio::time::timeout(Duration::from_millis(10), late.recheck_requested());
        assert!(asked.await.is_ok(), "the late session was asked");
        let not = tokio::time::timeout(Duration::from_millis(10), early.recheck_requested());
        assert!(not.await.is_err(), "the early one was not");
        let not = tokio::time::timeout(Duration::from_millis(10), idle.recheck_requested());
        assert!(not.await.is_err(), "nor the idle one");
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_stops_the_clock_and_closed_sessions_are_forgotten() {
        let answers = Answers::default();
        let clock = answers.clock();
        clock.asked();
        tokio::time::advance(Duration::from_millis(500)).await;
        clock.answered();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(answers.overdue(Duration::from_secs(1)), None);
        assert_eq!(answers.watched(), 1);
        drop(clock);
        assert_eq!(answers.overdue(Duration::from_secs(1)), None);
        assert_eq!(answers.watched(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_master_answering_another_session_was_heard_since_the_request() {
        let answers = Answers::default();
        let (waiting, other) = (answers.clock(), answers.clock());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            !answers.answered_since(Instant::now() - Duration::from_secs(1)),
            "never answered"
        );
        other.asked();
        tokio::time::advance(Duration::from_millis(100)).await;
        other.answered();
        tokio::time::advance(Duration::from_millis(100)).await;
        let asked = Instant::now();
        waiting.asked();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            !answers.answered_since(asked),
            "the answer came before the request"
        );
        other.answered(); // more bytes of nothing asked: no answer
        assert!(!answers.answered_since(asked));
        other.asked();
        tokio::time::advance(Duration::from_millis(10)).await;
        other.answered();
        assert!(
            answers.answered_since(asked),
            "another minion was answered since"
        );
    }
}
