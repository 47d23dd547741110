//! The door: when the lock is open, what the door contact means, and which alarms to raise.
//! A state machine over values and monotonic instants; the caller drives the relay and
//! publishes the events it returns.
//!
//! Safety rule: the only ways to `Unlocked` are `grant` and `exit_request`. Everything else
//! (start, stop, a deadline, the door closing) ends `Locked`.

use std::time::{Duration, Instant};

use acceso_protocol::Reason;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockState {
    Locked,
    Unlocked,
}

/// How the lock is wired: which relay line level means what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wiring {
    /// The relay board switches on a low input.
    pub active_low: bool,
    /// Power off = unlocked (a maglock on a fire exit). Default: power off = locked.
    pub fail_safe: bool,
}

impl Wiring {
    /// Whether the relay coil is energised in this lock state.
    pub fn energised(self, state: LockState) -> bool {
        (state == LockState::Unlocked) != self.fail_safe
    }

    /// The line level (true = high) that puts the lock in this state.
    pub fn level(self, state: LockState) -> bool {
        self.energised(state) != self.active_low
    }

    /// The lock state a line level means.
    pub fn state_of(self, level: bool) -> LockState {
        if self.level(LockState::Unlocked) == level {
            LockState::Unlocked
        } else {
            LockState::Locked
        }
    }
}

/// The door's timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoorTiming {
    /// How long a grant or exit request unlocks.
    pub unlock: Duration,
    /// Relock as soon as the door closes after opening, before `unlock` runs out.
    pub relock_on_close: bool,
    /// Raise the held-open alarm when the door stays open this long; `None`: never.
    pub held_open: Option<Duration>,
}

/// What the caller must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorAction {
    /// Drive the lock to this state.
    Lock(LockState),
    /// Publish an event with this reason.
    Report(Reason),
}

#[derive(Debug)]
pub struct DoorMachine {
    timing: DoorTiming,
    relock_at: Option<Instant>,
    open: bool,
    /// The door opened during the current unlock.
    opened_while_unlocked: bool,
    held_alarm_at: Option<Instant>,
    held_alarm: bool,
}

impl DoorMachine {
    /// A door that starts locked and closed; the caller drives the relay to `Locked` first.
    pub fn new(timing: DoorTiming) -> DoorMachine {
        DoorMachine {
            timing,
            relock_at: None,
            open: false,
            opened_while_unlocked: false,
            held_alarm_at: None,
            held_alarm: false,
        }
    }

    pub fn state(&self) -> LockState {
        if self.relock_at.is_some() {
            LockState::Unlocked
        } else {
            LockState::Locked
        }
    }

    /// A grant at `now`: open (or stay open) until `now + unlock`.
    pub fn grant(&mut self, now: Instant) -> Vec<DoorAction> {
        let was = self.state();
        self.relock_at = Some(now + self.timing.unlock);
        if was == LockState::Locked {
            self.opened_while_unlocked = false;
            vec![DoorAction::Lock(LockState::Unlocked)]
        } else {
            vec![]
        }
    }

    /// The exit button: the same unlock as a grant (the caller reports the request).
    pub fn exit_request(&mut self, now: Instant) -> Vec<DoorAction> {
        self.grant(now)
    }

    /// The door contact changed.
    pub fn door(&mut self, open: bool, now: Instant) -> Vec<DoorAction> {
        if open == self.open {
            return vec![];
        }
        self.open = open;
        let mut out = Vec::new();
        if open {
            self.held_alarm_at = self.timing.held_open.map(|d| now + d);
            if self.state() == LockState::Locked {
                out.push(DoorAction::Report(Reason::ForcedOpen));
            } else {
                self.opened_while_unlocked = true;
            }
        } else {
            self.held_alarm_at = None;
            if std::mem::take(&mut self.held_alarm) {
                out.push(DoorAction::Report(Reason::HeldOpenEnded));
            }
            if self.state() == LockState::Unlocked
                && self.opened_while_unlocked
                && self.timing.relock_on_close
            {
                self.relock_at = None;
                out.push(DoorAction::Lock(LockState::Locked));
                out.push(DoorAction::Report(Reason::RelockedOnClose));
            }
        }
        out
    }

    /// The next instant something is due, if any.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.relock_at, self.held_alarm_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passes: relock when the unlock time is over, raise the held-open alarm.
    pub fn tick(&mut self, now: Instant) -> Vec<DoorAction> {
        let mut out = Vec::new();
        if self.relock_at.is_some_and(|at| now >= at) {
            self.relock_at = None;
            out.push(DoorAction::Lock(LockState::Locked));
        }
        if self.held_alarm_at.is_some_and(|at| now >= at) {
            self.held_alarm_at = None;
            self.held_alarm = true;
            out.push(DoorAction::Report(Reason::HeldOpen));
        }
        out
    }

    /// Stop: lock now, whatever the deadline.
    pub fn lock_now(&mut self) -> Vec<DoorAction> {
        match self.relock_at.take() {
            Some(_) => vec![DoorAction::Lock(LockState::Locked)],
            None => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DoorAction::{Lock, Report};
    use LockState::{Locked, Unlocked};

    const OPEN: Duration = Duration::from_millis(3000);
    const HELD: Duration = Duration::from_secs(30);

    fn door(relock_on_close: bool) -> DoorMachine {
        DoorMachine::new(DoorTiming {
            unlock: OPEN,
            relock_on_close,
            held_open: Some(HELD),
        })
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn grant_opens_for_exactly_the_unlock_time() {
        let t0 = Instant::now();
        let mut d = door(true);
        assert_eq!(d.state(), Locked);
        assert_eq!(d.grant(t0), [Lock(Unlocked)]);
        assert_eq!(d.deadline(), Some(t0 + OPEN));
        assert_eq!(d.tick(t0 + OPEN - Duration::from_millis(1)), []);
        assert_eq!(d.tick(t0 + OPEN), [Lock(Locked)]);
        assert_eq!(d.state(), Locked);
        assert_eq!(d.tick(t0 + OPEN * 2), []);
    }

    #[test]
    fn second_grant_extends_without_a_second_pulse() {
        let t0 = Instant::now();
        let mut d = door(true);
        d.grant(t0);
        assert_eq!(d.grant(ms(t0, 1000)), []);
        assert_eq!(d.tick(t0 + OPEN), []);
        assert_eq!(
            d.tick(t0 + OPEN + Duration::from_millis(1000)),
            [Lock(Locked)]
        );
    }

    #[test]
    fn door_closing_after_opening_relocks_early() {
        let t0 = Instant::now();
        let mut d = door(true);
        d.grant(t0);
        // Closing before it ever opened changes nothing (it was closed already).
        assert_eq!(d.door(false, ms(t0, 100)), []);
        assert_eq!(d.door(true, ms(t0, 500)), []);
        assert_eq!(
            d.door(false, ms(t0, 1500)),
            [Lock(Locked), Report(Reason::RelockedOnClose)]
        );
        assert_eq!(d.state(), Locked);
        assert_eq!(d.tick(t0 + OPEN), []);
    }

    #[test]
    fn without_relock_on_close_the_unlock_runs_its_time() {
        let t0 = Instant::now();
        let mut d = door(false);
        d.grant(t0);
        d.door(true, ms(t0, 500));
        assert_eq!(d.door(false, ms(t0, 1500)), []);
        assert_eq!(d.state(), Unlocked);
        assert_eq!(d.tick(t0 + OPEN), [Lock(Locked)]);
    }

    #[test]
    fn opening_while_locked_is_forced_open() {
        let t0 = Instant::now();
        let mut d = door(true);
        assert_eq!(d.door(true, t0), [Report(Reason::ForcedOpen)]);
        assert_eq!(d.state(), Locked);
        // Closing again does not unlock anything.
        assert_eq!(d.door(false, ms(t0, 100)), []);
        assert_eq!(d.state(), Locked);
    }

    #[test]
    fn exit_request_unlocks_so_opening_is_not_forced() {
        let t0 = Instant::now();
        let mut d = door(true);
        assert_eq!(d.exit_request(t0), [Lock(Unlocked)]);
        assert_eq!(d.door(true, ms(t0, 200)), []);
        assert_eq!(
            d.door(false, ms(t0, 1200)),
            [Lock(Locked), Report(Reason::RelockedOnClose)]
        );
    }

    #[test]
    fn held_open_alarm_fires_once_and_ends_when_the_door_closes() {
        let t0 = Instant::now();
        let mut d = door(false);
        d.grant(t0);
        d.door(true, ms(t0, 100));
        assert_eq!(d.deadline(), Some(t0 + OPEN));
        assert_eq!(d.tick(t0 + OPEN), [Lock(Locked)]);
        assert_eq!(d.deadline(), Some(ms(t0, 100) + HELD));
        assert_eq!(d.tick(ms(t0, 100) + HELD), [Report(Reason::HeldOpen)]);
        assert_eq!(d.tick(ms(t0, 100) + HELD * 2), []);
        assert_eq!(
            d.door(false, ms(t0, 100) + HELD * 2),
            [Report(Reason::HeldOpenEnded)]
        );
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn lock_now_closes_an_open_door_and_is_quiet_on_a_closed_one() {
        let mut d = door(true);
        assert_eq!(d.lock_now(), []);
        d.grant(Instant::now());
        assert_eq!(d.lock_now(), [Lock(Locked)]);
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn wiring_maps_lock_states_to_line_levels() {
        let cases = [
            // active_low, fail_safe, level when locked, level when unlocked
            (false, false, false, true),
            (true, false, true, false),
            (false, true, true, false),
            (true, true, false, true),
        ];
        for (active_low, fail_safe, locked, unlocked) in cases {
            let w = Wiring {
                active_low,
                fail_safe,
            };
            assert_eq!(w.level(Locked), locked, "{w:?}");
            assert_eq!(w.level(Unlocked), unlocked, "{w:?}");
            assert_eq!(w.state_of(locked), Locked);
            assert_eq!(w.state_of(unlocked), Unlocked);
            // Fail-secure: the coil is energised only to unlock; fail-safe: only to lock.
            assert_eq!(w.energised(Unlocked), !fail_safe);
        }
    }
}
