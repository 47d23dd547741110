//! Test support: the real agent on simulated hardware, against a broker on loopback.

use std::sync::Arc;
use std::time::Duration;

use acceso::clock::SimClock;
use acceso::hw::mfrc522::Mfrc522Reader;
use acceso::observe::{ApplyResult, Component, HealthState, Observation, Reporter};
use acceso::sim::hw::{RelayRecorder, SimInputs};
use acceso::sim::mfrc522::{SimChip, VirtualCard};
use acceso::{Agent, Backends, Config};
use acceso_protocol::{AccessEvent, CardUid};
use tokio::sync::mpsc;

/// Every wait in these tests is bounded by this.
pub const BOUND: Duration = Duration::from_secs(10);

/// The test cloud's signing key, one per test process; every `TestDoor` pins it.
#[allow(dead_code)]
pub fn cloud_key() -> &'static acceso_protocol::SigningKey {
    static KEY: std::sync::OnceLock<acceso_protocol::SigningKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| acceso_protocol::SigningKey::generate().expect("a signing key"))
}

/// An update body sealed as the test cloud publishes it.
#[allow(dead_code)]
pub fn signed_update(body: &str) -> Vec<u8> {
    acceso_protocol::signed::seal(acceso_protocol::Purpose::Update, body, Some(cloud_key()))
}

#[allow(dead_code)]
pub struct TestDoor {
    pub config: Config,
    pub chip: SimChip,
    pub relay: RelayRecorder,
    pub inputs: SimInputs,
    pub clock: Arc<SimClock>,
    pub observations: mpsc::UnboundedReceiver<Observation>,
    reporter: Reporter,
    pub agent: Option<Agent>,
    _state: tempfile::TempDir,
}

#[allow(dead_code)]
impl TestDoor {
    /// A door named "front", device "test-door", on the broker at 127.0.0.1:`port`.
    pub async fn start(port: u16, unlock_ms: u64) -> TestDoor {
        TestDoor::start_with(port, |c| c.door.unlock_ms = unlock_ms).await
    }

    /// Like `start`, with the config adjusted by `adjust` first.
    pub async fn start_with(port: u16, adjust: impl FnOnce(&mut Config)) -> TestDoor {
        let state = tempfile::tempdir().expect("state dir");
        let mut config = Config::sim_defaults(state.path());
        config.device_id = "test-door".into();
        config.broker.port = port;
        config.broker.reconnect_ms = 200;
        let pem = state.path().join("cloud-key.pem");
        std::fs::write(&pem, cloud_key().public_key().to_pem()).expect("write the cloud key");
        config.sync.public_keys = vec![pem];
        adjust(&mut config);
        config.validate().expect("test config is valid");
        let idle = SimInputs::wired(
            !config.inputs.door_open_level.is_high(),
            !config.inputs.exit_pressed_level.is_high(),
        );
        let (reporter, observations) = Reporter::channel();
        let mut door = TestDoor {
            config,
            chip: SimChip::new(),
            relay: RelayRecorder::default(),
            inputs: idle,
            clock: Arc::new(SimClock::default()),
            observations,
            reporter,
            agent: None,
            _state: state,
        };
        door.start_agent().await;
        door
    }

    pub async fn start_agent(&mut self) {
        let backends = Backends {
            reader: Some(Box::new(Mfrc522Reader::new(
                self.chip.spi(),
                Duration::from_millis(self.config.reader.exchange_timeout_ms),
            ))),
            relay: Box::new(self.relay.relay()),
            inputs: Some(Box::new(self.inputs.clone())),
            camera: None,
            clock: self.clock.clone(),
        };
        let agent = tokio::time::timeout(
            BOUND,
            Agent::start(&self.config, backends, self.reporter.clone()),
        )
        .await
        .expect("agent start timed out")
        .expect("agent starts");
        self.agent = Some(agent);
    }

    pub async fn stop(&mut self) {
        if let Some(agent) = self.agent.take() {
            tokio::time::timeout(BOUND, agent.stop())
                .await
                .expect("graceful stop timed out");
        }
    }

    /// Waits for the next observation that `pick` accepts, skipping others.
    pub async fn expect<T>(&mut self, what: &str, pick: impl Fn(&Observation) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let next = tokio::time::timeout_at(deadline, self.observations.recv()).await;
            match next {
                Ok(Some(obs)) => {
                    if let Some(t) = pick(&obs) {
                        return t;
                    }
                }
                Ok(None) => panic!("observation channel closed while waiting for {what}"),
                Err(_) => panic!("no {what} within {BOUND:?}"),
            }
        }
    }

    pub async fn connected(&mut self) {
        self.expect("broker connection", |o| match o {
            Observation::Health {
                component: Component::Broker,
                state: HealthState::Ok,
                ..
            } => Some(()),
            _ => None,
        })
        .await
    }

    pub async fn disconnected(&mut self) {
        self.expect("broker disconnection", |o| match o {
            Observation::Health {
                component: Component::Broker,
                state: HealthState::Degraded,
                ..
            } => Some(()),
            _ => None,
        })
        .await
    }

    /// Taps a card: in the field until the decision is made, then out, and the reader has
    /// seen the field empty. Returns the decision observation.
    pub async fn tap(&mut self, uid: &str) -> Observation {
        let uid: CardUid = uid.parse().expect("test UID");
        self.chip.place(VirtualCard::new(uid.as_bytes()));
        let decision = self
            .expect("decision", |o| {
                matches!(o, Observation::Decision { .. }).then(|| o.clone())
            })
            .await;
        self.chip.clear_field();
        tokio::time::sleep(Duration::from_millis(3 * self.config.reader.poll_ms)).await;
        decision
    }

    /// The next `applied` report: outcome and reason.
    pub async fn applied(&mut self) -> (Option<u64>, ApplyResult, Option<String>) {
        self.expect("applied report", |o| match o {
            Observation::Applied {
                version,
                outcome,
                reason,
                ..
            } => Some((*version, *outcome, reason.clone())),
            _ => None,
        })
        .await
    }
}

/// Receives publishes until `n` distinct events arrived; returns them by sequence number.
#[allow(dead_code)]
pub async fn collect_events(
    rx: &mut mpsc::UnboundedReceiver<rumqttc::Publish>,
    n: usize,
) -> Vec<AccessEvent> {
    let mut events: Vec<AccessEvent> = Vec::new();
    let deadline = tokio::time::Instant::now() + BOUND;
    while events.len() < n {
        let p = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {n} events arrived within {BOUND:?}: seqs {:?}",
                    events.len(),
                    events.iter().map(|e| e.seq).collect::<Vec<_>>()
                )
            })
            .expect("subscriber channel closed");
        let event: AccessEvent = serde_json::from_slice(&p.payload)
            .unwrap_or_else(|e| panic!("not an AccessEvent ({e}): {:?}", p.payload));
        if !events.iter().any(|x| x.event_id == event.event_id) {
            events.push(event);
        }
    }
    events.sort_by_key(|e| e.seq);
    events
}
