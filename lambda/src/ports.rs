//! The seams between the handlers and AWS: an event store, a user directory with the fleet
//! version counter, a publisher and a signer.

use std::future::Future;

use acceso_protocol::signed::Purpose;
use acceso_protocol::{AccessEvent, User};
use jiff::Timestamp;

/// A storage failure, told apart by whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Throttling, a timeout, a 5xx: the same request may succeed later.
    #[error("{0} (transient)")]
    Transient(String),
    /// Anything else (a missing table, a denied permission, a malformed item).
    #[error("{0}")]
    Permanent(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }
}

/// What storing an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A new item.
    New,
    /// An item with this `event_id` was already there; nothing was written.
    Duplicate,
}

/// One page of a device's events, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    pub events: Vec<AccessEvent>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<String>,
}

/// Where access events are kept, one item per `event_id`.
pub trait EventStore: Send + Sync {
    /// Stores `event` unless an event with its `event_id` is already stored.
    fn put_event(
        &self,
        event: &AccessEvent,
    ) -> impl Future<Output = Result<Stored, StoreError>> + Send;

    /// `device`'s events with `from <= time < until`, oldest first, at most `limit`, from
    /// `cursor` (a `next` of an earlier page of the same query).
    fn list_events(
        &self,
        device: &str,
        from: Timestamp,
        until: Timestamp,
        limit: u32,
        cursor: Option<&str>,
    ) -> impl Future<Output = Result<EventPage, CursorOr<StoreError>>> + Send;
}

/// A bad cursor (the caller's fault) or another error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorOr<E> {
    #[error("cursor: {0}")]
    BadCursor(String),
    #[error(transparent)]
    Other(#[from] E),
}

/// A user as stored, with the fleet version of its last write.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredUser {
    pub user: User,
    pub version: u64,
}

/// One page of users, by id.
#[derive(Debug, Clone, PartialEq)]
pub struct UserPage {
    pub users: Vec<StoredUser>,
    pub next: Option<String>,
}

/// A change to the user set.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A new user; fails if the id exists.
    Create(User),
    /// Replaces an existing user; fails if the id does not exist.
    Replace(User),
    /// Removes a user; fails if the id does not exist.
    Delete(String),
}

impl Write {
    pub fn user_id(&self) -> &str {
        match self {
            Write::Create(u) | Write::Replace(u) => &u.id,
            Write::Delete(id) => id,
        }
    }
}

/// Why a write did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("user {0:?} does not exist")]
    NotFound(String),
    #[error("user {0:?} already exists")]
    Exists(String),
    #[error("card {card} is held by user {holder:?}; a card opens doors for one user only")]
    CardHeld { card: String, holder: String },
    #[error("the fleet version kept moving under {attempts} attempts; try again")]
    Contention { attempts: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The user set, the fleet version counter and the card index.
pub trait Directory: Send + Sync {
    /// The fleet version: that of the last committed write, 0 before the first.
    fn fleet_version(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    fn get_user(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<StoredUser>, StoreError>> + Send;

    /// Users by id, at most `limit`, from `cursor`.
    fn list_users(
        &self,
        limit: u32,
        cursor: Option<&str>,
    ) -> impl Future<Output = Result<UserPage, CursorOr<StoreError>>> + Send;

    /// Applies `write` atomically with taking the next fleet version (and with the card
    /// index: every card one user's), and returns that version.
    fn write(&self, write: &Write) -> impl Future<Output = Result<u64, WriteError>> + Send;

    /// Every user at one fleet version, sorted by id.
    fn snapshot(&self) -> impl Future<Output = Result<(u64, Vec<User>), StoreError>> + Send;
}

/// A publish that did not go out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("publish to {topic} failed: {why}")]
pub struct PublishError {
    pub topic: String,
    pub why: String,
}

/// MQTT publishes through AWS IoT Core's data plane, QoS 1.
pub trait Publisher: Send + Sync {
    fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;
}

/// A signature that could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signing failed: {0}")]
pub struct SignError(pub String);

/// Signs message bodies for the doors: base64 of a DER ECDSA P-256 / SHA-256 signature over
/// `acceso_protocol::signed::signed_bytes(purpose, body)`.
pub trait CloudSigner: Send + Sync {
    fn sign(
        &self,
        purpose: Purpose,
        body: &str,
    ) -> impl Future<Output = Result<String, SignError>> + Send;
}

/// A local key signs (tests, and a deployment without KMS).
impl CloudSigner for acceso_protocol::SigningKey {
    async fn sign(&self, purpose: Purpose, body: &str) -> Result<String, SignError> {
        let sig = acceso_protocol::SigningKey::sign(self, purpose, body.as_bytes());
        if sig.is_empty() {
            return Err(SignError(
                "the system random number generator failed".into(),
            ));
        }
        Ok(sig)
    }
}

/// Signs `body` and wraps it in the envelope the doors open.
pub async fn seal<S: CloudSigner>(
    signer: &S,
    purpose: Purpose,
    body: &str,
) -> Result<Vec<u8>, SignError> {
    let sig = signer.sign(purpose, body).await?;
    Ok(acceso_protocol::signed::envelope(body, Some(&sig)))
}
