//! Wall-clock time and whether to trust it.
//!
//! The wall clock is for timestamps and validity windows only; every duration and deadline in
//! the agent uses the monotonic clock (`std::time::Instant` / `tokio::time::Instant`).
//!
//! A Raspberry Pi has no battery clock: after a power cut it boots at a stale time (the last
//! shutdown, a build date, or 1970) until NTP answers. The wall clock is trusted only when
//! [`judge`] says so: synchronised (unless `clock.require_sync = false`), not behind the last
//! known-good time, and not before this release. The rule is pure; [`TrustedClock`] feeds it
//! from a [`TimeSource`] (the OS in production, a fake in tests) and keeps the known-good time
//! in the state directory ([`known_good`]).

pub mod known_good;
mod os;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::observe::{Component, HealthState, Reporter};

pub use os::OsTime;

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

/// How long an answer of the sync probe is reused. The trust decision runs on every access
/// decision; the probe is a syscall and a file stat, and NTP status changes on a scale of
/// minutes, so a few seconds of staleness costs nothing.
pub const SYNC_CACHE: Duration = Duration::from_secs(5);

/// The known-good time is written at most this often while the clock is trusted: a power cut
/// loses at most this much of it, and an SD card sees one small write a minute.
pub const PERSIST_EVERY: Duration = Duration::from_secs(60);

/// Why the wall clock is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distrust {
    /// Before [`RELEASE_FLOOR`]: certainly wrong (1970, a stale boot time).
    BeforeRelease { time: Timestamp },
    /// Behind a time this device already saw as correct: the clock stepped back (a power cut
    /// without NTP yet, or someone set it back).
    BehindKnownGood {
        time: Timestamp,
        known_good: Timestamp,
    },
    /// Neither the kernel nor systemd-timesyncd says the clock is synchronised.
    NotSynchronised,
}

impl std::fmt::Display for Distrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Distrust::BeforeRelease { time } => {
                write!(f, "clock {time} is before this release ({RELEASE_FLOOR})")
            }
            Distrust::BehindKnownGood { time, known_good } => write!(
                f,
                "clock {time} is behind the last known-good time {known_good}"
            ),
            Distrust::NotSynchronised => f.write_str("not synchronised (no NTP)"),
        }
    }
}

/// The trust rule, pure. `synchronised`: the kernel or systemd-timesyncd says so.
/// `known_good`: the latest time this device has trusted, if it knows one.
///
/// The floor and the known-good time apply whatever `require_sync` says: a clock that reads
/// earlier than a time already seen as correct is wrong, synchronised or not (NTP may not have
/// stepped it yet).
pub fn judge(
    time: Timestamp,
    synchronised: bool,
    require_sync: bool,
    known_good: Option<Timestamp>,
) -> Result<(), Distrust> {
    if time < RELEASE_FLOOR {
        return Err(Distrust::BeforeRelease { time });
    }
    if let Some(known_good) = known_good.filter(|k| time < *k) {
        return Err(Distrust::BehindKnownGood { time, known_good });
    }
    if require_sync && !synchronised {
        return Err(Distrust::NotSynchronised);
    }
    Ok(())
}

/// Where the trusted clock reads its inputs. The OS in production ([`OsTime`]); tests use a
/// fake they can step.
pub trait TimeSource: Send + Sync + 'static {
    /// The wall-clock time now.
    fn wall(&self) -> Timestamp;
    /// The monotonic clock now (for the probe cache and the persist interval).
    fn monotonic(&self) -> Instant;
    /// Whether the clock is synchronised to network time, as far as the system knows. Costs a
    /// syscall or a file stat: [`TrustedClock`] caches it for [`SYNC_CACHE`].
    fn synchronised(&self) -> bool;
}

/// How the trusted clock behaves, from `[clock]` and `state_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockSettings {
    /// `clock.require_sync`.
    pub require_sync: bool,
    /// The known-good time's file (`<state_dir>/known-good-time`).
    pub known_good_file: PathBuf,
}

impl ClockSettings {
    pub fn from_config(config: &crate::Config) -> ClockSettings {
        ClockSettings {
            require_sync: config.clock.require_sync,
            known_good_file: known_good::path_in(&config.state_dir),
        }
    }
}

/// The production clock: the OS's time, trusted by [`judge`].
pub type SystemClock = TrustedClock<OsTime>;

/// A wall clock that decides its own trust: every `now()` is judged, the known-good time is
/// kept in memory (the latest trusted time seen) and written to disk by [`TrustedClock::keep`],
/// and each change of trust is reported as `Component::Clock` health.
pub struct TrustedClock<T: TimeSource> {
    source: T,
    settings: ClockSettings,
    reporter: Reporter,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last probe answer and when (monotonic) it was taken.
    sync: Option<(Instant, bool)>,
    /// The latest trusted time seen, or the one read from disk at start.
    known_good: Option<Timestamp>,
    /// What is on disk, to skip writing the same value again.
    written: Option<Timestamp>,
    /// When (monotonic) the known-good time was last written.
    written_at: Option<Instant>,
    /// The verdict last reported as health; `None` before the first.
    reported: Option<Verdict>,
}

/// A verdict without its times, so a report is sent when trust changes, not on every tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Trusted,
    BeforeRelease,
    BehindKnownGood,
    NotSynchronised,
}

impl From<&Result<(), Distrust>> for Verdict {
    fn from(r: &Result<(), Distrust>) -> Verdict {
        match r {
            Ok(()) => Verdict::Trusted,
            Err(Distrust::BeforeRelease { .. }) => Verdict::BeforeRelease,
            Err(Distrust::BehindKnownGood { .. }) => Verdict::BehindKnownGood,
            Err(Distrust::NotSynchronised) => Verdict::NotSynchronised,
        }
    }
}

impl TrustedClock<OsTime> {
    /// The OS's clock. Reads the known-good time from disk (blocking IO: call at start, off
    /// the async reactor).
    pub fn system(settings: ClockSettings, reporter: Reporter) -> SystemClock {
        TrustedClock::new(OsTime::default(), settings, reporter)
    }
}

impl<T: TimeSource> TrustedClock<T> {
    /// Reads the known-good time from `settings.known_good_file`; a missing or damaged file
    /// means none is known (logged as a warning: the step-back check is off until the clock
    /// has been trusted once).
    pub fn new(source: T, settings: ClockSettings, reporter: Reporter) -> TrustedClock<T> {
        let known_good = match known_good::read(&settings.known_good_file) {
            Ok(Some(t)) => {
                tracing::info!(
                    "{}: last known-good time {t}; an earlier clock is not trusted",
                    settings.known_good_file.display()
                );
                Some(t)
            }
            Ok(None) => {
                tracing::warn!(
                    "{}: no known-good time yet (first start?); the clock is not checked for stepping back until it has been trusted once",
                    settings.known_good_file.display()
                );
                None
            }
            Err(e) => {
                tracing::warn!(
                    "{e}; starting without a known-good time (the file is rewritten once the clock is trusted)"
                );
                None
            }
        };
        TrustedClock {
            source,
            settings,
            reporter,
            state: Mutex::new(State {
                known_good,
                written: known_good,
                ..State::default()
            }),
        }
    }

    /// The latest time seen as trusted (in memory; on disk it may be up to
    /// [`PERSIST_EVERY`] older).
    pub fn known_good(&self) -> Option<Timestamp> {
        self.lock().known_good
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere mid-update; every field stays valid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Judges the time now, updates the known-good time and reports a change of trust. The
    /// state lock is held throughout so that concurrent callers report changes in order.
    fn evaluate(&self, state: &mut State) -> (Timestamp, Result<(), Distrust>) {
        let time = self.source.wall();
        let mono = self.source.monotonic();
        let synchronised = match state.sync {
            Some((at, answer)) if mono.saturating_duration_since(at) < SYNC_CACHE => answer,
            _ => {
                let answer = self.source.synchronised();
                state.sync = Some((mono, answer));
                answer
            }
        };
        let verdict = judge(
            time,
            synchronised,
            self.settings.require_sync,
            state.known_good,
        );
        if verdict.is_ok() {
            state.known_good = Some(state.known_good.map_or(time, |k| k.max(time)));
        }
        let kind = Verdict::from(&verdict);
        if state.reported != Some(kind) {
            state.reported = Some(kind);
            match verdict {
                Ok(()) if synchronised => {
                    self.reporter
                        .health(Component::Clock, HealthState::Ok, "synchronised")
                }
                Ok(()) => self.reporter.health(
                    Component::Clock,
                    HealthState::Ok,
                    "not synchronised, trusted because clock.require_sync = false",
                ),
                Err(why) => self.reporter.health(
                    Component::Clock,
                    HealthState::Degraded,
                    format!("time not trusted: {why}"),
                ),
            }
        }
        (time, verdict)
    }

    /// Judges the clock and writes the known-good time if the clock is trusted and the last
    /// write is at least [`PERSIST_EVERY`] old. Blocking IO: run it on a blocking thread,
    /// every few seconds (it also reports trust changes while no one is at the door).
    pub fn keep(&self) -> Result<(), known_good::KnownGoodError> {
        let due = {
            let mut state = self.lock();
            let (_, verdict) = self.evaluate(&mut state);
            let mono = self.source.monotonic();
            let interval_over = state
                .written_at
                .is_none_or(|at| mono.saturating_duration_since(at) >= PERSIST_EVERY);
            match state.known_good {
                Some(k) if verdict.is_ok() && interval_over && state.written != Some(k) => {
                    // Marked before the write: a failing disk is retried a minute later, not
                    // on every tick.
                    state.written_at = Some(mono);
                    Some(k)
                }
                _ => None,
            }
        };
        // The write (with its fsyncs) runs outside the lock: decisions never wait for the disk.
        match due {
            Some(k) => self.write(k),
            None => Ok(()),
        }
    }

    /// Writes the known-good time now if it changed since the last write: at graceful stop.
    pub fn persist(&self) -> Result<(), known_good::KnownGoodError> {
        let due = {
            let state = self.lock();
            state.known_good.filter(|k| state.written != Some(*k))
        };
        match due {
            Some(k) => self.write(k),
            None => Ok(()),
        }
    }

    fn write(&self, k: Timestamp) -> Result<(), known_good::KnownGoodError> {
        known_good::write(&self.settings.known_good_file, k)?;
        let mut state = self.lock();
        // Another writer may have written a later one in the meantime; keep the later.
        if state.written.is_none_or(|w| w < k) {
            state.written = Some(k);
        }
        Ok(())
    }

    /// Runs [`TrustedClock::keep`] every `every` until `cancel`, then writes the known-good
    /// time a last time (the graceful stop). Failures are logged: a clock that cannot write
    /// its file still tells the time.
    pub async fn run_keeper(self: Arc<Self>, every: Duration, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let clock = self.clone();
            match tokio::task::spawn_blocking(move || clock.keep()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("{e}"),
                Err(e) => tracing::error!("clock keeper task failed: {e}"),
            }
        }
        let clock = self.clone();
        match tokio::task::spawn_blocking(move || clock.persist()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("at stop: {e}"),
            Err(e) => tracing::error!("clock keeper task failed at stop: {e}"),
        }
    }
}

impl<T: TimeSource> Clock for TrustedClock<T> {
    fn now(&self) -> WallTime {
        let (time, verdict) = self.evaluate(&mut self.lock());
        WallTime {
            time,
            trusted: verdict.is_ok(),
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
            // Before `set`: the host's time, checked against the floor only. A simulation is
            // not about the host's NTP, and must not read or write a known-good file.
            None => {
                let time = Timestamp::now();
                WallTime {
                    time,
                    trusted: time >= RELEASE_FLOOR,
                }
            }
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
mod tests;
