//! The access decision: pure code, no IO, no clock reads.
//!
//! A credential, the user index, the door and the time go in; a decision with its reason comes
//! out. Everything the decision needs is passed in, so it is the same in tests, in `acceso sim`
//! and at the door, and it is fast enough to never matter (see BENCHMARKS.md).

use std::collections::HashMap;
use std::sync::Arc;

use acceso_protocol::schedule::in_schedule;
use acceso_protocol::{CardUid, Outcome, Reason, User};
use jiff::tz::TimeZone;

use crate::clock::WallTime;

use crate::config::DoorMode;
use crate::face::index::FaceIndex;

/// The users, indexed for lookups by credential. Rebuilt (not patched) after every applied
/// change, then swapped in whole, so a decision never sees a half-applied update.
#[derive(Debug, Default)]
pub struct UserIndex {
    by_card: HashMap<CardUid, Arc<User>>,
    by_id: HashMap<String, Arc<User>>,
    faces: FaceIndex,
    users: usize,
}

impl UserIndex {
    pub fn build<U: Into<Arc<User>>>(users: impl IntoIterator<Item = U>) -> UserIndex {
        let users: Vec<Arc<User>> = users.into_iter().map(Into::into).collect();
        let mut by_card = HashMap::new();
        let mut by_id = HashMap::new();
        for user in &users {
            for card in &user.cards {
                by_card.insert(card.clone(), Arc::clone(user));
            }
            by_id.insert(user.id.clone(), Arc::clone(user));
        }
        UserIndex {
            by_card,
            by_id,
            faces: FaceIndex::build(&users),
            users: users.len(),
        }
    }

    /// The users' face embeddings of this build's model.
    pub fn faces(&self) -> &FaceIndex {
        &self.faces
    }

    pub fn user_by_id(&self, id: &str) -> Option<&User> {
        self.by_id.get(id).map(|u| u.as_ref())
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

impl Decision {
    fn new(reason: Reason, user_id: Option<String>) -> Decision {
        Decision {
            outcome: reason.outcome(),
            reason,
            user_id,
        }
    }
}

/// What one credential comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Decided (granted or denied).
    Final(Decision),
    /// This user passed every rule with this credential, and must show the other one too
    /// (a `card_and_face` door, or a user who needs two factors everywhere).
    FirstFactor { user_id: String },
}

impl Judgement {
    /// The reason of a final decision; `None` while a second factor is awaited.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Judgement::Final(d) => Some(d.reason),
            Judgement::FirstFactor { .. } => None,
        }
    }
}

/// What to do with an untrusted clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UntrustedClock {
    /// Users whose access depends on the time (a validity window or a schedule) are denied
    /// `clock_untrusted`; users without such a restriction are decided as usual.
    #[default]
    DenyRestricted,
    /// Decide by the clock as it is, trusted or not (the event still says `time_trusted`).
    Allow,
}

/// The door a decision is made at: everything about it the rules need.
#[derive(Debug, Clone)]
pub struct DoorRules {
    pub name: String,
    pub mode: DoorMode,
    /// Schedules are in this zone's local time.
    pub time_zone: TimeZone,
    pub untrusted_clock: UntrustedClock,
}

impl DoorRules {
    /// Whether both kinds of credential can be read here.
    fn reads_both(&self) -> bool {
        matches!(self.mode, DoorMode::CardOrFace | DoorMode::CardAndFace)
    }
}

/// Decides a card presented at `door` at wall-clock time `now`.
pub fn decide_card(index: &UserIndex, uid: &CardUid, door: &DoorRules, now: WallTime) -> Judgement {
    let user = index.user_by_card(uid);
    if door.mode == DoorMode::Face {
        // Still name the card's holder: the operator sees who tried the wrong credential.
        return Judgement::Final(Decision::new(
            Reason::MethodNotAllowed,
            user.map(|u| u.id.clone()),
        ));
    }
    let Some(user) = user else {
        return Judgement::Final(Decision::new(Reason::UnknownCard, None));
    };
    judge(user, door, now)
}

/// What the matcher made of a face.
#[derive(Debug, Clone, Copy)]
pub enum FaceMatch<'a> {
    /// Accepted as this user's.
    User(&'a User),
    /// Not close enough to anyone's enrolled face.
    Stranger,
    /// Close enough to a user's, but as close to another user's (within the margin).
    Ambiguous,
}

/// Decides a face, as the matcher saw it, at `door` at wall-clock time `now`.
pub fn decide_face(face: FaceMatch, door: &DoorRules, now: WallTime) -> Judgement {
    let user = match face {
        FaceMatch::User(u) => Some(u),
        FaceMatch::Stranger | FaceMatch::Ambiguous => None,
    };
    if door.mode == DoorMode::Card {
        return Judgement::Final(Decision::new(
            Reason::MethodNotAllowed,
            user.map(|u| u.id.clone()),
        ));
    }
    match face {
        FaceMatch::User(user) => judge(user, door, now),
        FaceMatch::Stranger => Judgement::Final(Decision::new(Reason::UnknownFace, None)),
        FaceMatch::Ambiguous => Judgement::Final(Decision::new(Reason::AmbiguousFace, None)),
    }
}

/// The rules, then whether a second factor is needed.
fn judge(user: &User, door: &DoorRules, now: WallTime) -> Judgement {
    let reason = user_reason(user, door, now);
    let id = Some(user.id.clone());
    if reason != Reason::Granted {
        return Judgement::Final(Decision::new(reason, id));
    }
    if door.mode == DoorMode::CardAndFace || user.two_factor {
        if door.reads_both() {
            return Judgement::FirstFactor {
                user_id: user.id.clone(),
            };
        }
        // Needs a card and a face, at a door that reads only one of them.
        return Judgement::Final(Decision::new(Reason::SecondFactorMissing, id));
    }
    Judgement::Final(Decision::new(Reason::Granted, id))
}

/// Whether a known user may pass here and now; the first failing rule gives the reason.
fn user_reason(user: &User, door: &DoorRules, now: WallTime) -> Reason {
    if !user.enabled {
        return Reason::UserDisabled;
    }
    if !now.trusted
        && door.untrusted_clock == UntrustedClock::DenyRestricted
        && user.time_restricted()
    {
        return Reason::ClockUntrusted;
    }
    if user.valid_from.is_some_and(|from| now.time < from) {
        return Reason::NotYetValid;
    }
    if user.valid_until.is_some_and(|until| now.time >= until) {
        return Reason::Expired;
    }
    if !user.schedule.is_empty() {
        let local = door.time_zone.to_datetime(now.time);
        if !in_schedule(&user.schedule, local.weekday(), local.time()) {
            return Reason::OutsideSchedule;
        }
    }
    if !user.allowed_at(&door.name) {
        return Reason::DoorNotAllowed;
    }
    Reason::Granted
}

#[cfg(test)]
mod tests {
    use super::*;
    use acceso_protocol::TimeRange;
    use jiff::Timestamp;

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
            schedule: vec![],
            two_factor: false,
        }
    }

    fn door(mode: DoorMode) -> DoorRules {
        DoorRules {
            name: "front".into(),
            mode,
            time_zone: TimeZone::get("Europe/Berlin").unwrap(),
            untrusted_clock: UntrustedClock::DenyRestricted,
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn trusted(s: &str) -> WallTime {
        WallTime {
            time: at(s),
            trusted: true,
        }
    }

    fn reason(j: Judgement) -> Reason {
        match j {
            Judgement::Final(d) => d.reason,
            Judgement::FirstFactor { .. } => panic!("waits for a second factor: {j:?}"),
        }
    }

    fn card_reason(u: &User, door: &DoorRules, now: WallTime) -> Reason {
        let index = UserIndex::build([u.clone()]);
        reason(decide_card(&index, &u.cards[0], door, now))
    }

    const NOW: &str = "2026-06-01T12:00:00Z";

    fn schedule(json: &str) -> Vec<TimeRange> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn known_enabled_user_is_granted_and_named_unknown_card_is_denied_without_one() {
        let index = UserIndex::build([user("ana", "DEADBEEF")]);
        let front = door(DoorMode::Card);
        let got = decide_card(
            &index,
            &"de:ad:be:ef".parse().unwrap(),
            &front,
            trusted(NOW),
        );
        let expected = Decision::new(Reason::Granted, Some("ana".into()));
        assert_eq!(got, Judgement::Final(expected));
        assert_eq!(got_outcome(&got), Outcome::Granted);
        let got = decide_card(&index, &"01020304".parse().unwrap(), &front, trusted(NOW));
        assert_eq!(
            got,
            Judgement::Final(Decision::new(Reason::UnknownCard, None))
        );
        assert_eq!(got_outcome(&got), Outcome::Denied);
    }

    fn got_outcome(j: &Judgement) -> Outcome {
        match j {
            Judgement::Final(d) => d.outcome,
            Judgement::FirstFactor { .. } => panic!("not final"),
        }
    }

    /// Validity window edges and the order of the rules.
    #[test]
    fn validity_edges_door_lists_and_rule_order() {
        let mut windowed = user("ana", "DEADBEEF");
        windowed.valid_from = Some(at("2026-06-01T00:00:00Z"));
        windowed.valid_until = Some(at("2026-07-01T00:00:00Z"));
        let mut lab_only = user("bo", "01020304");
        lab_only.doors = Some(vec!["lab".into()]);
        let mut nowhere = user("cy", "0A0B0C0D");
        nowhere.doors = Some(vec![]);
        let mut disabled_everything = windowed.clone();
        disabled_everything.enabled = false;
        disabled_everything.doors = Some(vec![]);
        let front = door(DoorMode::Card);
        let mut lab = door(DoorMode::Card);
        lab.name = "lab".into();
        let cases: [(&User, &DoorRules, &str, Reason); 9] = [
            (
                &windowed,
                &front,
                "2026-05-31T23:59:59Z",
                Reason::NotYetValid,
            ),
            (&windowed, &front, "2026-06-01T00:00:00Z", Reason::Granted),
            (
                &windowed,
                &front,
                "2026-06-30T23:59:59.999Z",
                Reason::Granted,
            ),
            (&windowed, &front, "2026-07-01T00:00:00Z", Reason::Expired),
            (&lab_only, &front, NOW, Reason::DoorNotAllowed),
            (&lab_only, &lab, NOW, Reason::Granted),
            (&nowhere, &lab, NOW, Reason::DoorNotAllowed),
            (
                &disabled_everything,
                &front,
                "2020-01-01T00:00:00Z",
                Reason::UserDisabled,
            ),
            (&disabled_everything, &front, NOW, Reason::UserDisabled),
        ];
        for (i, (u, d, now, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                card_reason(u, d, trusted(now)),
                want,
                "case {i}: {} at {now}",
                u.id
            );
        }
    }

    /// Weekday 07:00-19:00 and a Friday night shift, in Berlin time, across both daylight
    /// saving changes of 2026 (29 March 02:00 -> 03:00, 25 October 03:00 -> 02:00).
    #[test]
    fn schedules_at_their_edges_over_midnight_and_through_daylight_saving() {
        let mut staff = user("staff", "DEADBEEF");
        staff.schedule = schedule(
            r#"[{"days":["mon","tue","wed","thu","fri"],"from":"07:00","until":"19:00"}]"#,
        );
        let mut night = user("night", "01020304");
        night.schedule = schedule(r#"[{"days":["fri","sat"],"from":"22:00","until":"06:00"}]"#);
        let mut early = user("early", "0A0B0C0D");
        early.schedule = schedule(r#"[{"days":["sun"],"from":"01:00","until":"04:00"}]"#);
        let front = door(DoorMode::Card);
        let cases: [(&User, &str, Reason); 22] = [
            // Monday 1 June 2026 (CEST, UTC+2): 07:00 local is 05:00Z.
            (&staff, "2026-06-01T04:59:59Z", Reason::OutsideSchedule),
            (&staff, "2026-06-01T05:00:00Z", Reason::Granted),
            (&staff, "2026-06-01T16:59:59Z", Reason::Granted),
            (&staff, "2026-06-01T17:00:00Z", Reason::OutsideSchedule),
            // Saturday 6 June: not a listed day.
            (&staff, "2026-06-06T10:00:00Z", Reason::OutsideSchedule),
            // Winter (CET, UTC+1): 07:00 local is 06:00Z on Monday 12 January.
            (&staff, "2026-01-12T05:59:59Z", Reason::OutsideSchedule),
            (&staff, "2026-01-12T06:00:00Z", Reason::Granted),
            // Friday 5 June 22:00 local (20:00Z) to Saturday 06:00 (04:00Z), and Saturday's
            // own night into Sunday; Sunday night is not listed.
            (&night, "2026-06-05T19:59:59Z", Reason::OutsideSchedule),
            (&night, "2026-06-05T20:00:00Z", Reason::Granted),
            (&night, "2026-06-05T22:00:00Z", Reason::Granted), // midnight local
            (&night, "2026-06-06T03:59:59Z", Reason::Granted),
            (&night, "2026-06-06T04:00:00Z", Reason::OutsideSchedule),
            (&night, "2026-06-07T03:00:00Z", Reason::Granted), // Sunday 05:00, Saturday's night
            (&night, "2026-06-08T01:00:00Z", Reason::OutsideSchedule), // Monday 03:00
            // Spring forward, Sunday 29 March: 01:00 CET = 00:00Z; 02:00-03:00 does not exist;
            // 04:00 CEST = 02:00Z. The range lasts two real hours that day.
            (&early, "2026-03-28T23:59:59Z", Reason::OutsideSchedule),
            (&early, "2026-03-29T00:00:00Z", Reason::Granted),
            (&early, "2026-03-29T01:00:00Z", Reason::Granted), // 03:00 CEST
            (&early, "2026-03-29T02:00:00Z", Reason::OutsideSchedule),
            // Fall back, Sunday 25 October: 01:00 CEST = 23:00Z Saturday; 02:00-03:00 happens
            // twice; 04:00 CET = 03:00Z. The range lasts four real hours that day.
            (&early, "2026-10-24T22:59:59Z", Reason::OutsideSchedule),
            (&early, "2026-10-24T23:00:00Z", Reason::Granted),
            (&early, "2026-10-25T02:59:59Z", Reason::Granted), // 03:59:59 CET
            (&early, "2026-10-25T03:00:00Z", Reason::OutsideSchedule),
        ];
        for (i, (u, now, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                card_reason(u, &front, trusted(now)),
                want,
                "case {i}: {} at {now}",
                u.id
            );
        }
    }

    /// Every door mode against every credential, for a one-factor and a two-factor user.
    #[test]
    fn every_door_mode_takes_the_credentials_it_should() {
        let ana = user("ana", "DEADBEEF");
        let mut two = user("two", "01020304");
        two.two_factor = true;
        let first = |id: &str| Judgement::FirstFactor { user_id: id.into() };
        let fin = |r: Reason, id: &str| Judgement::Final(Decision::new(r, Some(id.into())));
        let index = UserIndex::build([ana.clone(), two.clone()]);
        let now = trusted(NOW);
        use DoorMode::*;
        let cases = [
            (
                Card,
                &ana,
                fin(Reason::Granted, "ana"),
                fin(Reason::MethodNotAllowed, "ana"),
            ),
            (
                Face,
                &ana,
                fin(Reason::MethodNotAllowed, "ana"),
                fin(Reason::Granted, "ana"),
            ),
            (
                CardOrFace,
                &ana,
                fin(Reason::Granted, "ana"),
                fin(Reason::Granted, "ana"),
            ),
            (CardAndFace, &ana, first("ana"), first("ana")),
            (
                Card,
                &two,
                fin(Reason::SecondFactorMissing, "two"),
                fin(Reason::MethodNotAllowed, "two"),
            ),
            (
                Face,
                &two,
                fin(Reason::MethodNotAllowed, "two"),
                fin(Reason::SecondFactorMissing, "two"),
            ),
            (CardOrFace, &two, first("two"), first("two")),
            (CardAndFace, &two, first("two"), first("two")),
        ];
        for (mode, u, by_card, by_face) in cases {
            let d = door(mode);
            assert_eq!(
                decide_card(&index, &u.cards[0], &d, now),
                by_card,
                "{mode:?} card {}",
                u.id
            );
            assert_eq!(
                decide_face(FaceMatch::User(u), &d, now),
                by_face,
                "{mode:?} face {}",
                u.id
            );
        }
        // A face accepted as nobody's.
        assert_eq!(
            reason(decide_face(FaceMatch::Stranger, &door(CardOrFace), now)),
            Reason::UnknownFace
        );
        // A second factor never skips the rules: a disabled two-factor user is denied at once.
        let mut off = two.clone();
        off.enabled = false;
        assert_eq!(
            reason(decide_face(FaceMatch::User(&off), &door(CardAndFace), now)),
            Reason::UserDisabled
        );
    }

    /// An untrusted clock: restricted users are denied `clock_untrusted` (or decided as usual
    /// when the door allows it); unrestricted users are never locked out.
    #[test]
    fn an_untrusted_clock_denies_only_time_restricted_users() {
        let plain = user("plain", "DEADBEEF");
        let mut windowed = user("windowed", "01020304");
        windowed.valid_until = Some(at("2030-01-01T00:00:00Z"));
        let mut scheduled = user("scheduled", "0A0B0C0D");
        scheduled.schedule = schedule(r#"[{"days":["mon"],"from":"00:00","until":"24:00"}]"#);
        let mut lab_only = user("lab", "0B0B0B0B");
        lab_only.doors = Some(vec!["lab".into()]);
        let deny = door(DoorMode::Card);
        let mut allow = door(DoorMode::Card);
        allow.untrusted_clock = UntrustedClock::Allow;
        // Monday, but the clock may be wrong: a Pi that booted at 1970 or last week.
        for time in ["2026-06-01T12:00:00Z", "1970-01-05T12:00:00Z"] {
            let untrusted = WallTime {
                time: at(time),
                trusted: false,
            };
            assert_eq!(
                card_reason(&plain, &deny, untrusted),
                Reason::Granted,
                "{time}"
            );
            assert_eq!(
                card_reason(&windowed, &deny, untrusted),
                Reason::ClockUntrusted
            );
            assert_eq!(
                card_reason(&scheduled, &deny, untrusted),
                Reason::ClockUntrusted
            );
            assert_eq!(
                card_reason(&lab_only, &deny, untrusted),
                Reason::DoorNotAllowed
            );
            assert_eq!(card_reason(&scheduled, &allow, untrusted), Reason::Granted);
            assert_eq!(card_reason(&windowed, &allow, untrusted), Reason::Granted);
        }
    }

    #[test]
    fn index_counts_users_and_cards() {
        let mut two = user("bo", "01020304");
        two.cards.push("0102030405060708090A".parse().unwrap());
        let index = UserIndex::build([user("ana", "DEADBEEF"), two]);
        assert_eq!(index.user_count(), 2);
        assert_eq!(index.card_count(), 3);
    }
}
