use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::observe::{ComponentHealth, Observation};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A time source the test steps by hand; counts the sync probes.
#[derive(Clone)]
struct FakeTime(Arc<Fake>);

struct Fake {
    base: Instant,
    now: Mutex<(Timestamp, Duration)>,
    synced: Mutex<bool>,
    probes: AtomicUsize,
}

impl FakeTime {
    fn new(wall: &str, synced: bool) -> FakeTime {
        FakeTime(Arc::new(Fake {
            base: Instant::now(),
            now: Mutex::new((ts(wall), Duration::ZERO)),
            synced: Mutex::new(synced),
            probes: AtomicUsize::new(0),
        }))
    }

    /// Sets the wall clock (a step, as NTP or a user would make) without moving the monotonic.
    fn set_wall(&self, wall: &str) {
        self.0.now.lock().unwrap().0 = ts(wall);
    }

    /// Time passing: both clocks move on by `secs`.
    fn advance(&self, secs: u64) {
        let mut now = self.0.now.lock().unwrap();
        now.0 += SignedDuration::from_secs(secs as i64);
        now.1 += Duration::from_secs(secs);
    }

    fn set_synced(&self, synced: bool) {
        *self.0.synced.lock().unwrap() = synced;
    }

    fn probes(&self) -> usize {
        self.0.probes.load(Ordering::SeqCst)
    }
}

impl TimeSource for FakeTime {
    fn wall(&self) -> Timestamp {
        self.0.now.lock().unwrap().0
    }
    fn monotonic(&self) -> Instant {
        self.0.base + self.0.now.lock().unwrap().1
    }
    fn synchronised(&self) -> bool {
        self.0.probes.fetch_add(1, Ordering::SeqCst);
        *self.0.synced.lock().unwrap()
    }
}

struct Rig {
    time: FakeTime,
    clock: TrustedClock<FakeTime>,
    reports: tokio::sync::mpsc::UnboundedReceiver<Observation>,
    reporter: Reporter,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

fn rig(wall: &str, synced: bool, require_sync: bool) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    rig_in(dir, wall, synced, require_sync)
}

fn rig_in(dir: tempfile::TempDir, wall: &str, synced: bool, require_sync: bool) -> Rig {
    let time = FakeTime::new(wall, synced);
    let file = known_good::path_in(dir.path());
    let (reporter, reports) = Reporter::channel();
    let clock = TrustedClock::new(
        time.clone(),
        ClockSettings {
            require_sync,
            known_good_file: file.clone(),
        },
        reporter.clone(),
    );
    Rig {
        time,
        clock,
        reports,
        reporter,
        file,
        _dir: dir,
    }
}

impl Rig {
    /// The clock health reports sent since the last call.
    fn reports(&mut self) -> Vec<(HealthState, String)> {
        let mut out = Vec::new();
        while let Ok(obs) = self.reports.try_recv() {
            if let Observation::Health {
                component: Component::Clock,
                state,
                detail,
            } = obs
            {
                out.push((state, detail));
            }
        }
        out
    }

    fn board(&self) -> Option<ComponentHealth> {
        self.reporter
            .board()
            .snapshot()
            .get(&Component::Clock)
            .cloned()
    }

    fn on_disk(&self) -> Option<Timestamp> {
        known_good::read(&self.file).unwrap()
    }
}

#[test]
fn release_floor_is_the_documented_date() {
    assert_eq!(RELEASE_FLOOR.to_string(), "2025-12-01T00:00:00Z");
}

#[test]
fn the_rule_over_sync_known_good_and_floor() {
    let now = ts("2026-03-01T12:00:00Z");
    let earlier = ts("2026-02-01T00:00:00Z");
    let later = ts("2026-04-01T00:00:00Z");
    let old = ts("1970-01-01T00:00:10Z");
    let behind = Err(Distrust::BehindKnownGood {
        time: now,
        known_good: later,
    });
    let before = Err(Distrust::BeforeRelease { time: old });
    // (time, synchronised, require_sync, known_good) -> verdict
    let cases = [
        (now, true, true, None, Ok(())),
        (now, true, true, Some(earlier), Ok(())),
        (now, true, true, Some(now), Ok(())),
        (now, true, true, Some(later), behind),
        (now, false, true, None, Err(Distrust::NotSynchronised)),
        (
            now,
            false,
            true,
            Some(earlier),
            Err(Distrust::NotSynchronised),
        ),
        // Behind is the stronger reason: it is what the health detail says.
        (now, false, true, Some(later), behind),
        (now, false, false, None, Ok(())),
        (now, false, false, Some(earlier), Ok(())),
        (now, false, false, Some(later), behind),
        (now, true, false, Some(later), behind),
        (old, true, true, None, before),
        (old, false, true, Some(earlier), before),
        (old, false, false, None, before),
        (RELEASE_FLOOR, true, true, None, Ok(())),
    ];
    for (time, synced, require, known, want) in cases {
        assert_eq!(
            judge(time, synced, require, known),
            want,
            "time {time} synced {synced} require_sync {require} known_good {known:?}"
        );
    }
}

#[test]
fn distrust_details_say_why() {
    assert_eq!(
        Distrust::NotSynchronised.to_string(),
        "not synchronised (no NTP)"
    );
    assert_eq!(
        Distrust::BehindKnownGood {
            time: ts("2025-12-24T08:00:00Z"),
            known_good: ts("2026-03-01T12:00:00Z"),
        }
        .to_string(),
        "clock 2025-12-24T08:00:00Z is behind the last known-good time 2026-03-01T12:00:00Z"
    );
    assert_eq!(
        Distrust::BeforeRelease {
            time: ts("1970-01-01T00:00:10Z")
        }
        .to_string(),
        "clock 1970-01-01T00:00:10Z is before this release (2025-12-01T00:00:00Z)"
    );
}

#[test]
fn known_good_file_round_trips_and_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    // A state directory that does not exist yet is created.
    let path = known_good::path_in(&dir.path().join("state"));
    assert_eq!(known_good::read(&path).unwrap(), None);
    known_good::write(&path, ts("2026-03-01T12:00:00Z")).unwrap();
    assert_eq!(
        known_good::read(&path).unwrap(),
        Some(ts("2026-03-01T12:00:00Z"))
    );
    known_good::write(&path, ts("2026-03-01T12:01:00.5Z")).unwrap();
    assert_eq!(
        known_good::read(&path).unwrap(),
        Some(ts("2026-03-01T12:01:00.5Z"))
    );
    // No temp files are left behind.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(known_good::FILE_NAME)]);
}

#[test]
fn a_damaged_known_good_file_is_an_error_naming_it_and_the_clock_starts_without_one() {
    for content in [
        &b""[..],
        b"yesterday\n",
        b"\xff\xfe\x00",
        b"2026-13-45T99:00:00Z",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = known_good::path_in(dir.path());
        std::fs::write(&path, content).unwrap();
        let err = known_good::read(&path).unwrap_err();
        assert!(matches!(err, known_good::KnownGoodError::Damaged { .. }));
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        // The clock does not crash: no known-good time, trusted on sync alone, and it
        // rewrites the file once trusted.
        let r = rig_in(dir, "2026-03-01T12:00:00Z", true, true);
        assert_eq!(r.clock.known_good(), None);
        assert!(r.clock.now().trusted);
        r.clock.keep().unwrap();
        assert_eq!(r.on_disk(), Some(ts("2026-03-01T12:00:00Z")));
    }
}

#[test]
fn an_unreadable_known_good_path_is_a_read_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be: reading it fails with something other than
    // "not found".
    std::fs::create_dir(known_good::path_in(dir.path())).unwrap();
    let err = known_good::read(&known_good::path_in(dir.path())).unwrap_err();
    assert!(
        matches!(err, known_good::KnownGoodError::Read { .. }),
        "{err}"
    );
    let r = rig_in(dir, "2026-03-01T12:00:00Z", true, true);
    assert!(r.clock.now().trusted);
    let err = r.clock.keep().unwrap_err();
    assert!(err.to_string().contains("known-good-time"), "{err}");
}

#[test]
fn a_step_back_is_untrusted_until_synchronised_and_past_the_known_good_time() {
    let mut r = rig("2026-03-01T12:00:00Z", true, true);
    assert_eq!(
        r.clock.now(),
        WallTime {
            time: ts("2026-03-01T12:00:00Z"),
            trusted: true
        }
    );
    r.time.advance(30);
    assert!(r.clock.now().trusted);
    assert_eq!(r.reports(), vec![(HealthState::Ok, "synchronised".into())]);

    // Someone (or a bad NTP answer) sets the clock back a day.
    r.time.set_wall("2026-02-28T12:00:00Z");
    let now = r.clock.now();
    assert_eq!(now.time, ts("2026-02-28T12:00:00Z"));
    assert!(!now.trusted);
    assert_eq!(
        r.reports(),
        vec![(
            HealthState::Degraded,
            "time not trusted: clock 2026-02-28T12:00:00Z is behind the last known-good time 2026-03-01T12:00:30Z".into()
        )]
    );
    // Time passing while still behind keeps it untrusted, and reports nothing new.
    r.time.advance(3600);
    assert!(!r.clock.now().trusted);
    assert_eq!(r.reports(), vec![]);

    // Stepped forward past the known-good time, and synchronised: trusted again.
    r.time.set_wall("2026-03-01T12:05:00Z");
    assert!(r.clock.now().trusted);
    assert_eq!(r.reports(), vec![(HealthState::Ok, "synchronised".into())]);
    assert_eq!(r.clock.known_good(), Some(ts("2026-03-01T12:05:00Z")));
}

#[test]
fn past_the_known_good_time_but_not_synchronised_stays_untrusted() {
    let mut r = rig("2026-03-01T12:00:00Z", true, true);
    assert!(r.clock.now().trusted);
    r.time.set_wall("2026-02-01T00:00:00Z");
    assert!(!r.clock.now().trusted);
    // NTP is lost, and the clock is later set forward again: past the known-good time is
    // not enough while synchronisation is required.
    r.time.set_synced(false);
    r.time.advance(SYNC_CACHE.as_secs());
    r.time.set_wall("2026-03-02T00:00:00Z");
    assert!(!r.clock.now().trusted);
    let reports = r.reports();
    assert_eq!(
        reports.last().unwrap(),
        &(
            HealthState::Degraded,
            "time not trusted: not synchronised (no NTP)".into()
        )
    );
    r.time.set_synced(true);
    r.time.advance(SYNC_CACHE.as_secs());
    assert!(r.clock.now().trusted);
    assert_eq!(r.board().unwrap().state, HealthState::Ok);
}

#[test]
fn the_known_good_time_on_disk_distrusts_an_older_clock_at_start() {
    let dir = tempfile::tempdir().unwrap();
    known_good::write(&known_good::path_in(dir.path()), ts("2026-03-01T12:00:00Z")).unwrap();
    // A power cut: the Pi boots at the last shutdown's time, and something claims sync.
    let mut r = rig_in(dir, "2026-02-20T08:00:00Z", true, true);
    assert_eq!(r.clock.known_good(), Some(ts("2026-03-01T12:00:00Z")));
    assert!(!r.clock.now().trusted);
    assert_eq!(
        r.board().unwrap(),
        ComponentHealth {
            state: HealthState::Degraded,
            detail: "time not trusted: clock 2026-02-20T08:00:00Z is behind the last known-good time 2026-03-01T12:00:00Z".into()
        }
    );
    // Nothing untrusted is written.
    r.clock.keep().unwrap();
    assert_eq!(r.on_disk(), Some(ts("2026-03-01T12:00:00Z")));
    // NTP steps it to the real time.
    r.time.set_wall("2026-03-03T09:00:00Z");
    assert!(r.clock.now().trusted);
    assert_eq!(r.reports().last().unwrap().0, HealthState::Ok);
}

#[test]
fn before_the_release_is_untrusted_whatever_the_config() {
    for require_sync in [true, false] {
        let mut r = rig("1970-01-01T00:00:42Z", true, require_sync);
        assert!(!r.clock.now().trusted);
        let (state, detail) = r.reports().pop().unwrap();
        assert_eq!(state, HealthState::Degraded);
        assert!(detail.contains("before this release"), "{detail}");
        r.clock.keep().unwrap();
        assert_eq!(r.on_disk(), None, "a 1970 time is never known-good");
    }
}

#[test]
fn without_require_sync_a_plausible_clock_is_trusted_without_ntp() {
    let mut r = rig("2026-03-01T12:00:00Z", false, false);
    assert!(r.clock.now().trusted);
    assert_eq!(
        r.reports(),
        vec![(
            HealthState::Ok,
            "not synchronised, trusted because clock.require_sync = false".into()
        )]
    );
    // The step-back check still applies.
    r.time.set_wall("2026-02-01T00:00:00Z");
    assert!(!r.clock.now().trusted);
    r.time.set_wall("2026-03-01T12:00:01Z");
    assert!(r.clock.now().trusted);
}

#[test]
fn with_require_sync_no_ntp_means_untrusted() {
    let mut r = rig("2026-03-01T12:00:00Z", false, true);
    assert!(!r.clock.now().trusted);
    assert_eq!(
        r.reports(),
        vec![(
            HealthState::Degraded,
            "time not trusted: not synchronised (no NTP)".into()
        )]
    );
    assert_eq!(r.clock.known_good(), None);
}

#[test]
fn the_sync_probe_is_cached_for_a_few_seconds() {
    let r = rig("2026-03-01T12:00:00Z", false, true);
    for _ in 0..1000 {
        assert!(!r.clock.now().trusted);
    }
    assert_eq!(r.time.probes(), 1);
    // NTP synchronises; within the cache window the old answer stands, without probing.
    r.time.set_synced(true);
    r.time.advance(SYNC_CACHE.as_secs() - 1);
    assert!(!r.clock.now().trusted);
    assert_eq!(r.time.probes(), 1);
    r.time.advance(1);
    assert!(r.clock.now().trusted);
    assert_eq!(r.time.probes(), 2);
    for _ in 0..1000 {
        assert!(r.clock.now().trusted);
    }
    assert_eq!(r.time.probes(), 2);
}

#[test]
fn a_trust_change_is_reported_once() {
    let mut r = rig("2026-03-01T12:00:00Z", true, true);
    for _ in 0..50 {
        r.clock.now();
        r.time.advance(1);
    }
    assert_eq!(r.reports().len(), 1);
}

#[test]
fn keep_writes_the_known_good_time_at_most_once_a_minute_and_only_while_trusted() {
    let r = rig("2026-03-01T12:00:00Z", true, true);
    r.clock.keep().unwrap();
    assert_eq!(r.on_disk(), Some(ts("2026-03-01T12:00:00Z")));
    r.time.advance(30);
    r.clock.keep().unwrap();
    assert_eq!(r.on_disk(), Some(ts("2026-03-01T12:00:00Z")), "30 s later");
    r.time.advance(30);
    r.clock.keep().unwrap();
    assert_eq!(r.on_disk(), Some(ts("2026-03-01T12:01:00Z")), "60 s later");

    // Untrusted (NTP lost): the file keeps the last trusted time.
    r.time.set_synced(false);
    r.time.advance(120);
    r.clock.keep().unwrap();
    assert_eq!(r.on_disk(), Some(ts("2026-03-01T12:01:00Z")));
}

#[test]
fn persist_writes_the_latest_trusted_time_at_stop() {
    let r = rig("2026-03-01T12:00:00Z", true, true);
    r.clock.keep().unwrap();
    r.time.advance(10);
    assert!(r.clock.now().trusted);
    r.clock.persist().unwrap();
    assert_eq!(r.on_disk(), Some(ts("2026-03-01T12:00:10Z")));
    // A later start reads it back.
    let again = TrustedClock::new(
        FakeTime::new("2026-03-01T12:00:05Z", true),
        ClockSettings {
            require_sync: true,
            known_good_file: r.file.clone(),
        },
        Reporter::log_only(),
    );
    assert_eq!(again.known_good(), Some(ts("2026-03-01T12:00:10Z")));
    assert!(!again.now().trusted);
}

#[tokio::test]
async fn the_keeper_writes_at_graceful_stop() {
    let r = rig("2026-03-01T12:00:00Z", true, true);
    let clock = Arc::new(r.clock);
    assert!(clock.now().trusted);
    let cancel = CancellationToken::new();
    cancel.cancel();
    clock
        .clone()
        .run_keeper(Duration::from_secs(5), cancel)
        .await;
    assert_eq!(
        known_good::read(&r.file).unwrap(),
        Some(ts("2026-03-01T12:00:00Z"))
    );
}

#[cfg(target_os = "linux")]
#[test]
fn the_os_probe_reads_the_kernel_and_the_timesyncd_marker() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("synchronized");
    let os = OsTime {
        marker: marker.clone(),
    };
    // adjtimex in read-only mode works unprivileged on any Linux.
    let kernel = os::kernel_synchronised().unwrap();
    assert_eq!(os.synchronised(), kernel);
    std::fs::write(&marker, b"").unwrap();
    assert!(
        os.synchronised(),
        "the marker file alone means synchronised"
    );
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
