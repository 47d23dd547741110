//! A sequence of small updates, stashes and snapshots applied to a real `Store` on a file,
//! against a model of what the store must hold.
//!
//! Few user ids (4), few cards (6), versions 1..=12, so that conflicts, replays, gaps and
//! snapshots behind and ahead of the applied version all happen. After every step:
//! - the applied version never decreases;
//! - no card is held by two users in `store.users()`;
//! - a rejected, stale or gap outcome changed nothing (users and applied version);
//! - the store holds exactly the model's users at the model's version.
//!
//! The database lives on /dev/shm where it exists (a real SQLite file in WAL mode; the fsyncs
//! cost nothing there), so runs make hundreds of steps a second.
#![no_main]

use std::collections::{BTreeMap, HashMap};

use acceso::store::{ApplyOutcome, Store};
use acceso_protocol::{CardUid, Update, UpdateOp, User};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Person {
    id: u8,
    cards: Vec<u8>,
    enabled: bool,
}

#[derive(Debug, Arbitrary)]
enum Step {
    Upsert {
        version: u8,
        person: Person,
    },
    Delete {
        version: u8,
        id: u8,
    },
    /// What the consumer does with a gap: keep it.
    Stash {
        version: u8,
        person: Person,
    },
    /// What the consumer does after an apply: the stashed updates that follow, in order.
    Drain,
    /// A snapshot swapped in (the consumer's `swap_in`), possibly behind the applied version.
    Snapshot {
        version: u8,
        people: Vec<Person>,
    },
    /// Close and open the file again.
    Reopen,
}

const IDS: u8 = 4;
const CARDS: u8 = 6;
const VERSIONS: u8 = 12;

fn version(v: u8) -> u64 {
    u64::from(v % VERSIONS) + 1
}

fn card(c: u8) -> CardUid {
    CardUid::from_bytes(&[0xC0, 0, 0, c % CARDS + 1]).expect("a 4-byte non-zero UID")
}

fn user(p: &Person) -> User {
    let mut cards: Vec<CardUid> = p.cards.iter().take(4).map(|c| card(*c)).collect();
    // One user lists a card once (`User::validate`).
    cards.sort();
    cards.dedup();
    User {
        id: format!("u{}", p.id % IDS),
        name: format!("User {}", p.id % IDS),
        enabled: p.enabled,
        cards,
        faces: vec![],
        valid_from: None,
        valid_until: None,
        doors: None,
        schedule: vec![],
        two_factor: false,
    }
}

fn upsert(v: u8, p: &Person) -> Update {
    Update {
        version: version(v),
        op: UpdateOp::UpsertUser(user(p)),
    }
}

/// What the store must hold.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    applied: u64,
    users: BTreeMap<String, User>,
}

impl Model {
    fn apply(&mut self, u: &Update) -> ApplyOutcome {
        if u.version <= self.applied {
            return ApplyOutcome::Stale {
                applied: self.applied,
            };
        }
        if u.version > self.applied + 1 {
            return ApplyOutcome::Gap {
                applied: self.applied,
            };
        }
        match &u.op {
            UpdateOp::UpsertUser(user) => {
                let taken = self
                    .users
                    .values()
                    .any(|o| o.id != user.id && o.cards.iter().any(|c| user.cards.contains(c)));
                if taken {
                    return ApplyOutcome::Rejected(String::new());
                }
                self.users.insert(user.id.clone(), user.clone());
            }
            UpdateOp::DeleteUser { user_id } => {
                self.users.remove(user_id);
            }
        }
        self.applied = u.version;
        ApplyOutcome::Applied
    }

    fn replace(&mut self, version: u64, users: &[User]) -> ApplyOutcome {
        if version <= self.applied {
            return ApplyOutcome::Stale {
                applied: self.applied,
            };
        }
        let mut ids = BTreeMap::new();
        let mut cards = HashMap::new();
        for u in users {
            if ids.insert(u.id.clone(), u.clone()).is_some() {
                return ApplyOutcome::Rejected(String::new());
            }
            for c in &u.cards {
                if cards.insert(c.clone(), u.id.clone()).is_some() {
                    return ApplyOutcome::Rejected(String::new());
                }
            }
        }
        self.users = ids;
        self.applied = version;
        ApplyOutcome::Applied
    }
}

/// Same kind of outcome (the reasons are free text).
fn same_kind(a: &ApplyOutcome, b: &ApplyOutcome) -> bool {
    match (a, b) {
        (ApplyOutcome::Rejected(_), ApplyOutcome::Rejected(_)) => true,
        _ => a == b,
    }
}

fn state(store: &Store) -> (u64, Vec<User>) {
    (
        store.applied_version().expect("applied version"),
        store.users().expect("users"),
    )
}

fn check(store: &Store, model: &Model, before: &(u64, Vec<User>), outcome: Option<&ApplyOutcome>) {
    let now = state(store);
    assert!(
        now.0 >= before.0,
        "applied version went from {} to {}",
        before.0,
        now.0
    );
    let mut holders: HashMap<&CardUid, &str> = HashMap::new();
    for u in &now.1 {
        for c in &u.cards {
            if let Some(other) = holders.insert(c, &u.id) {
                panic!("card {c} held by {other} and {}", u.id);
            }
        }
    }
    if let Some(o) = outcome {
        if !matches!(o, ApplyOutcome::Applied) {
            assert_eq!(&now, before, "{o:?} changed the store");
        }
    }
    assert_eq!(
        now.0, model.applied,
        "applied version differs from the model"
    );
    let expected: Vec<User> = model.users.values().cloned().collect();
    assert_eq!(now.1, expected, "users differ from the model");
}

fuzz_target!(|steps: Vec<Step>| {
    if steps.len() > 64 {
        return;
    }
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("a temporary directory");
    let path = dir.path().join("acceso.db");
    let (mut store, moved) = Store::open(&path).expect("a fresh store opens");
    assert!(moved.is_none());
    let mut model = Model::default();
    let mut stash: BTreeMap<u64, Update> = BTreeMap::new();
    for step in &steps {
        let before = state(&store);
        let outcome = match step {
            Step::Upsert { version, person } => {
                let u = upsert(*version, person);
                let got = store.apply_update(&u).expect("apply_update");
                let want = model.apply(&u);
                assert!(
                    same_kind(&got, &want),
                    "{u:?}: store {got:?}, model {want:?}"
                );
                Some(got)
            }
            Step::Delete { version: v, id } => {
                let u = Update {
                    version: version(*v),
                    op: UpdateOp::DeleteUser {
                        user_id: format!("u{}", id % IDS),
                    },
                };
                let got = store.apply_update(&u).expect("apply_update");
                let want = model.apply(&u);
                assert!(
                    same_kind(&got, &want),
                    "{u:?}: store {got:?}, model {want:?}"
                );
                Some(got)
            }
            Step::Stash { version, person } => {
                let u = upsert(*version, person);
                assert!(
                    store.stash(&u).expect("stash"),
                    "a small stash keeps everything"
                );
                stash.insert(u.version, u.clone());
                assert_eq!(
                    store.stashed(u.version).expect("stashed").as_ref(),
                    Some(&u)
                );
                let span = stash
                    .keys()
                    .next()
                    .copied()
                    .zip(stash.keys().last().copied());
                assert_eq!(store.stash_span().expect("stash span"), span);
                None
            }
            Step::Drain => {
                // As `Consumer::apply_stashed`.
                loop {
                    let applied = store.applied_version().expect("applied version");
                    store.drop_stash_through(applied).expect("drop stash");
                    stash.retain(|v, _| *v > applied);
                    let Some(u) = store.stashed(applied + 1).expect("stashed") else {
                        assert!(!stash.contains_key(&(applied + 1)));
                        break;
                    };
                    assert_eq!(stash.get(&u.version), Some(&u));
                    let before = state(&store);
                    let got = store.apply_update(&u).expect("apply_update");
                    let want = model.apply(&u);
                    assert!(
                        same_kind(&got, &want),
                        "{u:?}: store {got:?}, model {want:?}"
                    );
                    store.drop_stash_through(u.version).expect("drop stash");
                    stash.retain(|v, _| *v > u.version);
                    check(&store, &model, &before, Some(&got));
                    if !matches!(got, ApplyOutcome::Applied) {
                        break;
                    }
                }
                None
            }
            Step::Snapshot { version: v, people } => {
                let users: Vec<User> = people.iter().take(6).map(user).collect();
                let v = version(*v);
                let got = store.replace_users(v, &users).expect("replace_users");
                let want = model.replace(v, &users);
                assert!(
                    same_kind(&got, &want),
                    "snapshot {v}: store {got:?}, model {want:?}"
                );
                if matches!(got, ApplyOutcome::Applied) {
                    stash.retain(|s, _| *s > v);
                }
                Some(got)
            }
            Step::Reopen => {
                drop(store);
                let (s, moved) = Store::open(&path).expect("the store opens again");
                assert!(moved.is_none(), "a closed store was damaged: {moved:?}");
                store = s;
                None
            }
        };
        check(&store, &model, &before, outcome.as_ref());
    }
});
