//! The running agent: builds its tasks from config and backends, and stops them.
//!
//! Reader thread -> presentations -> decision task (decide, actuate, report) -> events ->
//! writer task (outbox) -> link task (MQTT). Updates come back from the link to the updates
//! task, which swaps a new user index in for the decision task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use acceso_protocol::{AccessEvent, Method, Topics, User};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access::{decide_card, UserIndex};
use crate::clock::Clock;
use crate::cloud::{run_link, run_updates, LinkSettings};
use crate::config::Config;
use crate::door::{DoorMachine, LockState};
use crate::hw::{CardReader, Relay};
use crate::observe::{Component, HealthState, Observation, Reporter};
use crate::reader::{Presentation, ReaderLoop};
use crate::store::{SharedStore, Store, StoreError};

/// The hardware the agent drives, real or simulated.
pub struct Backends {
    /// `None`: no reader (a face-only door, or a reader disabled in config).
    pub reader: Option<Box<dyn CardReader>>,
    pub relay: Box<dyn Relay>,
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
}

/// A started agent. Stop it with `stop` (graceful) or `crash` (abrupt, for simulation).
pub struct Agent {
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    reader: Option<std::thread::JoinHandle<()>>,
    store: SharedStore,
}

impl Agent {
    pub async fn start(
        config: &Config,
        backends: Backends,
        reporter: Reporter,
    ) -> Result<Agent, AgentError> {
        let Backends {
            reader,
            mut relay,
            clock,
        } = backends;
        // The lock first: whatever state the line was left in, it is locked before anything else.
        relay
            .set(LockState::Locked.energised())
            .map_err(AgentError::Relay)?;
        reporter.emit(Observation::Relay {
            state: LockState::Locked,
        });

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
        let queued = Arc::new(Notify::new());
        let (present_tx, present_rx) = mpsc::channel(16);
        let (event_tx, event_rx) = mpsc::channel(256);
        // Unbounded, yet bounded in practice: updates are acknowledged only once applied, so
        // the broker never has more than its in-flight window of them outstanding. A bounded
        // channel here would let a burst block the MQTT task, which must keep draining the
        // client's request queue (where the acknowledgements wait): a deadlock.
        let (update_tx, update_rx) = mpsc::unbounded_channel();

        let reader = match reader {
            None => None,
            Some(r) => Some(
                ReaderLoop {
                    every: Duration::from_millis(config.reader.poll_ms),
                    rearm: (config.reader.rearm_ms > 0)
                        .then(|| Duration::from_millis(config.reader.rearm_ms)),
                    max_backoff: Duration::from_secs(5),
                }
                .spawn(r, present_tx, reporter.clone(), cancel.clone())
                .map_err(AgentError::Thread)?,
            ),
        };

        let link = LinkSettings {
            client_id: config.device_id.clone(),
            host: config.broker.host.clone(),
            port: config.broker.port,
            keepalive: Duration::from_secs(config.broker.keepalive_s),
            reconnect: Duration::from_millis(config.broker.reconnect_ms),
            topics: Topics::new(&config.broker.topic_prefix),
        };
        let (client, eventloop) = link.connect();

        let decider = Decider {
            device: config.device_id.clone(),
            door: config.door.name.clone(),
            boot_id: boot_id(),
            clock,
            index: index_rx,
        };
        let tasks = vec![
            tokio::spawn(run_door(
                decider,
                relay,
                Duration::from_millis(config.door.unlock_ms),
                present_rx,
                event_tx,
                reporter.clone(),
                cancel.clone(),
            )),
            tokio::spawn(run_writer(
                event_rx,
                store.clone(),
                queued.clone(),
                reporter.clone(),
            )),
            tokio::spawn(run_updates(
                update_rx,
                users,
                client.clone(),
                store.clone(),
                index_tx,
                reporter.clone(),
                cancel.clone(),
            )),
            tokio::spawn(run_link(
                link,
                client,
                eventloop,
                store.clone(),
                queued,
                update_tx,
                reporter,
                cancel.clone(),
            )),
        ];
        Ok(Agent {
            cancel,
            tasks,
            reader,
            store,
        })
    }

    /// The agent's store, for inspection (tests, the simulator's summary).
    pub fn store(&self) -> SharedStore {
        self.store.clone()
    }

    /// Graceful stop: no new decisions, the lock ends locked, every decided event is in the
    /// outbox, the MQTT session says goodbye.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        for task in self.tasks.drain(..) {
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::error!("a task did not stop within 5 s");
            }
        }
        if let Some(reader) = self.reader.take() {
            let _ = tokio::task::spawn_blocking(move || reader.join()).await;
        }
    }

    /// Abrupt stop, as a crash or power cut would: no cleanup of any kind runs.
    pub fn crash(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        // The reader thread is the only thing not owned by a task; it must not outlive us.
        self.cancel.cancel();
    }
}

/// Everything a decision needs besides the credential.
struct Decider {
    device: String,
    door: String,
    boot_id: String,
    clock: Arc<dyn Clock>,
    index: watch::Receiver<Arc<UserIndex>>,
}

impl Decider {
    fn card(&self, p: &Presentation) -> (AccessEvent, Observation) {
        let now = self.clock.now();
        let index = self.index.borrow().clone();
        let d = decide_card(&index, &p.uid, &self.door, now.time);
        let latency_us = p.at.elapsed().as_micros() as u64;
        let event = AccessEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            device: self.device.clone(),
            door: self.door.clone(),
            seq: 0, // assigned by the outbox
            boot_id: self.boot_id.clone(),
            time: now.time,
            time_trusted: now.trusted,
            method: Method::Card,
            card_uid: Some(p.uid.clone()),
            user_id: d.user_id.clone(),
            face_score: None,
            decision: d.outcome,
            reason: d.reason,
            latency_us,
        };
        let obs = Observation::Decision {
            method: Method::Card,
            card_uid: Some(p.uid.clone()),
            user_id: d.user_id,
            decision: d.outcome,
            reason: d.reason,
            latency_us,
        };
        (event, obs)
    }
}

/// The decision and door task: decide, actuate, report, hand the event to the writer.
async fn run_door(
    decider: Decider,
    mut relay: Box<dyn Relay>,
    unlock_for: Duration,
    mut presentations: mpsc::Receiver<Presentation>,
    events: mpsc::Sender<AccessEvent>,
    reporter: Reporter,
    cancel: CancellationToken,
) {
    let mut door = DoorMachine::new(unlock_for);
    let drive = |relay: &mut Box<dyn Relay>, change: Option<LockState>| {
        if let Some(state) = change {
            if let Err(e) = relay.set(state.energised()) {
                reporter.health(Component::Relay, HealthState::Failed, e.to_string());
            }
            reporter.emit(Observation::Relay { state });
        }
    };
    loop {
        let deadline = door.deadline();
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = sleep_until(deadline), if deadline.is_some() => {
                let change = door.tick(Instant::now());
                drive(&mut relay, change);
            }
            p = presentations.recv() => {
                let Some(p) = p else { break };
                let (event, obs) = decider.card(&p);
                if event.decision == acceso_protocol::Outcome::Granted {
                    let change = door.grant(Instant::now());
                    drive(&mut relay, change);
                }
                reporter.emit(obs);
                if events.send(event).await.is_err() {
                    tracing::error!("event writer is gone; event not queued");
                }
            }
        }
    }
    let change = door.lock_now();
    // Drive the line even if the machine thinks it is locked: stop must end locked.
    if let Err(e) = relay.set(LockState::Locked.energised()) {
        reporter.health(Component::Relay, HealthState::Failed, e.to_string());
    }
    if change.is_some() {
        reporter.emit(Observation::Relay {
            state: LockState::Locked,
        });
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Puts decided events into the outbox. Ends when the decision task has ended and every event
/// it sent is stored, so a graceful stop loses none.
async fn run_writer(
    mut events: mpsc::Receiver<AccessEvent>,
    store: SharedStore,
    queued: Arc<Notify>,
    reporter: Reporter,
) {
    while let Some(event) = events.recv().await {
        let result = store
            .call(move |s| s.append_event(move |seq| AccessEvent { seq, ..event }))
            .await;
        match result {
            Ok(_) => queued.notify_one(),
            Err(e) => reporter.health(
                Component::Store,
                HealthState::Failed,
                format!("cannot queue event: {e}"),
            ),
        }
    }
}

/// The kernel's id for this boot; a fresh random one where there is no such file.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string())
}
