//! What the fuzz targets (fuzz/, `scripts/fuzz`) found, each kept as a test of the fixed
//! behaviour. The input each came from is in the test's comment; the crashing inputs are also
//! among the fuzzers' seeds (fuzz/seeds/).

use acceso::store::{ApplyOutcome, Store};
use acceso_protocol::{CardUid, Update, UpdateOp, User};

fn user(id: &str, cards: &[&str]) -> User {
    User {
        id: id.into(),
        name: id.into(),
        enabled: true,
        cards: cards
            .iter()
            .map(|c| c.parse::<CardUid>().expect("a card UID"))
            .collect(),
        faces: vec![],
        valid_from: None,
        valid_until: None,
        doors: None,
        schedule: vec![],
        two_factor: false,
    }
}

fn upsert(version: u64, id: &str, cards: &[&str]) -> Update {
    Update {
        version,
        op: UpdateOp::UpsertUser(user(id, cards)),
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (store, _) = Store::open(&dir.path().join("acceso.db")).expect("the store opens");
    (dir, store)
}

/// fuzz target `apply`, seed `crash-stale-snapshot`: `[Snapshot { version: 8, people: [] },
/// Snapshot { version: 1, people: [] }]`. The second snapshot was swapped in and the applied
/// version went back from 8 to 1. In the agent: a snapshot requested at version 5 whose last
/// page arrives after updates 6 and 7 were applied would undo them (and they are acknowledged,
/// so never redelivered). A snapshot at or below the applied version is now stale.
#[test]
fn a_snapshot_at_or_below_the_applied_version_changes_nothing() {
    let (_d, mut s) = store();
    assert_eq!(s.replace_users(8, &[]).unwrap(), ApplyOutcome::Applied);
    assert_eq!(
        s.replace_users(1, &[user("old", &["01020304"])]).unwrap(),
        ApplyOutcome::Stale { applied: 8 }
    );
    assert_eq!(s.applied_version().unwrap(), 8);
    assert!(s.users().unwrap().is_empty());

    // The agent's race: at 5, a snapshot of version 6 is being assembled while updates 6 and
    // 7 arrive and apply; then its last page comes in.
    let (_d, mut s) = store();
    for v in 1..=5 {
        s.apply_update(&upsert(v, "ana", &["DEADBEEF"])).unwrap();
    }
    assert_eq!(
        s.apply_update(&upsert(6, "ana", &["01020304"])).unwrap(),
        ApplyOutcome::Applied
    );
    assert_eq!(
        s.apply_update(&Update {
            version: 7,
            op: UpdateOp::DeleteUser {
                user_id: "ana".into()
            }
        })
        .unwrap(),
        ApplyOutcome::Applied
    );
    let snapshot_6 = [user("ana", &["01020304"])];
    for v in [6, 7] {
        assert_eq!(
            s.replace_users(v, &snapshot_6).unwrap(),
            ApplyOutcome::Stale { applied: 7 }
        );
    }
    assert_eq!(s.applied_version().unwrap(), 7);
    assert!(
        s.users().unwrap().is_empty(),
        "the delete of version 7 stands"
    );
    // A newer snapshot still applies.
    assert_eq!(
        s.replace_users(8, &snapshot_6).unwrap(),
        ApplyOutcome::Applied
    );
    assert_eq!(s.users().unwrap(), snapshot_6);
}

/// Found while writing the `sync` target's re-seal check (the fuzzer itself had not reached
/// it): `seal_snapshot` for a request whose device and request ids leave no room in a page
/// subtracted past zero (a panic in a debug build, a wrapped budget in release). The ids come
/// from the door's sync request, so the cloud side must refuse, not crash.
#[test]
fn a_snapshot_for_ids_too_long_for_a_page_is_refused_not_a_panic() {
    use acceso_protocol::sync::seal_snapshot;
    let long = "d".repeat(acceso_protocol::MAX_PAYLOAD_BYTES);
    let err = seal_snapshot(&long, "r", 1, &[], None).unwrap_err();
    assert!(err.contains("no room"), "{err}");
    let err = seal_snapshot("d", &long, 1, &[user("a", &["01020304"])], None).unwrap_err();
    assert!(err.contains("no room"), "{err}");
    // Ids that fit still page as before.
    assert_eq!(seal_snapshot("d", "r", 1, &[], None).unwrap().len(), 1);
}
