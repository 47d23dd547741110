//! Two factors: a card and a face of the same user, in either order, within the door's
//! window. Pure: credentials that passed every rule and their monotonic times come in; what
//! to grant, deny or keep waiting for comes out.
//!
//! A first factor waits for the other kind. The same user's other factor in time grants
//! (method `card_and_face`); another user's other factor is a mismatch, denied; nothing in time
//! is `second_factor_missing`. A new factor of the same kind replaces the waiting one (the next
//! person badged): the one it replaces is reported missing unless it was the same user's.
//! A credential that failed the rules never reaches this module: it is denied on its own and
//! leaves a waiting factor alone.

use std::time::{Duration, Instant};

use acceso_protocol::{CardUid, Method};

/// One factor that passed every rule for `user_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Factor {
    pub user_id: String,
    /// `Card` or `Face`.
    pub method: Method,
    pub card_uid: Option<CardUid>,
    pub face_score: Option<f32>,
    /// When the credential was read.
    pub at: Instant,
}

/// What a factor, or the passing of time, comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum TwoFactorEvent {
    /// Both factors of one user: grant. `card` and `face` are the two factors.
    Both { card: Factor, face: Factor },
    /// A card and a face of different users: deny.
    Mismatch { card: Factor, face: Factor },
    /// The other factor did not come in time: deny.
    Missing(Factor),
}

#[derive(Debug)]
pub struct TwoFactor {
    window: Duration,
    waiting: Option<Factor>,
}

impl TwoFactor {
    pub fn new(window: Duration) -> TwoFactor {
        TwoFactor {
            window,
            waiting: None,
        }
    }

    /// When the waiting factor runs out, if one waits.
    pub fn deadline(&self) -> Option<Instant> {
        self.waiting.as_ref().map(|f| f.at + self.window)
    }

    /// The waiting factor, if it has run out by `now`.
    pub fn expire(&mut self, now: Instant) -> Option<TwoFactorEvent> {
        match self.deadline() {
            Some(due) if now >= due => self.waiting.take().map(TwoFactorEvent::Missing),
            _ => None,
        }
    }

    /// A factor that passed every rule. Returns what it completes or displaces; nothing when it
    /// now waits for the other kind.
    pub fn offer(&mut self, factor: Factor) -> Vec<TwoFactorEvent> {
        let mut out: Vec<TwoFactorEvent> = self.expire(factor.at).into_iter().collect();
        match self.waiting.take() {
            None => self.waiting = Some(factor),
            Some(waiting) if waiting.method == factor.method => {
                if waiting.user_id != factor.user_id {
                    out.push(TwoFactorEvent::Missing(waiting));
                }
                self.waiting = Some(factor);
            }
            Some(waiting) => {
                let (card, face) = if waiting.method == Method::Card {
                    (waiting, factor)
                } else {
                    (factor, waiting)
                };
                out.push(if card.user_id == face.user_id {
                    TwoFactorEvent::Both { card, face }
                } else {
                    TwoFactorEvent::Mismatch { card, face }
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    fn factor(user: &str, method: Method, at: Instant) -> Factor {
        Factor {
            user_id: user.into(),
            method,
            card_uid: (method == Method::Card).then(|| "DEADBEEF".parse().unwrap()),
            face_score: (method == Method::Face).then_some(0.8),
            at,
        }
    }

    fn kinds(events: &[TwoFactorEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                TwoFactorEvent::Both { card, .. } => format!("both:{}", card.user_id),
                TwoFactorEvent::Mismatch { card, face } => {
                    format!("mismatch:{}/{}", card.user_id, face.user_id)
                }
                TwoFactorEvent::Missing(f) => format!("missing:{}:{:?}", f.user_id, f.method),
            })
            .collect()
    }

    /// The window in both orders, at its edge, and expired.
    #[test]
    fn card_then_face_and_face_then_card_within_the_window_and_not_after_it() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let cases: [(Method, Method, Duration, &[&str]); 6] = [
            (Method::Card, Method::Face, s(3), &["both:ana"]),
            (Method::Face, Method::Card, s(3), &["both:ana"]),
            (
                Method::Card,
                Method::Face,
                s(10) - Duration::from_millis(1),
                &["both:ana"],
            ),
            (Method::Face, Method::Card, s(10), &["missing:ana:Face"]),
            (Method::Card, Method::Face, s(11), &["missing:ana:Card"]),
            (Method::Face, Method::Card, s(60), &["missing:ana:Face"]),
        ];
        for (first, second, after, want) in cases {
            let mut tf = TwoFactor::new(WINDOW);
            assert!(tf.offer(factor("ana", first, t)).is_empty());
            assert_eq!(tf.deadline(), Some(t + WINDOW));
            let got = kinds(&tf.offer(factor("ana", second, t + after)));
            // Expired: the late factor now waits on its own.
            let waits = want[0].starts_with("missing");
            assert_eq!(got, want, "{first:?} then {second:?} after {after:?}");
            assert_eq!(tf.deadline().is_some(), waits);
        }
    }

    #[test]
    fn the_deadline_reports_a_missing_second_factor_once() {
        let t = Instant::now();
        let mut tf = TwoFactor::new(WINDOW);
        tf.offer(factor("ana", Method::Card, t));
        assert_eq!(tf.expire(t + WINDOW - Duration::from_millis(1)), None);
        let got = tf.expire(t + WINDOW).map(|e| kinds(&[e]));
        assert_eq!(got, Some(vec!["missing:ana:Card".to_string()]));
        assert_eq!(tf.expire(t + WINDOW * 2), None);
        assert_eq!(tf.deadline(), None);
    }

    #[test]
    fn another_users_factor_is_a_mismatch_and_a_new_badge_replaces_the_waiting_one() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let mut tf = TwoFactor::new(WINDOW);
        tf.offer(factor("ana", Method::Card, ms(0)));
        let got = kinds(&tf.offer(factor("bo", Method::Face, ms(500))));
        assert_eq!(got, ["mismatch:ana/bo"]);
        assert_eq!(tf.deadline(), None, "a mismatch ends the attempt");
        // Ana badges, then Bo badges: Ana's card is missing its face; Bo's card waits.
        tf.offer(factor("ana", Method::Card, ms(1000)));
        let got = kinds(&tf.offer(factor("bo", Method::Card, ms(1500))));
        assert_eq!(got, ["missing:ana:Card"]);
        assert_eq!(
            kinds(&tf.offer(factor("bo", Method::Face, ms(2000)))),
            ["both:bo"]
        );
        // The same user badging twice just waits again, from the second badge.
        tf.offer(factor("ana", Method::Card, ms(3000)));
        assert!(tf.offer(factor("ana", Method::Card, ms(4000))).is_empty());
        assert_eq!(tf.deadline(), Some(ms(4000) + WINDOW));
    }

    #[test]
    fn both_carries_the_card_and_the_face() {
        let t = Instant::now();
        let mut tf = TwoFactor::new(WINDOW);
        tf.offer(factor("ana", Method::Face, t));
        let got = tf.offer(factor("ana", Method::Card, t + Duration::from_secs(1)));
        match got.as_slice() {
            [TwoFactorEvent::Both { card, face }] => {
                assert_eq!(card.method, Method::Card);
                assert!(card.card_uid.is_some());
                assert_eq!(face.face_score, Some(0.8));
            }
            other => panic!("{other:?}"),
        }
    }
}
