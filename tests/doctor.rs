//! `acceso doctor` against a temporary installation: a real mosquitto with mutual TLS, a PKI
//! made here, a real database, the real face models, a GStreamer test camera. All of it passes;
//! then each check is made to fail in turn, and only that check (and what depends on it) fails,
//! with a fix said.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use acceso::doctor::{self, Limits, Outcome, Report};
use support::mosquitto::{Mosquitto, TlsFiles};
use support::pki::{Ca, Issued, Validity};
use support::unwritable::Unwritable;

const BIN: &str = env!("CARGO_BIN_EXE_acceso");

const LIMITS: Limits = Limits {
    connect: Duration::from_secs(5),
    // The test camera gives a frame in well under a second; a missing one fails at the limit.
    camera: Duration::from_secs(4),
};

/// A working installation in a temporary directory.
struct Site {
    dir: tempfile::TempDir,
    ca: Ca,
    broker: Mosquitto,
    device: Issued,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("acceso doctor test CA");
        let ca_file = ca.write(dir.path(), "ca.pem");
        let server = ca.issue_server(dir.path(), "broker", Validity::Current);
        let broker = Mosquitto::start_tls(TlsFiles {
            ca: ca_file,
            cert: server.cert,
            key: server.key,
        });
        let device = ca.issue_client(dir.path(), "door-1", Validity::Current);
        std::fs::set_permissions(&device.key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        // The cloud's signing key, pinned.
        let signer = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("sync.pem"), signer.public_key_pem()).unwrap();
        // A real database, as the agent leaves it.
        acceso::store::Store::open(&state.join("acceso.db")).unwrap();
        Site {
            dir,
            ca,
            broker,
            device,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The config text, with `extra` lines appended to the sections they name.
    fn config(&self, edit: impl FnOnce(&mut Vec<(String, Vec<String>)>)) -> PathBuf {
        let face = cfg!(feature = "face");
        let mut sections: Vec<(String, Vec<String>)> = vec![
            (
                String::new(),
                vec![
                    "device_id = \"door-1\"".into(),
                    format!("state_dir = \"{}\"", self.path().join("state").display()),
                ],
            ),
            (
                "door".into(),
                vec![
                    "name = \"front\"".into(),
                    format!("mode = \"{}\"", if face { "card_or_face" } else { "card" }),
                ],
            ),
            (
                "broker".into(),
                vec![
                    "host = \"127.0.0.1\"".into(),
                    format!("port = {}", self.broker.tls_port()),
                    "tls = true".into(),
                    format!("ca_file = \"{}\"", self.path().join("ca.pem").display()),
                    format!("cert_file = \"{}\"", self.device.cert.display()),
                    format!("key_file = \"{}\"", self.device.key.display()),
                ],
            ),
            ("reader".into(), vec!["backend = \"sim\"".into()]),
            ("relay".into(), vec!["backend = \"sim\"".into()]),
            (
                "camera".into(),
                vec![
                    "backend = \"gstreamer\"".into(),
                    "pipeline = \"videotestsrc num-buffers=50 ! videoconvert ! appsink\"".into(),
                ],
            ),
            (
                "face".into(),
                vec![format!(
                    "models_dir = \"{}/models\"",
                    env!("CARGO_MANIFEST_DIR")
                )],
            ),
            (
                "sync".into(),
                vec![format!(
                    "public_keys = [\"{}\"]",
                    self.path().join("sync.pem").display()
                )],
            ),
            // This test machine has no NTP; the clock is judged by the rest of the rule.
            ("clock".into(), vec!["require_sync = false".into()]),
        ];
        edit(&mut sections);
        let mut text = String::new();
        for (name, lines) in sections {
            if !name.is_empty() {
                text.push_str(&format!("[{name}]\n"));
            }
            for l in lines {
                text.push_str(&l);
                text.push('\n');
            }
        }
        let path = self.path().join("acceso.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn run(&self, edit: impl FnOnce(&mut Vec<(String, Vec<String>)>)) -> Report {
        let path = self.config(edit);
        doctor::run(&path, LIMITS)
    }
}

/// Replaces (or adds) `key = value` in section `section`.
fn set(sections: &mut [(String, Vec<String>)], section: &str, key: &str, value: &str) {
    let (_, lines) = sections
        .iter_mut()
        .find(|(n, _)| n == section)
        .unwrap_or_else(|| panic!("no section {section}"));
    lines.retain(|l| !l.starts_with(&format!("{key} =")));
    lines.push(format!("{key} = {value}"));
}

fn quoted(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

fn failed(report: &Report) -> Vec<&'static str> {
    report
        .checks
        .iter()
        .filter(|c| c.outcome == Outcome::Failed)
        .map(|c| c.name)
        .collect()
}

/// Asserts exactly `names` failed, each with a fix, and the first one's detail says `says`.
fn only_failed(report: &Report, names: &[&str], says: &str) {
    assert_eq!(failed(report), names, "{}", report.render());
    for name in names {
        let check = report.get(name).unwrap();
        assert!(
            check.fix.as_deref().is_some_and(|f| !f.is_empty()),
            "{name} has no fix:\n{}",
            report.render()
        );
    }
    let first = report.get(names[0]).unwrap();
    assert!(
        first.detail.contains(says),
        "{} should say {says:?}:\n{}",
        names[0],
        report.render()
    );
}

/// The binary, with a time limit.
fn doctor_binary(config: &Path) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(BIN)
        .args(["doctor", "--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("acceso doctor did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_working_installation_passes_every_check() {
    let site = Site::new();
    let report = site.run(|_| {});
    assert!(report.passed(), "{}", report.render());
    assert_eq!(
        report.checks.iter().map(|c| c.name).collect::<Vec<_>>(),
        doctor::CHECKS
    );
    let broker = report.get("broker").unwrap();
    assert!(
        broker.detail.contains("client certificate accepted"),
        "{broker:?}"
    );
    assert!(report
        .get("device key")
        .unwrap()
        .detail
        .contains("matches the device certificate"));
    assert!(report
        .get("database")
        .unwrap()
        .detail
        .contains("integrity ok"));
    assert!(report.get("mfrc522").unwrap().detail.contains("0x92"));
    if cfg!(feature = "face") {
        assert_eq!(report.get("camera").unwrap().outcome, Outcome::Ok);
        assert_eq!(report.get("face models").unwrap().outcome, Outcome::Ok);
    }

    // The binary prints the same and exits 0.
    let (status, out) = doctor_binary(&site.path().join("acceso.toml"));
    assert!(status.success(), "{out}");
    assert!(out.contains("0 failed"), "{out}");
}

#[test]
fn the_binary_exits_1_and_says_what_to_do_when_a_check_fails() {
    let site = Site::new();
    let config = site.config(|s| set(s, "broker", "port", &free_port().to_string()));
    let (status, out) = doctor_binary(&config);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL  broker"), "{out}");
    assert!(
        out.contains("fix: check broker.host and broker.port"),
        "{out}"
    );
    assert!(out.contains("1 failed"), "{out}");
}

#[test]
fn a_config_that_does_not_load_fails_first() {
    let site = Site::new();
    let report = site.run(|s| set(s, "door", "unlock_ms", "5"));
    only_failed(&report, &["config"], "door.unlock_ms");
    let (status, out) = doctor_binary(&site.path().join("acceso.toml"));
    assert_eq!(status.code(), Some(1), "{out}");
}

#[test]
fn certificate_and_key_failures_each_fail_their_check() {
    let site = Site::new();

    // Not a certificate.
    let junk = site.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let report = site.run(|s| set(s, "broker", "ca_file", &quoted(&junk)));
    // The broker handshake cannot be set up either.
    only_failed(
        &report,
        &["ca certificate", "broker"],
        "holds no PEM certificate",
    );

    // Missing.
    let report = site.run(|s| set(s, "broker", "cert_file", "\"/nonexistent/cert.pem\""));
    only_failed(
        &report,
        &["device certificate", "broker"],
        "/nonexistent/cert.pem",
    );

    // Expired: the check says so, and the broker refuses it too.
    let expired = site
        .ca
        .issue_client(site.path(), "expired", Validity::Expired);
    std::fs::set_permissions(&expired.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let report = site.run(|s| {
        set(s, "broker", "cert_file", &quoted(&expired.cert));
        set(s, "broker", "key_file", &quoted(&expired.key));
    });
    only_failed(&report, &["device certificate", "broker"], "expired");
    assert!(
        report.get("broker").unwrap().detail.contains("expired"),
        "{}",
        report.render()
    );

    // Not valid yet: the clock is the likely culprit, and the check says so.
    let early = site.ca.issue_client(
        site.path(),
        "early",
        Validity::StartsIn(Duration::from_secs(86400)),
    );
    std::fs::set_permissions(&early.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let report = site.run(|s| {
        set(s, "broker", "cert_file", &quoted(&early.cert));
        set(s, "broker", "key_file", &quoted(&early.key));
    });
    assert!(failed(&report).contains(&"device certificate"));
    assert!(
        report
            .get("device certificate")
            .unwrap()
            .detail
            .contains("clock behind"),
        "{}",
        report.render()
    );

    // A key others can read.
    std::fs::set_permissions(&site.device.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let report = site.run(|_| {});
    only_failed(&report, &["device key"], "other users can read");
    assert!(report
        .get("device key")
        .unwrap()
        .fix
        .as_deref()
        .unwrap()
        .contains("chmod 0640"));
    std::fs::set_permissions(&site.device.key, std::fs::Permissions::from_mode(0o640)).unwrap();

    // The key of another certificate.
    let other = site
        .ca
        .issue_client(site.path(), "other", Validity::Current);
    std::fs::set_permissions(&other.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let report = site.run(|s| set(s, "broker", "key_file", &quoted(&other.key)));
    only_failed(
        &report,
        &["device key", "broker"],
        "does not belong to the certificate",
    );
}

#[test]
fn sync_keys_must_be_pinned_and_readable() {
    let site = Site::new();
    let report = site.run(|s| set(s, "sync", "public_keys", "[]"));
    only_failed(&report, &["sync keys"], "unsigned or forged user updates");
    let junk = site.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let report = site.run(|s| set(s, "sync", "public_keys", &format!("[{}]", quoted(&junk))));
    only_failed(&report, &["sync keys"], "sync.public_keys");
    let report = site.run(|s| set(s, "sync", "public_keys", "[\"/nonexistent/key.pem\"]"));
    only_failed(&report, &["sync keys"], "/nonexistent/key.pem");
}

#[test]
fn broker_failures_say_whether_it_is_the_network_or_the_certificates() {
    let site = Site::new();

    // Nobody listens.
    let report = site.run(|s| set(s, "broker", "port", &free_port().to_string()));
    only_failed(&report, &["broker"], "cannot connect");

    // A CA file that is not the broker's: our side refuses the broker.
    let other_ca = Ca::new("some other CA").write(site.path(), "other-ca.pem");
    let report = site.run(|s| set(s, "broker", "ca_file", &quoted(&other_ca)));
    only_failed(&report, &["broker"], "not signed by broker.ca_file");

    // A device certificate the broker does not trust: the broker refuses us.
    let stranger =
        Ca::new("not the broker's CA").issue_client(site.path(), "stranger", Validity::Current);
    std::fs::set_permissions(&stranger.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let report = site.run(|s| {
        set(s, "broker", "cert_file", &quoted(&stranger.cert));
        set(s, "broker", "key_file", &quoted(&stranger.key));
    });
    only_failed(&report, &["broker"], "does not");
    assert!(
        report
            .get("broker")
            .unwrap()
            .fix
            .as_deref()
            .unwrap()
            .contains("attached to the thing"),
        "{}",
        report.render()
    );

    // TLS off against the TLS port: no MQTT answer, said as a port or TLS mismatch.
    let report = site.run(|s| set(s, "broker", "tls", "false"));
    only_failed(&report, &["broker"], "MQTT");
    assert!(
        report
            .get("broker")
            .unwrap()
            .fix
            .as_deref()
            .unwrap()
            .contains("broker.tls"),
        "{}",
        report.render()
    );

    // A broker that takes the connection but refuses this client (on AWS IoT Core: a policy
    // without iot:Connect for the thing name): only an MQTT CONNECT finds it.
    let refuser = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = refuser.local_addr().unwrap().port();
    refuser.set_nonblocking(true).unwrap();
    let answer = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(20);
        let mut conn = loop {
            match refuser.accept() {
                Ok((c, _)) => break c,
                Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("the doctor never connected: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut connect = [0u8; 64];
        let n = std::io::Read::read(&mut conn, &mut connect).unwrap();
        std::io::Write::write_all(&mut conn, &[0x20, 0x02, 0x00, 0x05]).unwrap();
        connect[..n].to_vec()
    });
    let report = site.run(|s| {
        set(s, "broker", "tls", "false");
        set(s, "broker", "port", &port.to_string());
    });
    only_failed(&report, &["broker"], "not authorized");
    let connect = answer.join().unwrap();
    assert_eq!(connect[0], 0x10, "an MQTT CONNECT: {connect:02x?}");
    assert!(
        connect.windows(6).any(|w| w == b"door-1"),
        "the device id is the client id: {connect:02x?}"
    );
    // Clean session off, as the agent connects: the broker keeps the agent's session.
    assert_eq!(connect[9] & 0x02, 0, "{connect:02x?}");

    // An agent running on this state directory: no MQTT connect, which would take over its
    // connection; the TLS checks still run.
    let held = acceso::instance::acquire(&site.path().join("state")).unwrap();
    let report = site.run(|_| {});
    assert!(report.passed(), "{}", report.render());
    let detail = &report.get("broker").unwrap().detail;
    assert!(
        detail.contains("client certificate accepted") && detail.contains("MQTT not tried"),
        "{detail}"
    );
    drop(held);
}

#[test]
fn clock_reader_gpio_camera_models_and_database_failures() {
    let site = Site::new();

    // The clock reads earlier than a time this device already trusted.
    let known = site.path().join("state/known-good-time");
    let tomorrow = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
    std::fs::write(&known, format!("{tomorrow}\n")).unwrap();
    let report = site.run(|_| {});
    only_failed(&report, &["clock"], "behind the last known-good time");
    std::fs::remove_file(&known).unwrap();

    // No SPI device: the version register is not read.
    let report = site.run(|s| {
        set(s, "reader", "backend", "\"mfrc522\"");
        set(s, "reader", "spi_device", "\"/dev/spidev-none.0\"");
    });
    only_failed(&report, &["spi device"], "/dev/spidev-none.0");
    assert_eq!(report.get("mfrc522").unwrap().outcome, Outcome::Skipped);

    // GPIO: this machine is no Raspberry Pi.
    let report = site.run(|s| set(s, "relay", "backend", "\"gpio\""));
    only_failed(&report, &["gpio"], "GPIO");

    if cfg!(feature = "face") {
        // A camera that is not there.
        let report = site.run(|s| {
            set(s, "camera", "backend", "\"v4l2\"");
            set(s, "camera", "device", "\"/dev/video-none\"");
        });
        only_failed(&report, &["camera"], "/dev/video-none");

        // A damaged model file.
        let models = site.path().join("models");
        std::fs::create_dir_all(&models).unwrap();
        let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        for f in [
            "face_detection_yunet_2023mar.onnx",
            "face_recognition_sface_2021dec.onnx",
        ] {
            std::fs::copy(bundled.join(f), models.join(f)).unwrap();
        }
        let yunet = models.join("face_detection_yunet_2023mar.onnx");
        let mut bytes = std::fs::read(&yunet).unwrap();
        bytes[1000] ^= 0xFF;
        std::fs::set_permissions(&yunet, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&yunet, bytes).unwrap();
        let report = site.run(|s| set(s, "face", "models_dir", &quoted(&models)));
        only_failed(&report, &["face models"], "sha256");
    } else {
        // A card-only build cannot serve a face door.
        let report = site.run(|s| set(s, "door", "mode", "\"card_or_face\""));
        assert!(
            failed(&report).contains(&"face models"),
            "{}",
            report.render()
        );
    }

    // A database, or a state directory, the agent cannot write (as after a `sudo acceso
    // run`).
    let db = site.path().join("state/acceso.db");
    for (target, says) in [
        (db.clone(), "read-only"),
        (site.path().join("state"), "cannot create files"),
    ] {
        let guard = Unwritable::make(&target);
        let report = site.run(|_| {});
        drop(guard);
        only_failed(&report, &["database"], says);
        assert!(report
            .get("database")
            .unwrap()
            .fix
            .as_deref()
            .unwrap()
            .contains("chown"));
    }
    // Run as root, the doctor says its checks are root's, and how to check as the service.
    let report = site.run(|_| {});
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap();
    assert_eq!(
        report.render().contains("note: running as root")
            && report.render().contains("sudo -u acceso"),
        root,
        "{}",
        report.render()
    );

    // A damaged database: pages overwritten in the middle of the file.
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8192, "a database of several pages");
    for b in &mut bytes[4096..8192] {
        *b = 0x5A;
    }
    std::fs::write(&db, bytes).unwrap();
    let report = site.run(|_| {});
    only_failed(&report, &["database"], "acceso.db");
    assert!(report
        .get("database")
        .unwrap()
        .fix
        .as_deref()
        .unwrap()
        .contains("move"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
