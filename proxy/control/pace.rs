//! Pacing the sign-in wave after a switch, by what the new master answers
//! (issue 22.3): the pure half; `data::forward::pace` does the asking.
//!
//! After a failover every minion of a fleet signs in again at the new
//! master at about the same moment (its first publication, which the minion
//! cannot decrypt, or its first request). A fixed random delay (Salt's
//! `random_reauth_delay`, 0..R) is the wrong tool for it: it makes a lone
//! minion wait up to R for nothing, and still lets a big fleet overload the
//! master — a sign-in that waits in the master's queue longer than the
//! minion's `auth_timeout` (5 s) is sent again, and the queue collapses.
//!
//! Instead a sidecar asks the new master clear Salt `ping`s on its ret
//! port (answered by a worker, so each waits in the same queue a sign-in
//! would) before it lets its minion's sign-in through:
//!
//! * **The first ask measures the crowd.** A fleet's sidecars ask at the
//!   same moment, so the first answer takes longer the more of them ask
//!   (each ping is a connection and a worker's answer): a lone sidecar hears
//!   back in milliseconds, one of 500 in tenths of a second. A sign-in costs
//!   the master about [`SIGN_IN_COST`] such asks, so the crowd's sign-ins
//!   take about that many times the answer's time. Within [`ONE_CYCLE`] the
//!   master signs the whole crowd in before the first of them would give up:
//!   the sidecar lets its sign-in go at a random instant of that time,
//!   without asking again (a lone minion: within tens of milliseconds). A
//!   larger crowd waits a random part of [`SPREAD`] and asks again.
//! * **Later asks check the queue.** Answered within [`TARGET`]: the master
//!   keeps up; the sign-in goes now. Slower, or not at all: wait as long as
//!   the answer took, doubling with each slow answer, randomised so that
//!   sidecars spread, and ask again.
//! * **`random_reauth_delay` (R) bounds the wait for a master that keeps
//!   up**, not for one that drowns: from a random instant in the second half
//!   of R after the switch, an answer within [`LATE_TARGET`] is enough; a
//!   sign-in let into a queue longer than the minion's `auth_timeout` is
//!   only work the master does for nothing, and the minion sends it again
//!   anyway. [`HOLD_PAST_BOUND`] after that instant the sign-in goes
//!   whatever the answers (a master that answers nothing is health's
//!   business: it fails over).
//! * **Only a sign-in the master can still answer in time is sent**
//!   ([`fresh`]): one the minion has waited on so long that, with the
//!   master's queue, it would give up first, is held until the minion sends
//!   it again (a new connection, which goes at once).
//!
//! Pure: durations in, decisions out; the caller owns the clock and the rng.

use std::time::Duration;

/// A master that answers a ping within this keeps up with its sign-ins: a
/// sign-in let through now waits about as long, well below Salt's
/// `auth_timeout` (5 s), with room for the others let through meanwhile.
/// (0.5 s held a fleet of 500 back for nothing in the fleet lab: 18.6 and
/// 20.9 s until all were answered against 13.2 and 13.9 s at 1.5 s, with no
/// more sign-ins answered too late; 2026-12-07, 2 AMD EPYC cores.)
pub const TARGET: Duration = Duration::from_millis(1500);

/// The longest a ping is waited for: slower is "slow", however slow.
pub const ASK_LIMIT: Duration = Duration::from_secs(2);

/// What a sign-in costs the master, in asks (a clear `ping` on a fresh
/// connection: a TCP and ZMTP handshake, a worker's answer): in the fleet
/// lab the first asks of 500 sidecars took 0.41 s (median) and the master
/// then signed in about 100 minions a second: 0.8 ms against 10 ms
/// (2026-12-07, 2 Intel Xeon cores, Salt 3008.4). Rounded down: a crowd
/// misjudged small is asked again at its minions' next attempt.
pub const SIGN_IN_COST: u32 = 10;

/// A crowd whose sign-ins take the master at most this long goes without
/// a second ask: Salt's `auth_timeout` (5 s) less the first ask and
/// `ANSWER_MARGIN` (1 s), so that the last of them is still answered in time.
pub const ONE_CYCLE: Duration = Duration::from_secs(3);

/// A larger crowd spreads its second asks over this. (A longer spread, 2 s,
/// was tried in the lab and not kept: it held a fleet of 1,000 back; on a
/// busy host the first answer's time grows with the host's load too.)
pub const SPREAD: Duration = Duration::from_millis(500);

/// Past the bound (`Route::reauth_by`) any answer is enough (whether the
/// sign-in can still be answered in time is [`fresh`]'s to say).
pub const LATE_TARGET: Duration = ASK_LIMIT;

/// This long past the bound a sign-in goes whatever the answers.
pub const HOLD_PAST_BOUND: Duration = Duration::from_secs(60);

/// Salt's `auth_timeout` (its default): a minion sends a sign-in that has
/// no answer after this long again, on a new connection.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// What a sign-in needs of [`AUTH_TIMEOUT`] besides the master's queue:
/// the master's own work on it (tens of milliseconds, seconds on a
/// master that drowns: then its queue says so) and the way back.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// A held sign-in the minion does not give up on (a return, on a master
/// whose key the minion still holds) is sent this long after it came,
/// fresh or not.
pub const SEND_STALE_AFTER: Duration = Duration::from_secs(12);

/// Whether a sign-in the minion sent `held` ago can still be answered
/// before the minion gives up on it, with the master's queue `queue` long
/// (the last ask's answer time): otherwise it is held until the minion
/// sends it again.
pub fn fresh(held: Duration, queue: Duration) -> bool {
    held.saturating_add(queue).saturating_add(ANSWER_MARGIN) <= AUTH_TIMEOUT
}

/// The wait after a slow answer is at least this, ...
const WAIT_FLOOR: Duration = Duration::from_millis(250);

/// ... and any wait at most this: a minion sends a sign-in again every
/// `auth_timeout` (5 s), and a longer wait only meets older attempts.
const WAIT_CAP: Duration = Duration::from_secs(4);

/// What a sidecar does after asking the new master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Let the sign-in through.
    Go,
    /// Ask again after this long.
    Wait(Duration),
    /// Let the sign-in through after this long, without asking again.
    GoAfter(Duration),
}

/// How the master answered one ask: within `took`, or not at all within
/// `took` (a connect refused, a timeout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub answered: bool,
    pub took: Duration,
}

/// One sign-in's pacing: how many asks so far, how many of them slow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pace {
    asked: u32,
    slow: u32,
    /// The last answer's time: the master's queue, as far as it is known.
    last: Duration,
}

impl Pace {
    /// After an ask answered `a`, with `u` a uniform draw in `[0, 1]`,
    /// `late` once past the bound: go, or how long to wait before the next
    /// ask.
    pub fn next(&mut self, a: Answer, u: f64, late: bool) -> Next {
        let u = u.clamp(0.0, 1.0);
        let first = self.asked == 0;
        self.asked = self.asked.saturating_add(1);
        self.last = a.took;
        let target = if late { LATE_TARGET } else { TARGET };
        let fast = a.answered && a.took <= target;
        if fast && first && !late {
            // The crowd's sign-ins, as the answer's time shows them: when
            // the master can answer them all within one cycle, this one
            // goes at a random instant of it, without asking again.
            let crowd = a.took.saturating_mul(SIGN_IN_COST);
            if crowd <= ONE_CYCLE {
                return Next::GoAfter(crowd.mul_f64(u));
            }
            return Next::Wait(SPREAD.mul_f64(u));
        }
        if fast {
            return Next::Go;
        }
        // As long as the master took (its queue), at least the floor,
        // doubled for each slow answer before, times 0.5..1.5.
        let grown = a
            .took
            .max(WAIT_FLOOR)
            .checked_mul(1u32 << self.slow.min(5))
            .unwrap_or(WAIT_CAP)
            .min(WAIT_CAP);
        self.slow = self.slow.saturating_add(1);
        Next::Wait(grown.mul_f64(0.5 + u).min(WAIT_CAP))
    }

    /// Whether any answer was slow (the outcome `paced` against `at_once`).
    pub fn was_slow(&self) -> bool {
        self.slow > 0
    }

    /// The master's queue as the last answer showed it (zero before any).
    pub fn queue(&self) -> Duration {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn answer(ms: u32) -> Answer {
        Answer {
            answered: true,
            took: ms * MS,
        }
    }

    #[test]
    fn a_lone_sidecar_goes_within_milliseconds_after_one_ask() {
        let mut p = Pace::default();
        // A master that answers in 5 ms: at most 50 ms later, no more asks.
        assert_eq!(p.next(answer(5), 1.0, false), Next::GoAfter(50 * MS));
        assert_eq!(
            Pace::default().next(answer(5), 0.0, false),
            Next::GoAfter(Duration::ZERO)
        );
        assert!(!p.was_slow());
    }

    #[test]
    fn a_crowd_the_master_signs_in_within_one_cycle_goes_spread_over_it() {
        // One of many: the first ping waited 200 ms behind the others'; their
        // sign-ins take about 2 s of the master: this one goes within them.
        assert_eq!(
            Pace::default().next(answer(200), 0.5, false),
            Next::GoAfter(1000 * MS)
        );
        // At the edge of the cycle, still no second ask.
        assert_eq!(
            Pace::default().next(answer(300), 1.0, false),
            Next::GoAfter(ONE_CYCLE)
        );
    }

    #[test]
    fn a_larger_crowd_spreads_and_asks_again_before_it_goes() {
        // 310 ms: the crowd's sign-ins take more than one cycle of the
        // master: a random part of SPREAD, then another ask decides.
        let mut p = Pace::default();
        assert_eq!(p.next(answer(310), 0.5, false), Next::Wait(SPREAD / 2));
        assert_eq!(
            Pace::default().next(answer(310), 0.0, false),
            Next::Wait(Duration::ZERO)
        );
        // The next answer in time lets it through.
        assert_eq!(p.next(answer(400), 0.3, false), Next::Go);
        assert!(!p.was_slow());
    }

    #[test]
    fn a_slow_master_is_asked_again_later_in_proportion_and_doubling() {
        let mut p = Pace::default();
        assert_eq!(p.next(answer(1600), 0.5, false), Next::Wait(1600 * MS));
        assert_eq!(p.next(answer(1600), 0.5, false), Next::Wait(3200 * MS));
        // Doubled again past the cap, randomised below it ...
        assert_eq!(p.next(answer(1600), 0.0, false), Next::Wait(2000 * MS));
        // ... and never above it.
        assert_eq!(p.next(answer(1600), 1.0, false), Next::Wait(WAIT_CAP));
        assert_eq!(
            p.next(answer(100), 0.5, false),
            Next::Go,
            "it keeps up again"
        );
        assert!(p.was_slow());
    }

    #[test]
    fn an_unanswered_ask_counts_as_slow_whatever_it_took() {
        let refused = Answer {
            answered: false,
            took: MS,
        };
        assert_eq!(
            Pace::default().next(refused, 0.5, false),
            Next::Wait(WAIT_FLOOR)
        );
        let timed_out = Answer {
            answered: false,
            took: ASK_LIMIT,
        };
        assert_eq!(
            Pace::default().next(timed_out, 0.5, false),
            Next::Wait(ASK_LIMIT)
        );
    }

    #[test]
    fn past_the_bound_a_slower_answer_is_enough_and_no_spread_is_drawn() {
        let mut p = Pace::default();
        // Before the bound 1.6 s is slow; past it, within LATE_TARGET.
        assert_eq!(p.next(answer(1600), 0.5, false), Next::Wait(1600 * MS));
        assert_eq!(p.next(answer(1600), 0.5, true), Next::Go);
        // A first ask past the bound: no crowd spread, it goes.
        assert_eq!(Pace::default().next(answer(10), 1.0, true), Next::Go);
        assert_eq!(Pace::default().next(answer(1900), 0.5, true), Next::Go);
        // A master that drowns (no answer within ASK_LIMIT) is asked again.
        let unanswered = Answer {
            answered: false,
            took: ASK_LIMIT,
        };
        assert!(matches!(
            Pace::default().next(unanswered, 0.5, true),
            Next::Wait(_)
        ));
    }

    #[test]
    fn a_sign_in_is_fresh_while_the_master_can_answer_it_before_the_minion_gives_up() {
        let s = Duration::from_secs;
        assert!(fresh(Duration::ZERO, Duration::ZERO));
        assert!(fresh(s(3), 500 * MS), "3.5 s of 5, a second to spare");
        assert!(!fresh(s(4), 500 * MS), "the minion gives up first");
        assert!(!fresh(s(1), s(4)), "a long queue");
        assert!(!fresh(Duration::MAX, Duration::MAX), "no overflow");
        let mut p = Pace::default();
        assert_eq!(p.queue(), Duration::ZERO);
        let _ = p.next(answer(300), 0.5, false);
        assert_eq!(p.queue(), 300 * MS);
    }
}
