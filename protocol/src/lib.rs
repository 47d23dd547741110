//! Wire types of acceso, shared by the door agent and the cloud side.
//!
//! Everything that crosses MQTT is defined here: the access events a door publishes, the user
//! updates the cloud publishes, and the topic names. JSON, UTF-8. This crate does no IO.

mod card;
mod event;
pub mod schedule;
pub mod signed;
pub mod sync;
mod topics;
mod update;

pub use card::{CardUid, CardUidError};
pub use event::{AccessEvent, Method, Outcome, Reason};
pub use schedule::{Day, DayTime, TimeRange};
pub use signed::{PublicKey, Purpose, SignatureError, Signer, SigningKey, TrustedKeys};
pub use sync::{SnapshotPage, SyncError, SyncRequest, SyncResponse};
pub use topics::Topics;
pub use update::{
    FaceEmbedding, Update, UpdateError, UpdateOp, User, MAX_PAYLOAD_BYTES, MAX_USER_BYTES,
};
