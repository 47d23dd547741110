//! sync: answers a door's `acceso/sync/request` with signed responses on
//! `acceso/sync/{device}`.
//!
//! The IoT Rule invokes the function with the request and the MQTT client id of its sender
//! ([`crate::rule`]): a door may only ask for itself. The answer is "you
//! are current" when the door has the fleet version, else the snapshot of every user at one
//! fleet version, in pages under the payload limit, each body signed (purpose `Sync`) and
//! published QoS 1.

use acceso_protocol::signed::Purpose;
use acceso_protocol::{sync, SyncRequest, Topics};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::ports::{seal, CloudSigner, Directory, PublishError, Publisher, SignError, StoreError};
use crate::rule;

/// A request and, when it came through the rule, its sender's client id. (A bare request,
/// from the operator's tooling, may name the client itself.)
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncEvent {
    pub device: String,
    pub have_version: u64,
    pub request: String,
    /// The MQTT client id (the thing name), added by the rule.
    #[serde(default)]
    pub client_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncFailure {
    #[error("invalid sync request: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("snapshot: {0}")]
    Snapshot(String),
}

/// The sync function.
pub struct Sync<D, P, S> {
    pub directory: D,
    pub publisher: P,
    pub signer: S,
    pub topics: Topics,
}

fn check(ev: &SyncEvent) -> Result<SyncRequest, String> {
    let d = &ev.device;
    if d.is_empty()
        || d.len() > 128
        || !d
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':'))
    {
        return Err(format!(
            "device {:?} is not a thing name (1 to 128 letters, digits, '-', '_', ':')",
            d.chars().take(64).collect::<String>()
        ));
    }
    if let Some(c) = &ev.client_id {
        if c != d {
            return Err(format!("client {c:?} asked on behalf of device {d:?}"));
        }
    }
    if ev.request.is_empty() || ev.request.len() > 64 || ev.request.chars().any(char::is_control) {
        return Err("request must be 1 to 64 bytes without control characters".into());
    }
    Ok(SyncRequest {
        device: ev.device.clone(),
        have_version: ev.have_version,
        request: ev.request.clone(),
    })
}

impl<D: Directory, P: Publisher, S: CloudSigner> Sync<D, P, S> {
    pub async fn handle(&self, input: Value) -> Result<Value, SyncFailure> {
        let ev =
            match rule::from_device(&input) {
                Some(wrapped) => {
                    let message = wrapped.map_err(SyncFailure::Invalid)?;
                    let req: SyncRequest =
                        serde_json::from_str(message.text().map_err(SyncFailure::Invalid)?)
                            .map_err(|e| {
                                SyncFailure::Invalid(format!(
                                    "message from client {:?}: {e}",
                                    message.client_id
                                ))
                            })?;
                    SyncEvent {
                        device: req.device,
                        have_version: req.have_version,
                        request: req.request,
                        client_id: Some(message.client_id),
                    }
                }
                None => serde_json::from_value(input)
                    .map_err(|e| SyncFailure::Invalid(e.to_string()))?,
            };
        let req = check(&ev).map_err(SyncFailure::Invalid)?;
        self.answer(&req).await
    }

    /// Answers one request: what was sent, as `{"version", "kind", "pages"}`.
    pub async fn answer(&self, req: &SyncRequest) -> Result<Value, SyncFailure> {
        let topic = self.topics.sync_for(&req.device);
        let version = self.directory.fleet_version().await?;
        if req.have_version == version {
            let body = sync::current_body(&req.device, &req.request, version);
            self.publisher
                .publish(&topic, seal(&self.signer, Purpose::Sync, &body).await?)
                .await?;
            tracing::info!(device = %req.device, version, "current");
            return Ok(json!({ "version": version, "kind": "current", "pages": 0 }));
        }
        let (version, mut users) = self.directory.snapshot().await?;
        users.sort_by(|a, b| a.id.cmp(&b.id));
        if version == 0 {
            // No write yet: nothing to snapshot, and a page at version 0 is not one.
            let body = sync::current_body(&req.device, &req.request, 0);
            self.publisher
                .publish(&topic, seal(&self.signer, Purpose::Sync, &body).await?)
                .await?;
            return Ok(json!({ "version": 0, "kind": "current", "pages": 0 }));
        }
        if req.have_version > version {
            tracing::warn!(device = %req.device, have = req.have_version, version, "the door is ahead of the fleet");
        }
        let bodies = sync::snapshot_bodies(&req.device, &req.request, version, &users)
            .map_err(SyncFailure::Snapshot)?;
        for body in &bodies {
            let sealed = seal(&self.signer, Purpose::Sync, body).await?;
            self.publisher.publish(&topic, sealed).await?;
        }
        tracing::info!(device = %req.device, have = req.have_version, version, users = users.len(), pages = bodies.len(), "snapshot");
        Ok(
            json!({ "version": version, "kind": "snapshot", "pages": bodies.len(), "users": users.len() }),
        )
    }
}
