//! sync against moto: "current" or a consistent snapshot, signed, on the device's topic.

mod common;

use std::collections::BTreeMap;

use acceso_cloud::dynamo::DynamoDirectory;
use acceso_cloud::iot::IotPublisher;
use acceso_cloud::ports::{Directory, Write};
use acceso_cloud::sync::{Sync, SyncFailure};
use acceso_protocol::sync::Assembly;
use acceso_protocol::{CardUid, SigningKey, SyncResponse, Topics, TrustedKeys, User};
use common::*;
use serde_json::json;

fn user(i: usize) -> User {
    User {
        id: format!("u{i:04}"),
        name: format!("User {i}"),
        enabled: true,
        cards: vec![CardUid::from_bytes(&(i as u32 + 1).to_be_bytes()).unwrap()],
        faces: vec![acceso_protocol::FaceEmbedding {
            model: "sface_2021dec".into(),
            // Big enough that a few hundred users take several pages.
            vector: (0..128)
                .map(|k| ((k * 7 + i) as f32 * 0.013).sin())
                .collect(),
        }],
        valid_from: None,
        valid_until: None,
        doors: None,
        schedule: vec![],
        two_factor: false,
    }
}

struct Fixture {
    sync: Sync<DynamoDirectory, IotPublisher, SigningKey>,
    prefix: String,
    trusted: TrustedKeys,
}

async fn fixture() -> Fixture {
    let conf = sdk().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&conf);
    let table = directory_table(&dynamo).await;
    let key = SigningKey::generate().unwrap();
    let trusted = TrustedKeys::new(vec![key.public_key()]);
    let prefix = unique("s");
    Fixture {
        sync: Sync {
            directory: DynamoDirectory::new(dynamo, &table),
            publisher: IotPublisher::new(aws_sdk_iotdataplane::Client::new(&conf)),
            signer: key,
            topics: Topics::new(&prefix),
        },
        prefix,
        trusted,
    }
}

/// The responses moto recorded for `device` since `skip`, opened with the door's key.
fn responses(f: &Fixture, device: &str, skip: usize) -> Vec<SyncResponse> {
    let topic = format!("{}/sync/{device}", f.prefix);
    published(&format!("{}/", f.prefix))
        .into_iter()
        .skip(skip)
        .map(|p| {
            assert_eq!(p.topic, topic);
            assert_eq!(p.qos.as_deref(), Some("1"));
            SyncResponse::open(&p.payload, Some(&f.trusted)).expect("a signed sync response")
        })
        .collect()
}

#[tokio::test]
async fn a_door_behind_gets_the_whole_snapshot_and_a_current_door_is_told_so() {
    let f = fixture().await;
    let n = 160;
    for i in (0..n).rev() {
        within("write", f.sync.directory.write(&Write::Create(user(i))))
            .await
            .unwrap();
    }
    within(
        "write",
        f.sync.directory.write(&Write::Delete("u0007".into())),
    )
    .await
    .unwrap();
    let version = (n + 1) as u64;

    let sent = within(
        "sync",
        f.sync.handle(from_rule(
            "door-1",
            &json!({"device": "door-1", "have_version": 3, "request": "r1"}),
        )),
    )
    .await
    .unwrap();
    assert_eq!(sent["kind"], "snapshot");
    let got = responses(&f, "door-1", 0);
    assert!(got.len() > 1, "{} users should take several pages", n);
    assert_eq!(sent["pages"], got.len());
    let mut assembly: Option<Assembly> = None;
    let mut users = None;
    for r in got {
        let SyncResponse::Page(p) = r else {
            panic!("not a page")
        };
        assert_eq!(
            (p.device.as_str(), p.request.as_str(), p.version),
            ("door-1", "r1", version)
        );
        let a = assembly.get_or_insert_with(|| Assembly::new(&p));
        assert!(a.fits(&p));
        if let Some(all) = a.add(p).unwrap() {
            users = Some(all);
        }
    }
    let users = users.expect("every page arrived");
    let want: Vec<User> = (0..n).filter(|i| *i != 7).map(user).collect();
    assert_eq!(users, want, "every user but the deleted one, by id");

    // Current: one message saying so.
    let before = published(&format!("{}/", f.prefix)).len();
    let sent = within(
        "sync",
        f.sync
            .handle(json!({"device": "door-1", "have_version": version, "request": "r2"})),
    )
    .await
    .unwrap();
    assert_eq!(sent["kind"], "current");
    let got = responses(&f, "door-1", before);
    assert_eq!(got.len(), 1);
    assert!(
        matches!(&got[0], SyncResponse::Current { device, request, version: v }
        if device == "door-1" && request == "r2" && *v == version)
    );
}

#[tokio::test]
async fn a_door_may_only_ask_for_itself_and_bad_requests_send_nothing() {
    let f = fixture().await;
    for bad in [
        json!({"device": "door-2", "have_version": 0, "request": "r", "client_id": "door-1"}),
        json!({"device": "door/#", "have_version": 0, "request": "r"}),
        json!({"device": "door-1", "have_version": -1, "request": "r"}),
        json!({"device": "door-1", "have_version": 0, "request": ""}),
        json!({"device": "door-1", "have_version": 0, "request": "r", "extra": 1}),
        // Through the rule: in another door's name, or naming a client of its own.
        from_rule(
            "door-1",
            &json!({"device": "door-2", "have_version": 0, "request": "r"}),
        ),
        from_rule(
            "door-1",
            &json!({"device": "door-2", "have_version": 0, "request": "r", "client_id": "door-2"}),
        ),
        json!({"client_id": "door-1", "payload": "not base64!"}),
    ] {
        let res = within("sync", f.sync.handle(bad.clone())).await;
        assert!(
            matches!(res, Err(SyncFailure::Invalid(_))),
            "{bad}: {res:?}"
        );
    }
    assert!(published(&format!("{}/", f.prefix)).is_empty());
}

/// Writes go on while snapshots are taken: each snapshot must be exactly the user set of the
/// version it names, never a mix of two.
#[tokio::test]
async fn a_snapshot_is_the_user_set_of_one_version_while_writes_go_on() {
    let f = fixture().await;
    let dir = &f.sync.directory;
    // The user set after each version.
    let mut states: BTreeMap<u64, Vec<User>> = BTreeMap::from([(0, vec![])]);
    let writer = async {
        let mut set: BTreeMap<String, User> = BTreeMap::new();
        let mut states = BTreeMap::new();
        for i in 0..40usize {
            let gone = format!("u{:04}", (i + 5) % 12);
            let w = if i % 5 == 4 && set.contains_key(&gone) {
                Write::Delete(gone)
            } else {
                let mut u = user(i % 12);
                u.name = format!("v{i}");
                if set.contains_key(&u.id) {
                    Write::Replace(u)
                } else {
                    Write::Create(u)
                }
            };
            let v = dir.write(&w).await.unwrap();
            match &w {
                Write::Create(u) | Write::Replace(u) => {
                    set.insert(u.id.clone(), u.clone());
                }
                Write::Delete(id) => {
                    set.remove(id);
                }
            }
            states.insert(v, set.values().cloned().collect::<Vec<_>>());
        }
        states
    };
    let reader = async {
        let mut seen = Vec::new();
        for _ in 0..25 {
            if let Ok(s) = dir.snapshot().await {
                seen.push(s);
            }
            tokio::task::yield_now().await;
        }
        seen
    };
    let (written, seen) = within("writes and snapshots", async {
        tokio::join!(writer, reader)
    })
    .await;
    states.extend(written);
    assert!(!seen.is_empty());
    for (v, users) in &seen {
        assert_eq!(Some(users), states.get(v), "snapshot at version {v}");
    }
    let distinct: std::collections::BTreeSet<u64> = seen.iter().map(|(v, _)| *v).collect();
    eprintln!(
        "snapshots at {} distinct versions: {distinct:?}",
        distinct.len()
    );
}
