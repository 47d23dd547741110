//! Arbitrary bytes as messages on a door's sync topic: the input is split at NUL bytes (which
//! no JSON text holds) into messages, fed in order as the consumer does.
//!
//! - `SyncResponse::open` never panics, with or without pinned keys; with keys, nothing
//!   unsigned or forged is accepted.
//! - Pages go into an `Assembly` (a page that does not fit starts a new one, as in
//!   `src/cloud/updates.rs`). It never panics; a completed assembly has unique user ids, no card
//!   held twice, every user valid, and exactly the users of its pages in page order.
//! - A completed snapshot sealed again by `seal_snapshot` gives pages within the payload limit
//!   that, signed and opened against the pinned key, assemble to the same users.
#![no_main]

use std::collections::{BTreeMap, HashMap, HashSet};

use acceso_protocol::sync::{self, Assembly};
use acceso_protocol::{CardUid, SnapshotPage, SyncResponse, User, MAX_PAYLOAD_BYTES};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fn check_complete(users: &[User], pages: &BTreeMap<u32, SnapshotPage>) {
    let mut ids = HashSet::new();
    let mut cards: HashMap<&CardUid, &str> = HashMap::new();
    for u in users {
        assert!(
            ids.insert(&u.id),
            "user {} twice in a completed snapshot",
            u.id
        );
        u.validate().expect("a snapshot user validates");
        for c in &u.cards {
            if let Some(other) = cards.insert(c, &u.id) {
                panic!(
                    "card {c} held by {other} and {} in a completed snapshot",
                    u.id
                );
            }
        }
    }
    let expected: Vec<&User> = pages.values().flat_map(|p| &p.users).collect();
    assert_eq!(users.iter().collect::<Vec<_>>(), expected);
}

fn reseal(first: &SnapshotPage, users: &[User]) {
    let keys = common::keys();
    let Ok(pages) = sync::seal_snapshot(
        &first.device,
        &first.request,
        first.version,
        users,
        Some(&keys.signer),
    ) else {
        return;
    };
    let mut assembly: Option<Assembly> = None;
    let mut back = None;
    for p in &pages {
        assert!(
            p.len() <= MAX_PAYLOAD_BYTES,
            "a sealed page is {} bytes",
            p.len()
        );
        let Ok(SyncResponse::Page(page)) = SyncResponse::open(p, Some(&keys.trusted)) else {
            panic!("a sealed page does not open");
        };
        let a = assembly.get_or_insert_with(|| Assembly::new(&page));
        assert!(a.fits(&page));
        back = a.add(page).expect("a resealed snapshot assembles");
    }
    assert_eq!(back.as_deref(), Some(users), "resealed snapshot differs");
}

fuzz_target!(|data: &[u8]| {
    let keys = common::keys();
    let mut assembly: Option<Assembly> = None;
    let mut pages: BTreeMap<u32, SnapshotPage> = BTreeMap::new();
    for msg in data.split(|b| *b == 0) {
        assert!(
            SyncResponse::open(msg, Some(&keys.trusted)).is_err(),
            "an unsigned or forged sync response was accepted"
        );
        let Ok(response) = SyncResponse::open(msg, None) else {
            continue;
        };
        let SyncResponse::Page(page) = response else {
            continue;
        };
        assert!(page.page < page.pages && page.version >= 1);
        assert_eq!(page.users.len(), page.user_digests.len());
        for u in &page.users {
            u.validate().expect("a page's user validates");
        }
        if !assembly.as_ref().is_some_and(|a| a.fits(&page)) {
            assembly = Some(Assembly::new(&page));
            pages.clear();
        }
        let Some(a) = assembly.as_mut() else {
            continue;
        };
        let first = page.clone();
        pages.insert(page.page, page);
        match a.add(first.clone()) {
            Ok(None) => {}
            Ok(Some(users)) => {
                check_complete(&users, &pages);
                reseal(&first, &users);
                assembly = None;
                pages.clear();
            }
            Err(_) => {
                assembly = None;
                pages.clear();
            }
        }
    }
});
