//! The user-set consumer: updates from `acceso/updates`, sync responses from
//! `acceso/sync/{device}`, and the sync requests that fill gaps.
//!
//! - An update at or below the applied version is ignored (a duplicate, retained or replayed).
//! - The next version is applied in one transaction, then any stashed ones that follow it.
//! - A version past the next is stashed (on disk) and a snapshot is requested.
//! - Snapshot pages are gathered until all are in, checked whole, and swapped in in one
//!   transaction; stashed updates above the snapshot then apply.
//! - With pinned keys, nothing unsigned or wrongly signed is parsed, applied or stashed: it is
//!   counted and reported.
//! - Requests time out and are retried with growing waits; on every connect and periodically
//!   the agent asks whether it is current.
//!
//! One task does all of it, one message at a time, so there are no races between an update
//! and a snapshot. A message is acknowledged to the broker only once it is stored (or refused
//! for good).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use acceso_protocol::sync::Assembly;
use acceso_protocol::{
    SyncRequest, SyncResponse, TrustedKeys, Update, UpdateError, UpdateOp, User, MAX_PAYLOAD_BYTES,
};
use rumqttc::{AsyncClient, Publish};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::access::UserIndex;
use crate::observe::{ApplyResult, Component, HealthState, Observation, Reporter, SyncState};
use crate::store::{ApplyOutcome, SharedStore, StoreError};

/// Where a freshly built user index is published to the decision task.
pub type UserIndexTx = watch::Sender<Arc<UserIndex>>;

/// What the MQTT session hands the consumer.
#[derive(Debug)]
pub enum Inbound {
    /// A message on the updates topic.
    Update(Publish),
    /// A message on this device's sync topic.
    Sync(Publish),
    /// Connected and subscribed: time to check we are current.
    Connected,
}

/// How sync requests are timed.
#[derive(Debug, Clone)]
pub struct SyncTiming {
    pub request_timeout: Duration,
    pub retry_max: Duration,
    pub check_every: Duration,
}

/// A sync request waiting for its answer.
#[derive(Debug)]
struct Outstanding {
    /// Ids of this round's requests, newest last (a late answer to an earlier try counts).
    ids: VecDeque<String>,
    deadline: Instant,
    wait: Duration,
}

/// The consumer's state between messages.
pub struct Consumer {
    device: String,
    keys: Option<TrustedKeys>,
    store: SharedStore,
    users: HashMap<String, Arc<User>>,
    index: UserIndexTx,
    reporter: Reporter,
    requests: mpsc::UnboundedSender<Vec<u8>>,
    timing: SyncTiming,
    outstanding: Option<Outstanding>,
    /// Snapshots being gathered, one per request of this round (answers to an earlier try
    /// may still be arriving when a retry's start).
    assemblies: HashMap<String, Assembly>,
    next_check: Instant,
}

impl Consumer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        device: String,
        keys: Option<TrustedKeys>,
        store: SharedStore,
        users: Vec<Arc<User>>,
        index: UserIndexTx,
        reporter: Reporter,
        requests: mpsc::UnboundedSender<Vec<u8>>,
        timing: SyncTiming,
    ) -> Consumer {
        let next_check = Instant::now() + timing.check_every;
        Consumer {
            device,
            keys: keys.filter(|k| !k.is_empty()),
            store,
            users: users.into_iter().map(|u| (u.id.clone(), u)).collect(),
            index,
            reporter,
            requests,
            timing,
            outstanding: None,
            assemblies: HashMap::new(),
            next_check,
        }
    }

    /// Runs until `cancel` or the session goes away.
    pub async fn run(
        mut self,
        mut inbound: mpsc::UnboundedReceiver<Inbound>,
        client: AsyncClient,
        cancel: CancellationToken,
    ) {
        loop {
            let deadline = self
                .outstanding
                .as_ref()
                .map_or(self.next_check, |o| o.deadline.min(self.next_check));
            let msg = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    self.on_timer().await;
                    continue;
                }
                m = inbound.recv() => match m {
                    Some(m) => m,
                    None => return,
                },
            };
            let publish = match msg {
                Inbound::Connected => {
                    self.on_connected().await;
                    continue;
                }
                Inbound::Update(p) => {
                    let stored = self.on_update(&p.payload).await;
                    (p, stored)
                }
                Inbound::Sync(p) => {
                    let stored = self.on_sync(&p.payload).await;
                    (p, stored)
                }
            };
            // A message that could not be stored is not acknowledged: the broker redelivers it.
            if publish.1 {
                if let Err(e) = client.ack(&publish.0).await {
                    tracing::warn!("cannot acknowledge a message on {}: {e}", publish.0.topic);
                }
            }
        }
    }

    async fn applied_version(&self) -> Result<u64, StoreError> {
        self.store.call(|s| s.applied_version()).await
    }

    fn store_failed(&self, what: String) -> bool {
        self.reporter
            .health(Component::Store, HealthState::Failed, what);
        false
    }

    /// Handles one message from the updates topic. Returns false if it could not be stored.
    pub async fn on_update(&mut self, payload: &[u8]) -> bool {
        let update = match Update::open(payload, self.keys.as_ref()) {
            Ok(u) => u,
            Err(e) => {
                let (version, op) = hints(payload);
                if matches!(e, UpdateError::Signature(_)) {
                    self.count_signature().await;
                }
                self.reporter.emit(rejected(version, op, e.to_string()));
                return true;
            }
        };
        if let Err(reason) = check_our_embeddings(&update) {
            let op = update.op.name().to_string();
            self.reporter
                .emit(rejected(Some(update.version), Some(op), reason));
            return true;
        }
        let version = update.version;
        let op = update.op.name().to_string();
        let result = self
            .store
            .call(move |s| {
                let outcome = s.apply_update(&update)?;
                if let ApplyOutcome::Gap { .. } = outcome {
                    let kept = s.stash(&update)?;
                    return Ok((outcome, update, kept));
                }
                Ok((outcome, update, true))
            })
            .await;
        let (outcome, update, kept) = match result {
            Ok(r) => r,
            Err(e) => {
                return self.store_failed(format!("cannot apply update version {version}: {e}"))
            }
        };
        match outcome {
            ApplyOutcome::Applied => {
                self.took(update, None);
                self.apply_stashed().await;
            }
            ApplyOutcome::Stale { applied } => self.reporter.emit(Observation::Applied {
                version: Some(version),
                op: Some(op),
                outcome: ApplyResult::Ignored,
                reason: Some(format!(
                    "version {version} is at or below the applied version {applied}"
                )),
            }),
            ApplyOutcome::Gap { applied } => {
                let kept = if kept {
                    "kept until a sync fills the gap"
                } else {
                    "too many updates held already; the sync brings it"
                };
                // The request is reported before the update that caused it, so an observer
                // that has seen the update knows whether a sync is under way.
                self.request("a gap in the updates").await;
                self.reporter.emit(Observation::Applied {
                    version: Some(version),
                    op: Some(op),
                    outcome: ApplyResult::Gap,
                    reason: Some(format!(
                        "version {version} skips ahead of the applied version {applied}: a change was missed; {kept}"
                    )),
                });
            }
            ApplyOutcome::Rejected(why) => {
                // An authentic next version that cannot apply leaves this door stuck behind
                // the fleet: the cloud's snapshot is the truth.
                if self.keys.is_some() {
                    self.request("the next update could not be applied").await;
                }
                self.reporter.emit(rejected(Some(version), Some(op), why));
            }
        }
        true
    }

    /// Applies stashed updates that now follow on, in order.
    async fn apply_stashed(&mut self) {
        loop {
            let next = self
                .store
                .call(|s| {
                    let applied = s.applied_version()?;
                    s.drop_stash_through(applied)?;
                    let Some(update) = s.stashed(applied + 1)? else {
                        return Ok(None);
                    };
                    let outcome = s.apply_update(&update)?;
                    s.drop_stash_through(update.version)?;
                    Ok(Some((outcome, update)))
                })
                .await;
            match next {
                Ok(None) => return,
                Ok(Some((ApplyOutcome::Applied, update))) => {
                    self.took(update, Some("held past a gap"));
                }
                Ok(Some((ApplyOutcome::Rejected(why), update))) => {
                    self.request("a held update could not be applied").await;
                    self.reporter.emit(rejected(
                        Some(update.version),
                        Some(update.op.name().into()),
                        why,
                    ));
                    return;
                }
                Ok(Some(_)) => return,
                Err(e) => {
                    self.store_failed(format!("cannot apply held updates: {e}"));
                    return;
                }
            }
        }
    }

    /// An update was applied: the in-memory user set and the index follow, and it is reported
    /// (with `how` it came, if not straight in order).
    fn took(&mut self, update: Update, how: Option<&str>) {
        let (version, op) = (update.version, update.op.name().to_string());
        let note = self.remember(update);
        self.publish_index();
        let reason = match (how, note) {
            (Some(how), Some(note)) => Some(format!("{how}; {note}")),
            (how, note) => note.or(how.map(str::to_string)),
        };
        self.reporter.emit(Observation::Applied {
            version: Some(version),
            op: Some(op),
            outcome: ApplyResult::Applied,
            reason,
        });
    }

    /// Patches the in-memory user set with an applied update; says what to note about it.
    fn remember(&mut self, update: Update) -> Option<String> {
        match update.op {
            UpdateOp::UpsertUser(user) => {
                let note = foreign_faces(&user);
                if let Some(note) = &note {
                    tracing::warn!("update version {}: {note}", update.version);
                }
                self.users.insert(user.id.clone(), Arc::new(user));
                note
            }
            UpdateOp::DeleteUser { user_id } => {
                self.users.remove(&user_id);
                None
            }
        }
    }

    fn publish_index(&self) {
        self.index
            .send_replace(Arc::new(UserIndex::build(self.users.values().cloned())));
    }

    async fn count_signature(&self) {
        match self.store.call(|s| s.count_rejected_signature()).await {
            Ok(n) => tracing::warn!("{n} message(s) refused for their signature so far"),
            Err(e) => tracing::error!("cannot count a refused signature: {e}"),
        }
    }

    /// Handles one message from this device's sync topic.
    pub async fn on_sync(&mut self, payload: &[u8]) -> bool {
        let response = match SyncResponse::open(payload, self.keys.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, acceso_protocol::SyncError::Signature(_)) {
                    self.count_signature().await;
                }
                self.reporter
                    .emit(rejected(None, Some("sync".into()), e.to_string()));
                return true;
            }
        };
        let ours = response.device() == self.device
            && self
                .outstanding
                .as_ref()
                .is_some_and(|o| o.ids.iter().any(|id| id == response.request()));
        if !ours {
            tracing::info!(
                "ignoring a sync response to request {:?} for {:?}: not one this door is waiting for",
                response.request(),
                response.device()
            );
            return true;
        }
        let applied = match self.applied_version().await {
            Ok(v) => v,
            Err(e) => return self.store_failed(format!("cannot read the applied version: {e}")),
        };
        match response {
            SyncResponse::Current { version, .. } => {
                if version == applied {
                    self.round_done(applied, "current").await;
                } else if version < applied {
                    self.reporter.health(
                        Component::Broker,
                        HealthState::Degraded,
                        format!("the cloud says the fleet is at version {version}, behind this door's {applied}: was the cloud's user table restored from a backup?"),
                    );
                    self.outstanding = None;
                } else {
                    tracing::warn!("the cloud says current at {version} but this door has {applied}; asking again");
                }
            }
            SyncResponse::Page(page) => {
                if page.version <= applied {
                    // Nothing new in it (updates overtook the request).
                    self.assemblies.clear();
                    self.round_done(applied, "current").await;
                    return true;
                }
                let request = page.request.clone();
                let fits = self.assemblies.get(&request).is_some_and(|a| a.fits(&page));
                if !fits {
                    self.assemblies
                        .insert(request.clone(), Assembly::new(&page));
                }
                let Some(assembly) = self.assemblies.get_mut(&request) else {
                    return true;
                };
                let version = page.version;
                match assembly.add(page) {
                    Ok(None) => {
                        let (got, of) = assembly.progress();
                        tracing::debug!("snapshot {version}: {got} of {of} pages");
                        // Pages keep coming: the request is being answered.
                        if let Some(o) = self.outstanding.as_mut() {
                            o.deadline = Instant::now() + self.timing.request_timeout;
                        }
                    }
                    Ok(Some(users)) => {
                        self.assemblies.clear();
                        return self.swap_in(version, users).await;
                    }
                    Err(e) => {
                        self.assemblies.remove(&request);
                        self.reporter.emit(rejected(
                            Some(version),
                            Some("snapshot".into()),
                            e.to_string(),
                        ));
                    }
                }
            }
        }
        true
    }

    /// Replaces the user set with a complete snapshot, then applies what was held above it.
    async fn swap_in(&mut self, version: u64, users: Vec<User>) -> bool {
        if let Some((i, reason)) = users
            .iter()
            .enumerate()
            .find_map(|(i, u)| check_user_embeddings(u).err().map(|r| (i, r)))
        {
            self.reporter.emit(rejected(
                Some(version),
                Some("snapshot".into()),
                format!("users[{i}]: {reason}"),
            ));
            return true;
        }
        let count = users.len();
        let result = self
            .store
            .call(move |s| Ok((s.replace_users(version, &users)?, users)))
            .await;
        match result {
            Err(e) => self.store_failed(format!("cannot store snapshot version {version}: {e}")),
            Ok((ApplyOutcome::Applied, users)) => {
                let foreign = users.iter().filter_map(foreign_faces).count();
                self.users = users
                    .into_iter()
                    .map(|u| (u.id.clone(), Arc::new(u)))
                    .collect();
                self.publish_index();
                let mut reason = format!("{count} users");
                if foreign > 0 {
                    reason.push_str(&format!(
                        "; {foreign} with face embeddings of another model, ignored for matching"
                    ));
                }
                self.reporter.emit(Observation::Applied {
                    version: Some(version),
                    op: Some("snapshot".into()),
                    outcome: ApplyResult::Applied,
                    reason: Some(reason),
                });
                self.apply_stashed().await;
                let applied = self.applied_version().await.unwrap_or(version);
                self.round_done(applied, "snapshot applied").await;
                true
            }
            Ok((ApplyOutcome::Stale { applied }, _)) => {
                // Updates applied while the pages were arriving took this door past the
                // snapshot: it is older than what the door has, and swapping it in would undo
                // them.
                self.reporter.emit(Observation::Applied {
                    version: Some(version),
                    op: Some("snapshot".into()),
                    outcome: ApplyResult::Ignored,
                    reason: Some(format!(
                        "snapshot version {version} is at or below the applied version {applied}: updates overtook it"
                    )),
                });
                self.round_done(applied, "current").await;
                true
            }
            Ok((outcome, _)) => {
                let why = match outcome {
                    ApplyOutcome::Rejected(why) => why,
                    other => format!("{other:?}"),
                };
                self.reporter
                    .emit(rejected(Some(version), Some("snapshot".into()), why));
                true
            }
        }
    }

    /// A sync round answered. If a gap remains (updates held beyond what we now have), the
    /// round goes on: the retry asks again.
    async fn round_done(&mut self, applied: u64, how: &str) {
        let span = self.store.call(|s| s.stash_span()).await.ok().flatten();
        if let Some((low, _)) = span.filter(|(low, _)| *low > applied + 1) {
            tracing::info!(
                "sync {how} at {applied}, but updates from {low} are held: still a gap, asking again later"
            );
            return;
        }
        self.reporter.emit(Observation::Sync {
            state: SyncState::Current,
            have_version: applied,
            detail: how.to_string(),
        });
        self.outstanding = None;
        self.assemblies.clear();
        self.next_check = Instant::now() + self.timing.check_every;
    }

    /// Connected and subscribed: asks whether this door is current. A round already under
    /// way asks again at once (with its first wait): its request may have been lost with the
    /// connection, and waiting out a grown retry delay would leave a gap open for minutes.
    pub async fn on_connected(&mut self) {
        match self.outstanding.as_mut() {
            Some(o) => {
                o.wait = self.timing.request_timeout;
                self.send_request("reconnected during a sync").await;
            }
            None => self.check("connected").await,
        }
    }

    /// Asks whether we are current, unless a request is already out.
    async fn check(&mut self, why: &str) {
        if self.outstanding.is_none() {
            self.request(why).await;
        }
    }

    /// Starts a sync round (or, if one is out, leaves it to its retry).
    async fn request(&mut self, why: &str) {
        if self.outstanding.is_some() {
            return;
        }
        self.outstanding = Some(Outstanding {
            ids: VecDeque::new(),
            deadline: Instant::now(),
            wait: self.timing.request_timeout,
        });
        self.send_request(why).await;
    }

    async fn send_request(&mut self, why: &str) {
        let have_version = self.applied_version().await.unwrap_or(0);
        let Some(o) = self.outstanding.as_mut() else {
            return;
        };
        let id = uuid::Uuid::now_v7().to_string();
        o.ids.push_back(id.clone());
        while o.ids.len() > 4 {
            o.ids.pop_front();
        }
        o.deadline = Instant::now() + o.wait;
        let wait = o.wait;
        o.wait = (o.wait * 2).min(self.timing.retry_max);
        let request = SyncRequest {
            device: self.device.clone(),
            have_version,
            request: id,
        };
        let payload = serde_json::to_vec(&request).unwrap_or_default();
        // If the session is gone the request is dropped; the retry and the next connect ask
        // again.
        let _ = self.requests.send(payload);
        self.reporter.emit(Observation::Sync {
            state: SyncState::Requested,
            have_version,
            detail: format!(
                "{why}; asking again in {} ms if unanswered",
                wait.as_millis()
            ),
        });
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        if self.outstanding.as_ref().is_some_and(|o| o.deadline <= now) {
            self.send_request("no complete answer in time").await;
            // Only the requests this round still waits for may have snapshots in the making.
            if let Some(o) = &self.outstanding {
                self.assemblies.retain(|id, _| o.ids.contains(id));
            }
        } else if self.next_check <= now {
            self.next_check = now + self.timing.check_every;
            self.check("periodic check").await;
        }
    }
}

fn rejected(version: Option<u64>, op: Option<String>, reason: String) -> Observation {
    Observation::Applied {
        version,
        op,
        outcome: ApplyResult::Rejected,
        reason: Some(reason),
    }
}

/// The version and op of a rejected message, where they can be read, for its report.
fn hints(payload: &[u8]) -> (Option<u64>, Option<String>) {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return (None, None);
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return (None, None);
    };
    let body = v.get("body").unwrap_or(&v);
    (
        body.get("version").and_then(|v| v.as_u64()),
        body.get("op")
            .and_then(|o| o.as_str())
            .map(|o| o.chars().take(64).collect()),
    )
}

/// An embedding that says it is of our model must be one: a wrong length is a malformed
/// update, rejected whole (another model's embeddings are only ignored).
fn check_our_embeddings(update: &Update) -> Result<(), String> {
    let UpdateOp::UpsertUser(user) = &update.op else {
        return Ok(());
    };
    check_user_embeddings(user).map_err(|e| format!("user.{e}"))
}

fn check_user_embeddings(user: &User) -> Result<(), String> {
    use crate::face::{EMBEDDING_LEN, MODEL_ID};
    for (i, face) in user.faces.iter().enumerate() {
        if face.model == MODEL_ID && face.vector.len() != EMBEDDING_LEN {
            return Err(format!(
                "faces[{i}]: a {MODEL_ID} embedding has {EMBEDDING_LEN} values, not {}",
                face.vector.len()
            ));
        }
    }
    Ok(())
}

/// Embeddings of another model are kept but never matched; the user's other credentials still
/// work. Says so, for the operator.
fn foreign_faces(user: &User) -> Option<String> {
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
            h(r#"{"body":{"version":7,"op":"rename_user","user_id":"a"}}"#),
            (Some(7), Some("rename_user".to_string()))
        );
        assert_eq!(h(r#"{"version":"7","op":3}"#), (None, None));
        assert_eq!(h("{not json"), (None, None));
        let long = format!(r#"{{"body":{{"op":"{}"}}}}"#, "x".repeat(500));
        assert_eq!(h(&long).1.map(|o| o.len()), Some(64), "the op is cut short");
    }
}

#[cfg(test)]
mod timing_tests {
    use super::*;
    use crate::store::Store;
    use acceso_protocol::sync::seal_current;
    use std::time::Instant as StdInstant;

    const WAIT: Duration = Duration::from_millis(100);

    /// A consumer on a fresh store, run as the agent runs it; returns its inbound side and the
    /// requests it sends.
    fn consumer(
        dir: &std::path::Path,
        check_every: Duration,
    ) -> (
        mpsc::UnboundedSender<Inbound>,
        mpsc::UnboundedReceiver<Vec<u8>>,
        CancellationToken,
    ) {
        let (store, _) = Store::open(&dir.join("db")).unwrap();
        let (index, _) = watch::channel(Arc::new(UserIndex::build(Vec::<Arc<User>>::new())));
        // Nobody observes: the reporter carries on without an observer.
        let (reporter, _) = Reporter::channel();
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let c = Consumer::new(
            "door".into(),
            None,
            SharedStore::new(store),
            vec![],
            index,
            reporter,
            requests_tx,
            SyncTiming {
                request_timeout: WAIT,
                retry_max: 4 * WAIT,
                check_every,
            },
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let (client, _eventloop) =
            AsyncClient::new(rumqttc::MqttOptions::new("t", "127.0.0.1", 1), 64);
        let cancel = CancellationToken::new();
        tokio::spawn(c.run(rx, client, cancel.clone()));
        (tx, requests, cancel)
    }

    async fn next(requests: &mut mpsc::UnboundedReceiver<Vec<u8>>) -> (StdInstant, SyncRequest) {
        let r = tokio::time::timeout(Duration::from_secs(5), requests.recv())
            .await
            .expect("a request in time")
            .expect("consumer alive");
        (StdInstant::now(), serde_json::from_slice(&r).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unanswered_requests_are_retried_with_doubling_waits_then_checked_periodically() {
        let dir = tempfile::tempdir().unwrap();
        let check_every = Duration::from_millis(800);
        let (inbound, mut requests, cancel) = consumer(dir.path(), check_every);
        inbound.send(Inbound::Connected).unwrap();
        let (mut at, first) = next(&mut requests).await;
        assert_eq!(first.have_version, 0);
        // Waits of 100, 200, 400 ms, then 400 (the most): never sooner.
        let mut ids = vec![first.request];
        for wait in [1, 2, 4, 4] {
            let (t, r) = next(&mut requests).await;
            let gap = t - at;
            assert!(
                gap + Duration::from_millis(5) >= wait * WAIT,
                "retried after {gap:?}, not {:?}",
                wait * WAIT
            );
            assert!(!ids.contains(&r.request), "a retry has a new request id");
            ids.push(r.request);
            at = t;
        }
        // A reconnect during the round asks again at once, back at the first wait.
        inbound.send(Inbound::Connected).unwrap();
        let (t, r) = next(&mut requests).await;
        assert!(t - at < 4 * WAIT, "a reconnect waited {:?}", t - at);
        // The answer ends the round; the next question is the periodic check.
        let answer = seal_current("door", &r.request, 0, None);
        inbound
            .send(Inbound::Sync(Publish::new(
                "acceso/sync/door",
                rumqttc::QoS::AtMostOnce,
                answer,
            )))
            .unwrap();
        let answered = StdInstant::now();
        let (t, check) = next(&mut requests).await;
        assert_eq!(check.have_version, 0);
        assert!(
            t - answered + Duration::from_millis(5) >= check_every,
            "checked again after {:?}",
            t - answered
        );
        cancel.cancel();
    }
}
