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
//! Instead a sidecar asks the new master one clear Salt `ping` on its ret
//! port (answered by a worker, so it waits in the same queue a sign-in
//! would) before it lets its minion's sign-in through:
//!
//! * answered within [`TARGET`]: the master keeps up; the sign-in goes now;
//! * slower, or not at all: wait — in proportion to how slow, doubling with
//!   each slow answer, randomised so that sidecars spread — and ask again;
//! * R after the switch the sign-in goes whatever the answer
//!   (`random_reauth_delay` is the bound, not the wait).
//!
//! Before the first ask a sidecar waits a random moment in
//! [`FIRST_SPREAD`], so that a fleet's asks do not all find the queue empty
//! at the same instant: the first few sign-ins go, the asks behind them
//! see the queue they make.
//!
//! Pure: durations in, decisions out; the caller owns the clock and the rng.

use std::time::Duration;

/// A master that answers a ping within this keeps up with its sign-ins: a
/// sign-in let through now waits about as long, far below Salt's
/// `auth_timeout` (5 s).
pub const TARGET: Duration = Duration::from_millis(500);

/// The longest a ping is waited for: slower is "slow", however slow.
pub const ASK_LIMIT: Duration = Duration::from_secs(2);

/// A random moment in `[0, FIRST_SPREAD]` before the first ask.
pub const FIRST_SPREAD: Duration = Duration::from_millis(250);

/// The wait after a slow answer is at least this, ...
const WAIT_FLOOR: Duration = Duration::from_millis(250);

/// ... and at most this.
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

/// The first ask's delay, from a uniform draw `u` in `[0, 1]`.
pub fn first_wait(u: f64) -> Duration {
    FIRST_SPREAD.mul_f64(u.clamp(0.0, 1.0))
}

/// After the `slow_before`+1-th ask answered `a`, with `u` a uniform draw
/// in `[0, 1]`: go, or how long to wait before the next ask.
pub fn after_ask(a: Answer, slow_before: u32, u: f64) -> Next {
    if a.answered && a.took <= TARGET {
        return Next::Go;
    }
    // As long as the master took (its queue), at least the floor, doubled
    // for each slow answer before, times 0.5..1.5 so that sidecars spread.
    let base = a.took.max(WAIT_FLOOR);
    let grown = base
        .checked_mul(1u32 << slow_before.min(5))
        .unwrap_or(WAIT_CAP)
        .min(WAIT_CAP);
    Next::Wait(grown.mul_f64(0.5 + u.clamp(0.0, 1.0)).min(WAIT_CAP))
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
    fn a_master_that_keeps_up_gets_the_sign_in_at_once() {
        assert_eq!(after_ask(answer(3), 0, 0.7), Next::Go);
        assert_eq!(after_ask(answer(500), 4, 0.7), Next::Go, "at the target");
    }

    #[test]
    fn a_slow_master_is_asked_again_later_in_proportion_and_doubling() {
        assert_eq!(after_ask(answer(800), 0, 0.5), Next::Wait(800 * MS));
        assert_eq!(after_ask(answer(800), 1, 0.5), Next::Wait(1600 * MS));
        assert_eq!(after_ask(answer(800), 2, 0.0), Next::Wait(1600 * MS));
        assert_eq!(after_ask(answer(800), 2, 1.0), Next::Wait(4800 * MS));
        assert_eq!(after_ask(answer(1900), 9, 1.0), Next::Wait(WAIT_CAP));
    }

    #[test]
    fn an_unanswered_ask_counts_as_slow_whatever_it_took() {
        let refused = Answer {
            answered: false,
            took: MS,
        };
        assert_eq!(after_ask(refused, 0, 0.5), Next::Wait(WAIT_FLOOR));
        let timed_out = Answer {
            answered: false,
            took: ASK_LIMIT,
        };
        assert_eq!(after_ask(timed_out, 0, 0.5), Next::Wait(ASK_LIMIT));
    }

    #[test]
    fn the_first_ask_is_spread_over_a_quarter_second() {
        assert_eq!(first_wait(0.0), Duration::ZERO);
        assert_eq!(first_wait(1.0), FIRST_SPREAD);
        assert_eq!(first_wait(7.0), FIRST_SPREAD, "clamped");
    }
}
