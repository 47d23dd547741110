//! The updates consumer: parse, validate, apply in one transaction, swap the index, then
//! acknowledge. A bad message is rejected whole and reported; nothing else stops.

use std::sync::Arc;

use std::collections::HashMap;

use acceso_protocol::{Update, UpdateOp, User, MAX_PAYLOAD_BYTES};
use rumqttc::{AsyncClient, Publish};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::access::UserIndex;
use crate::observe::{ApplyResult, Component, HealthState, Observation, Reporter};
use crate::store::{ApplyOutcome, SharedStore};

/// Where a freshly built user index is published to the decision task.
pub type UserIndexTx = watch::Sender<Arc<UserIndex>>;

/// Applies updates as they come. `users` is the stored user set at start; the task keeps it
/// in memory, patched after each applied update, so a new index never needs the database.
pub async fn run_updates(
    mut incoming: mpsc::UnboundedReceiver<Publish>,
    users: Vec<Arc<User>>,
    client: AsyncClient,
    store: SharedStore,
    index: UserIndexTx,
    reporter: Reporter,
    cancel: CancellationToken,
) {
    let mut users: HashMap<String, Arc<User>> =
        users.into_iter().map(|u| (u.id.clone(), u)).collect();
    loop {
        let publish = tokio::select! {
            _ = cancel.cancelled() => return,
            p = incoming.recv() => match p {
                Some(p) => p,
                None => return,
            },
        };
        let observation = apply_message(&publish.payload, &store, &mut users, &index).await;
        let failed_to_store = matches!(&observation, Observation::Health { .. });
        reporter.emit(observation);
        // A message that could not be stored is not acknowledged: the broker redelivers it.
        if !failed_to_store {
            if let Err(e) = client.ack(&publish).await {
                tracing::warn!("cannot acknowledge update: {e}");
            }
        }
    }
}

/// Applies one message from the updates topic and says what became of it.
pub async fn apply_message(
    payload: &[u8],
    store: &SharedStore,
    users: &mut HashMap<String, Arc<User>>,
    index: &UserIndexTx,
) -> Observation {
    let update = match Update::parse(payload) {
        Ok(u) => u,
        Err(e) => {
            let (version, op) = hints(payload);
            return Observation::Applied {
                version,
                op,
                outcome: ApplyResult::Rejected,
                reason: Some(e.to_string()),
            };
        }
    };
    let version = update.version;
    let op = update.op.name().to_string();
    if let Err(reason) = check_our_embeddings(&update) {
        return Observation::Applied {
            version: Some(version),
            op: Some(op),
            outcome: ApplyResult::Rejected,
            reason: Some(reason),
        };
    }
    let result = store
        .call(move |s| Ok((s.apply_update(&update)?, update)))
        .await;
    let (outcome, reason) = match result {
        Err(e) => {
            return Observation::Health {
                component: Component::Store,
                state: HealthState::Failed,
                detail: format!("cannot apply update version {version}: {e}"),
            }
        }
        Ok((ApplyOutcome::Applied, update)) => {
            let mut note = None;
            match update.op {
                UpdateOp::UpsertUser(user) => {
                    note = foreign_faces(&user);
                    if let Some(note) = &note {
                        tracing::warn!("update version {version}: {note}");
                    }
                    users.insert(user.id.clone(), Arc::new(user));
                }
                UpdateOp::DeleteUser { user_id } => {
                    users.remove(&user_id);
                }
            }
            index.send_replace(Arc::new(UserIndex::build(users.values().cloned())));
            (ApplyResult::Applied, note)
        }
        Ok((ApplyOutcome::Stale { applied }, _)) => (
            ApplyResult::Ignored,
            Some(format!("version {version} is at or below the applied version {applied}")),
        ),
        Ok((ApplyOutcome::Gap { applied }, _)) => (
            ApplyResult::Gap,
            Some(format!(
                "version {version} skips ahead of the applied version {applied}: a change was missed; not applied until a full sync"
            )),
        ),
        Ok((ApplyOutcome::Rejected(why), _)) => (ApplyResult::Rejected, Some(why)),
    };
    Observation::Applied {
        version: Some(version),
        op: Some(op),
        outcome,
        reason,
    }
}

/// The `version` of a message that failed validation, if one can be read, for the report.
/// The version and op of a rejected message, where they can be read, for its report.
fn hints(payload: &[u8]) -> (Option<u64>, Option<String>) {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return (None, None);
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return (None, None);
    };
    (
        v.get("version").and_then(|v| v.as_u64()),
        v.get("op")
            .and_then(|o| o.as_str())
            .map(|o| o.chars().take(64).collect()),
    )
}

/// An embedding that says it is of our model must be one: a wrong length is a malformed
/// update, rejected whole (another model's embeddings are only ignored).
fn check_our_embeddings(update: &acceso_protocol::Update) -> Result<(), String> {
    use crate::face::{EMBEDDING_LEN, MODEL_ID};
    let acceso_protocol::UpdateOp::UpsertUser(user) = &update.op else {
        return Ok(());
    };
    for (i, face) in user.faces.iter().enumerate() {
        if face.model == MODEL_ID && face.vector.len() != EMBEDDING_LEN {
            return Err(format!(
                "user.faces[{i}]: a {MODEL_ID} embedding has {EMBEDDING_LEN} values, not {}",
                face.vector.len()
            ));
        }
    }
    Ok(())
}

/// Embeddings of another model are kept but never matched; the user's other credentials still
/// work. Says so, for the operator.
fn foreign_faces(user: &acceso_protocol::User) -> Option<String> {
    use crate::face::MODEL_ID;
    let foreign: Vec<&str> = user
        .faces
        .iter()
        .filter(|f| f.model != MODEL_ID)
        .map(|f| f.model.as_str())
        .collect();
    (!foreign.is_empty()).then(|| {
        format!(
            "user {}: {} face embedding(s) of model {:?} ignored for matching (this build matches {MODEL_ID}); the user's cards still work",
            user.id,
            foreign.len(),
            foreign
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_message_is_reported_with_what_of_it_can_be_read() {
        let h = |s: &str| hints(s.as_bytes());
        assert_eq!(
            h(r#"{"version":7,"op":"rename_user","user_id":"a"}"#),
            (Some(7), Some("rename_user".to_string()))
        );
        assert_eq!(h(r#"{"version":"7","op":3}"#), (None, None));
        assert_eq!(h("{not json"), (None, None));
        let long = format!(r#"{{"op":"{}"}}"#, "x".repeat(500));
        assert_eq!(h(&long).1.map(|o| o.len()), Some(64), "the op is cut short");
    }
}
