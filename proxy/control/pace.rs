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
//!   back in milliseconds, one of 500 in tenths of a second. The sidecar
//!   waits a random part of [`SPREAD`] times that before it asks again, so a
//!   fleet spreads in proportion to its size (a sign-in costs the master
//!   some tens of pings), at most [`SPREAD_CAP`], and a lone minion waits a
//!   few milliseconds.
//! * **Later asks check the queue.** Answered within [`TARGET`]: the master
//!   keeps up; the sign-in goes now. Slower, or not at all: wait as long as
//!   the answer took, doubling with each slow answer, randomised so that
//!   sidecars spread, and ask again.
//! * `random_reauth_delay` after the switch the sign-in goes whatever the
//!   answers (the bound, not the wait).
//!
//! Pure: durations in, decisions out; the caller owns the clock and the rng.

use std::time::Duration;

/// A master that answers a ping within this keeps up with its sign-ins: a
/// sign-in let through now waits about as long, far below Salt's
/// `auth_timeout` (5 s).
pub const TARGET: Duration = Duration::from_millis(500);

/// The longest a ping is waited for: slower is "slow", however slow.
pub const ASK_LIMIT: Duration = Duration::from_secs(2);

/// After the first ask, a sidecar waits a random part of this many times
/// the answer's time: about what a sign-in costs the master in pings, ...
pub const SPREAD: u32 = 40;

/// ... and at most this: on a busy host the answer's time grows with the
/// host's load, not only with the crowd, and a lone minion must not wait
/// for it (seen: 2.1 s after a crash under a CI run's load, uncapped).
pub const SPREAD_CAP: Duration = Duration::from_millis(500);

/// The wait after a slow answer is at least this, ...
const WAIT_FLOOR: Duration = Duration::from_millis(250);

/// ... and any wait at most this.
const WAIT_CAP: Duration = Duration::from_secs(8);

/// What a sidecar does after asking the new master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Let the sign-in through.
    Go,
    /// Ask again after this long.
    Wait(Duration),
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
}

impl Pace {
    /// After an ask answered `a`, with `u` a uniform draw in `[0, 1]`: go,
    /// or how long to wait before the next ask.
    pub fn next(&mut self, a: Answer, u: f64) -> Next {
        let u = u.clamp(0.0, 1.0);
        let first = self.asked == 0;
        self.asked = self.asked.saturating_add(1);
        let fast = a.answered && a.took <= TARGET;
        if fast && first {
            // Spread in proportion to the crowd the answer's time shows.
            return Next::Wait(a.took.saturating_mul(SPREAD).min(SPREAD_CAP).mul_f64(u));
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
    fn a_lone_sidecar_waits_milliseconds_then_goes() {
        let mut p = Pace::default();
        // A master that answers in 5 ms: a wait of at most 200 ms ...
        assert_eq!(p.next(answer(5), 1.0), Next::Wait(200 * MS));
        // ... and the next answer in time lets the sign-in through.
        assert_eq!(p.next(answer(5), 0.3), Next::Go);
        assert!(!p.was_slow());
    }

    #[test]
    fn a_crowd_spreads_in_proportion_to_the_first_answers_time() {
        // One of many: the first ping waited 10 ms behind the others'.
        let mut p = Pace::default();
        assert_eq!(p.next(answer(10), 0.5), Next::Wait(200 * MS));
        assert_eq!(
            Pace::default().next(answer(10), 0.0),
            Next::Wait(Duration::ZERO)
        );
        // A slower first answer (a crowd, or a loaded host): at most the cap.
        assert_eq!(
            Pace::default().next(answer(150), 1.0),
            Next::Wait(SPREAD_CAP)
        );
    }

    #[test]
    fn a_slow_master_is_asked_again_later_in_proportion_and_doubling() {
        let mut p = Pace::default();
        assert_eq!(p.next(answer(800), 0.5), Next::Wait(800 * MS));
        assert_eq!(p.next(answer(800), 0.5), Next::Wait(1600 * MS));
        assert_eq!(p.next(answer(800), 0.0), Next::Wait(1600 * MS));
        assert_eq!(p.next(answer(800), 1.0), Next::Wait(WAIT_CAP));
        assert_eq!(p.next(answer(100), 0.5), Next::Go, "it keeps up again");
        assert!(p.was_slow());
    }

    #[test]
    fn an_unanswered_ask_counts_as_slow_whatever_it_took() {
        let refused = Answer {
            answered: false,
            took: MS,
        };
        assert_eq!(Pace::default().next(refused, 0.5), Next::Wait(WAIT_FLOOR));
        let timed_out = Answer {
            answered: false,
            took: ASK_LIMIT,
        };
        assert_eq!(Pace::default().next(timed_out, 0.5), Next::Wait(ASK_LIMIT));
    }
}
