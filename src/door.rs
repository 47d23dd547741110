//! The door: when the lock is open and when it closes again. A state machine over values and
//! monotonic instants; the caller drives the relay with what it returns.
//!
//! Safety rule: the only way to `Unlocked` is `grant`. Everything else (start, stop, a missed
//! deadline) ends `Locked`.

use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockState {
    Locked,
    Unlocked,
}

impl LockState {
    /// Relay level for a fail-secure lock (energise to open), the only wiring this build has.
    pub fn energised(self) -> bool {
        self == LockState::Unlocked
    }
}

#[derive(Debug)]
pub struct DoorMachine {
    unlock_for: Duration,
    relock_at: Option<Instant>,
}

impl DoorMachine {
    /// A door that starts locked; the caller must drive the relay to `Locked` before anything.
    pub fn new(unlock_for: Duration) -> DoorMachine {
        DoorMachine {
            unlock_for,
            relock_at: None,
        }
    }

    pub fn state(&self) -> LockState {
        if self.relock_at.is_some() {
            LockState::Unlocked
        } else {
            LockState::Locked
        }
    }

    /// A grant at `now`: open (or stay open) until `now + unlock_for`. Returns the new state
    /// if it changed.
    pub fn grant(&mut self, now: Instant) -> Option<LockState> {
        let was = self.state();
        self.relock_at = Some(now + self.unlock_for);
        (was != LockState::Unlocked).then_some(LockState::Unlocked)
    }

    /// When the door must relock, if it is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.relock_at
    }

    /// Time passes: relock if the deadline is reached. Returns the new state if it changed.
    pub fn tick(&mut self, now: Instant) -> Option<LockState> {
        match self.relock_at {
            Some(at) if now >= at => {
                self.relock_at = None;
                Some(LockState::Locked)
            }
            _ => None,
        }
    }

    /// Stop: lock now, whatever the deadline.
    pub fn lock_now(&mut self) -> Option<LockState> {
        self.relock_at.take().map(|_| LockState::Locked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Duration = Duration::from_millis(3000);

    #[test]
    fn grant_opens_for_exactly_the_unlock_time() {
        let t0 = Instant::now();
        let mut d = DoorMachine::new(OPEN);
        assert_eq!(d.state(), LockState::Locked);
        assert_eq!(d.grant(t0), Some(LockState::Unlocked));
        assert_eq!(d.deadline(), Some(t0 + OPEN));
        assert_eq!(d.tick(t0 + OPEN - Duration::from_millis(1)), None);
        assert_eq!(d.tick(t0 + OPEN), Some(LockState::Locked));
        assert_eq!(d.state(), LockState::Locked);
        assert_eq!(d.tick(t0 + OPEN * 2), None);
    }

    #[test]
    fn second_grant_extends_without_a_second_pulse() {
        let t0 = Instant::now();
        let mut d = DoorMachine::new(OPEN);
        d.grant(t0);
        assert_eq!(d.grant(t0 + Duration::from_millis(1000)), None);
        assert_eq!(d.tick(t0 + OPEN), None);
        assert_eq!(
            d.tick(t0 + OPEN + Duration::from_millis(1000)),
            Some(LockState::Locked)
        );
    }

    #[test]
    fn lock_now_closes_an_open_door_and_is_quiet_on_a_closed_one() {
        let mut d = DoorMachine::new(OPEN);
        assert_eq!(d.lock_now(), None);
        d.grant(Instant::now());
        assert_eq!(d.lock_now(), Some(LockState::Locked));
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn fail_secure_energises_only_when_unlocked() {
        assert!(LockState::Unlocked.energised());
        assert!(!LockState::Locked.energised());
    }
}
