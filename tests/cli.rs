//! The `acceso` binary as a user runs it: demo, sim, and bad input.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use acceso_protocol::AccessEvent;
use serde_json::Value;

mod support;

use support::daemon::{offline_config, Daemon};

const BIN: &str = env!("CARGO_BIN_EXE_acceso");

/// Runs the binary with a time limit, so a hang fails the test instead of stalling it.
fn acceso(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run acceso");
    let until = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("acceso {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Runs `tests/scenarios/NAME.json`, which must succeed, and returns its output lines.
///
/// Scenarios run one at a time: their steps have time bounds, and two face scenarios running
/// OpenCV on every core beside a timing-sensitive one on a 2-core machine is a test of the
/// machine, not of acceso. The output goes to stderr, which the harness shows on failure.
fn scenario(name: &str) -> Vec<Value> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let path = format!("{}/tests/scenarios/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let out = acceso(&["sim", "--scenario", &path]);
    eprintln!("{name}:\n{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines(&out)
}

fn of_kind<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["kind"] == kind).collect()
}

/// Checks what must hold for any run: the summary is last and consistent, the relay was only
/// energised for grants and never longer than the unlock time, every decision's event reached
/// the broker with every field. `cut_short` unlocks may end early (a restart relocks).
fn check_run(lines: &[Value], unlock_ms: u64, cut_short: usize) -> &Value {
    let summary = lines.last().expect("no output");
    assert_eq!(summary["kind"], "summary", "last line is not the summary");
    let mut t_prev = 0;
    for l in lines {
        let t = l["t_ms"].as_u64().expect("t_ms");
        assert!(t >= t_prev, "t_ms goes back at {l}");
        t_prev = t;
    }
    // Every unlock is immediately followed by a granted decision (actuate, then report).
    for (i, l) in lines.iter().enumerate() {
        if l["kind"] == "relay" && l["state"] == "unlocked" {
            let next = lines[i + 1..]
                .iter()
                .find(|n| n["kind"] == "decision")
                .expect("an unlock without a decision");
            assert_eq!(next["decision"], "granted", "relay unlocked for {next}");
        }
    }
    let decisions = of_kind(lines, "decision");
    let granted = decisions
        .iter()
        .filter(|d| d["decision"] == "granted")
        .count();
    assert_eq!(summary["decisions"], decisions.len());
    assert_eq!(summary["granted"], granted);
    let intervals = summary["relay_intervals_ms"].as_array().unwrap();
    assert_eq!(intervals.len(), granted, "one relay interval per grant");
    let mut short = 0;
    for iv in intervals {
        let iv = iv.as_u64().unwrap();
        assert!(
            iv <= unlock_ms + 150,
            "relay open {iv} ms, configured {unlock_ms}"
        );
        if iv < unlock_ms {
            short += 1;
        }
    }
    assert_eq!(
        short, cut_short,
        "unlocks shorter than {unlock_ms} ms: {intervals:?}"
    );
    // Events: one per decision, seq in order, matching the decision, every field present.
    let mut events: Vec<AccessEvent> = Vec::new();
    for p in of_kind(lines, "published") {
        assert_eq!(p["topic"], "acceso/logs");
        assert!(p.get("error").is_none(), "bad event: {p}");
        assert_eq!(p["event"].as_object().unwrap().len(), 15, "{p}");
        let e: AccessEvent = serde_json::from_value(p["event"].clone()).unwrap();
        if !events.iter().any(|x| x.event_id == e.event_id) {
            events.push(e);
        }
    }
    events.sort_by_key(|e| e.seq);
    assert_eq!(
        events.len(),
        decisions.len(),
        "events published != decisions"
    );
    assert_eq!(summary["events_published"], events.len());
    assert_eq!(summary["events_queued"], 0);
    for (i, (d, e)) in decisions.iter().zip(&events).enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        assert_eq!(d["card_uid"], serde_json::to_value(&e.card_uid).unwrap());
        assert_eq!(d["reason"], serde_json::to_value(e.reason).unwrap());
        assert_eq!(d["latency_us"], e.latency_us);
    }
    summary
}

fn reasons(lines: &[Value]) -> Vec<String> {
    of_kind(lines, "decision")
        .iter()
        .map(|d| d["reason"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn demo_shows_updates_grants_denials_and_the_events_received() {
    let out = acceso(&["demo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = lines(&out);
    let summary = check_run(&lines, 1500, 0);
    assert_eq!(
        reasons(&lines),
        [
            "granted",
            "unknown_card",
            "granted",
            "unknown_card",
            "unknown_card", // eve, added only by a forged update
            "unknown_card"
        ]
    );
    let applied: Vec<&str> = of_kind(&lines, "applied")
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        applied,
        ["applied", "applied", "applied", "rejected", "rejected", "ignored"]
    );
    assert_eq!(summary["updates_rejected"], 2);
    // The relay starts locked and ends locked.
    let relay = of_kind(&lines, "relay");
    assert_eq!(relay.first().unwrap()["state"], "locked");
    assert_eq!(relay.last().unwrap()["state"], "locked");
}

#[test]
fn scenario_with_outage_crash_and_restart_loses_no_event() {
    let lines = scenario("outage_and_restarts");
    // The crash comes while Ana's second unlock runs: the restarted agent locks at start.
    check_run(&lines, 500, 1);
    // Offline decisions are made locally; the retained update survives restarts; the
    // validity window is enforced against the clock the agent sees, and not at all while that
    // clock is untrusted (Tom, whose access has an end date, is denied; Ana is not).
    assert_eq!(
        reasons(&lines),
        [
            "granted",
            "unknown_card",
            "granted",
            "expired",
            "clock_untrusted",
            "granted"
        ]
    );
    let broker: Vec<&str> = of_kind(&lines, "health")
        .iter()
        .filter(|h| h["component"] == "broker")
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert!(broker.contains(&"degraded"), "{broker:?}");
    assert_eq!(broker.last(), Some(&"ok"));
    // The untrusted clock is carried on the event decided under it.
    let published = of_kind(&lines, "published");
    let untrusted: Vec<u64> = published
        .iter()
        .filter(|p| p["event"]["time_trusted"] == false)
        .map(|p| p["event"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(untrusted.first(), Some(&5));
}

#[test]
fn malformed_scenario_exits_non_zero_naming_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (r#"{"steps":[{"wait_ms":1},{"teleport":true}]}"#, "step 2"),
        (
            r#"{"config":{"door":{"unlock_ms":"long"}},"steps":[]}"#,
            "door.unlock_ms",
        ),
        (r#"{"config":{"broker":{"colour":1}},"steps":[]}"#, "colour"),
        (r#"{"steps":[{"card":"not a uid"}]}"#, "step 1"),
        (
            r#"{"config":{"sync":{"public_keys":["/nonexistent.pem"]}},"steps":[]}"#,
            "sync.public_keys[0]`: cannot read /nonexistent.pem",
        ),
    ];
    for (text, expect) in cases {
        let path = dir.path().join("s.json");
        std::fs::write(&path, text).unwrap();
        let out = acceso(&["sim", "--scenario", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{text}: {err}");
        assert!(out.stdout.is_empty(), "ran a malformed scenario: {text}");
    }
}

#[test]
fn malformed_config_exits_non_zero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "device_id = \"d\"\n[door]\nname = \"f\"\nunlock_msec = 3000\n",
            "unlock_msec",
        ),
        (
            "device_id = \"d\"\n[door]\nname = \"f\"\nunlock_ms = 5\n",
            "door.unlock_ms",
        ),
        ("[door]\nname = \"f\"\n", "device_id"),
        (
            "device_id = \"d\"\n[door]\nname = \"f\"\n[broker]\nport = \"x\"\n",
            "port",
        ),
        ("device_id = \"d\"\n[door\n", "line 2"),
        (
            "device_id = \"d\"\n[door]\nname = \"f\"\n[reader]\nspi_device = \"\"\n",
            "`reader.spi_device`: is empty",
        ),
        (
            "device_id = \"d\"\n[door]\nname = \"f\"\n[camera]\ndevice = \"\"\n",
            "`camera.device`: is empty",
        ),
        (
            "device_id = \"d\"\n[door]\nname = \"f\"\n[face]\nmodels_dir = \"\"\n",
            "`face.models_dir`: is empty",
        ),
        (
            "device_id = \"d\"\n[door]\nname = \"f\"\n[sync]\npublic_keys = [\"\"]\n",
            "`sync.public_keys[0]`: is empty",
        ),
        // A filter that matches nothing would silence the agent: journalctl's spelling.
        (
            "device_id = \"d\"\nlog = \"warning\"\n[door]\nname = \"f\"\n",
            "`log`: \"warning\" is not a level",
        ),
        (
            "device_id = \"d\"\nlog = \"acceso=debug,inf o\"\n[door]\nname = \"f\"\n",
            "\"inf o\" is not a level",
        ),
    ];
    // What the config names must be there: the pinned keys load (each named by its place in
    // the list, and its file), the state directory is one. `run` fails before it starts
    // anything, as `check-config` does, with 2: systemd does not restart a bad config.
    let junk = dir.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let a_file = dir.path().join("a-file");
    std::fs::write(&a_file, "").unwrap();
    let ok_key = dir.path().join("ok.pem");
    std::fs::write(
        &ok_key,
        acceso_protocol::SigningKey::generate()
            .unwrap()
            .public_key()
            .to_pem(),
    )
    .unwrap();
    let head = "device_id = \"d\"\n[door]\nname = \"f\"\n";
    let named = [
        (
            format!("{head}[sync]\npublic_keys = [\"/nonexistent.pem\"]\n"),
            "key `sync.public_keys[0]`: cannot read /nonexistent.pem".to_string(),
        ),
        (
            format!(
                "{head}[sync]\npublic_keys = [\"{}\", \"{}\"]\n",
                ok_key.display(),
                junk.display()
            ),
            format!("key `sync.public_keys[1]`: {}", junk.display()),
        ),
        (
            format!("state_dir = \"{}\"\n{head}", a_file.display()),
            format!("key `state_dir`: {} is not a directory", a_file.display()),
        ),
        (
            format!("state_dir = \"{}/state\"\n{head}", a_file.display()),
            format!("{} is not a directory", a_file.display()),
        ),
        // TLS files the agent cannot read: a configuration error, not a restart loop.
        (
            format!(
                "{head}[broker]\ntls = true\nca_file = \"{k}\"\ncert_file = \"/nonexistent.crt\"\nkey_file = \"{k}\"\n",
                k = ok_key.display()
            ),
            "key `broker.cert_file`: cannot read /nonexistent.crt".to_string(),
        ),
    ];
    let cases = cases
        .iter()
        .map(|(t, k)| (t.to_string(), k.to_string()))
        .chain(named);
    for (text, key) in cases {
        let path = dir.path().join("acceso.toml");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        for cmd in ["run", "check-config"] {
            let out = acceso(&[cmd, "--config", path.to_str().unwrap()]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} {text}: {err}");
            assert!(err.contains(&key), "{cmd} {text}: {err}");
            assert!(out.stdout.is_empty(), "{cmd} {text}: printed a bad config");
        }
    }
    let out = acceso(&["run", "--config", "/nonexistent/acceso.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/acceso.toml"));
}

#[test]
fn check_config_prints_every_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acceso.toml");
    std::fs::write(&path, "device_id = \"door-7\"\n[door]\nname = \"front\"\n").unwrap();
    let out = acceso(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for key in [
        "unlock_ms = 3000",
        "port = 1883",
        "topic_prefix = \"acceso\"",
        "poll_ms = 20",
        "untrusted_clock = \"deny_restricted\"",
        "threshold = 0.45",
        "require_sync = true",
        "# door.time_zone is not set: schedules use the system's",
    ] {
        assert!(text.contains(key), "{key} missing in\n{text}");
    }
}

/// Every signal that would otherwise end the agent without locking the door stops it as
/// SIGTERM does: SIGTERM and SIGINT (systemd, Ctrl-C), SIGHUP (a closed terminal), SIGQUIT
/// (Ctrl-\\), the user, alarm, power and limit signals, the real-time ones.
#[test]
fn daemon_stops_cleanly_on_every_signal_that_would_end_it() {
    let signals = [
        "-TERM",
        "-INT",
        "-HUP",
        "-QUIT",
        "-USR1",
        "-USR2",
        "-ALRM",
        "-VTALRM",
        "-PROF",
        "-POLL",
        "-PWR",
        "-STKFLT",
        "-XCPU",
        "-XFSZ",
        "-RTMIN",
        "-RTMIN+1",
        // SIGRTMAX (kill(1) has no name for it).
        "-RTMIN+30",
    ];
    for (i, signal) in signals.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut daemon = Daemon::start(&offline_config(dir.path(), ""));
        // Running: started, and the reader thread has tried the (missing) MFRC522.
        daemon.wait_for(&["acceso running", "cannot open /dev/spidev0.0"]);
        assert!(dir.path().join("state/acceso.db").exists());
        // Idle (no reader, no inputs, no camera, no broker), it must not spin: a task polling
        // a closed channel for ever would use a whole core. (Once: it is the same daemon.)
        let cpu = |pid: u32| -> u64 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .unwrap()
                .1
                .split_whitespace()
                .collect();
            fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
        };
        if i == 0 {
            let before = cpu(daemon.id());
            std::thread::sleep(Duration::from_millis(1500));
            let ticks = cpu(daemon.id()) - before;
            // Clock ticks are 1/100 s: a spinning task would show ~150 here.
            assert!(
                ticks < 40,
                "{signal}: the idle daemon used {ticks} ticks of CPU in 1.5 s"
            );
        }
        let (status, err) = daemon.signal(signal);
        assert!(status.success(), "{signal}: {status:?} {err}");
        assert!(
            err.contains("stopping: locking the door"),
            "{signal}: {err}"
        );
        let name = format!("SIG{} received", &signal[1..]).replace("SIGPOLL", "SIGIO");
        assert!(err.contains(&name), "{signal}: {err}");
        // No MFRC522 on this machine: the door ran on, with the reader reported failed (above).
        // require_sync = false: this machine's clock is trusted without NTP, reported so, and
        // its time kept on disk by the time the daemon has stopped.
        assert!(err.contains(r#""component":"clock","state":"ok""#), "{err}");
        let kept = std::fs::read_to_string(dir.path().join("state/known-good-time")).unwrap();
        let kept: jiff::Timestamp = kept.trim().parse().unwrap();
        let age = jiff::Timestamp::now().duration_since(kept);
        assert!(
            age >= jiff::SignedDuration::ZERO && age < jiff::SignedDuration::from_secs(60),
            "known-good time {kept} is not the daemon's last minute"
        );
    }
}

#[test]
fn reader_faults_in_a_scenario_never_give_a_wrong_or_partial_uid() {
    let lines = scenario("reader_faults");
    check_run(&lines, 300, 0);
    let decisions = of_kind(&lines, "decision");
    let uids: Vec<&str> = decisions
        .iter()
        .map(|d| d["card_uid"].as_str().unwrap())
        .collect();
    // bad BCC, CRC error, silent chip, chip reset: each read once, correctly. The card that
    // left mid-read: no decision at all. The collision: exactly one of the two cards.
    assert_eq!(
        &uids[..4],
        [
            "046B2F91C45A80",
            "0A0B0C0D0E0F10111213",
            "046B2F91C45A80",
            "0A0B0C0D0E0F10111213"
        ]
    );
    assert_eq!(uids.len(), 5, "{uids:?}");
    assert!(
        ["046B2F91C45A81", "046B2F91C45A82"].contains(&uids[4]),
        "{uids:?}"
    );
    assert_eq!(
        reasons(&lines),
        ["granted", "granted", "granted", "granted", "unknown_card"]
    );
    let reader: Vec<&str> = of_kind(&lines, "health")
        .iter()
        .filter(|h| h["component"] == "reader")
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(reader, ["failed", "ok", "failed", "ok"]);
}

#[test]
fn door_scenario_exit_early_relock_forced_and_held_open() {
    let lines = scenario("door");
    // The exit unlock ends early: the door closed behind the person.
    let summary = check_run(&lines, 2000, 1);
    assert_eq!(
        reasons(&lines),
        [
            "exit_request",
            "relocked_on_close",
            "forced_open",
            "held_open",
            "held_open_ended"
        ]
    );
    assert_eq!(summary["alarms"], 2);
    assert_eq!(summary["relay_intervals_ms"].as_array().unwrap().len(), 1);
}

#[cfg(feature = "face")]
fn face_decisions(lines: &[Value]) -> Vec<(String, String, Option<f64>)> {
    of_kind(lines, "decision")
        .iter()
        .map(|d| {
            (
                d["method"].as_str().unwrap().to_string(),
                format!(
                    "{}:{}",
                    d["user_id"].as_str().unwrap_or("-"),
                    d["reason"].as_str().unwrap()
                ),
                d["face_score"].as_f64(),
            )
        })
        .collect()
}

/// The (method, "user:reason") of every decision, for comparing with a list.
#[cfg(feature = "face")]
fn what_was_decided(got: &[(String, String, Option<f64>)]) -> Vec<(&str, &str)> {
    got.iter()
        .map(|(m, r, _)| (m.as_str(), r.as_str()))
        .collect()
}

/// The real models on real photos, through the whole agent: enrolment from photos, a
/// recognised face granted, a stranger denied, no decision for a dog, a crowd or a broken frame,
/// cards still working, a disabled user's face denied, another model's embeddings ignored.
#[cfg(feature = "face")]
#[test]
fn face_scenario_grants_known_faces_only_and_cards_keep_working() {
    let lines = scenario("faces");
    check_run(&lines, 1000, 0);
    let got = face_decisions(&lines);
    assert_eq!(
        what_was_decided(&got),
        [
            ("face", "obama:granted"),
            ("face", "-:unknown_face"),
            ("card", "obama:granted"),
            ("face", "obama:user_disabled"),
            ("card", "old:granted"),
            // Enrolled under two users: as close to one as to the other, so neither.
            ("face", "-:ambiguous_face"),
        ]
    );
    // Scores: the known face well over the threshold, the stranger well under it.
    assert!(got[0].2.unwrap() > 0.6, "{got:?}");
    assert!(got[1].2.unwrap() < 0.45, "{got:?}");
    assert_eq!(got[2].2, None, "a card decision has no face score");
    // The face events reach the broker with method and score.
    let face_events: Vec<AccessEvent> = of_kind(&lines, "published")
        .iter()
        .map(|p| serde_json::from_value(p["event"].clone()).unwrap())
        .filter(|e: &AccessEvent| e.method == acceso_protocol::Method::Face)
        .collect();
    assert_eq!(face_events.len(), 4);
    assert!(face_events
        .iter()
        .all(|e| e.face_score.is_some() && e.card_uid.is_none()));
    // The broken frame is reported and the camera thread carries on.
    let health = of_kind(&lines, "health");
    assert!(health.iter().any(|h| h["component"] == "face"
        && h["state"] == "degraded"
        && h["detail"].as_str().unwrap().contains("empty.jpg")));
    let applied = of_kind(&lines, "applied");
    assert!(applied.iter().all(|a| a["outcome"] == "applied"));
    assert!(applied[3]["reason"]
        .as_str()
        .unwrap()
        .contains("arcface-r100"));
}

/// A face-only door: a card is denied (and names its holder), one frame is not enough when
/// two must agree, a person standing in front of the camera is one decision, and after a
/// crash the restarted agent recognises them again.
#[cfg(feature = "face")]
#[test]
fn face_only_door_denies_cards_needs_agreeing_frames_and_decides_once_per_visit() {
    let lines = scenario("face_only");
    let got = face_decisions(&lines);
    assert_eq!(
        what_was_decided(&got),
        [
            ("card", "obama:method_not_allowed"),
            ("face", "obama:granted"),
            ("face", "obama:granted"),
        ]
    );
    let summary = lines.last().unwrap();
    assert_eq!(summary["kind"], "summary");
    assert_eq!(summary["relay_intervals_ms"].as_array().unwrap().len(), 2);
}

#[cfg(feature = "face")]
#[test]
fn a_face_step_on_a_card_door_or_a_photo_that_is_not_a_file_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (r#"{"steps":[{"face":"x.jpg"}]}"#, "door.mode"),
        (
            r#"{"config":{"door":{"mode":"face"}},"steps":[{"face":"missing.jpg"}]}"#,
            "missing.jpg not found",
        ),
        (
            r#"{"config":{"door":{"mode":"face"}},"steps":[{"wait_ms":1},{"face":"photos"}]}"#,
            "photos is a directory, not an image file",
        ),
        (
            r#"{"config":{"door":{"mode":"face"}},"steps":[{"update":{"version":1,"op":"upsert_user","user":{"id":"d","name":"D","face_photos":["photos"]}}}]}"#,
            "photos is a directory",
        ),
        (
            r#"{"config":{"door":{"mode":"face"}},"steps":[{"update":{"version":1,"op":"upsert_user","user":{"id":"d","name":"D","face_photos":["dogs.jpg"]}}}]}"#,
            "no face found",
        ),
        (
            r#"{"config":{"door":{"mode":"face"}},"steps":[{"wait_ms":1},{"update":{"version":1,"op":"upsert_user","user":{"id":"d","name":"D","face_photos":["obama.jpg","biden.jpg"]}}}]}"#,
            "step 2: face_photos: image",
        ),
    ];
    std::fs::write(dir.path().join("x.jpg"), b"").unwrap();
    std::fs::create_dir(dir.path().join("photos")).unwrap();
    for (from, to) in [
        ("noface/dogs.jpg", "dogs.jpg"),
        ("portraits/obama.jpg", "obama.jpg"),
        ("portraits/biden.jpg", "biden.jpg"),
    ] {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/faces");
        std::fs::copy(format!("{fixtures}/{from}"), dir.path().join(to)).unwrap();
    }
    for (i, (text, expect)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("s{i}.json"));
        std::fs::write(&path, text).unwrap();
        let out = acceso(&["sim", "--scenario", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{text}: {err}");
        assert!(
            out.stdout.is_empty(),
            "nothing may run: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The clock stepped forward and back around decisions: schedules and validity follow it
/// while it is trusted; while it is not, time-restricted users are denied `clock_untrusted`
/// and unrestricted ones still pass; every event says whether its time was trusted, and the
/// sequence numbers stay in order whatever the clock does.
#[test]
fn clock_steps_schedules_and_validity_decide_right_and_unrestricted_users_always_pass() {
    let lines = scenario("clock_policy");
    check_run(&lines, 500, 0);
    let decisions: Vec<(String, String)> = of_kind(&lines, "decision")
        .iter()
        .map(|d| {
            (
                d["user_id"].as_str().unwrap().to_string(),
                d["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = [
        ("plain", "granted"), // Monday 12:00 in Berlin, trusted
        ("staff", "granted"),
        ("temp", "granted"),
        ("staff", "outside_schedule"), // Monday 20:30 in Berlin
        ("plain", "granted"),          // 1970, untrusted: unrestricted still passes
        ("staff", "clock_untrusted"),
        ("temp", "clock_untrusted"),
        ("staff", "granted"), // the next Monday 11:00, trusted again
        ("temp", "expired"),
        ("plain", "granted"), // untrusted, stepped back
    ];
    let expect: Vec<(String, String)> = expect
        .iter()
        .map(|(u, r)| (u.to_string(), r.to_string()))
        .collect();
    assert_eq!(decisions, expect);
    // The events in sequence order: each one's trust flag and time as the clock stood.
    let mut events: Vec<AccessEvent> = of_kind(&lines, "published")
        .iter()
        .map(|p| serde_json::from_value(p["event"].clone()).unwrap())
        .collect();
    events.sort_by_key(|e| e.seq);
    events.dedup_by_key(|e| e.seq);
    let trusted: Vec<bool> = events.iter().map(|e| e.time_trusted).collect();
    assert_eq!(
        trusted,
        [true, true, true, true, false, false, false, true, true, false]
    );
    let years: Vec<i16> = events
        .iter()
        .map(|e| jiff::tz::TimeZone::UTC.to_datetime(e.time).year())
        .collect();
    assert_eq!(
        years,
        [2026, 2026, 2026, 2026, 1970, 1970, 1970, 2026, 2026, 2026]
    );
    let boots: std::collections::HashSet<&str> =
        events.iter().map(|e| e.boot_id.as_str()).collect();
    assert_eq!(boots.len(), 1, "one boot");
}

/// A card_and_face door: card then face and face then card within the window grant once
/// (method card_and_face, with the card and the face score); a card alone is denied when the
/// window runs out; another user's face with a card is a mismatch, denied.
#[cfg(feature = "face")]
#[test]
fn card_and_face_door_needs_both_of_one_user_within_the_window_in_either_order() {
    let lines = scenario("two_factor");
    check_run(&lines, 500, 0);
    let got: Vec<(String, String, String)> = of_kind(&lines, "decision")
        .iter()
        .map(|d| {
            (
                d["method"].as_str().unwrap().to_string(),
                d["user_id"].as_str().unwrap_or("-").to_string(),
                d["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = [
        ("card_and_face", "obama", "granted"),
        ("card_and_face", "obama", "granted"),
        ("card", "obama", "second_factor_missing"),
        ("card_and_face", "biden", "factors_mismatch"),
        ("card", "-", "unknown_card"),
    ];
    let expect: Vec<(String, String, String)> = expect
        .iter()
        .map(|(m, u, r)| (m.to_string(), u.to_string(), r.to_string()))
        .collect();
    assert_eq!(got, expect);
    let grants: Vec<&Value> = of_kind(&lines, "decision")
        .into_iter()
        .filter(|d| d["decision"] == "granted")
        .collect();
    for g in &grants {
        assert_eq!(g["card_uid"], "DEADBEEF");
        assert!(g["face_score"].as_f64().unwrap() > 0.45, "{g}");
    }
    // The missing second factor is decided one window (3 s) after the card was read.
    let missing = of_kind(&lines, "decision")
        .into_iter()
        .find(|d| d["reason"] == "second_factor_missing")
        .unwrap();
    let waited = missing["latency_us"].as_u64().unwrap();
    assert!((3_000_000..3_500_000).contains(&waited), "{missing}");
    // Every credential of a two-factor attempt is shown while it waits.
    let waits = of_kind(&lines, "first_factor");
    assert!(waits.len() >= 6, "{waits:?}");
}

#[test]
fn sync_scenario_fills_a_gap_with_a_signed_snapshot_and_refuses_forgeries() {
    let lines = scenario("sync");
    let summary = check_run(&lines, 500, 0);
    assert_eq!(
        reasons(&lines),
        [
            "granted",      // ben, before the changes he missed
            "unknown_card", // ben: revoked in a lost update, the snapshot removed him
            "granted",      // cy: added in a lost update, brought by the snapshot
            "unknown_card", // eve: only in unsigned and forged updates
            "granted",      // dee: a replayed delete of version 5 is ignored
        ]
    );
    let applied = of_kind(&lines, "applied");
    let line = |version: u64, op: &str| {
        applied
            .iter()
            .find(|a| a["version"] == version && a["op"] == op)
            .unwrap_or_else(|| panic!("no applied line for {op} {version}"))
    };
    assert_eq!(line(5, "upsert_user")["outcome"], "gap");
    assert_eq!(line(5, "snapshot")["outcome"], "applied");
    assert_eq!(line(5, "snapshot")["reason"], "3 users");
    let refusals: Vec<&str> = applied
        .iter()
        .filter(|a| a["outcome"] == "rejected")
        .map(|a| a["reason"].as_str().unwrap())
        .collect();
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    assert!(refusals[0].contains("unsigned"), "{}", refusals[0]);
    assert!(refusals[1].contains("does not verify"), "{}", refusals[1]);
    assert!(
        refusals[2].contains("not a signed envelope"),
        "{}",
        refusals[2]
    );
    // The gap's request is reported, then the round ends current at the snapshot's version.
    let syncs = of_kind(&lines, "sync");
    assert!(syncs
        .iter()
        .any(|s| s["state"] == "requested" && s["have_version"] == 2));
    assert!(syncs
        .iter()
        .any(|s| s["state"] == "current" && s["have_version"] == 5));
    assert_eq!(summary["updates_gap"], 1);
    assert_eq!(summary["updates_rejected"], 3);
}
