//! The link to the cloud: one MQTT session (rumqttc) that drains the outbox to the logs topic
//! and feeds messages from the updates and sync topics to the user-set consumer.

mod backoff;
mod link;
pub mod tls;
mod updates;
mod window;

pub use link::{run_link, LinkSettings};
pub use updates::{Consumer, Inbound, SyncTiming, UserIndexTx};
