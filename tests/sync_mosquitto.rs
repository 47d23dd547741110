//! Signed sync against a real mosquitto: the door asks on `acceso/sync/request`, the test plays
//! the cloud and answers on `acceso/sync/test-door` with signed pages, late, out of order,
//! repeated, forged, or not at all.

mod support;

use std::time::Duration;

use acceso::observe::{ApplyResult, Component, HealthState, Observation, SyncState};
use acceso_protocol::sync::{seal_current, seal_snapshot};
use acceso_protocol::{
    CardUid, FaceEmbedding, Outcome, Reason, SigningKey, SyncRequest, User, MAX_PAYLOAD_BYTES,
};
use rumqttc::{AsyncClient, Publish, QoS};
use support::door::{cloud_key, signed_update, TestDoor, BOUND};
use support::mosquitto::{publisher, subscriber, Mosquitto};
use tokio::sync::mpsc::UnboundedReceiver;

const DEVICE: &str = "test-door";
const REPLIES: &str = "acceso/sync/test-door";

/// The test's side of the cloud: sync requests in, updates and answers out.
struct Cloud {
    _sub: AsyncClient,
    requests: UnboundedReceiver<Publish>,
    out: AsyncClient,
}

impl Cloud {
    async fn new(broker: &Mosquitto) -> Cloud {
        let (sub, requests) = subscriber(broker.host(), broker.port(), "acceso/sync/request").await;
        let out = publisher(broker.host(), broker.port()).await;
        Cloud {
            _sub: sub,
            requests,
            out,
        }
    }

    /// The next sync request the door sends.
    async fn request(&mut self) -> SyncRequest {
        let p = tokio::time::timeout(BOUND, self.requests.recv())
            .await
            .expect("no sync request in time")
            .expect("subscriber closed");
        serde_json::from_slice(&p.payload).expect("a sync request")
    }

    /// Whether a request arrives within `within`.
    async fn request_within(&mut self, within: Duration) -> Option<SyncRequest> {
        match tokio::time::timeout(within, self.requests.recv()).await {
            Ok(Some(p)) => Some(serde_json::from_slice(&p.payload).expect("a sync request")),
            _ => None,
        }
    }

    async fn publish(&self, topic: &str, payload: Vec<u8>) {
        tokio::time::timeout(
            BOUND,
            self.out.publish(topic, QoS::AtLeastOnce, false, payload),
        )
        .await
        .expect("publish timed out")
        .expect("publish queued");
    }

    async fn update(&self, body: &str) {
        self.publish("acceso/updates", signed_update(body)).await;
    }

    async fn reply(&self, payload: Vec<u8>) {
        self.publish(REPLIES, payload).await;
    }
}

fn card(n: u32) -> CardUid {
    CardUid::from_bytes(&n.to_be_bytes()).expect("4-byte uid")
}

fn user(id: &str, cards: &[u32]) -> User {
    User {
        id: id.into(),
        name: id.into(),
        enabled: true,
        cards: cards.iter().map(|c| card(*c)).collect(),
        faces: vec![],
        valid_from: None,
        valid_until: None,
        doors: None,
        schedule: vec![],
        two_factor: false,
    }
}

fn upsert(version: u64, u: &User) -> String {
    format!(
        r#"{{"version":{version},"op":"upsert_user","user":{}}}"#,
        serde_json::to_string(u).unwrap()
    )
}

/// Waits for the door's sync to say it is current; returns the version it has.
async fn current(door: &mut TestDoor) -> u64 {
    door.expect("sync current", |o| match o {
        Observation::Sync {
            state: SyncState::Current,
            have_version,
            ..
        } => Some(*have_version),
        _ => None,
    })
    .await
}

/// A door connected, its first "am I current?" answered at version 0.
async fn fresh_door(broker: &Mosquitto, cloud: &mut Cloud) -> TestDoor {
    let mut door = TestDoor::start_with(broker.port(), |c| {
        c.sync.request_timeout_ms = 1000;
        c.sync.retry_max_ms = 2000;
    })
    .await;
    door.connected().await;
    let first = cloud.request().await;
    assert_eq!((first.device.as_str(), first.have_version), (DEVICE, 0));
    cloud
        .reply(seal_current(DEVICE, &first.request, 0, Some(cloud_key())))
        .await;
    assert_eq!(current(&mut door).await, 0);
    door
}

/// `some` and 400 more users with an embedding each, sorted by id: several pages.
fn big_fleet(mut some: Vec<User>) -> Vec<User> {
    for i in 0..400u32 {
        let mut u = user(&format!("u{i:04}"), &[1000 + i]);
        u.faces = vec![FaceEmbedding {
            model: acceso::face::MODEL_ID.into(),
            vector: (0..acceso::face::EMBEDDING_LEN)
                .map(|k| ((k as u32 + i) as f32 * 0.01).sin())
                .collect(),
        }];
        some.push(u);
    }
    some.sort_by(|a, b| a.id.cmp(&b.id));
    some
}

/// A fresh door that has version 1 (ana, card 1) and holds version 3 (cy, card 3) past a gap.
async fn door_with_a_gap(broker: &Mosquitto, cloud: &mut Cloud) -> TestDoor {
    let mut door = fresh_door(broker, cloud).await;
    cloud.update(&upsert(1, &user("ana", &[1]))).await;
    assert_eq!(door.applied().await.1, ApplyResult::Applied);
    cloud.update(&upsert(3, &user("cy", &[3]))).await;
    assert_eq!(door.applied().await.1, ApplyResult::Gap);
    door
}

async fn decision(door: &mut TestDoor, uid: u32) -> (Outcome, Reason) {
    match door.tap(&card(uid).to_string()).await {
        Observation::Decision {
            decision, reason, ..
        } => (decision, reason),
        other => panic!("not a decision: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_is_filled_by_a_paged_snapshot_delivered_out_of_order_and_twice() {
    let broker = Mosquitto::start();
    let mut cloud = Cloud::new(&broker).await;
    let mut door = fresh_door(&broker, &mut cloud).await;

    let ana = user("ana", &[1]);
    let ben = user("ben", &[2]);
    cloud.update(&upsert(1, &ana)).await;
    cloud.update(&upsert(2, &ben)).await;
    assert_eq!(door.applied().await.1, ApplyResult::Applied);
    assert_eq!(door.applied().await.1, ApplyResult::Applied);
    assert_eq!(decision(&mut door, 2).await.0, Outcome::Granted);

    // Versions 3 (ben revoked) and 4 never reach this door; 5 does.
    cloud.update(&upsert(5, &user("cy", &[3]))).await;
    let (version, result, _) = door.applied().await;
    assert_eq!((version, result), (Some(5), ApplyResult::Gap));
    let req = cloud.request().await;
    assert_eq!(req.have_version, 2);
    // Still deciding meanwhile, on what it has.
    assert_eq!(decision(&mut door, 2).await.0, Outcome::Granted);

    // The fleet at 5: ana, cy, and many more with embeddings (several pages).
    let fleet = big_fleet(vec![ana.clone(), user("cy", &[3])]);
    let pages = seal_snapshot(DEVICE, &req.request, 5, &fleet, Some(cloud_key())).unwrap();
    assert!(pages.len() >= 3, "{} pages", pages.len());
    assert!(pages.iter().all(|p| p.len() <= MAX_PAYLOAD_BYTES));
    // Last first, one twice; the door must wait for all of them.
    let mut order: Vec<usize> = (0..pages.len()).rev().collect();
    order.insert(1, pages.len() - 1);
    for i in order {
        cloud.reply(pages[i].clone()).await;
    }
    let (version, result, reason) = door.applied().await;
    assert_eq!((version, result), (Some(5), ApplyResult::Applied));
    assert_eq!(reason.as_deref(), Some("402 users"));
    assert_eq!(current(&mut door).await, 5);
    assert_eq!(
        decision(&mut door, 2).await.1,
        Reason::UnknownCard,
        "ben was revoked"
    );
    assert_eq!(decision(&mut door, 3).await.0, Outcome::Granted);
    assert_eq!(decision(&mut door, 1399).await.0, Outcome::Granted);
    // Updates continue from the snapshot's version.
    cloud.update(&upsert(6, &user("dee", &[4]))).await;
    assert_eq!(door.applied().await, (Some(6), ApplyResult::Applied, None));
    door.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_request_is_retried_and_held_updates_apply_after_the_snapshot() {
    let broker = Mosquitto::start();
    let mut cloud = Cloud::new(&broker).await;
    // 2 and 4 are lost; 3 and 5 are held.
    let mut door = door_with_a_gap(&broker, &mut cloud).await;
    cloud.update(&upsert(5, &user("eve", &[5]))).await;
    assert_eq!(door.applied().await.1, ApplyResult::Gap);

    let first = cloud.request().await;
    assert_eq!(first.have_version, 1);
    // Unanswered: asked again after the timeout, with a new request id.
    let second = cloud.request().await;
    assert_eq!(second.have_version, 1);
    assert_ne!(second.request, first.request);

    // Answers that are not for this door's requests change nothing.
    let stranger = vec![user("mallory", &[66])];
    for wrong in [
        seal_snapshot(
            "other-door",
            &second.request,
            4,
            &stranger,
            Some(cloud_key()),
        )
        .unwrap(),
        seal_snapshot(DEVICE, "not-a-request", 4, &stranger, Some(cloud_key())).unwrap(),
    ] {
        cloud.reply(wrong[0].clone()).await;
    }
    // Forged: signed by another key.
    let forger = SigningKey::generate().unwrap();
    let forged = seal_snapshot(DEVICE, &second.request, 4, &stranger, Some(&forger)).unwrap();
    cloud.reply(forged[0].clone()).await;
    let (_, result, reason) = door.applied().await;
    assert_eq!(result, ApplyResult::Rejected);
    assert!(reason.unwrap().contains("does not verify"));

    // The cloud answers the first request late, at version 4: 3 is covered by it, 5 applies
    // after it.
    let fleet = vec![
        user("ana", &[1]),
        user("bo", &[2]),
        user("cy", &[3]),
        user("di", &[4]),
    ];
    let pages = seal_snapshot(DEVICE, &first.request, 4, &fleet, Some(cloud_key())).unwrap();
    for p in pages {
        cloud.reply(p).await;
    }
    assert_eq!(door.applied().await.0, Some(4));
    let (version, result, reason) = door.applied().await;
    assert_eq!((version, result), (Some(5), ApplyResult::Applied));
    assert!(reason.unwrap().contains("held past a gap"));
    assert_eq!(current(&mut door).await, 5);
    assert_eq!(decision(&mut door, 66).await.1, Reason::UnknownCard);
    for uid in [1, 2, 3, 4, 5] {
        assert_eq!(
            decision(&mut door, uid).await.0,
            Outcome::Granted,
            "card {uid}"
        );
    }
    // Current now: no more requests.
    assert!(cloud
        .request_within(Duration::from_millis(2500))
        .await
        .is_none());
    door.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inconsistent_snapshot_is_refused_whole_and_asked_for_again() {
    let broker = Mosquitto::start();
    let mut cloud = Cloud::new(&broker).await;
    let mut door = door_with_a_gap(&broker, &mut cloud).await;
    let req = cloud.request().await;
    // One card claimed by two users: nothing of it may apply.
    let bad = vec![user("ana", &[1]), user("zed", &[1, 9])];
    for p in seal_snapshot(DEVICE, &req.request, 3, &bad, Some(cloud_key())).unwrap() {
        cloud.reply(p).await;
    }
    let (_, result, reason) = door.applied().await;
    assert_eq!(result, ApplyResult::Rejected);
    assert!(reason.unwrap().contains("claimed by users ana and zed"));
    assert_eq!(decision(&mut door, 9).await.1, Reason::UnknownCard);
    assert_eq!(decision(&mut door, 1).await.0, Outcome::Granted);
    // The round goes on: asked again.
    let again = cloud.request().await;
    assert_eq!(again.have_version, 1);
    door.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_pinned_key_the_door_warns_at_start_and_takes_unsigned_updates() {
    let broker = Mosquitto::start();
    let cloud = publisher(broker.host(), broker.port()).await;
    let mut door = TestDoor::start_with(broker.port(), |c| c.sync.public_keys.clear()).await;
    let warning = door
        .expect("the unsigned warning", |o| match o {
            Observation::Health {
                component: Component::Sync,
                state: HealthState::Degraded,
                detail,
            } => Some(detail.clone()),
            _ => None,
        })
        .await;
    assert!(warning.contains("UNSIGNED"), "{warning}");
    door.connected().await;
    let body = upsert(1, &user("ana", &[1]));
    let unsigned = acceso_protocol::signed::seal(acceso_protocol::Purpose::Update, &body, None);
    tokio::time::timeout(
        BOUND,
        cloud.publish("acceso/updates", QoS::AtLeastOnce, false, unsigned),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(door.applied().await.1, ApplyResult::Applied);
    assert_eq!(decision(&mut door, 1).await.0, Outcome::Granted);
    door.stop().await;
}

#[test]
fn a_bad_key_file_stops_the_start_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cloud.pem");
    std::fs::write(
        &key,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let config = dir.path().join("acceso.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = \"{DEVICE}\"\nstate_dir = \"{}\"\n[door]\nname = \"front\"\n[reader]\nbackend = \"none\"\n[relay]\nbackend = \"sim\"\n[sync]\npublic_keys = [\"{}\"]\n",
            dir.path().join("state").display(),
            key.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_acceso"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + BOUND;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("acceso run did not stop on a bad key file within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // A bad config (2): systemd does not restart it (RestartPreventExitStatus=2).
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("key `sync.public_keys[0]`"), "{err}");
    assert!(err.contains("cloud.pem"), "{err}");
    // Refused before anything started.
    assert!(!dir.path().join("state").exists(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_answering_a_try_and_its_retry_interleaved_still_complete_one_snapshot() {
    let broker = Mosquitto::start();
    let mut cloud = Cloud::new(&broker).await;
    let mut door = door_with_a_gap(&broker, &mut cloud).await;
    let first = cloud.request().await;
    let retry = cloud.request().await;
    assert_ne!(first.request, retry.request);
    let fleet = big_fleet(vec![user("ana", &[1]), user("cy", &[3])]);
    let a = seal_snapshot(DEVICE, &first.request, 3, &fleet, Some(cloud_key())).unwrap();
    let b = seal_snapshot(DEVICE, &retry.request, 3, &fleet, Some(cloud_key())).unwrap();
    assert!(a.len() >= 3);
    for (pa, pb) in a.into_iter().zip(b) {
        cloud.reply(pa).await;
        cloud.reply(pb).await;
    }
    let (version, result, reason) = door.applied().await;
    assert_eq!((version, result), (Some(3), ApplyResult::Applied));
    assert_eq!(reason.as_deref(), Some("402 users"));
    assert_eq!(current(&mut door).await, 3);
    assert_eq!(decision(&mut door, 1000).await.0, Outcome::Granted);
    // The other copy's remaining pages change nothing and report nothing.
    cloud.update(&upsert(4, &user("dee", &[4]))).await;
    assert_eq!(door.applied().await, (Some(4), ApplyResult::Applied, None));
    door.stop().await;
}
