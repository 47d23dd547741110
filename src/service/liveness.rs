//! Liveness: each supervised loop beats a [`Heartbeat`] as it goes round; the supervisor
//! pings systemd's watchdog only while every loop has beaten recently. A loop that is stuck
//! (an SPI read that never returns, a control task blocked on a relay) stops beating, the
//! pings stop, and systemd restarts the agent, which locks the door first thing at start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One loop's heartbeat. Cheap to clone; `beat` is one atomic store.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    base: Instant,
    /// Milliseconds since `base` of the last beat, plus one (0 = never beaten).
    last: Arc<AtomicU64>,
}

impl Heartbeat {
    /// A heartbeat nobody watches (a loop run outside the supervised agent: tests, benches).
    pub fn unwatched() -> Heartbeat {
        Heartbeat {
            base: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The loop is alive now.
    pub fn beat(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last.store(ms.saturating_add(1), Ordering::Relaxed);
    }

    /// How long ago the last beat was, at `now`; `None` if it never beat.
    fn age(&self, now: Instant) -> Option<Duration> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            ms => {
                let at = self.base + Duration::from_millis(ms - 1);
                Some(now.saturating_duration_since(at))
            }
        }
    }
}

/// The supervised loops, by name.
#[derive(Clone, Debug)]
pub struct Liveness {
    base: Instant,
    loops: Arc<Mutex<Vec<(&'static str, Heartbeat)>>>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            base: Instant::now(),
            loops: Arc::default(),
        }
    }
}

/// A loop that has not beaten within the allowed time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    pub name: &'static str,
    /// Since the last beat; `None`: it never beat, and the registry is older than allowed.
    pub silent_for: Option<Duration>,
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.silent_for {
            Some(d) => write!(
                f,
                "the {} loop has not run for {:.1} s",
                self.name,
                d.as_secs_f64()
            ),
            None => write!(f, "the {} loop never ran", self.name),
        }
    }
}

impl Liveness {
    /// Registers a loop; it counts as alive from now until it first beats (start-up grace).
    pub fn register(&self, name: &'static str) -> Heartbeat {
        let heartbeat = Heartbeat {
            base: self.base,
            last: Arc::new(AtomicU64::new(0)),
        };
        heartbeat.beat();
        self.loops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name, heartbeat.clone()));
        heartbeat
    }

    /// The names of the registered loops.
    pub fn names(&self) -> Vec<&'static str> {
        let loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        loops.iter().map(|(n, _)| *n).collect()
    }

    /// Every loop that has not beaten within `allowed` at `now`.
    pub fn stale(&self, allowed: Duration, now: Instant) -> Vec<Stale> {
        let loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        loops
            .iter()
            .filter_map(|(name, hb)| match hb.age(now) {
                Some(age) if age <= allowed => None,
                silent_for => Some(Stale { name, silent_for }),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_loop_is_alive_until_it_goes_quiet() {
        let live = Liveness::default();
        let reader = live.register("reader");
        let control = live.register("control");
        let t0 = Instant::now();
        assert!(live.stale(Duration::from_millis(500), t0).is_empty());
        let later = t0 + Duration::from_secs(2);
        let stale = live.stale(Duration::from_millis(500), later);
        assert_eq!(
            stale.iter().map(|s| s.name).collect::<Vec<_>>(),
            ["reader", "control"]
        );
        // Only the reader beats again: only the control loop is stale.
        std::thread::sleep(Duration::from_millis(20));
        reader.beat();
        let now = Instant::now();
        let stale = live.stale(Duration::from_millis(10), now + Duration::from_millis(5));
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert_eq!(stale[0].name, "control");
        assert!(stale[0]
            .to_string()
            .contains("control loop has not run for"));
        control.beat();
        assert!(live
            .stale(Duration::from_millis(100), Instant::now())
            .is_empty());
    }

    #[test]
    fn an_unwatched_heartbeat_is_not_anywhere() {
        let live = Liveness::default();
        Heartbeat::unwatched().beat();
        assert!(live.names().is_empty());
        assert!(live
            .stale(Duration::ZERO, Instant::now() + Duration::from_secs(1))
            .is_empty());
    }
}
