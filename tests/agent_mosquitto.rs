//! The whole agent against a real mosquitto on loopback: events out, updates in.

mod support;

use std::time::Duration;

use acceso::observe::{ApplyResult, Observation};
use acceso_protocol::{Method, Outcome, Reason, MAX_PAYLOAD_BYTES};
use rumqttc::QoS;
use support::door::{collect_events, signed_update, TestDoor, BOUND};
use support::mosquitto::{durable_subscriber, publisher, subscriber, Mosquitto};

const LOGS: &str = "acceso/logs";
const UPDATES: &str = "acceso/updates";

fn upsert(version: u64, id: &str, cards: &[&str], extra: &str) -> String {
    let cards: Vec<String> = cards.iter().map(|c| format!("{c:?}")).collect();
    format!(
        r#"{{"version":{version},"op":"upsert_user","user":{{"id":"{id}","name":"{id}","cards":[{}]{extra}}}}}"#,
        cards.join(",")
    )
}

/// Publishes an update body as the cloud does: sealed, signed with the key the door pins.
async fn send(client: &rumqttc::AsyncClient, body: impl AsRef<str>) {
    send_raw(client, signed_update(body.as_ref())).await
}

/// Publishes these exact bytes on the updates topic.
async fn send_raw(client: &rumqttc::AsyncClient, payload: impl Into<Vec<u8>>) {
    tokio::time::timeout(
        BOUND,
        client.publish(UPDATES, QoS::AtLeastOnce, false, payload.into()),
    )
    .await
    .expect("publish timed out")
    .expect("publish queued");
}

fn outcome(obs: &Observation) -> (Outcome, Reason) {
    match obs {
        Observation::Decision {
            decision, reason, ..
        } => (*decision, *reason),
        other => panic!("not a decision: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_arrives_at_the_broker_with_every_field() {
    let broker = Mosquitto::start();
    let (_sub, mut events) = subscriber(broker.host(), broker.port(), LOGS).await;
    let cloud = publisher(broker.host(), broker.port()).await;
    let mut door = TestDoor::start(broker.port(), 1000).await;
    door.connected().await;

    send(&cloud, upsert(1, "ana", &["04:6b:2f:91:c4:5a:80"], "")).await;
    assert_eq!(door.applied().await.1, ApplyResult::Applied);
    let before = jiff::Timestamp::now();
    door.tap("046B2F91C45A80").await;
    door.tap("DEADBEEF").await;

    let got = collect_events(&mut events, 2).await;
    let raw: serde_json::Value = serde_json::to_value(&got[0]).unwrap();
    for field in [
        "event_id",
        "device",
        "door",
        "seq",
        "boot_id",
        "time",
        "time_trusted",
        "method",
        "card_uid",
        "user_id",
        "face_score",
        "decision",
        "reason",
        "latency_us",
        "dropped",
    ] {
        assert!(raw.get(field).is_some(), "field {field} missing in {raw}");
    }
    let (granted, denied) = (&got[0], &got[1]);
    assert_eq!((granted.seq, denied.seq), (1, 2));
    assert_eq!(granted.device, "test-door");
    assert_eq!(granted.door, "front");
    assert_eq!(granted.method, Method::Card);
    assert_eq!(
        granted.card_uid.as_ref().unwrap().to_string(),
        "046B2F91C45A80"
    );
    assert_eq!(granted.user_id.as_deref(), Some("ana"));
    assert_eq!(
        (granted.decision, granted.reason),
        (Outcome::Granted, Reason::Granted)
    );
    assert_eq!(
        (denied.decision, denied.reason),
        (Outcome::Denied, Reason::UnknownCard)
    );
    assert_eq!(denied.user_id, None);
    assert!(granted.time_trusted);
    assert!(granted.time >= before && granted.time <= jiff::Timestamp::now());
    // UUIDv7: version nibble 7, distinct per event, ordered by creation.
    assert_eq!(
        granted.event_id.as_bytes()[14],
        b'7',
        "{}",
        granted.event_id
    );
    assert!(granted.event_id < denied.event_id);
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(granted.boot_id, boot.trim());
    assert!(granted.latency_us > 0);
    door.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_changes_the_next_decision_and_an_old_version_is_ignored() {
    let broker = Mosquitto::start();
    let cloud = publisher(broker.host(), broker.port()).await;
    let mut door = TestDoor::start(broker.port(), 1000).await;
    door.connected().await;

    assert_eq!(outcome(&door.tap("DEADBEEF").await).1, Reason::UnknownCard);
    send(&cloud, upsert(1, "ben", &["DEADBEEF"], "")).await;
    assert_eq!(door.applied().await, (Some(1), ApplyResult::Applied, None));
    assert_eq!(
        outcome(&door.tap("DEADBEEF").await),
        (Outcome::Granted, Reason::Granted)
    );

    // Revoke by disabling; then a replay of version 1 must not bring him back.
    send(
        &cloud,
        upsert(2, "ben", &["DEADBEEF"], r#","enabled":false"#),
    )
    .await;
    assert_eq!(door.applied().await.1, ApplyResult::Applied);
    assert_eq!(outcome(&door.tap("DEADBEEF").await).1, Reason::UserDisabled);
    send(&cloud, upsert(1, "ben", &["DEADBEEF"], "")).await;
    let (version, result, reason) = door.applied().await;
    assert_eq!((version, result), (Some(1), ApplyResult::Ignored));
    assert!(reason.unwrap().contains("applied version 2"));
    assert_eq!(outcome(&door.tap("DEADBEEF").await).1, Reason::UserDisabled);

    // A gap is reported and not applied.
    send(&cloud, upsert(5, "cy", &["01020304"], "")).await;
    assert_eq!(door.applied().await.1, ApplyResult::Gap);
    assert_eq!(outcome(&door.tap("01020304").await).1, Reason::UnknownCard);

    // Delete, then the card is unknown.
    send(
        &cloud,
        r#"{"version":3,"op":"delete_user","user_id":"ben"}"#,
    )
    .await;
    assert_eq!(door.applied().await.1, ApplyResult::Applied);
    assert_eq!(outcome(&door.tap("DEADBEEF").await).1, Reason::UnknownCard);
    door.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_updates_are_rejected_whole_and_the_agent_carries_on() {
    let broker = Mosquitto::start();
    let cloud = publisher(broker.host(), broker.port()).await;
    let mut door = TestDoor::start(broker.port(), 1000).await;
    door.connected().await;

    let oversized = format!(
        r#"{{"version":1,"op":"upsert_user","user":{{"id":"big","name":"{}"}}}}"#,
        "x".repeat(MAX_PAYLOAD_BYTES)
    );
    let sealed = |body: &str| signed_update(body);
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "invalid update"),
        (sealed("{not json"), "invalid update"),
        (sealed(&oversized), "over the"),
        (
            sealed(r#"{"version":1,"op":"rename_user","user_id":"a"}"#),
            "rename_user",
        ),
        (sealed(&upsert(1, "ana", &["ZZ"], "")), "not hex"),
        (
            sealed(
                r#"{"version":1,"op":"upsert_user","user":{"id":"f","name":"F","faces":[{"model":"sface-2021dec","vector":[0.1,0.2]}]}}"#,
            ),
            "has 128 values, not 2",
        ),
        (vec![0xff, 0xfe, 0x00], "invalid update"),
        // Well-formed, but not signed by the pinned key.
        (
            acceso_protocol::signed::seal(
                acceso_protocol::Purpose::Update,
                &upsert(1, "mallory", &["CAFEBABE"], ""),
                None,
            ),
            "unsigned",
        ),
        (
            acceso_protocol::signed::seal(
                acceso_protocol::Purpose::Update,
                &upsert(1, "mallory", &["CAFEBABE"], ""),
                Some(&acceso_protocol::SigningKey::generate().unwrap()),
            ),
            "does not verify",
        ),
    ];
    for (payload, why) in bad {
        send_raw(&cloud, payload).await;
        let (_, result, reason) = door.applied().await;
        assert_eq!(result, ApplyResult::Rejected);
        let reason = reason.unwrap();
        assert!(reason.contains(why), "{reason:?} lacks {why:?}");
    }
    assert_eq!(outcome(&door.tap("CAFEBABE").await).1, Reason::UnknownCard);
    // Two users claiming one card: the second update is rejected, nothing of it applied.
    send(&cloud, upsert(1, "ana", &["DEADBEEF"], "")).await;
    assert_eq!(door.applied().await.1, ApplyResult::Applied);
    send(&cloud, upsert(2, "eve", &["01020304", "DEADBEEF"], "")).await;
    let (_, result, reason) = door.applied().await;
    assert_eq!(result, ApplyResult::Rejected);
    assert!(reason.unwrap().contains("already held by user ana"));
    assert_eq!(outcome(&door.tap("01020304").await).1, Reason::UnknownCard);
    // The agent is still deciding and still applying.
    let granted = door.tap("DEADBEEF").await;
    assert_eq!(outcome(&granted), (Outcome::Granted, Reason::Granted));
    send(&cloud, upsert(2, "eve", &["01020304"], "")).await;
    assert_eq!(door.applied().await.1, ApplyResult::Applied);
    door.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stopped_and_restarted_while_events_are_produced_loses_none() {
    let mut broker = Mosquitto::start_persistent();
    let (_sub, mut events) = durable_subscriber(broker.host(), broker.port(), LOGS).await;
    let mut door = TestDoor::start(broker.port(), 1000).await;
    door.connected().await;

    for _ in 0..3 {
        door.tap("DEADBEEF").await;
    }
    broker.stop();
    door.disconnected().await;
    for uid in ["01020304", "0A0B0C0D", "DEADBEEF", "01020304", "0A0B0C0D"] {
        door.tap(uid).await;
    }
    broker.restart();
    for _ in 0..2 {
        door.tap("CAFEBABE").await;
    }
    let got = collect_events(&mut events, 10).await;
    assert_eq!(
        got.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    // Everything acknowledged leaves the outbox.
    let store = door.agent.as_ref().unwrap().store();
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let queued = store.call(|s| s.queued_count()).await.unwrap();
        if queued == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queued} events still queued"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    door.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_decided_while_offline_survive_a_restart_and_are_delivered() {
    let broker = Mosquitto::start();
    let (_sub, mut events) = subscriber(broker.host(), broker.port(), LOGS).await;
    // Point the door at a port where nothing listens: it decides and queues, offline.
    let mut door = TestDoor::start(support_free_port(), 1000).await;
    door.tap("DEADBEEF").await;
    door.tap("01020304").await;
    door.stop().await;
    door.config.broker.port = broker.port();
    door.start_agent().await;
    door.connected().await;
    door.tap("0A0B0C0D").await;
    let got = collect_events(&mut events, 3).await;
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    door.stop().await;
}

fn support_free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_is_moved_aside_and_the_door_keeps_working() {
    let broker = Mosquitto::start();
    let cloud = publisher(broker.host(), broker.port()).await;
    let mut door = TestDoor::start(broker.port(), 1000).await;
    door.connected().await;
    send(&cloud, upsert(1, "ana", &["DEADBEEF"], "")).await;
    assert_eq!(door.applied().await.1, ApplyResult::Applied);
    door.stop().await;

    // Scribble over the database, as a failing SD card might.
    let db = door.config.db_path();
    std::fs::write(&db, b"\x00garbage".repeat(1000)).unwrap();
    let _ = std::fs::remove_file(db.with_extension("db-wal"));
    door.start_agent().await;
    let detail = door
        .expect("store health report", |o| match o {
            Observation::Health {
                component: acceso::observe::Component::Store,
                detail,
                ..
            } => Some(detail.clone()),
            _ => None,
        })
        .await;
    assert!(detail.contains("moved to"), "{detail}");
    let aside: Vec<_> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
        .collect();
    assert!(!aside.is_empty(), "nothing was moved aside");
    door.connected().await;
    // The fresh database starts empty: the card is unknown until users arrive again.
    assert_eq!(outcome(&door.tap("DEADBEEF").await).1, Reason::UnknownCard);
    send(&cloud, upsert(1, "ana", &["DEADBEEF"], "")).await;
    assert_eq!(door.applied().await.1, ApplyResult::Applied);
    assert_eq!(outcome(&door.tap("DEADBEEF").await).1, Reason::Granted);
    door.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_updates_is_applied_in_full_without_stalling_the_link() {
    let broker = Mosquitto::start();
    let (_sub, mut events) = subscriber(broker.host(), broker.port(), LOGS).await;
    let cloud = publisher(broker.host(), broker.port()).await;
    let mut door = TestDoor::start(broker.port(), 1000).await;
    door.connected().await;
    const N: u64 = 600;
    for v in 1..=N {
        let card = format!("{:08X}", 0x1000_0000 + v);
        send(&cloud, upsert(v, &format!("u{v}"), &[card.as_str()], "")).await;
    }
    for v in 1..=N {
        assert_eq!(door.applied().await, (Some(v), ApplyResult::Applied, None));
    }
    // The link still works both ways: a decision with the last user, its event delivered.
    let last = format!("{:08X}", 0x1000_0000 + N);
    assert_eq!(
        outcome(&door.tap(&last).await),
        (Outcome::Granted, Reason::Granted)
    );
    assert_eq!(
        collect_events(&mut events, 1).await[0].user_id.as_deref(),
        Some("u600")
    );
    door.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_published_while_the_door_is_away_arrives_when_it_returns() {
    let broker = Mosquitto::start();
    let cloud = publisher(broker.host(), broker.port()).await;
    let mut door = TestDoor::start(broker.port(), 1000).await;
    door.connected().await;
    send(&cloud, upsert(1, "ana", &["DEADBEEF"], "")).await;
    assert_eq!(door.applied().await.1, ApplyResult::Applied);
    door.stop().await;
    // Revoked while the door is down (a reboot, a network cut): the broker keeps it for the
    // door's persistent session.
    send(
        &cloud,
        r#"{"version":2,"op":"delete_user","user_id":"ana"}"#,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    door.start_agent().await;
    // Version 1 may come again first (stopped before its acknowledgement went out): ignored.
    let mut report = door.applied().await;
    if report.0 == Some(1) {
        assert_eq!(report.1, ApplyResult::Ignored);
        report = door.applied().await;
    }
    assert_eq!(report, (Some(2), ApplyResult::Applied, None));
    assert_eq!(outcome(&door.tap("DEADBEEF").await).1, Reason::UnknownCard);
    door.stop().await;
}

/// Waits for a status message matching `pick` on the device's status topic.
async fn status_where(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
    what: &str,
    pick: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let p = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no status message {what} within {BOUND:?}"))
            .expect("status subscriber closed");
        let v: serde_json::Value = serde_json::from_slice(&p.payload).expect("status is JSON");
        if pick(&v) {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_topic_tells_online_version_and_health_and_the_last_will_tells_a_crash() {
    let broker = Mosquitto::start();
    let topic = "acceso/devices/test-door/status";
    let (_sub, mut status) = subscriber(broker.host(), broker.port(), topic).await;
    let cloud = publisher(broker.host(), broker.port()).await;
    let mut door = TestDoor::start(broker.port(), 1000).await;
    door.connected().await;
    let online = status_where(&mut status, "online", |v| v["state"] == "online").await;
    assert_eq!(online["device"], "test-door");
    assert_eq!(online["applied_version"], 0);
    assert_eq!(online["rejected_signatures"], 0, "{online}");
    assert_eq!(online["health"]["sync"]["state"], "ok", "{online}");
    assert_eq!(online["health"]["broker"]["state"], "ok", "{online}");

    send(&cloud, upsert(1, "ana", &["01020304"], "")).await;
    assert_eq!(door.applied().await.1, ApplyResult::Applied);
    status_where(&mut status, "with version 1", |v| v["applied_version"] == 1).await;

    // A crash sends no goodbye: the broker publishes the last will.
    door.agent.take().expect("running").crash();
    let offline = status_where(&mut status, "offline", |v| v["state"] == "offline").await;
    assert_eq!(offline["device"], "test-door");
}
