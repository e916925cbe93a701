//! Rise/fall hysteresis: turns single probe results into up/down flips.
//!
//! Pure: no clock, no I/O. Used by the health tasks; never sees a socket.

/// Rise/fall hysteresis. Pure.
///
/// The first observation decides the state at once (a sidecar must not wait
/// `rise` intervals at start); after that, `rise` consecutive successes flip
/// down→up and `fall` consecutive failures flip up→down.
#[derive(Clone, Debug)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    up: Option<bool>,
    streak: u32,
}

// === impl Hysteresis ===

impl Hysteresis {
    pub fn new(rise: u32, fall: u32) -> Self {
        Hysteresis {
            rise: rise.max(1),
            fall: fall.max(1),
            up: None,
            streak: 0,
        }
    }

    /// Starts from a known state (a master carried over a reload): the next
    /// observations need `rise`/`fall` to flip it, as before the reload.
    pub fn resume(rise: u32, fall: u32, up: Option<bool>) -> Self {
        Hysteresis {
            up,
            ..Self::new(rise, fall)
        }
    }

    /// New thresholds (a reload); the current state and streak stay.
    pub fn set_thresholds(&mut self, rise: u32, fall: u32) {
        self.rise = rise.max(1);
        self.fall = fall.max(1);
    }

    pub fn is_up(&self) -> Option<bool> {
        self.up
    }

    /// Checks against the current state since it last held (0: none).
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Sets the state regardless of the thresholds (a verdict stronger than
    /// one check); returns the new state if it flipped.
    pub fn force(&mut self, up: bool) -> Option<bool> {
        self.streak = 0;
        let flipped = self.up != Some(up);
        self.up = Some(up);
        flipped.then_some(up)
    }

    /// Records one check; returns the new state if it flipped.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        match self.up {
            None => {
                self.up = Some(ok);
                self.streak = 0;
                Some(ok)
            }
            Some(up) if up == ok => {
                self.streak = 0;
                None
            }
            Some(_) => {
                self.streak += 1;
                let needed = if ok { self.rise } else { self.fall };
                if self.streak >= needed {
                    self.up = Some(ok);
                    self.streak = 0;
                    Some(ok)
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_observation_decides_at_once() {
        let mut h = Hysteresis::new(2, 2);
        assert_eq!(h.observe(true), Some(true));
        let mut h = Hysteresis::new(2, 2);
        assert_eq!(h.observe(false), Some(false));
    }

    #[test]
    fn fall_needs_consecutive_failures() {
        let mut h = Hysteresis::new(2, 3);
        h.observe(true);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None, "a success resets the streak");
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(false));
        assert_eq!(h.is_up(), Some(false));
    }

    #[test]
    fn rise_needs_consecutive_successes() {
        let mut h = Hysteresis::new(2, 1);
        h.observe(false);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(true));
    }

    #[test]
    fn alternating_results_never_flip() {
        let mut h = Hysteresis::new(2, 2);
        h.observe(true);
        for i in 0..100 {
            assert_eq!(h.observe(i % 2 == 0), None);
        }
    }
}
