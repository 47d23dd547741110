//! The access event: one per decision, published on `acceso/logs`.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::CardUid;

/// One decision at one door. Every field is always present on the wire (absent values are
/// `null`), so consumers can rely on the shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessEvent {
    /// UUIDv7: unique, and sortable by creation time. The cloud deduplicates on it.
    pub event_id: String,
    pub device: String,
    pub door: String,
    /// Per-device sequence number, persisted, strictly increasing across restarts.
    pub seq: u64,
    /// The kernel's boot id at the time of the decision.
    pub boot_id: String,
    /// Wall-clock time of the decision, RFC 3339 UTC.
    pub time: Timestamp,
    /// Whether the wall clock was believed correct when the decision was made.
    pub time_trusted: bool,
    pub method: Method,
    pub card_uid: Option<CardUid>,
    pub user_id: Option<String>,
    pub face_score: Option<f32>,
    pub decision: Outcome,
    pub reason: Reason,
    /// From the credential being read to the decision being made, in microseconds.
    pub latency_us: u64,
    /// For `events_dropped`: how many events the full outbox dropped (oldest first) since the
    /// last such report reached the cloud; their sequence numbers are the gap before this one.
    pub dropped: Option<u64>,
}

/// How the person asked to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Card,
    Face,
    CardAndFace,
    ExitButton,
    /// The door contact: alarms and door state, not a credential.
    DoorContact,
    /// The agent itself (its outbox overflowed).
    Agent,
}

/// Granted or denied for a credential or exit request; an alarm or information for what the
/// door itself did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Granted,
    Denied,
    Alarm,
    Info,
}

/// Why. A closed set: consumers may match on it exhaustively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The credential belongs to an enabled user, valid now, allowed at this door.
    Granted,
    /// No user holds this card.
    UnknownCard,
    /// The user exists but is disabled.
    UserDisabled,
    /// The user's validity window has not started.
    NotYetValid,
    /// The user's validity window has ended.
    Expired,
    /// The user is not allowed at this door.
    DoorNotAllowed,
    /// A face was seen, but it is not accepted as any user's (too far from every enrolled
    /// face, or too close to two users to tell).
    UnknownFace,
    /// A face close to two users' enrolled faces (within the margin): it could be either, so
    /// it is neither.
    AmbiguousFace,
    /// This door does not take this kind of credential (a card at a face-only door).
    MethodNotAllowed,
    /// Outside the user's weekly schedule.
    OutsideSchedule,
    /// The user's access depends on the time, and the clock cannot be trusted (a Pi that
    /// booted without network time, or a clock that went back).
    ClockUntrusted,
    /// Two factors are needed and the second did not come within the door's window.
    SecondFactorMissing,
    /// The card and the face belong to different users.
    FactorsMismatch,
    /// The exit button was pressed: the door unlocks.
    ExitRequest,
    /// The door opened while locked, without a grant or an exit request.
    ForcedOpen,
    /// The door stayed open longer than allowed.
    HeldOpen,
    /// A door that was held open closed again.
    HeldOpenEnded,
    /// The door closed after opening, so it relocked before the unlock time ran out.
    RelockedOnClose,
    /// The outbox was full (a long outage): the oldest events were dropped; `dropped` says
    /// how many.
    EventsDropped,
}

impl Reason {
    pub fn outcome(self) -> Outcome {
        match self {
            Reason::Granted | Reason::ExitRequest => Outcome::Granted,
            Reason::ForcedOpen | Reason::HeldOpen => Outcome::Alarm,
            Reason::HeldOpenEnded | Reason::RelockedOnClose | Reason::EventsDropped => {
                Outcome::Info
            }
            Reason::UnknownCard
            | Reason::UserDisabled
            | Reason::NotYetValid
            | Reason::Expired
            | Reason::DoorNotAllowed
            | Reason::UnknownFace
            | Reason::AmbiguousFace
            | Reason::MethodNotAllowed
            | Reason::OutsideSchedule
            | Reason::ClockUntrusted
            | Reason::SecondFactorMissing
            | Reason::FactorsMismatch => Outcome::Denied,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_values_are_null_not_missing() {
        let e = AccessEvent {
            event_id: "0192f0c4-0000-7000-8000-000000000000".into(),
            device: "d1".into(),
            door: "front".into(),
            seq: 7,
            boot_id: "b".into(),
            time: "2026-12-03T10:00:00Z".parse().unwrap(),
            time_trusted: true,
            method: Method::Card,
            card_uid: Some("DEADBEEF".parse().unwrap()),
            user_id: None,
            face_score: None,
            decision: Outcome::Denied,
            reason: Reason::UnknownCard,
            latency_us: 12,
            dropped: None,
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["user_id"], serde_json::Value::Null);
        assert_eq!(v["face_score"], serde_json::Value::Null);
        assert_eq!(v["card_uid"], "DEADBEEF");
        assert_eq!(v["reason"], "unknown_card");
        assert_eq!(v["decision"], "denied");
        assert_eq!(v["time"], "2026-12-03T10:00:00Z");
        assert_eq!(v["dropped"], serde_json::Value::Null);
        assert_eq!(v.as_object().unwrap().len(), 15);
        let back: AccessEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
