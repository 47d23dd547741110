//! The scenario runner: the real agent against simulated hardware and a broker, driven step
//! by step, printing what an observer sees as JSON Lines.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use acceso_protocol::signed::{self, Purpose, Signer, SigningKey};
use acceso_protocol::{
    sync, AccessEvent, CardUid, Outcome, SyncRequest, Topics, Update, UpdateOp, User,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::broker::{start_embedded_broker, CutProxy};
use super::hw::{FileCamera, RelayRecorder, SimInputs};
use super::mfrc522::{FrameFault, SimChip, VirtualCard};
use super::scenario::CardFault;
use super::scenario::{Scenario, Signing, Step};
use super::SimError;
use crate::clock::SimClock;
use crate::config::DoorMode;
use crate::door::{LockState, Wiring};
use crate::hw::mfrc522::Mfrc522Reader;
use crate::observe::{ApplyResult, Component, HealthState, Observation, Reporter, SyncState};
use crate::{Agent, Backends, Config};

/// How long a step may take before the runner moves on regardless.
const STEP_BOUND: Duration = Duration::from_secs(5);
/// How often a step's condition is checked again while nothing arrives.
const RECHECK: Duration = Duration::from_millis(10);
/// How long reconnecting may take after the broker comes back or the agent restarts.
const CONNECT_BOUND: Duration = Duration::from_secs(10);

/// The last line of every run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub decisions: usize,
    pub granted: usize,
    pub denied: usize,
    /// Door alarms (forced open, held open).
    pub alarms: usize,
    pub events_published: usize,
    pub events_queued: u64,
    pub updates_applied: usize,
    pub updates_ignored: usize,
    pub updates_gap: usize,
    pub updates_rejected: usize,
    pub relay_on_ms: u64,
    /// Each time the lock was unlocked, for how long (ms, monotonic clock, from the relay
    /// line's recorded levels and the configured wiring).
    pub relay_intervals_ms: Vec<u64>,
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
}

/// What the runner has seen so far; steps wait on it.
#[derive(Default)]
struct Tally {
    latencies: Vec<u64>,
    granted: usize,
    denied: usize,
    alarms: usize,
    applied_reports: usize,
    applied: usize,
    ignored: usize,
    gap: usize,
    rejected: usize,
    published: HashSet<String>,
    broker_ok: Option<bool>,
    reader_ok: Option<bool>,
    unlocked: bool,
    first_factors: usize,
    /// The camera thread has loaded its models (or failed to) since the agent last started.
    faces_ready: bool,
    /// A sync request is out and not yet answered.
    sync_pending: bool,
    /// Sync rounds that ended current.
    sync_rounds: usize,
}

impl Tally {
    fn decisions(&self) -> usize {
        self.latencies.len()
    }

    /// Credentials handled: decided, or held as a first factor.
    fn credentials(&self) -> usize {
        self.latencies.len() + self.first_factors
    }
}

struct Printer {
    start: Instant,
    out: Box<dyn Write + Send>,
}

impl Printer {
    fn line(&mut self, body: Value) -> Result<(), SimError> {
        let mut line = Map::new();
        line.insert(
            "t_ms".into(),
            (self.start.elapsed().as_millis() as u64).into(),
        );
        if let Value::Object(fields) = body {
            line.extend(fields);
        }
        writeln!(self.out, "{}", Value::Object(line))?;
        self.out.flush()?;
        Ok(())
    }
}

/// The observers' side: agent observations and what the cloud's subscriber receives.
struct World {
    observations: mpsc::UnboundedReceiver<Observation>,
    published: mpsc::UnboundedReceiver<Publish>,
    tally: Tally,
    printer: Printer,
}

impl World {
    /// Prints what arrives until `done` holds or `within` passes; says whether `done` held.
    async fn until(
        &mut self,
        within: Duration,
        done: impl Fn(&Tally) -> bool,
    ) -> Result<bool, SimError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if done(&self.tally) {
                return Ok(true);
            }
            tokio::select! {
                Some(obs) = self.observations.recv() => self.observed(obs)?,
                Some(p) = self.published.recv() => self.received(p)?,
                // Some conditions watch the simulated hardware, not only what arrives here.
                _ = tokio::time::sleep(RECHECK) => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(false),
            }
        }
    }

    async fn pass(&mut self, time: Duration) -> Result<(), SimError> {
        self.until(time, |_| false).await.map(|_| ())
    }

    fn observed(&mut self, obs: Observation) -> Result<(), SimError> {
        let t = &mut self.tally;
        match &obs {
            Observation::Decision {
                decision,
                latency_us,
                ..
            } => {
                t.latencies.push(*latency_us);
                match decision {
                    Outcome::Granted => t.granted += 1,
                    Outcome::Denied => t.denied += 1,
                    Outcome::Alarm => t.alarms += 1,
                    Outcome::Info => {}
                }
            }
            Observation::Applied { outcome, .. } => {
                t.applied_reports += 1;
                match outcome {
                    ApplyResult::Applied => t.applied += 1,
                    ApplyResult::Ignored => t.ignored += 1,
                    ApplyResult::Gap => t.gap += 1,
                    ApplyResult::Rejected => t.rejected += 1,
                }
            }
            Observation::Health {
                component: Component::Broker,
                state,
                ..
            } => t.broker_ok = Some(*state == HealthState::Ok),
            Observation::Health {
                component: Component::Reader,
                state,
                ..
            } => t.reader_ok = Some(*state == HealthState::Ok),
            Observation::Health {
                component: Component::Face,
                ..
            } => t.faces_ready = true,
            Observation::Relay { state } => t.unlocked = *state == LockState::Unlocked,
            Observation::FirstFactor { .. } => t.first_factors += 1,
            Observation::Sync { state, .. } => match state {
                SyncState::Requested => t.sync_pending = true,
                SyncState::Current => {
                    t.sync_pending = false;
                    t.sync_rounds += 1;
                }
            },
            _ => {}
        }
        let body =
            serde_json::to_value(&obs).map_err(|e| SimError::Output(std::io::Error::other(e)))?;
        self.printer.line(body)
    }

    fn received(&mut self, p: Publish) -> Result<(), SimError> {
        let mut body = Map::new();
        body.insert("kind".into(), "published".into());
        body.insert("topic".into(), p.topic.clone().into());
        // Strict parse: an event missing a field, or with one too many, is reported as such.
        match serde_json::from_slice::<AccessEvent>(&p.payload) {
            Ok(event) => {
                self.tally.published.insert(event.event_id.clone());
                let raw: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                body.insert("event".into(), raw);
            }
            Err(e) => {
                body.insert(
                    "payload".into(),
                    String::from_utf8_lossy(&p.payload).into_owned().into(),
                );
                body.insert("error".into(), format!("not an AccessEvent: {e}").into());
            }
        }
        self.printer.line(Value::Object(body))
    }
}

/// The simulated door: hardware that outlives agent restarts.
struct Door {
    config: Config,
    chip: SimChip,
    inputs: SimInputs,
    relay: RelayRecorder,
    camera: FileCamera,
    clock: Arc<SimClock>,
    reporter: Reporter,
}

impl Door {
    async fn start(&self) -> Result<Agent, SimError> {
        let backends = Backends {
            reader: Some(Box::new(Mfrc522Reader::new(
                self.chip.spi(),
                Duration::from_millis(self.config.reader.exchange_timeout_ms),
            ))),
            relay: Box::new(self.relay.relay()),
            inputs: Some(Box::new(self.inputs.clone())),
            camera: Some(Box::new(self.camera.clone())),
            clock: self.clock.clone(),
        };
        Ok(Agent::start(&self.config, backends, self.reporter.clone()).await?)
    }
}

/// Runs `scenario`, writing JSON Lines to `out`, and returns the summary it printed last.
pub async fn run_scenario(
    scenario: &Scenario,
    out: Box<dyn Write + Send>,
) -> Result<Summary, SimError> {
    let start = Instant::now();
    let state = tempfile::tempdir()
        .map_err(|e| SimError::Scenario(format!("cannot create a state directory: {e}")))?;
    let mut config = sim_config(scenario, state.path())?;
    // The simulated cloud signs with a key of its own, pinned in the agent's config (unless
    // the scenario pins keys itself, or says `"sync": {"public_keys": []}` to run without).
    let cloud_key = SigningKey::generate().map_err(SimError::Scenario)?;
    let other_key = SigningKey::generate().map_err(SimError::Scenario)?;
    let keys_given = scenario
        .config
        .get("sync")
        .and_then(Value::as_object)
        .is_some_and(|s| s.contains_key("public_keys"));
    if !keys_given {
        let pem = state.path().join("cloud-signing-key.pem");
        std::fs::write(&pem, cloud_key.public_key().to_pem())
            .map_err(|e| SimError::Scenario(format!("cannot write {}: {e}", pem.display())))?;
        config.sync.public_keys = vec![pem];
    }
    // Keys the scenario pins must load, as `acceso run` checks them before anything runs.
    config
        .check_files()
        .map_err(|e| SimError::Scenario(e.to_string()))?;
    // Everything about the photos is checked, and enrolled faces computed, before anything runs.
    let steps = prepare_steps(scenario, &config)?;
    let external = scenario
        .config
        .get("broker")
        .and_then(Value::as_object)
        .is_some_and(|b| b.contains_key("host") || b.contains_key("port"));
    if external
        && scenario
            .steps
            .iter()
            .any(|s| matches!(s, Step::Broker { .. }))
    {
        return Err(SimError::Scenario(
            "`broker` steps need the embedded broker; remove config.broker.host/port".into(),
        ));
    }
    let (broker_host, broker_port, mut proxy) = if external {
        (config.broker.host.clone(), config.broker.port, None)
    } else {
        let port = start_embedded_broker()?;
        let proxy = CutProxy::start(port).await?;
        config.broker.host = "127.0.0.1".into();
        config.broker.port = proxy.port();
        ("127.0.0.1".to_string(), port, Some(proxy))
    };
    let topics = Topics::new(&config.broker.topic_prefix);
    let cloud_state = Arc::new(Mutex::new(CloudState::default()));
    let (cloud, published) = cloud_client(
        &broker_host,
        broker_port,
        &topics,
        Responder {
            state: cloud_state.clone(),
            key: SigningKey::from_pkcs8(cloud_key.pkcs8()).map_err(SimError::Scenario)?,
        },
    )
    .await?;

    let (reporter, observations) = Reporter::channel();
    let idle_inputs = SimInputs::wired(
        !config.inputs.door_open_level.is_high(),
        !config.inputs.exit_pressed_level.is_high(),
    );
    let door = Door {
        config,
        chip: SimChip::new(),
        inputs: idle_inputs,
        relay: RelayRecorder::default(),
        camera: FileCamera::default(),
        clock: Arc::new(SimClock::default()),
        reporter,
    };
    let mut world = World {
        observations,
        published,
        tally: Tally::default(),
        printer: Printer { start, out },
    };
    let faces_door = door.config.door.mode != DoorMode::Card;
    let mut agent = door.start().await?;
    world
        .until(CONNECT_BOUND, |t| t.broker_ok == Some(true))
        .await?;
    // On connecting, the agent asks whether it is current; the answer comes first.
    world.until(STEP_BOUND, |t| t.sync_rounds > 0).await?;
    // The camera thread loads the models after the agent has started; scenarios begin once
    // it can see (cards work meanwhile, as at a real door).
    if faces_door {
        world.until(CONNECT_BOUND, |t| t.faces_ready).await?;
    }
    let link_up = |proxy: &Option<CutProxy>| proxy.as_ref().is_none_or(CutProxy::is_up);

    for step in &steps {
        match step {
            Step::Update {
                update,
                lost,
                retain,
                signing,
            } => {
                let body =
                    serde_json::to_string(update).map_err(|e| SimError::Scenario(e.to_string()))?;
                let signer: Option<&dyn Signer> = match signing {
                    Signing::Cloud => {
                        lock(&cloud_state).record(&body);
                        Some(&cloud_key)
                    }
                    Signing::Unsigned => None,
                    Signing::Other => Some(&other_key),
                };
                if *lost {
                    continue;
                }
                let payload = signed::seal(Purpose::Update, &body, signer);
                publish_update(
                    &cloud,
                    &topics,
                    payload,
                    *retain,
                    &mut world,
                    link_up(&proxy),
                )
                .await?;
            }
            Step::UpdatesRaw(text) => {
                let payload = text.clone().into_bytes();
                publish_update(&cloud, &topics, payload, false, &mut world, link_up(&proxy))
                    .await?;
            }
            Step::Card {
                uid,
                hold_ms,
                fault,
            } => {
                tap(&door, &mut world, uid, *hold_ms, fault.as_ref()).await?;
                if link_up(&proxy) {
                    world
                        .until(STEP_BOUND, |t| t.published.len() >= t.decisions())
                        .await?;
                }
            }
            Step::Broker { up } => {
                let Some(proxy) = proxy.as_mut() else {
                    return Err(SimError::Scenario(
                        "`broker` steps need the embedded broker".into(),
                    ));
                };
                if *up {
                    let rounds = world.tally.sync_rounds;
                    proxy.up().await?;
                    world
                        .until(CONNECT_BOUND, |t| t.broker_ok == Some(true))
                        .await?;
                    world
                        .until(STEP_BOUND, |t| t.sync_rounds > rounds && !t.sync_pending)
                        .await?;
                } else {
                    proxy.down();
                    world
                        .until(STEP_BOUND, |t| t.broker_ok == Some(false))
                        .await?;
                }
            }
            Step::Clock { time, trusted } => door.clock.set(*time, *trusted),
            Step::Door { open } => {
                let open_high = door.config.inputs.door_open_level.is_high();
                door.inputs.set_door_contact(*open == open_high);
                // Debounce, then the door task acts on it (an alarm, an early relock, or nothing).
                world
                    .pass(Duration::from_millis(door.config.inputs.debounce_ms + 40))
                    .await?;
                if link_up(&proxy) {
                    world
                        .until(STEP_BOUND, |t| t.published.len() >= t.decisions())
                        .await?;
                }
            }
            Step::ExitButton => {
                let pressed_high = door.config.inputs.exit_pressed_level.is_high();
                let before = world.tally.decisions();
                door.inputs.set_exit_button(pressed_high);
                world.until(STEP_BOUND, |t| t.decisions() > before).await?;
                door.inputs.set_exit_button(!pressed_high);
                world
                    .pass(Duration::from_millis(door.config.inputs.debounce_ms + 20))
                    .await?;
                if link_up(&proxy) {
                    world
                        .until(STEP_BOUND, |t| t.published.len() >= t.decisions())
                        .await?;
                }
            }
            Step::Face { photo, frames } => {
                let frames = frames.unwrap_or(door.config.face.frames) as usize;
                let idle = door.camera.show(photo.clone(), frames);
                door.camera.show_nobody();
                // Done when every frame was looked at: the camera thread came back for more.
                let camera = door.camera.clone();
                world
                    .until(STEP_BOUND, move |_| {
                        let (queued, idle_now) = camera.progress();
                        queued == 0 && idle_now > idle
                    })
                    .await?;
                if link_up(&proxy) {
                    world
                        .until(STEP_BOUND, |t| t.published.len() >= t.decisions())
                        .await?;
                }
            }
            Step::Wait { ms } => world.pass(Duration::from_millis(*ms)).await?,
            Step::Restart { crash } => {
                if *crash {
                    agent.crash();
                } else {
                    agent.stop().await;
                }
                world.tally.broker_ok = None;
                world.tally.faces_ready = false;
                world.tally.sync_pending = false;
                let rounds = world.tally.sync_rounds;
                agent = door.start().await?;
                if faces_door {
                    world.until(CONNECT_BOUND, |t| t.faces_ready).await?;
                }
                if link_up(&proxy) {
                    world
                        .until(CONNECT_BOUND, |t| t.broker_ok == Some(true))
                        .await?;
                    world
                        .until(STEP_BOUND, |t| t.sync_rounds > rounds && !t.sync_pending)
                        .await?;
                }
            }
        }
    }

    if link_up(&proxy) {
        world
            .until(STEP_BOUND, |t| t.published.len() >= t.decisions())
            .await?;
    }
    // Let the last unlock run its course: stopping would relock early and cut it short.
    let unlock = Duration::from_millis(door.config.door.unlock_ms);
    world.until(unlock + STEP_BOUND, |t| !t.unlocked).await?;
    let store = agent.store();
    agent.stop().await;
    world.pass(Duration::from_millis(50)).await?;
    let events_queued = store
        .call(|s| s.queued_count())
        .await
        .map_err(|e| SimError::Agent(e.into()))?;
    let _ = cloud.try_disconnect();

    let unlocked_level = Wiring {
        active_low: door.config.relay.active_low,
        fail_safe: door.config.door.fail_safe,
    }
    .level(LockState::Unlocked);
    let summary = summarise(&world.tally, &door.relay, unlocked_level, events_queued);
    let mut body =
        serde_json::to_value(&summary).map_err(|e| SimError::Output(std::io::Error::other(e)))?;
    if let Value::Object(fields) = &mut body {
        fields.shift_insert(0, "kind".into(), "summary".into());
    }
    world.printer.line(body)?;
    Ok(summary)
}

/// One card step: the card enters the field of the simulated MFRC522 (with its fault), the
/// step waits for the decision (none comes for a card that leaves mid-read), holds the card
/// for `hold_ms`, and takes it away again.
async fn tap(
    door: &Door,
    world: &mut World,
    uid: &CardUid,
    hold_ms: u64,
    fault: Option<&CardFault>,
) -> Result<(), SimError> {
    let chip = &door.chip;
    let poll = Duration::from_millis(door.config.reader.poll_ms);
    let before = world.tally.credentials();
    let since = Instant::now();
    let mut expect_decision = true;
    match fault {
        None => {}
        Some(CardFault::BadBcc) => chip.inject(FrameFault::BccError),
        Some(CardFault::CrcError) => chip.inject(FrameFault::CrcError),
        Some(CardFault::Collision(other)) => chip.place(VirtualCard::new(other.as_bytes())),
        Some(CardFault::RemovedMidRead) => {
            chip.inject(FrameFault::LeaveMidExchange);
            expect_decision = false;
        }
        Some(CardFault::ChipSilent) => {
            world.tally.reader_ok = None;
            chip.set_silent(Some(0x00));
        }
        Some(CardFault::ChipReset) => {
            world.tally.reader_ok = None;
            chip.brown_out();
        }
    }
    chip.place(VirtualCard::new(uid.as_bytes()));
    if fault == Some(&CardFault::ChipSilent) {
        // The reader notices, the chip comes back, the reader recovers, the card is read.
        world
            .until(STEP_BOUND, |t| t.reader_ok == Some(false))
            .await?;
        chip.set_silent(None);
    }
    if matches!(fault, Some(CardFault::ChipSilent | CardFault::ChipReset)) {
        world
            .until(STEP_BOUND, |t| t.reader_ok == Some(true))
            .await?;
    }
    if expect_decision {
        world
            .until(STEP_BOUND, |t| t.credentials() > before)
            .await?;
    } else {
        world.pass(poll * 10).await?;
    }
    if let Some(rest) = Duration::from_millis(hold_ms).checked_sub(since.elapsed()) {
        world.pass(rest).await?;
    }
    chip.clear_field();
    // Let the reader see the field empty, so the same card next is a new tap.
    world.pass(poll * 3).await?;
    Ok(())
}

/// The agent's config for this run: every default, a fresh state directory, the scenario's
/// overrides on top.
fn sim_config(scenario: &Scenario, state: &std::path::Path) -> Result<Config, SimError> {
    // A scenario's events and users are made up: they must never mix with a real door's.
    if scenario.config.contains_key("state_dir") {
        return Err(SimError::Scenario(
            "config.state_dir cannot be set: a simulation always starts from a fresh state directory".into(),
        ));
    }
    let mut defaults = Config::sim_defaults(state);
    defaults.broker.reconnect_ms = 200;
    let mut value =
        serde_json::to_value(&defaults).map_err(|e| SimError::Scenario(format!("config: {e}")))?;
    merge(&mut value, Value::Object(scenario.config.clone()));
    let config: Config = serde_path_to_error::deserialize(value)
        .map_err(|e| SimError::Scenario(format!("config.{}: {}", e.path(), e.inner())))?;
    config
        .validate()
        .map_err(|e| SimError::Scenario(e.to_string()))?;
    Ok(config)
}

/// The steps as they will run: photo paths made relative to the scenario file and checked,
/// and every update's `face_photos` turned into `faces` computed with the agent's own model.
fn prepare_steps(scenario: &Scenario, config: &Config) -> Result<Vec<Step>, SimError> {
    let faces_door = config.door.mode != DoorMode::Card;
    let photo = |i: usize, p: &std::path::Path| {
        let path = scenario.base.join(p);
        let problem = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => return Ok(path),
            Ok(m) if m.is_dir() => "is a directory, not an image file".to_string(),
            Ok(_) => "is not a regular file".to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "not found".to_string(),
            Err(e) => format!("cannot be read: {e}"),
        };
        Err(SimError::Scenario(format!(
            "step {}: photo {} {problem}",
            i + 1,
            path.display()
        )))
    };
    let mut steps = Vec::with_capacity(scenario.steps.len());
    // Updates with `face_photos`: (position in `steps`, the photos), enrolled together below
    // with one engine.
    let mut enrol: Vec<(usize, Vec<std::path::PathBuf>)> = Vec::new();
    for (i, step) in scenario.steps.iter().enumerate() {
        let step = match step {
            Step::Face { photo: p, frames } => {
                if !faces_door {
                    return Err(SimError::Scenario(format!(
                        "step {}: `face` steps need a door.mode that takes faces (\"face\", \"card_or_face\" or \"card_and_face\")",
                        i + 1
                    )));
                }
                Step::Face {
                    photo: photo(i, p)?,
                    frames: *frames,
                }
            }
            Step::Update { update, .. } => {
                let photos = update
                    .pointer("/user/face_photos")
                    .and_then(Value::as_array);
                if let Some(photos) = photos {
                    let paths = photos
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|p| photo(i, std::path::Path::new(p)))
                        .collect::<Result<Vec<_>, _>>()?;
                    enrol.push((i, paths));
                }
                step.clone()
            }
            other => other.clone(),
        };
        steps.push(step);
    }
    if enrol.is_empty() {
        return Ok(steps);
    }
    let groups: Vec<Vec<std::path::PathBuf>> = enrol.iter().map(|(_, p)| p.clone()).collect();
    let faces = crate::face::enroll_photos(&config.face, &groups).map_err(|(group, e)| {
        let step = group.map(|g| format!("step {}: ", enrol[g].0 + 1));
        SimError::Scenario(format!("{}face_photos: {e}", step.unwrap_or_default()))
    })?;
    for ((i, _), group) in enrol.into_iter().zip(faces) {
        let Step::Update { update, .. } = &mut steps[i] else {
            continue;
        };
        let mine: Vec<Value> = group
            .into_iter()
            .map(|f| serde_json::to_value(f).map_err(|e| SimError::Scenario(e.to_string())))
            .collect::<Result<_, _>>()?;
        let Some(user) = update.get_mut("user").and_then(Value::as_object_mut) else {
            continue;
        };
        user.remove("face_photos");
        match user.entry("faces").or_insert(Value::Array(vec![])) {
            Value::Array(have) => have.extend(mine),
            _ => {
                return Err(SimError::Scenario(format!(
                    "step {}: `faces` must be a list",
                    i + 1
                )))
            }
        }
    }
    Ok(steps)
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (k, v) in over {
                match base.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

async fn publish_update(
    cloud: &AsyncClient,
    topics: &Topics,
    payload: Vec<u8>,
    retain: bool,
    world: &mut World,
    link_up: bool,
) -> Result<(), SimError> {
    let before = world.tally.applied_reports;
    cloud
        .publish(topics.updates(), QoS::AtLeastOnce, retain, payload)
        .await
        .map_err(|e| SimError::Broker(format!("cannot publish the update: {e}")))?;
    if link_up {
        world
            .until(STEP_BOUND, |t| t.applied_reports > before)
            .await?;
        // A gap (or an update that cannot apply) starts a sync; its request is reported before
        // the update is. Wait for the snapshot to settle.
        world.until(STEP_BOUND, |t| !t.sync_pending).await?;
    }
    Ok(())
}

/// The simulated cloud's user set: every change the scenario made as the cloud (lost ones
/// included), at the highest version it made.
#[derive(Default)]
struct CloudState {
    version: u64,
    users: BTreeMap<String, User>,
}

impl CloudState {
    /// Takes an update the cloud published (or lost) into its own user set, if it is a valid
    /// change newer than what it has. (A scenario may have the "cloud" send nonsense or
    /// replays, to see the door refuse them: those change nothing here.)
    fn record(&mut self, body: &str) {
        let Ok(update) = Update::parse(body.as_bytes()) else {
            return;
        };
        if update.version <= self.version {
            return;
        }
        self.version = update.version;
        match update.op {
            UpdateOp::UpsertUser(user) => {
                self.users.insert(user.id.clone(), user);
            }
            UpdateOp::DeleteUser { user_id } => {
                self.users.remove(&user_id);
            }
        }
    }
}

fn lock(state: &Mutex<CloudState>) -> std::sync::MutexGuard<'_, CloudState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Answers sync requests as the cloud would, from the simulated cloud's user set.
struct Responder {
    state: Arc<Mutex<CloudState>>,
    key: SigningKey,
}

impl Responder {
    fn answer(&self, request: &SyncRequest) -> Result<Vec<Vec<u8>>, String> {
        let (version, users) = {
            let state = lock(&self.state);
            (
                state.version,
                state.users.values().cloned().collect::<Vec<_>>(),
            )
        };
        if request.have_version == version {
            return Ok(vec![sync::seal_current(
                &request.device,
                &request.request,
                version,
                Some(&self.key),
            )]);
        }
        sync::seal_snapshot(
            &request.device,
            &request.request,
            version,
            &users,
            Some(&self.key),
        )
    }
}

/// The cloud's side of the broker: a client that publishes updates, receives events and
/// answers sync requests.
async fn cloud_client(
    host: &str,
    port: u16,
    topics: &Topics,
    responder: Responder,
) -> Result<(AsyncClient, mpsc::UnboundedReceiver<Publish>), SimError> {
    let mut opts = MqttOptions::new(format!("sim-cloud-{}", std::process::id()), host, port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready_rx) = mpsc::channel(1);
    let sub = client.clone();
    let logs = topics.logs();
    let requests_topic = topics.sync_request();
    let (req_tx, mut req_rx) = mpsc::unbounded_channel::<Publish>();
    // Answers go out from their own task: a snapshot may be more pages than the client's
    // queue holds, and the event loop must keep polling while they are sent.
    let answerer = client.clone();
    let reply_topics = topics.clone();
    tokio::spawn(async move {
        while let Some(p) = req_rx.recv().await {
            let request: SyncRequest = match serde_json::from_slice(&p.payload) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("simulated cloud: a bad sync request: {e}");
                    continue;
                }
            };
            match responder.answer(&request) {
                Ok(pages) => {
                    for page in pages {
                        let topic = reply_topics.sync_for(&request.device);
                        if answerer
                            .publish(topic, QoS::AtLeastOnce, false, page)
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                Err(e) => tracing::warn!("simulated cloud: cannot answer a sync request: {e}"),
            }
        }
    });
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = sub
                        .subscribe_many([
                            rumqttc::SubscribeFilter::new(logs.clone(), QoS::AtLeastOnce),
                            rumqttc::SubscribeFilter::new(requests_topic.clone(), QoS::AtLeastOnce),
                        ])
                        .await;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.try_send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == requests_topic => {
                    let _ = req_tx.send(p);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(rumqttc::ConnectionError::RequestsDone) => return,
                Err(e) => {
                    tracing::debug!("simulated cloud: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    match tokio::time::timeout(CONNECT_BOUND, ready_rx.recv()).await {
        Ok(Some(())) => Ok((client, rx)),
        _ => Err(SimError::Broker(format!(
            "the simulated cloud could not subscribe at {host}:{port} within {CONNECT_BOUND:?}"
        ))),
    }
}

fn summarise(
    t: &Tally,
    relay: &RelayRecorder,
    unlocked_level: bool,
    events_queued: u64,
) -> Summary {
    let now = Instant::now();
    let relay_intervals_ms: Vec<u64> = relay
        .intervals_at(unlocked_level)
        .into_iter()
        .map(|(from, to)| to.unwrap_or(now).duration_since(from).as_millis() as u64)
        .collect();
    let mut sorted = t.latencies.clone();
    sorted.sort_unstable();
    let pct = |p: f64| -> u64 {
        if sorted.is_empty() {
            return 0;
        }
        let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    };
    Summary {
        decisions: t.decisions(),
        granted: t.granted,
        denied: t.denied,
        alarms: t.alarms,
        events_published: t.published.len(),
        events_queued,
        updates_applied: t.applied,
        updates_ignored: t.ignored,
        updates_gap: t.gap,
        updates_rejected: t.rejected,
        relay_on_ms: relay_intervals_ms.iter().sum(),
        relay_intervals_ms,
        latency_p50_us: pct(0.50),
        latency_p99_us: pct(0.99),
    }
}
