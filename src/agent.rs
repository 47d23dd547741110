//! The running agent: builds its tasks from config and backends, and stops them.
//!
//! Reader thread -> presentations -> decision task (decide, actuate, report) -> events ->
//! writer task (outbox) -> link task (MQTT). Updates come back from the link to the updates
//! task, which swaps a new user index in for the decision task.

use std::sync::Arc;
use std::time::Duration;

use acceso_protocol::{Topics, User};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access::{DoorRules, UserIndex};
use crate::clock::Clock;
use crate::cloud::{run_link, Consumer, LinkSettings, SyncTiming};
use crate::config::Config;
use crate::config::DoorMode;
use crate::control::{Control, Decider, Lock};
use crate::door::{DoorTiming, LockState, Wiring};
use crate::face::pipeline::FaceLoop;
use crate::hw::{CardReader, DoorInputs, FrameSource, Relay};
use crate::inputs::{spawn_inputs, InputMeaning};
use crate::observe::{Component, HealthState, Observation, Reporter};
use crate::reader::ReaderLoop;
use crate::service::Liveness;
use crate::store::{SharedStore, Store, StoreError};
use crate::writer::{run_writer, Holding};

/// The hardware the agent drives, real or simulated.
pub struct Backends {
    /// `None`: no reader (a face-only door, or a reader disabled in config).
    pub reader: Option<Box<dyn CardReader>>,
    pub relay: Box<dyn Relay>,
    /// `None`: neither a door contact nor an exit button is wired.
    pub inputs: Option<Box<dyn DoorInputs>>,
    /// `None`: no camera (a card-only door, or the camera could not be opened).
    pub camera: Option<Box<dyn FrameSource>>,
    pub clock: Arc<dyn Clock>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot drive the relay to locked at start: {0}")]
    Relay(crate::hw::HwError),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::cloud::tls::TlsSetupError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Instance(#[from] crate::instance::InstanceError),
}

/// A started agent. Stop it with `stop` (graceful) or `crash` (abrupt, for simulation).
pub struct Agent {
    cancel: CancellationToken,
    thread_cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    link: Option<(JoinHandle<()>, CancellationToken)>,
    threads: Vec<std::thread::JoinHandle<()>>,
    store: SharedStore,
    liveness: Liveness,
    _panic_guard: crate::guard::Registration,
    // Last: released once everything else has stopped.
    _instance: crate::instance::InstanceLock,
}

impl Agent {
    pub async fn start(
        config: &Config,
        backends: Backends,
        reporter: Reporter,
    ) -> Result<Agent, AgentError> {
        let Backends {
            reader,
            relay,
            inputs,
            camera,
            clock,
        } = backends;
        // One agent per state directory, before either touches the relay.
        let instance = crate::instance::acquire(&config.state_dir)?;
        // The lock first: whatever state the line was left in, it is locked before anything else.
        let lock = Lock::new(
            relay,
            Wiring {
                active_low: config.relay.active_low,
                fail_safe: config.door.fail_safe,
            },
        );
        lock.drive(LockState::Locked).map_err(AgentError::Relay)?;
        reporter.emit(Observation::Relay {
            state: LockState::Locked,
        });
        let panic_lock = lock.clone();
        let panic_guard =
            crate::guard::on_panic(move || panic_lock.drive_from_panic(LockState::Locked));

        let db = config.db_path();
        let (store, users) = tokio::task::spawn_blocking(move || {
            let (store, moved) = Store::open(&db)?;
            let users = store.users()?;
            tracing::info!(
                "{}: {} users, applied update version {}, {} events queued",
                store.path().display(),
                users.len(),
                store.applied_version()?,
                store.queued_count()?
            );
            Ok::<_, StoreError>(((store, moved), users))
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("store task failed: {e}")))??;
        let (store, moved) = store;
        if let Some(moved) = moved {
            reporter.health(
                Component::Store,
                HealthState::Degraded,
                format!(
                    "database was damaged ({}); moved to {} and started empty: users return with the next sync",
                    moved.why,
                    moved.to.display()
                ),
            );
        }
        let store = SharedStore::new(store);
        let users: Vec<Arc<User>> = users.into_iter().map(Arc::new).collect();
        let (index_tx, index_rx) =
            watch::channel(Arc::new(UserIndex::build(users.iter().cloned())));

        let cancel = CancellationToken::new();
        // The threads (reader, inputs, camera) have their own token: a simulated crash must
        // stop them without the tasks ever seeing a cancellation (a task still mid-poll would
        // take it as a graceful stop and lock the door, which a kill never does).
        let thread_cancel = CancellationToken::new();
        let (present_tx, present_rx) = mpsc::channel(16);
        let (event_tx, event_rx) = mpsc::channel(256);
        // Unbounded, yet bounded in practice: updates are acknowledged only once applied, so
        // the broker never has more than its in-flight window of them outstanding. A bounded
        // channel here would let a burst block the MQTT task, which must keep draining the
        // client's request queue (where the acknowledgements wait): a deadlock.
        let (update_tx, update_rx) = mpsc::unbounded_channel();
        let (request_tx, request_rx) = mpsc::unbounded_channel();
        let keys = config.sync.trusted_keys()?;
        if keys.is_empty() {
            let warning = "no cloud signing key pinned (sync.public_keys): UNSIGNED user updates are accepted, so anyone who can publish to the updates topic can add users to this door; pin the cloud's public key";
            tracing::warn!("{warning}");
            reporter.health(Component::Sync, HealthState::Degraded, warning);
        } else {
            let prints: Vec<String> = keys.keys().iter().map(|k| k.fingerprint()).collect();
            reporter.health(
                Component::Sync,
                HealthState::Ok,
                format!(
                    "updates must be signed by cloud key {}",
                    prints.join(" or ")
                ),
            );
        }

        let (input_tx, input_rx) = mpsc::channel(16);
        let mut threads = Vec::new();
        let liveness = Liveness::default();
        if let Some(r) = reader {
            let reader_loop = ReaderLoop {
                every: Duration::from_millis(config.reader.poll_ms),
                rearm: (config.reader.rearm_ms > 0)
                    .then(|| Duration::from_millis(config.reader.rearm_ms)),
                max_backoff: Duration::from_secs(5),
            };
            threads.push(
                reader_loop
                    .spawn_with(
                        r,
                        present_tx,
                        reporter.clone(),
                        thread_cancel.clone(),
                        liveness.register("reader"),
                    )
                    .map_err(AgentError::Thread)?,
            );
        }
        if let Some(inputs) = inputs {
            let meaning = InputMeaning {
                door_open_high: config.inputs.door_open_level.is_high(),
                exit_pressed_high: config.inputs.exit_pressed_level.is_high(),
            };
            let settle = Duration::from_millis(config.inputs.debounce_ms);
            threads.push(
                spawn_inputs(
                    inputs,
                    meaning,
                    settle,
                    input_tx,
                    reporter.clone(),
                    thread_cancel.clone(),
                )
                .map_err(AgentError::Thread)?,
            );
        }

        let (face_tx, face_rx) = mpsc::channel(4);
        let faces_wanted = config.door.mode != DoorMode::Card;
        match (faces_wanted, camera) {
            (false, _) => {}
            (true, None) => reporter.health(
                Component::Camera,
                HealthState::Failed,
                format!("no camera: {}", without_faces(config.door.mode)),
            ),
            (true, Some(camera)) => {
                let face = config.face.clone();
                threads.push(
                    FaceLoop::new(&config.face, config.camera.max_fps)
                        .spawn(
                            camera,
                            Box::new(move || crate::face::recognizer(&face)),
                            without_faces(config.door.mode),
                            index_rx.clone(),
                            face_tx,
                            reporter.clone(),
                            thread_cancel.clone(),
                        )
                        .map_err(AgentError::Thread)?,
                );
            }
        }

        let b = &config.broker;
        let tls = match (b.tls, &b.ca_file, &b.cert_file, &b.key_file) {
            (true, Some(ca), Some(cert), Some(key)) => {
                Some(crate::cloud::tls::client_config(ca, cert, key, b.alpn)?)
            }
            _ => None,
        };
        let link = LinkSettings {
            device: config.device_id.clone(),
            host: b.host.clone(),
            port: b.port,
            keepalive: Duration::from_secs(b.keepalive_s),
            reconnect_min: Duration::from_millis(b.reconnect_ms),
            reconnect_max: Duration::from_millis(b.reconnect_max_ms),
            stable_after: Duration::from_secs(b.stable_after_s),
            topics: Topics::new(&b.topic_prefix),
            tls,
        };
        let (client, eventloop) = link.connect();

        let decider = Decider {
            device: config.device_id.clone(),
            rules: DoorRules {
                name: config.door.name.clone(),
                mode: config.door.mode,
                // Checked by `Config::validate`; the system zone if it went missing since.
                time_zone: config.door.zone().unwrap_or_else(|e| {
                    tracing::error!("door.time_zone {e}; schedules use the system time zone");
                    jiff::tz::TimeZone::system()
                }),
                untrusted_clock: config.door.untrusted_clock,
            },
            boot_id: boot_id(),
            clock,
            index: index_rx,
        };
        let tasks = vec![
            tokio::spawn(
                Control {
                    decider,
                    lock,
                    timing: DoorTiming {
                        unlock: Duration::from_millis(config.door.unlock_ms),
                        relock_on_close: config.door.relock_on_close,
                        held_open: (config.door.held_open_ms > 0)
                            .then(|| Duration::from_millis(config.door.held_open_ms)),
                    },
                    presentations: present_rx,
                    faces: face_rx,
                    inputs: input_rx,
                    events: event_tx,
                    reporter: reporter.clone(),
                    two_factor_window: Duration::from_millis(config.door.two_factor_ms),
                    heartbeat: liveness.register("control"),
                }
                .run(cancel.clone()),
            ),
            tokio::spawn(run_writer(
                event_rx,
                store.clone(),
                config.outbox.max_events,
                reporter.clone(),
                Holding::default(),
            )),
            tokio::spawn(
                Consumer::new(
                    config.device_id.clone(),
                    Some(keys),
                    store.clone(),
                    users,
                    index_tx,
                    reporter.clone(),
                    request_tx,
                    SyncTiming {
                        request_timeout: Duration::from_millis(config.sync.request_timeout_ms),
                        retry_max: Duration::from_millis(config.sync.retry_max_ms),
                        check_every: Duration::from_secs(config.sync.check_every_s),
                    },
                )
                .run(update_rx, client.clone(), cancel.clone()),
            ),
        ];
        // The link stops last, so the acknowledgements and events of the other tasks still
        // go out in a graceful stop.
        let link_cancel = CancellationToken::new();
        let link = tokio::spawn(run_link(
            link,
            client,
            eventloop,
            store.clone(),
            update_tx,
            request_rx,
            reporter,
            link_cancel.clone(),
        ));
        Ok(Agent {
            cancel,
            thread_cancel,
            tasks,
            link: Some((link, link_cancel)),
            threads,
            store,
            liveness,
            _panic_guard: panic_guard,
            _instance: instance,
        })
    }

    /// The loops the watchdog watches (the reader's, the control loop's).
    pub fn liveness(&self) -> Liveness {
        self.liveness.clone()
    }

    /// The agent's store, for inspection (tests, the simulator's summary).
    pub fn store(&self) -> SharedStore {
        self.store.clone()
    }

    /// Graceful stop: no new decisions, the lock ends locked, every decided event is in the
    /// outbox, the MQTT session says goodbye.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        self.thread_cancel.cancel();
        let bounded = |task: JoinHandle<()>| async move {
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::error!("a task did not stop within 5 s");
            }
        };
        for task in self.tasks.drain(..) {
            bounded(task).await;
        }
        // Only now the link: the others' last acknowledgements and events are queued.
        if let Some((task, cancel)) = self.link.take() {
            cancel.cancel();
            bounded(task).await;
        }
        // Bounded too: a camera read can block inside OpenCV with no timeout of its own. By
        // now the lock is locked and every event is queued; a stuck thread is left behind
        // (the process is about to exit) rather than holding the stop up.
        // Polled, not joined on the blocking pool: a runtime waits for its blocking tasks when
        // it shuts down, so a join that never returns would keep the process from exiting.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        for thread in self.threads.drain(..) {
            while !thread.is_finished() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                let name = thread.thread().name().unwrap_or("?").to_string();
                tracing::error!("thread {name} did not stop within 5 s; leaving it behind");
            }
        }
    }

    /// Abrupt stop, as a crash or power cut would: no cleanup of any kind runs.
    pub fn crash(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some((task, _)) = self.link.take() {
            task.abort();
        }
        // The threads are the only things not owned by a task; they must not outlive us.
        // Only their token: the tasks' token would look like a graceful stop to a task that
        // is still finishing its current poll.
        self.thread_cancel.cancel();
    }
}

/// What a door that cannot recognise faces still does, for the installer reading the log.
fn without_faces(mode: DoorMode) -> &'static str {
    match mode {
        DoorMode::CardOrFace => "the door works on cards only",
        DoorMode::Face => "no credential can open this face-only door (only the exit button does)",
        DoorMode::CardAndFace | DoorMode::Card => {
            "no one can pass this card-and-face door (only the exit button opens it)"
        }
    }
}

/// The kernel's id for this boot; a fresh random one where there is no such file.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string())
}
