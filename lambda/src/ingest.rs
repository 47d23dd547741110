//! ingest: access events into the events table, once each.
//!
//! Two inputs reach the one function: the IoT Rule on `acceso/logs` invokes it with one
//! message and its sender (see [`crate::rule`]), and an SQS event source (the retry queue,
//! fed by the rule's error action and by Lambda's dead-letter queue for failed invocations)
//! with batches of them. An event whose `device` is not its sender is refused: a door can
//! only speak for itself. A bare `AccessEvent` (not from a rule: a queue or a direct
//! invocation by the operator's tooling) is taken as it is. An event is validated, then stored with a put
//! conditional on its `event_id`: a repeat (the door's outbox resends until PUBACK, so repeats
//! are normal) is a success, not a second item.
//!
//! BatchWriteItem takes no conditions, so a batch is one conditional put per record; the
//! records whose put failed transiently (throttled, timed out: what BatchWriteItem would call
//! unprocessed items) are retried with backoff, and those still failing, and every invalid
//! record, are reported in `batchItemFailures`: SQS retries just those and, after
//! `maxReceiveCount`, moves them to the dead-letter queue. Never a false success.

use std::time::Duration;

use acceso_protocol::{AccessEvent, Reason};
use serde_json::{json, Value};

use crate::events::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use crate::ports::{EventStore, StoreError, Stored};
use crate::rule;

/// How transient failures are retried within one invocation.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The wait before the second try; doubled before each further one.
    pub backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 4,
            backoff: Duration::from_millis(100),
        }
    }
}

/// The ingest function.
pub struct Ingest<E> {
    pub store: E,
    pub retry: Retry,
}

/// Why one event was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("invalid event: {0}")]
    Invalid(String),
    #[error("event {event_id} not stored: {source}")]
    Store {
        event_id: String,
        source: StoreError,
    },
}

fn check_text(field: &str, v: &str, max: usize) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err(format!("{field} is empty"));
    }
    if v.len() > max || v.chars().any(char::is_control) {
        return Err(format!(
            "{field} {:?} is longer than {max} bytes or has control characters",
            v.chars().take(64).collect::<String>()
        ));
    }
    Ok(())
}

/// A UUID in its canonical text form (lowercase, hyphenated), so that one event has one key.
fn check_event_id(id: &str) -> Result<(), String> {
    let ok = id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "event_id {:?} is not a UUID in lowercase hyphenated form",
            id.chars().take(64).collect::<String>()
        ))
    }
}

/// Checks what the types do not: ids, text sizes, that the decision fits the reason.
pub fn validate(e: &AccessEvent) -> Result<(), String> {
    check_event_id(&e.event_id)?;
    check_text("device", &e.device, 128)?;
    if !e
        .device
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':'))
    {
        return Err(format!(
            "device {:?} has a character other than letters, digits, '-', '_' and ':'",
            e.device
        ));
    }
    check_text("door", &e.door, 128)?;
    if !e.boot_id.is_empty() {
        check_text("boot_id", &e.boot_id, 64)?;
    }
    if let Some(u) = &e.user_id {
        check_text("user_id", u, 128)?;
    }
    if let Some(s) = e.face_score {
        if !s.is_finite() {
            return Err("face_score is not a finite number".into());
        }
    }
    if e.decision != e.reason.outcome() {
        return Err(format!(
            "decision {:?} does not go with reason {:?}",
            e.decision, e.reason
        ));
    }
    if e.dropped.is_some() && e.reason != Reason::EventsDropped {
        return Err("dropped is only for reason events_dropped".into());
    }
    Ok(())
}

/// Parses and validates one event's JSON; errors name the field at fault.
pub fn parse_event(text: &str) -> Result<AccessEvent, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let event: AccessEvent = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at = e.path().to_string();
        if at == "." {
            e.inner().to_string()
        } else {
            format!("{at}: {}", e.inner())
        }
    })?;
    de.end().map_err(|e| e.to_string())?;
    validate(&event)?;
    Ok(event)
}

/// One event from what reached the function: a rule's message, whose sender must be the
/// event's device, or a bare event.
pub fn event_from(input: &Value) -> Result<AccessEvent, String> {
    match rule::from_device(input) {
        Some(wrapped) => {
            let message = wrapped?;
            let event = parse_event(message.text()?)?;
            message.check_device(&event.device)?;
            Ok(event)
        }
        None => parse_event(&input.to_string()),
    }
}

/// One event from an SQS record's body (JSON text, in any form [`event_from`] takes).
fn event_in_body(body: &str) -> Result<AccessEvent, String> {
    match serde_json::from_str::<Value>(body) {
        Ok(v) if rule::from_device(&v).is_some() => event_from(&v),
        _ => parse_event(body),
    }
}

impl<E: EventStore> Ingest<E> {
    pub fn new(store: E) -> Self {
        Ingest {
            store,
            retry: Retry::default(),
        }
    }

    /// One invocation: an SQS batch (an object with `Records`) or one event.
    pub async fn handle(&self, input: Value) -> Result<Value, IngestError> {
        if input.get("Records").is_some() {
            let batch: SqsEvent = serde_json::from_value(input)
                .map_err(|e| IngestError::Invalid(format!("not an SQS batch: {e}")))?;
            let res = self.handle_batch(&batch).await;
            return serde_json::to_value(res)
                .map_err(|e| IngestError::Invalid(format!("response: {e}")));
        }
        let event = event_from(&input).map_err(IngestError::Invalid)?;
        let stored = self.store_one(&event).await?;
        Ok(json!({
            "event_id": event.event_id,
            "stored": match stored { Stored::New => "new", Stored::Duplicate => "duplicate" },
        }))
    }

    /// One event, transient failures retried.
    pub async fn store_one(&self, event: &AccessEvent) -> Result<Stored, IngestError> {
        let mut wait = self.retry.backoff;
        let mut attempt = 1;
        loop {
            match self.store.put_event(event).await {
                Ok(s) => {
                    tracing::info!(event_id = %event.event_id, device = %event.device, stored = ?s, "event");
                    return Ok(s);
                }
                Err(e) if e.is_transient() && attempt < self.retry.attempts => {
                    tracing::warn!(event_id = %event.event_id, attempt, error = %e, "retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
                Err(source) => {
                    return Err(IngestError::Store {
                        event_id: event.event_id.clone(),
                        source,
                    })
                }
            }
        }
    }

    /// An SQS batch: every record validated and stored; the ones that were not are reported.
    pub async fn handle_batch(&self, batch: &SqsEvent) -> SqsBatchResponse {
        let mut failures = Vec::new();
        // (message id, event) still to store.
        let mut pending: Vec<(&str, AccessEvent)> = Vec::new();
        for r in &batch.records {
            match r.body.as_deref().map(event_in_body) {
                Some(Ok(e)) => pending.push((&r.message_id, e)),
                Some(Err(why)) => {
                    tracing::error!(message_id = %r.message_id, error = %why, "invalid event in batch");
                    failures.push(r.message_id.clone());
                }
                None => {
                    tracing::error!(message_id = %r.message_id, "batch record without a body");
                    failures.push(r.message_id.clone());
                }
            }
        }
        let mut wait = self.retry.backoff;
        for attempt in 1..=self.retry.attempts {
            let mut again = Vec::new();
            for (id, event) in pending {
                match self.store.put_event(&event).await {
                    Ok(s) => {
                        tracing::info!(message_id = %id, event_id = %event.event_id, stored = ?s, "event");
                    }
                    Err(e) if e.is_transient() && attempt < self.retry.attempts => {
                        tracing::warn!(message_id = %id, attempt, error = %e, "will retry");
                        again.push((id, event));
                    }
                    Err(e) => {
                        tracing::error!(message_id = %id, event_id = %event.event_id, error = %e, "not stored");
                        failures.push(id.to_string());
                    }
                }
            }
            if again.is_empty() {
                break;
            }
            pending = again;
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        // Report in the batch's order.
        let order = |id: &String| batch.records.iter().position(|r| &r.message_id == id);
        failures.sort_by_key(order);
        SqsBatchResponse {
            batch_item_failures: failures
                .into_iter()
                .map(|item_identifier| BatchItemFailure { item_identifier })
                .collect(),
        }
    }
}
