//! What the agent does, as observations: logged always, and streamed to an observer (the
//! scenario runner) when one is attached.

use acceso_protocol::{CardUid, Method, Outcome, Reason};
use serde::Serialize;
use tokio::sync::mpsc;

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
        latency_us: u64,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Reader,
    Relay,
    Inputs,
    Camera,
    Broker,
    Store,
    Clock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Ok,
    Degraded,
    Failed,
}

/// Where observations go. Cloning is cheap; every component holds one.
#[derive(Clone, Default)]
pub struct Reporter(Option<mpsc::UnboundedSender<Observation>>);

impl Reporter {
    /// A reporter that only logs.
    pub fn log_only() -> Reporter {
        Reporter(None)
    }

    /// A reporter that logs and streams to the returned receiver.
    pub fn channel() -> (Reporter, mpsc::UnboundedReceiver<Observation>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Reporter(Some(tx)), rx)
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
        if let Some(tx) = &self.0 {
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
