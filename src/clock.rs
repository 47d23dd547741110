//! Wall-clock time and whether to trust it.
//!
//! The wall clock is for timestamps and validity windows only; every duration and deadline in
//! the agent uses the monotonic clock (`std::time::Instant` / `tokio::time::Instant`).

use std::sync::Mutex;
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};

/// The wall-clock time now, and whether it is believed correct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallTime {
    pub time: Timestamp,
    pub trusted: bool,
}

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> WallTime;
}

/// No correct clock reads earlier than this: it predates this release. A Pi without a battery
/// clock that boots before NTP answers can read 1970 or a stale date; that time is untrusted.
pub const RELEASE_FLOOR: Timestamp = Timestamp::constant(1_764_547_200, 0); // 2025-12-01T00:00:00Z

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> WallTime {
        let time = Timestamp::now();
        WallTime {
            time,
            trusted: time >= RELEASE_FLOOR,
        }
    }
}

/// A clock the simulator sets: after `set`, it runs on from the given time at the monotonic
/// clock's rate, with the given trust.
#[derive(Default)]
pub struct SimClock(Mutex<Option<(Timestamp, Instant, bool)>>);

impl SimClock {
    pub fn set(&self, time: Timestamp, trusted: bool) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((time, Instant::now(), trusted));
    }
}

impl Clock for SimClock {
    fn now(&self) -> WallTime {
        match *self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            None => SystemClock.now(),
            Some((at, since, trusted)) => {
                let elapsed =
                    SignedDuration::try_from(since.elapsed()).unwrap_or(SignedDuration::MAX);
                WallTime {
                    time: at.saturating_add(elapsed).unwrap_or(at),
                    trusted,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_floor_is_the_documented_date() {
        assert_eq!(RELEASE_FLOOR.to_string(), "2025-12-01T00:00:00Z");
    }

    #[test]
    fn sim_clock_runs_on_from_the_set_time() {
        let c = SimClock::default();
        assert!(c.now().trusted);
        c.set("1970-01-01T00:00:10Z".parse().unwrap(), false);
        let now = c.now();
        assert!(!now.trusted);
        assert!(now.time >= "1970-01-01T00:00:10Z".parse().unwrap());
        assert!(now.time < "1970-01-01T00:01:00Z".parse().unwrap());
    }
}
