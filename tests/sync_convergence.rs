//! The property that makes sync trustworthy: however the updates arrive (shuffled, repeated,
//! some never, with restarts in between and sync answers early, late or to requests from
//! before a restart), the door ends with exactly the user set that applying every update in
//! order gives.
//!
//! The real consumer and the real store on a SQLite file; the test plays the cloud: it makes
//! changes over time, delivers their signed messages as the plan says, and answers sync
//! requests with signed snapshots of the cloud's user set at the time of answering.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use acceso::access::UserIndex;
use acceso::cloud::{Consumer, SyncTiming};
use acceso::observe::{Observation, Reporter};
use acceso::store::{SharedStore, Store};
use acceso_protocol::sync::{seal_current, seal_snapshot};
use acceso_protocol::{
    CardUid, FaceEmbedding, SigningKey, SyncRequest, TrustedKeys, Update, UpdateOp, User,
};
use proptest::prelude::*;
use tokio::sync::{mpsc, watch};

const DEVICE: &str = "door";
const USERS: u32 = 4;
const CARDS: u32 = 8;

/// One change the cloud makes: upsert user `user` with the cards of `cards` (a bit mask over
/// that user's own cards, so no two users ever claim one card), or delete them.
#[derive(Debug, Clone)]
struct Change {
    user: u32,
    delete: bool,
    cards: u8,
    enabled: bool,
}

fn change() -> impl Strategy<Value = Change> {
    (0..USERS, any::<bool>(), any::<u8>(), any::<bool>()).prop_map(
        |(user, delete, cards, enabled)| Change {
            user,
            delete: delete && cards % 3 == 0,
            cards,
            enabled,
        },
    )
}

/// What happens next, in the door's world.
#[derive(Debug, Clone)]
enum Step {
    /// The cloud makes its next change (its message is not delivered by this step).
    CloudChange,
    /// The message of the `n`-th change made so far (modulo how many) reaches the door.
    Deliver(usize),
    /// The sync requests so far are answered (pages in this rotation order), and up to this
    /// many pages of the answers so far (1 to 3) reach the door; the rest come later, with
    /// updates and restarts in between.
    Answer(usize),
    /// The agent restarts on the same database (requests in flight stay unanswered).
    Restart,
    /// The door (re)connects and asks whether it is current.
    Connect,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::CloudChange),
        5 => any::<usize>().prop_map(Step::Deliver),
        2 => any::<usize>().prop_map(Step::Answer),
        1 => Just(Step::Restart),
        1 => Just(Step::Connect),
    ]
}

fn card(n: u32) -> CardUid {
    CardUid::from_bytes(&(0x1000 + n).to_be_bytes()).expect("4-byte uid")
}

fn update(version: u64, c: &Change) -> Update {
    let id = format!("u{}", c.user);
    let op = if c.delete {
        UpdateOp::DeleteUser { user_id: id }
    } else {
        // The user's own cards are those c with c % USERS == user.
        let cards = (0..CARDS)
            .filter(|n| n % USERS == c.user && c.cards & (1 << (n / USERS)) != 0)
            .map(card)
            .collect();
        UpdateOp::UpsertUser(User {
            id: id.clone(),
            name: id,
            enabled: c.enabled,
            cards,
            // Heavy users (many embeddings), so a snapshot takes several pages.
            faces: vec![
                FaceEmbedding {
                    model: acceso::face::MODEL_ID.into(),
                    vector: (0..acceso::face::EMBEDDING_LEN)
                        .map(|k| (k as f32 * 0.37 + version as f32).sin() * 0.123_456_79)
                        .collect(),
                };
                24
            ],
            valid_from: None,
            valid_until: None,
            doors: None,
            schedule: vec![],
            two_factor: false,
        })
    };
    Update { version, op }
}

/// The user set after applying `updates` in order.
fn in_order(updates: &[Update]) -> Vec<User> {
    let mut users = BTreeMap::new();
    for u in updates {
        match &u.op {
            UpdateOp::UpsertUser(user) => {
                users.insert(user.id.clone(), user.clone());
            }
            UpdateOp::DeleteUser { user_id } => {
                users.remove(user_id);
            }
        }
    }
    users.into_values().collect()
}

struct Door {
    store: SharedStore,
    consumer: Consumer,
    requests: mpsc::UnboundedReceiver<Vec<u8>>,
    index: watch::Receiver<Arc<UserIndex>>,
    _observations: mpsc::UnboundedReceiver<Observation>,
}

fn start(path: &std::path::Path, key: &SigningKey) -> Door {
    let (store, moved) = Store::open(path).expect("open the store");
    assert!(moved.is_none(), "the database was moved aside");
    let users: Vec<Arc<User>> = store
        .users()
        .expect("stored users")
        .into_iter()
        .map(Arc::new)
        .collect();
    let store = SharedStore::new(store);
    let (index_tx, index) = watch::channel(Arc::new(UserIndex::build(users.iter().cloned())));
    let (reporter, observations) = Reporter::channel();
    let (requests_tx, requests) = mpsc::unbounded_channel();
    let consumer = Consumer::new(
        DEVICE.into(),
        Some(TrustedKeys::new(vec![key.public_key()])),
        store.clone(),
        users,
        index_tx,
        reporter,
        requests_tx,
        SyncTiming {
            request_timeout: Duration::from_secs(60),
            retry_max: Duration::from_secs(60),
            check_every: Duration::from_secs(3600),
        },
    );
    Door {
        store,
        consumer,
        requests,
        index,
        _observations: observations,
    }
}

/// The cloud's answer to `request`, from its user set after `made` changes.
fn answer(request: &SyncRequest, made: &[Update], key: &SigningKey) -> Vec<Vec<u8>> {
    let version = made.len() as u64;
    if request.have_version == version {
        vec![seal_current(DEVICE, &request.request, version, Some(key))]
    } else {
        seal_snapshot(
            DEVICE,
            &request.request,
            version,
            &in_order(made),
            Some(key),
        )
        .expect("a snapshot")
    }
}

/// Answers every request the door has sent, from the cloud's user set after `made`.
async fn answer_all(
    door: &mut Door,
    pending: &mut Vec<SyncRequest>,
    made: &[Update],
    key: &SigningKey,
) -> Result<(), TestCaseError> {
    for _ in 0..3 {
        while let Ok(r) = door.requests.try_recv() {
            pending.push(serde_json::from_slice(&r).expect("a sync request"));
        }
        for request in pending.drain(..) {
            for page in answer(&request, made, key) {
                prop_assert!(door.consumer.on_sync(&page).await, "not stored");
            }
        }
    }
    Ok(())
}

/// At every moment the door holds exactly the cloud's user set at its applied version: never
/// a mix of versions, never half an update or half a snapshot.
async fn prefix(door: &Door, all: &[Update]) -> Result<(), TestCaseError> {
    let (applied, stored) = door
        .store
        .call(|s| Ok((s.applied_version()?, s.users()?)))
        .await
        .expect("read the store");
    prop_assert_eq!(
        stored,
        in_order(&all[..applied as usize]),
        "at version {}",
        applied
    );
    Ok(())
}

async fn run(changes: Vec<Change>, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let key = SigningKey::generate().expect("a key");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("acceso.db");
    let all: Vec<Update> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| update(i as u64 + 1, c))
        .collect();
    let mut made = 0usize;
    let mut door = start(&path, &key);
    // Requests the door sent, kept across restarts (an answer may come after one).
    let mut pending: Vec<SyncRequest> = Vec::new();
    // Answer pages on their way to the door.
    let mut in_flight: std::collections::VecDeque<Vec<u8>> = Default::default();
    for step in steps {
        match step {
            Step::CloudChange => made = (made + 1).min(all.len()),
            Step::Deliver(n) if made > 0 => {
                let msg = all[n % made].seal(Some(&key));
                prop_assert!(door.consumer.on_update(&msg).await, "not stored");
            }
            Step::Deliver(_) => {}
            Step::Answer(rotate) => {
                for request in pending.drain(..) {
                    let mut pages = answer(&request, &all[..made], &key);
                    let by = rotate % pages.len();
                    pages.rotate_left(by);
                    in_flight.extend(pages);
                }
                for _ in 0..=(rotate % 3) {
                    if let Some(page) = in_flight.pop_front() {
                        prop_assert!(door.consumer.on_sync(&page).await, "not stored");
                    }
                }
            }
            Step::Restart => {
                drop(door);
                door = start(&path, &key);
            }
            Step::Connect => door.consumer.on_connected().await,
        }
        while let Ok(r) = door.requests.try_recv() {
            pending.push(serde_json::from_slice(&r).expect("a sync request"));
        }
        prefix(&door, &all).await?;
    }
    // The door connects once more (as on every connect, and periodically) and is brought up
    // to what the cloud has made so far.
    let made_before = made;
    pending.clear();
    // What was still on its way arrives, late.
    for page in in_flight.drain(..) {
        prop_assert!(door.consumer.on_sync(&page).await, "not stored");
    }
    prefix(&door, &all).await?;
    door.consumer.on_connected().await;
    answer_all(&mut door, &mut pending, &all[..made_before], &key).await?;
    prefix(&door, &all).await?;
    // Then the cloud's remaining changes arrive newest first, while its sync answers still
    // come from a replica at `made_before`: only the held updates can bring the door to the end.
    for update in all[made_before..].iter().rev() {
        prop_assert!(door.consumer.on_update(&update.seal(Some(&key))).await);
        answer_all(&mut door, &mut pending, &all[..made_before], &key).await?;
        prefix(&door, &all).await?;
    }
    let expected = in_order(&all);
    let stored = door.store.call(|s| s.users()).await.expect("stored users");
    prop_assert_eq!(&stored, &expected);
    let applied = door
        .store
        .call(|s| s.applied_version())
        .await
        .expect("applied version");
    prop_assert_eq!(applied, all.len() as u64);
    // What the door decides with is the same set.
    let index = door.index.borrow().clone();
    prop_assert_eq!(index.user_count(), expected.len());
    for user in &expected {
        prop_assert_eq!(index.user_by_id(&user.id), Some(user));
    }
    // A restart keeps it.
    drop(door);
    let again = start(&path, &key);
    let stored = again.store.call(|s| s.users()).await.expect("stored users");
    prop_assert_eq!(&stored, &expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_delivery_converges_to_in_order_application(
        changes in prop::collection::vec(change(), 1..16),
        steps in prop::collection::vec(step(), 0..48),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(run(changes, steps))?;
    }
}
