//! Arbitrary bytes as a message on the updates topic.
//!
//! - `Update::open` never panics, with or without pinned keys; with keys, an unsigned or
//!   forged message is never accepted.
//! - Whatever parses: its body parses back to an equal update (round trip), its user passes
//!   `User::validate`, and sealed again (signed) it is within the payload limit and opens,
//!   against the pinned key, to the same update.
//! - The input's body, if it parses, signed by the pinned key opens to the same update.
#![no_main]

use acceso_protocol::signed::{self, Purpose};
use acceso_protocol::{Update, UpdateOp, MAX_PAYLOAD_BYTES};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fn check(update: &Update) {
    let keys = common::keys();
    assert!(update.version >= 1, "version 0 accepted");
    let body = update.body();
    let again = Update::parse(body.as_bytes()).expect("a parsed update's body parses again");
    assert_eq!(
        &again, update,
        "round trip through body() changed the update"
    );
    match &update.op {
        UpdateOp::UpsertUser(user) => user.validate().expect("an accepted user validates"),
        UpdateOp::DeleteUser { user_id } => assert!(!user_id.trim().is_empty()),
    }
    let sealed = update.seal(Some(&keys.signer));
    assert!(
        sealed.len() <= MAX_PAYLOAD_BYTES,
        "an accepted update sealed again is {} bytes",
        sealed.len()
    );
    let opened = Update::open(&sealed, Some(&keys.trusted)).expect("a sealed update opens");
    assert_eq!(&opened, update);
}

fuzz_target!(|data: &[u8]| {
    let keys = common::keys();
    let unsigned = Update::open(data, None);
    if let Ok(update) = &unsigned {
        check(update);
    }
    // Nobody but the holder of the key signs: random bytes never pass a pinned key.
    let pinned = Update::open(data, Some(&keys.trusted));
    assert!(pinned.is_err(), "an unsigned or forged update was accepted");

    // The bytes as a body, and that body signed by the pinned key.
    if let Ok(update) = Update::parse(data) {
        check(&update);
        let Ok(body) = std::str::from_utf8(data) else {
            panic!("a non-UTF-8 body parsed")
        };
        // The cloud signs exactly the text it embeds, with no whitespace around it (an
        // envelope's body is the value, whitespace outside it is not part of it).
        let trimmed = body.trim_matches([' ', '\t', '\n', '\r']) == body;
        let sealed = signed::seal(Purpose::Update, body, Some(&keys.signer));
        if trimmed && sealed.len() <= MAX_PAYLOAD_BYTES {
            let opened = Update::open(&sealed, Some(&keys.trusted))
                .expect("a valid body signed by the pinned key opens");
            assert_eq!(opened, update);
        }
    }
});
