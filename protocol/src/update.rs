//! User updates: the cloud's changes to the user set, published on `acceso/updates`.
//!
//! An update is parsed and validated whole here; a message that fails any check is rejected
//! with a reason that says what and where, and nothing of it may be applied.

use std::collections::HashSet;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::schedule::TimeRange;
use crate::signed::{self, Purpose, SignatureError, Signer, TrustedKeys};
use crate::CardUid;

/// AWS IoT Core's payload limit. Nothing larger is accepted or sent.
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;

/// One change to the user set, with its fleet-wide version.
///
/// The body of a signed envelope on the wire (see [`crate::signed`]):
/// `{"version": 4, "op": "upsert_user", "user": {...}}` or
/// `{"version": 5, "op": "delete_user", "user_id": "u1"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawUpdate", into = "RawUpdate")]
pub struct Update {
    /// Fleet-wide, strictly increasing, assigned by the cloud; the first is 1.
    pub version: u64,
    pub op: UpdateOp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum UpdateOp {
    UpsertUser(User),
    DeleteUser { user_id: String },
}

impl UpdateOp {
    /// The op's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            UpdateOp::UpsertUser(_) => "upsert_user",
            UpdateOp::DeleteUser { .. } => "delete_user",
        }
    }

    pub fn user_id(&self) -> &str {
        match self {
            UpdateOp::UpsertUser(u) => &u.id,
            UpdateOp::DeleteUser { user_id } => user_id,
        }
    }
}

/// A person who may pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub id: String,
    pub name: String,
    /// A disabled user is denied everywhere; default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub cards: Vec<CardUid>,
    #[serde(default)]
    pub faces: Vec<FaceEmbedding>,
    /// Start of validity (inclusive); absent = always was valid.
    #[serde(default)]
    pub valid_from: Option<Timestamp>,
    /// End of validity (exclusive); absent = never expires.
    #[serde(default)]
    pub valid_until: Option<Timestamp>,
    /// Doors this user may open; absent = every door. An empty list = no door.
    #[serde(default)]
    pub doors: Option<Vec<String>>,
    /// When in the week, in each door's local time; empty = any time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<TimeRange>,
    /// Card and face together, at every door (both the same user, within the door's window).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub two_factor: bool,
}

fn yes() -> bool {
    true
}

/// A face embedding, tagged with the model that produced it (embeddings of different models
/// cannot be compared).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaceEmbedding {
    pub model: String,
    pub vector: Vec<f32>,
}

/// Why an update message was rejected.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("update is {size} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")]
    Oversized { size: usize },
    /// `at` is the field at fault (`user.schedule[0].from`), empty for the message as a whole.
    #[error("invalid update: {}{source}", if at.is_empty() { String::new() } else { format!("{at}: ") })]
    Json {
        at: String,
        source: serde_json::Error,
    },
    #[error("invalid update: {0}")]
    Envelope(String),
    #[error("update refused: {0}")]
    Signature(#[from] SignatureError),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpdate {
    version: u64,
    op: OpName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<User>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OpName {
    UpsertUser,
    DeleteUser,
}

const MAX_ID_LEN: usize = 128;
/// The most a user's JSON may take, so that any user fits in one update and one snapshot page.
pub const MAX_USER_BYTES: usize = 100 * 1024;
const MAX_NAME_LEN: usize = 256;

fn check_id(field: &str, id: &str) -> Result<(), String> {
    if id.trim().is_empty() {
        return Err(format!("{field} is empty"));
    }
    if id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(format!(
            "{field} {id:?} is longer than {MAX_ID_LEN} bytes or has control characters"
        ));
    }
    Ok(())
}

impl User {
    /// Checks what serde cannot: ids, duplicates, the validity window, embeddings.
    pub fn validate(&self) -> Result<(), String> {
        check_id("user.id", &self.id)?;
        if self.name.chars().any(char::is_control) {
            return Err(format!("user.name {:?} has control characters", self.name));
        }
        if self.name.len() > MAX_NAME_LEN {
            return Err(format!(
                "user.name is {} bytes, over {MAX_NAME_LEN}",
                self.name.len()
            ));
        }
        let mut seen = HashSet::new();
        for card in &self.cards {
            if !seen.insert(card) {
                return Err(format!("user.cards lists {card} twice"));
            }
        }
        if let (Some(from), Some(until)) = (self.valid_from, self.valid_until) {
            if from >= until {
                return Err(format!(
                    "user.valid_from {from} is not before user.valid_until {until}"
                ));
            }
        }
        for (i, face) in self.faces.iter().enumerate() {
            check_id(&format!("user.faces[{i}].model"), &face.model)?;
            if face.vector.is_empty() || face.vector.iter().any(|x| !x.is_finite()) {
                return Err(format!(
                    "user.faces[{i}].vector is empty or has a value that is not a finite number"
                ));
            }
        }
        for (i, range) in self.schedule.iter().enumerate() {
            range.validate(&format!("user.schedule[{i}]"))?;
        }
        if let Some(doors) = &self.doors {
            for (i, door) in doors.iter().enumerate() {
                check_id(&format!("user.doors[{i}]"), door)?;
            }
        }
        let size = serde_json::to_vec(self)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_USER_BYTES {
            return Err(format!(
                "user is {size} bytes of JSON, over the {MAX_USER_BYTES}-byte limit for one user"
            ));
        }
        Ok(())
    }

    /// Whether a decision for this user depends on the time (a validity window or a schedule),
    /// and so on a clock that can be trusted.
    pub fn time_restricted(&self) -> bool {
        self.valid_from.is_some() || self.valid_until.is_some() || !self.schedule.is_empty()
    }

    /// Whether this user may use the door named `door`.
    pub fn allowed_at(&self, door: &str) -> bool {
        match &self.doors {
            None => true,
            Some(doors) => doors.iter().any(|d| d == door),
        }
    }
}

impl TryFrom<RawUpdate> for Update {
    type Error = String;

    fn try_from(raw: RawUpdate) -> Result<Self, Self::Error> {
        if raw.version == 0 {
            return Err("version must be 1 or more".into());
        }
        let op = match (raw.op, raw.user, raw.user_id) {
            (OpName::UpsertUser, Some(user), None) => {
                user.validate()?;
                UpdateOp::UpsertUser(user)
            }
            (OpName::UpsertUser, None, _) => return Err("upsert_user needs `user`".into()),
            (OpName::UpsertUser, Some(_), Some(_)) => {
                return Err("upsert_user takes `user`, not `user_id`".into())
            }
            (OpName::DeleteUser, None, Some(user_id)) => {
                check_id("user_id", &user_id)?;
                UpdateOp::DeleteUser { user_id }
            }
            (OpName::DeleteUser, _, None) => return Err("delete_user needs `user_id`".into()),
            (OpName::DeleteUser, Some(_), Some(_)) => {
                return Err("delete_user takes `user_id`, not `user`".into())
            }
        };
        Ok(Update {
            version: raw.version,
            op,
        })
    }
}

impl From<Update> for RawUpdate {
    fn from(u: Update) -> Self {
        let (op, user, user_id) = match u.op {
            UpdateOp::UpsertUser(user) => (OpName::UpsertUser, Some(user), None),
            UpdateOp::DeleteUser { user_id } => (OpName::DeleteUser, None, Some(user_id)),
        };
        RawUpdate {
            version: u.version,
            op,
            user,
            user_id,
        }
    }
}

impl Update {
    /// Opens a message from the updates topic: the envelope, then the signature (when `keys`
    /// pins any; `None` accepts unsigned messages), then the update itself. Nothing is parsed
    /// before its signature is checked.
    pub fn open(payload: &[u8], keys: Option<&TrustedKeys>) -> Result<Update, UpdateError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(UpdateError::Oversized {
                size: payload.len(),
            });
        }
        let opened = signed::open(payload).map_err(UpdateError::Envelope)?;
        if let Some(keys) = keys {
            keys.verify(
                Purpose::Update,
                opened.body.as_bytes(),
                opened.signature.as_deref(),
            )?;
        }
        Update::parse(opened.body.as_bytes())
    }

    /// The body to sign for [`Purpose::Update`] (wrap it with [`signed::envelope`]).
    pub fn body(&self) -> String {
        // Serialising an update cannot fail (no maps with non-string keys).
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The message for the updates topic: this update in an envelope signed by `signer`.
    pub fn seal(&self, signer: Option<&dyn Signer>) -> Vec<u8> {
        signed::seal(Purpose::Update, &self.body(), signer)
    }

    /// Parses and validates an update body exactly as it arrived.
    pub fn parse(payload: &[u8]) -> Result<Update, UpdateError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(UpdateError::Oversized {
                size: payload.len(),
            });
        }
        let mut de = serde_json::Deserializer::from_slice(payload);
        let update: Update = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let at = e.path().to_string();
            UpdateError::Json {
                at: if at == "." { String::new() } else { at },
                source: e.into_inner(),
            }
        })?;
        de.end().map_err(|source| UpdateError::Json {
            at: String::new(),
            source,
        })?;
        Ok(update)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Update, String> {
        Update::parse(s.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn upsert_parses_with_defaults_and_normalised_cards() {
        let u = parse(
            r#"{"version":1,"op":"upsert_user","user":{"id":"u1","name":"Ana","cards":["04:6b:2f:91:c4:5a:80"]}}"#,
        )
        .unwrap();
        assert_eq!(u.version, 1);
        let UpdateOp::UpsertUser(user) = u.op else {
            panic!("not an upsert")
        };
        assert!(user.enabled);
        assert_eq!(user.cards[0].to_string(), "046B2F91C45A80");
        assert!(user.allowed_at("anything"));
    }

    #[test]
    fn delete_round_trips() {
        let u = parse(r#"{"version":9,"op":"delete_user","user_id":"u1"}"#).unwrap();
        assert_eq!(
            u.op,
            UpdateOp::DeleteUser {
                user_id: "u1".into()
            }
        );
        let back = parse(&serde_json::to_string(&u).unwrap()).unwrap();
        assert_eq!(back, u);
    }

    #[test]
    fn malformed_updates_are_rejected_with_what_is_wrong() {
        let cases = [
            ("{", "EOF"),
            (
                r#"{"version":1,"op":"upsert_user","user":{"id":"u","name":"A\u0000"}}"#,
                "user.name",
            ),
            (
                r#"{"version":1,"op":"rename_user","user_id":"u"}"#,
                "rename_user",
            ),
            (r#"{"op":"delete_user","user_id":"u"}"#, "version"),
            (
                r#"{"version":0,"op":"delete_user","user_id":"u"}"#,
                "version must be",
            ),
            (
                r#"{"version":"1","op":"delete_user","user_id":"u"}"#,
                "invalid type",
            ),
            (r#"{"version":1,"op":"upsert_user"}"#, "needs `user`"),
            (r#"{"version":1,"op":"delete_user"}"#, "needs `user_id`"),
            (
                r#"{"version":1,"op":"delete_user","user_id":""}"#,
                "user_id is empty",
            ),
            (
                r#"{"version":1,"op":"upsert_user","user":{"id":"u","name":"A","cards":["XYZ"]}}"#,
                "not hex",
            ),
            // A field's own error names the field.
            (
                r#"{"version":1,"op":"upsert_user","user":{"id":"u","name":"A","schedule":[{"days":["mon"],"from":"25:00","until":"26:00"}]}}"#,
                "user.schedule[0].from: \"25:00\" is not a time of day",
            ),
            (
                r#"{"version":1,"op":"upsert_user","user":{"id":"u","name":"A","schedule":[{"days":["funday"],"from":"08:00","until":"09:00"}]}}"#,
                "user.schedule[0].days[0]: unknown variant `funday`",
            ),
            (
                r#"{"version":1,"op":"upsert_user","user":{"id":"u","name":"A","schedule":[{"days":["mon"],"from":"09:00","until":"09:00"}]}}"#,
                "user.schedule[0] starts and ends at 09:00",
            ),
            (
                r#"{"version":1,"op":"upsert_user","user":{"id":"u","name":"A","cards":["DEADBEEF","de:ad:be:ef"]}}"#,
                "twice",
            ),
            (
                r#"{"version":1,"op":"upsert_user","user":{"id":"u","name":"A","colour":"red"}}"#,
                "unknown field `colour`",
            ),
            (
                r#"{"version":1,"op":"upsert_user","user":{"id":"u","name":"A","valid_from":"2026-02-01T00:00:00Z","valid_until":"2026-01-01T00:00:00Z"}}"#,
                "not before",
            ),
            (
                r#"{"version":1,"op":"upsert_user","user":{"id":"u","name":"A","faces":[{"model":"sface","vector":[]}]}}"#,
                "faces[0].vector",
            ),
            (
                r#"{"version":1,"op":"upsert_user","user":{"id":"u","name":"A","doors":[""]}}"#,
                "doors[0]",
            ),
            (
                r#"{"version":1,"op":"delete_user","user_id":"u","extra":1}"#,
                "unknown field",
            ),
        ];
        for (input, expect) in cases {
            let err = parse(input).expect_err(input);
            assert!(err.contains(expect), "{input}: {err:?} lacks {expect:?}");
        }
    }

    #[test]
    fn oversized_payload_is_rejected_before_parsing() {
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert!(matches!(
            Update::parse(&big),
            Err(UpdateError::Oversized { size }) if size == MAX_PAYLOAD_BYTES + 1
        ));
    }

    #[test]
    fn door_list_restricts_and_empty_list_allows_none() {
        let mut u = User {
            id: "u".into(),
            name: "U".into(),
            enabled: true,
            cards: vec![],
            faces: vec![],
            valid_from: None,
            valid_until: None,
            doors: Some(vec!["front".into()]),
            schedule: vec![],
            two_factor: false,
        };
        assert!(u.allowed_at("front"));
        assert!(!u.allowed_at("back"));
        u.doors = Some(vec![]);
        assert!(!u.allowed_at("front"));
    }
}
