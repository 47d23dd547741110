//! The MQTT link over mutual TLS against a real mosquitto that requires client certificates,
//! with certificates made by the test: what connects, what fails, how clearly, how often.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use acceso::observe::{Component, HealthState, Observation};
use support::door::{collect_events, TestDoor, BOUND};
use support::mosquitto::{subscriber, Mosquitto, TlsFiles};
use support::pki::{Ca, Issued, Validity};
use support::relay::Relay;

const BIN: &str = env!("CARGO_BIN_EXE_acceso");
const DEVICE: &str = "test-door";

/// A broker with a TLS listener whose certificate is valid as `validity` says, and the CA that
/// signed it (which also signs the devices it trusts).
struct Setup {
    dir: tempfile::TempDir,
    ca: Ca,
    ca_pem: PathBuf,
    broker: Mosquitto,
    /// In front of the broker's TLS listener: the agent connects through it, so every attempt
    /// is counted.
    relay: Relay,
}

impl Setup {
    fn new(broker_validity: Validity) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::new("acceso test CA");
        let ca_pem = ca.write(dir.path(), "ca.pem");
        let server = ca.issue_server(dir.path(), "broker", broker_validity);
        let broker = Mosquitto::start_tls(TlsFiles {
            ca: ca_pem.clone(),
            cert: server.cert,
            key: server.key,
        });
        let relay = Relay::start(broker.tls_port());
        Setup {
            dir,
            ca,
            ca_pem,
            broker,
            relay,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn device_cert(&self, validity: Validity) -> Issued {
        self.ca.issue_client(self.path(), DEVICE, validity)
    }

    /// The agent, connecting to the TLS listener with these files.
    async fn door(&self, ca: &Path, device: &Issued) -> TestDoor {
        let (ca, cert, key) = (ca.to_owned(), device.cert.clone(), device.key.clone());
        TestDoor::start_with(self.relay.port(), move |c| {
            c.broker.tls = true;
            c.broker.ca_file = Some(ca);
            c.broker.cert_file = Some(cert);
            c.broker.key_file = Some(key);
            c.broker.reconnect_ms = 200;
            c.broker.reconnect_max_ms = 1600;
        })
        .await
    }

    /// How many TCP connections the agent opened to the broker's TLS listener so far.
    fn tls_connections(&self) -> usize {
        self.relay.connections()
    }
}

/// The next health report about `component` in a state other than Ok: its detail.
async fn trouble(door: &mut TestDoor, component: Component) -> String {
    door.expect("a health problem", |o| match o {
        Observation::Health {
            component: c,
            state,
            detail,
        } if *c == component && *state != HealthState::Ok => Some(detail.clone()),
        _ => None,
    })
    .await
}

/// Over three seconds of failing, the agent must retry (at least twice) yet back off (a tight
/// loop would make hundreds of attempts; the backoff here allows about six).
async fn assert_backs_off(setup: &Setup) {
    let before = setup.tls_connections();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let attempts = setup.tls_connections() - before;
    assert!(
        (2..=8).contains(&attempts),
        "{attempts} connection attempts in 3 s\n{}",
        setup.broker.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_a_good_certificate_connects_and_its_events_arrive() {
    let setup = Setup::new(Validity::Current);
    let (_sub, mut events) =
        subscriber(setup.broker.host(), setup.broker.port(), "acceso/logs").await;
    let device = setup.device_cert(Validity::Current);
    let mut door = setup.door(&setup.ca_pem, &device).await;
    door.connected().await;
    door.tap("DEADBEEF").await;
    let got = collect_events(&mut events, 1).await;
    assert_eq!(got[0].device, DEVICE);
    assert_eq!(
        got[0].card_uid.as_ref().map(|c| c.to_string()).as_deref(),
        Some("DEADBEEF")
    );
    let log = setup.broker.log();
    assert!(
        log.contains(&format!("as {DEVICE} ")),
        "the device did not connect with its thing name as client id:\n{log}"
    );
    door.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_signed_by_another_ca_is_refused_clearly_without_a_tight_loop() {
    let setup = Setup::new(Validity::Current);
    let other = Ca::new("some other CA").write(setup.path(), "other-ca.pem");
    let device = setup.device_cert(Validity::Current);
    let mut door = setup.door(&other, &device).await;
    let detail = trouble(&mut door, Component::Broker).await;
    assert!(detail.contains("not signed by broker.ca_file"), "{detail}");
    assert_backs_off(&setup).await;
    door.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_certificate_from_an_unknown_ca_is_refused_clearly_without_a_tight_loop() {
    let setup = Setup::new(Validity::Current);
    let stranger =
        Ca::new("not the broker's CA").issue_client(setup.path(), "stranger", Validity::Current);
    let mut door = setup.door(&setup.ca_pem, &stranger).await;
    let detail = trouble(&mut door, Component::Broker).await;
    assert!(
        detail.contains("does not trust this device's certificate"),
        "{detail}"
    );
    assert_backs_off(&setup).await;
    door.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_device_certificate_is_refused_clearly_without_a_tight_loop() {
    let setup = Setup::new(Validity::Current);
    let expired = setup.device_cert(Validity::Expired);
    let mut door = setup.door(&setup.ca_pem, &expired).await;
    let detail = trouble(&mut door, Component::Broker).await;
    assert!(detail.contains("expired"), "{detail}");
    assert!(detail.contains("broker.cert_file"), "{detail}");
    assert_backs_off(&setup).await;
    door.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_behind_the_broker_certificate_is_a_clock_problem_that_heals_without_restart() {
    // The broker's certificate starts being valid in 4 s: to the device, exactly what a clock
    // 4 s behind looks like. It must say so, keep deciding locally, and connect by itself.
    let setup = Setup::new(Validity::StartsIn(Duration::from_secs(4)));
    let device = setup.device_cert(Validity::Current);
    let mut door = setup.door(&setup.ca_pem, &device).await;
    let detail = trouble(&mut door, Component::Clock).await;
    assert!(detail.contains("clock"), "{detail}");
    assert!(detail.contains("not valid yet"), "{detail}");
    // Decisions do not wait for the cloud.
    door.tap("DEADBEEF").await;
    // Connecting, the link takes back the clock problem it reported: no stale alarm stays.
    let detail = door
        .expect("the clock reported ok again", |o| match o {
            Observation::Health {
                component: Component::Clock,
                state: HealthState::Ok,
                detail,
            } => Some(detail.clone()),
            _ => None,
        })
        .await;
    assert!(detail.contains("certificate is valid"), "{detail}");
    door.connected().await;
    door.stop().await;
}

/// Runs `acceso run` with a TLS config and returns its exit code and stderr.
fn run_with_tls(
    dir: &Path,
    ca: &Path,
    cert: &Path,
    key: &Path,
    port: u16,
) -> (Option<i32>, String) {
    let config = dir.join("acceso.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = \"{DEVICE}\"\nstate_dir = \"{state}\"\n[door]\nname = \"front\"\n\
             [broker]\nport = {port}\ntls = true\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\n\
             key_file = \"{key}\"\n[reader]\nbackend = \"none\"\n[relay]\nbackend = \"sim\"\n",
            state = dir.join("state").display(),
            ca = ca.display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )
    .expect("write config");
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run acceso");
    let until = Instant::now() + BOUND;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("acceso run did not stop on a bad key within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_missing_or_mismatched_key_stops_the_start_and_names_the_file() {
    let setup = Setup::new(Validity::Current);
    let device = setup.device_cert(Validity::Current);
    let other = setup
        .ca
        .issue_client(setup.path(), "other", Validity::Current);
    let port = setup.relay.port();
    let before = setup.tls_connections();

    let missing = setup.path().join("no-such.key");
    // Both are the config's fault: exit 2, which systemd does not restart.
    let (code, err) = run_with_tls(setup.path(), &setup.ca_pem, &device.cert, &missing, port);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("broker.key_file"), "{err}");
    assert!(err.contains("no-such.key"), "{err}");

    let (code, err) = run_with_tls(setup.path(), &setup.ca_pem, &device.cert, &other.key, port);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not fit cert_file"), "{err}");

    assert_eq!(
        setup.tls_connections(),
        before,
        "a bad key must not reach the network"
    );
}
