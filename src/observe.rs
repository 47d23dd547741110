//! What the agent does, as observations: logged always, and streamed to an observer (the
//! scenario runner) when one is attached.

use acceso_protocol::{CardUid, Method, Outcome, Reason};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{mpsc, Notify};

use crate::door::LockState;

/// One thing that happened, in the shape `acceso sim` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Observation {
    Relay {
        state: LockState,
    },
    Decision {
        method: Method,
        card_uid: Option<CardUid>,
        user_id: Option<String>,
        decision: Outcome,
        reason: Reason,
        /// For a face: the cosine similarity to the matched (or closest) user.
        #[serde(skip_serializing_if = "Option::is_none")]
        face_score: Option<f32>,
        latency_us: u64,
    },
    /// A credential passed every rule and waits for the user's other factor (a
    /// `card_and_face` door, or a two-factor user). Its decision comes with the other factor,
    /// or as `second_factor_missing` when the window runs out.
    FirstFactor {
        method: Method,
        card_uid: Option<CardUid>,
        user_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        face_score: Option<f32>,
    },
    Applied {
        version: Option<u64>,
        op: Option<String>,
        outcome: ApplyResult,
        reason: Option<String>,
    },
    Health {
        component: Component,
        state: HealthState,
        detail: String,
    },
    /// The sync with the cloud's user set: a request sent, or the door found current.
    Sync {
        state: SyncState,
        have_version: u64,
        detail: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Asked the cloud for what this door is missing.
    Requested,
    /// The cloud's answer leaves this door current.
    Current,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyResult {
    /// Applied in one transaction.
    Applied,
    /// At or below the applied version: a duplicate or replay.
    Ignored,
    /// Beyond the next version: a change was missed. Not applied.
    Gap,
    /// Malformed, oversized or inconsistent. Nothing of it applied.
    Rejected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Reader,
    Relay,
    Inputs,
    Camera,
    /// The face models and pipeline (the camera itself is `Camera`).
    Face,
    Broker,
    Store,
    Clock,
    /// Trust in and currency of the cloud's user set (signing keys, sync).
    Sync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Ok,
    Degraded,
    Failed,
}

/// The latest health of each component, for the device's status topic.
#[derive(Default)]
pub struct HealthBoard {
    states: Mutex<BTreeMap<Component, ComponentHealth>>,
    changed: Notify,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentHealth {
    pub state: HealthState,
    pub detail: String,
}

impl HealthBoard {
    /// Every component that has reported, with its latest state.
    pub fn snapshot(&self) -> BTreeMap<Component, ComponentHealth> {
        // A poisoned lock only means a panic elsewhere mid-insert; the map itself is whole.
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves when a component's state (not only its detail) changes, or an update was
    /// applied: when the device's status message is out of date.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    fn set(&self, component: Component, health: ComponentHealth) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let state_changed = states.get(&component).map(|h| h.state) != Some(health.state);
        states.insert(component, health);
        drop(states);
        if state_changed {
            // One waiter (the link); a stored permit means a change between its waits is not lost.
            self.changed.notify_one();
        }
    }
}

/// Where observations go. Cloning is cheap; every component holds one.
#[derive(Clone, Default)]
pub struct Reporter {
    tx: Option<mpsc::UnboundedSender<Observation>>,
    board: Arc<HealthBoard>,
}

impl Reporter {
    /// A reporter that only logs.
    pub fn log_only() -> Reporter {
        Reporter::default()
    }

    /// A reporter that logs and streams to the returned receiver.
    pub fn channel() -> (Reporter, mpsc::UnboundedReceiver<Observation>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Reporter {
                tx: Some(tx),
                board: Arc::default(),
            },
            rx,
        )
    }

    /// The health of every component, as last reported through this reporter or its clones.
    pub fn board(&self) -> &HealthBoard {
        &self.board
    }

    pub fn emit(&self, obs: Observation) {
        // Logged as the same JSON `acceso sim` prints, so logs and scenarios read alike.
        let json = serde_json::to_string(&obs).unwrap_or_default();
        match &obs {
            Observation::Health {
                state: HealthState::Ok,
                ..
            } => tracing::info!("{json}"),
            Observation::Health { .. } => tracing::warn!("{json}"),
            Observation::Applied {
                outcome: ApplyResult::Rejected | ApplyResult::Gap,
                ..
            } => tracing::warn!("{json}"),
            _ => tracing::info!("{json}"),
        }
        if let Observation::Health {
            component,
            state,
            detail,
        } = &obs
        {
            self.board.set(
                *component,
                ComponentHealth {
                    state: *state,
                    detail: detail.clone(),
                },
            );
        }
        if let Observation::Applied {
            outcome: ApplyResult::Applied,
            ..
        } = &obs
        {
            self.board.changed.notify_one();
        }
        if let Some(tx) = &self.tx {
            // The observer may have gone away (end of a scenario); the agent carries on.
            let _ = tx.send(obs);
        }
    }

    pub fn health(&self, component: Component, state: HealthState, detail: impl Into<String>) {
        self.emit(Observation::Health {
            component,
            state,
            detail: detail.into(),
        });
    }
}
