//! The access decision: pure code, no IO, no clock reads.
//!
//! A credential, the user index, the door and the time go in; a decision with its reason comes
//! out. Everything the decision needs is passed in, so it is the same in tests, in `acceso sim`
//! and at the door, and it is fast enough to never matter (see BENCHMARKS.md).

use std::collections::HashMap;
use std::sync::Arc;

use acceso_protocol::{CardUid, Outcome, Reason, User};
use jiff::Timestamp;

use crate::config::DoorMode;
use crate::face::index::FaceIndex;

/// The users, indexed for lookups by credential. Rebuilt (not patched) after every applied
/// change, then swapped in whole, so a decision never sees a half-applied update.
#[derive(Debug, Default)]
pub struct UserIndex {
    by_card: HashMap<CardUid, Arc<User>>,
    faces: FaceIndex,
    users: usize,
}

impl UserIndex {
    pub fn build<U: Into<Arc<User>>>(users: impl IntoIterator<Item = U>) -> UserIndex {
        let users: Vec<Arc<User>> = users.into_iter().map(Into::into).collect();
        let mut by_card = HashMap::new();
        for user in &users {
            for card in &user.cards {
                by_card.insert(card.clone(), Arc::clone(user));
            }
        }
        UserIndex {
            by_card,
            faces: FaceIndex::build(&users),
            users: users.len(),
        }
    }

    /// The users' face embeddings of this build's model.
    pub fn faces(&self) -> &FaceIndex {
        &self.faces
    }

    pub fn user_by_card(&self, uid: &CardUid) -> Option<&User> {
        self.by_card.get(uid).map(|u| u.as_ref())
    }

    pub fn user_count(&self) -> usize {
        self.users
    }

    pub fn card_count(&self) -> usize {
        self.by_card.len()
    }
}

/// What was decided, for whom, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub reason: Reason,
    pub user_id: Option<String>,
}

/// Decides a card presented at `door` (which takes `mode`) at wall-clock time `now`.
pub fn decide_card(
    index: &UserIndex,
    uid: &CardUid,
    door: &str,
    mode: DoorMode,
    now: Timestamp,
) -> Decision {
    let user = index.user_by_card(uid);
    if mode == DoorMode::Face {
        // Still name the card's holder: the operator sees who tried the wrong credential.
        return Decision {
            outcome: Outcome::Denied,
            reason: Reason::MethodNotAllowed,
            user_id: user.map(|u| u.id.clone()),
        };
    }
    let Some(user) = user else {
        return Decision {
            outcome: Outcome::Denied,
            reason: Reason::UnknownCard,
            user_id: None,
        };
    };
    let reason = user_reason(user, door, now);
    Decision {
        outcome: reason.outcome(),
        reason,
        user_id: Some(user.id.clone()),
    }
}

/// Decides a face accepted as `user` (by the matcher; `None`: a face accepted as nobody's) at
/// `door` (which takes `mode`) at wall-clock time `now`.
pub fn decide_face(user: Option<&User>, door: &str, mode: DoorMode, now: Timestamp) -> Decision {
    let reason = match user {
        _ if !matches!(mode, DoorMode::Face | DoorMode::CardOrFace) => Reason::MethodNotAllowed,
        None => Reason::UnknownFace,
        Some(user) => user_reason(user, door, now),
    };
    Decision {
        outcome: reason.outcome(),
        reason,
        user_id: user.map(|u| u.id.clone()),
    }
}

/// Whether a known user may pass here and now; the first failing rule gives the reason.
fn user_reason(user: &User, door: &str, now: Timestamp) -> Reason {
    if !user.enabled {
        return Reason::UserDisabled;
    }
    if user.valid_from.is_some_and(|from| now < from) {
        return Reason::NotYetValid;
    }
    if user.valid_until.is_some_and(|until| now >= until) {
        return Reason::Expired;
    }
    if !user.allowed_at(door) {
        return Reason::DoorNotAllowed;
    }
    Reason::Granted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, card: &str) -> User {
        User {
            id: id.into(),
            name: id.to_uppercase(),
            enabled: true,
            cards: vec![card.parse().unwrap()],
            faces: vec![],
            valid_from: None,
            valid_until: None,
            doors: None,
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn decide(index: &UserIndex, card: &str, door: &str, now: &str) -> (Outcome, Reason) {
        let d = decide_card(index, &card.parse().unwrap(), door, DoorMode::Card, at(now));
        (d.outcome, d.reason)
    }

    const NOW: &str = "2026-06-01T12:00:00Z";

    #[test]
    fn known_enabled_user_is_granted_and_named() {
        let index = UserIndex::build([user("ana", "DEADBEEF")]);
        let d = decide_card(
            &index,
            &"de:ad:be:ef".parse().unwrap(),
            "front",
            DoorMode::Card,
            at(NOW),
        );
        assert_eq!(d.outcome, Outcome::Granted);
        assert_eq!(d.reason, Reason::Granted);
        assert_eq!(d.user_id.as_deref(), Some("ana"));
    }

    #[test]
    fn unknown_card_is_denied_without_a_user() {
        let index = UserIndex::build([user("ana", "DEADBEEF")]);
        let d = decide_card(
            &index,
            &"01020304".parse().unwrap(),
            "front",
            DoorMode::Card,
            at(NOW),
        );
        assert_eq!(
            (d.outcome, d.reason),
            (Outcome::Denied, Reason::UnknownCard)
        );
        assert_eq!(d.user_id, None);
    }

    #[test]
    fn disabled_user_is_denied() {
        let mut u = user("ana", "DEADBEEF");
        u.enabled = false;
        let index = UserIndex::build([u]);
        assert_eq!(
            decide(&index, "DEADBEEF", "front", NOW),
            (Outcome::Denied, Reason::UserDisabled)
        );
    }

    #[test]
    fn validity_window_is_inclusive_start_exclusive_end() {
        let mut u = user("ana", "DEADBEEF");
        u.valid_from = Some(at("2026-06-01T00:00:00Z"));
        u.valid_until = Some(at("2026-07-01T00:00:00Z"));
        let index = UserIndex::build([u]);
        let cases = [
            ("2026-05-31T23:59:59Z", Reason::NotYetValid),
            ("2026-06-01T00:00:00Z", Reason::Granted),
            ("2026-06-30T23:59:59Z", Reason::Granted),
            ("2026-07-01T00:00:00Z", Reason::Expired),
        ];
        for (now, reason) in cases {
            assert_eq!(decide(&index, "DEADBEEF", "front", now).1, reason, "{now}");
        }
    }

    #[test]
    fn door_list_is_enforced() {
        let mut u = user("ana", "DEADBEEF");
        u.doors = Some(vec!["lab".into()]);
        let index = UserIndex::build([u]);
        assert_eq!(
            decide(&index, "DEADBEEF", "front", NOW),
            (Outcome::Denied, Reason::DoorNotAllowed)
        );
        assert_eq!(
            decide(&index, "DEADBEEF", "lab", NOW),
            (Outcome::Granted, Reason::Granted)
        );
    }

    #[test]
    fn disabled_wins_over_every_other_reason() {
        let mut u = user("ana", "DEADBEEF");
        u.enabled = false;
        u.valid_until = Some(at("2020-01-01T00:00:00Z"));
        u.doors = Some(vec![]);
        let index = UserIndex::build([u]);
        assert_eq!(
            decide(&index, "DEADBEEF", "front", NOW).1,
            Reason::UserDisabled
        );
    }

    #[test]
    fn index_counts_users_and_cards() {
        let mut two = user("bo", "01020304");
        two.cards.push("0102030405060708090A".parse().unwrap());
        let index = UserIndex::build([user("ana", "DEADBEEF"), two]);
        assert_eq!(index.user_count(), 2);
        assert_eq!(index.card_count(), 3);
    }

    #[test]
    fn the_door_mode_decides_which_credentials_count() {
        let index = UserIndex::build([user("ana", "DEADBEEF")]);
        let uid = "DEADBEEF".parse().unwrap();
        let ana = index.user_by_card(&uid).unwrap();
        let card = |mode| {
            let d = decide_card(&index, &uid, "front", mode, at(NOW));
            (d.reason, d.user_id)
        };
        let face = |user, mode| decide_face(user, "front", mode, at(NOW)).reason;
        let named = Some("ana".to_string());
        assert_eq!(card(DoorMode::Card), (Reason::Granted, named.clone()));
        assert_eq!(card(DoorMode::CardOrFace), (Reason::Granted, named.clone()));
        assert_eq!(card(DoorMode::Face), (Reason::MethodNotAllowed, named));
        assert_eq!(face(Some(ana), DoorMode::Face), Reason::Granted);
        assert_eq!(face(Some(ana), DoorMode::CardOrFace), Reason::Granted);
        assert_eq!(face(Some(ana), DoorMode::Card), Reason::MethodNotAllowed);
        assert_eq!(face(None, DoorMode::Face), Reason::UnknownFace);
    }

    #[test]
    fn a_recognised_face_passes_the_same_rules_as_a_card() {
        let mut u = user("ana", "DEADBEEF");
        u.doors = Some(vec!["lab".into()]);
        u.valid_until = Some(at("2026-07-01T00:00:00Z"));
        let d = decide_face(Some(&u), "lab", DoorMode::Face, at(NOW));
        assert_eq!(
            (d.reason, d.user_id.as_deref()),
            (Reason::Granted, Some("ana"))
        );
        let later = at("2026-07-01T00:00:00Z");
        assert_eq!(
            decide_face(Some(&u), "lab", DoorMode::Face, later).reason,
            Reason::Expired
        );
        assert_eq!(
            decide_face(Some(&u), "front", DoorMode::Face, at(NOW)).reason,
            Reason::DoorNotAllowed
        );
    }
}
