//! The reader thread: polls a card reader, turns cards entering the field into presentations,
//! and keeps the reader healthy (report, back off, let it re-initialise).

use std::time::{Duration, Instant};

use acceso_protocol::CardUid;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hw::{CardReader, Seen};
use crate::observe::{Component, HealthState, Reporter};
use crate::service::Heartbeat;

/// A card seen entering the field, with the monotonic time it was read.
#[derive(Debug)]
pub struct Presentation {
    pub uid: CardUid,
    pub at: Instant,
}

/// Empty polls in a row after which a card counts as gone. One empty poll can be a card at
/// the edge of the field; a person taking the card away empties many.
const GONE_AFTER_EMPTY_POLLS: u32 = 2;

/// One presentation per card in the field: a card held still is not a new tap. It re-arms
/// when it leaves, or after `rearm` if set (a card left on the reader then opens again).
#[derive(Debug)]
pub struct Presence {
    rearm: Option<Duration>,
    current: Option<(CardUid, Instant)>,
    empty_polls: u32,
}

impl Presence {
    pub fn new(rearm: Option<Duration>) -> Presence {
        Presence {
            rearm,
            current: None,
            empty_polls: 0,
        }
    }

    /// What one poll saw at `now`; returns the UID if this is a new presentation.
    pub fn observe(&mut self, seen: &Seen, now: Instant) -> Option<CardUid> {
        match seen {
            Seen::Card(uid) => {
                self.empty_polls = 0;
                match &mut self.current {
                    Some((held, since)) if held == uid => {
                        let due = self.rearm.is_some_and(|r| now.duration_since(*since) >= r);
                        if due {
                            *since = now;
                        }
                        due.then(|| uid.clone())
                    }
                    _ => {
                        self.current = Some((uid.clone(), now));
                        Some(uid.clone())
                    }
                }
            }
            Seen::Empty => {
                self.empty_polls += 1;
                if self.empty_polls >= GONE_AFTER_EMPTY_POLLS {
                    self.current = None;
                }
                None
            }
            // A failed read says nothing about who is in the field.
            Seen::Unreadable(_) => None,
        }
    }
}

/// Settings of the reader thread.
#[derive(Debug, Clone)]
pub struct ReaderLoop {
    pub every: Duration,
    pub rearm: Option<Duration>,
    /// Longest wait between attempts while the reader is failing.
    pub max_backoff: Duration,
}

impl ReaderLoop {
    pub fn spawn(
        self,
        reader: Box<dyn CardReader>,
        out: mpsc::Sender<Presentation>,
        reporter: Reporter,
        cancel: CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        self.spawn_with(reader, out, reporter, cancel, Heartbeat::unwatched())
    }

    /// Like `spawn`, beating `heartbeat` on every round and while it waits, so a poll that
    /// never returns stops the watchdog's pings.
    pub fn spawn_with(
        self,
        mut reader: Box<dyn CardReader>,
        out: mpsc::Sender<Presentation>,
        reporter: Reporter,
        cancel: CancellationToken,
        heartbeat: Heartbeat,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("reader".into())
            .spawn(move || {
                let mut presence = Presence::new(self.rearm);
                let mut backoff: Option<Duration> = None;
                let mut last_unreadable: Option<String> = None;
                while !cancel.is_cancelled() {
                    heartbeat.beat();
                    match reader.poll() {
                        Ok(seen) => {
                            if backoff.take().is_some() {
                                reporter.health(
                                    Component::Reader,
                                    HealthState::Ok,
                                    "reader answers again",
                                );
                            }
                            if let Seen::Unreadable(why) = &seen {
                                // Cards at the edge of the field misread now and then: log, retry.
                                if last_unreadable.as_deref() != Some(why) {
                                    tracing::debug!("card read failed: {why}");
                                }
                                last_unreadable = Some(why.clone());
                            }
                            if let Some(uid) = presence.observe(&seen, Instant::now()) {
                                let p = Presentation {
                                    uid,
                                    at: Instant::now(),
                                };
                                if out.blocking_send(p).is_err() {
                                    return;
                                }
                            }
                            sleep_unless_cancelled(self.every, &cancel, &heartbeat);
                        }
                        Err(e) => {
                            let wait = match backoff {
                                None => {
                                    reporter.health(
                                        Component::Reader,
                                        HealthState::Failed,
                                        e.to_string(),
                                    );
                                    self.every
                                }
                                Some(b) => (b * 2).min(self.max_backoff),
                            };
                            backoff = Some(wait);
                            sleep_unless_cancelled(wait, &cancel, &heartbeat);
                        }
                    }
                }
            })
    }
}

/// Sleeps `total`, waking early when cancelled, so stopping never waits on a long backoff.
fn sleep_unless_cancelled(total: Duration, cancel: &CancellationToken, heartbeat: &Heartbeat) {
    let until = Instant::now() + total;
    while !cancel.is_cancelled() {
        heartbeat.beat();
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(s: &str) -> Seen {
        Seen::Card(s.parse().unwrap())
    }

    #[test]
    fn a_card_held_still_is_one_presentation() {
        let t0 = Instant::now();
        let mut p = Presence::new(None);
        assert!(p.observe(&card("DEADBEEF"), t0).is_some());
        for i in 1..100 {
            let t = t0 + Duration::from_millis(20 * i);
            assert_eq!(p.observe(&card("DEADBEEF"), t), None);
        }
    }

    #[test]
    fn a_card_re_arms_after_leaving_but_not_after_one_empty_poll() {
        let t = Instant::now();
        let mut p = Presence::new(None);
        assert!(p.observe(&card("DEADBEEF"), t).is_some());
        assert_eq!(p.observe(&Seen::Empty, t), None);
        assert_eq!(
            p.observe(&card("DEADBEEF"), t),
            None,
            "one empty poll is not leaving"
        );
        assert_eq!(p.observe(&Seen::Empty, t), None);
        assert_eq!(p.observe(&Seen::Empty, t), None);
        assert!(
            p.observe(&card("DEADBEEF"), t).is_some(),
            "left and came back"
        );
    }

    #[test]
    fn unreadable_polls_change_nothing() {
        let t = Instant::now();
        let mut p = Presence::new(None);
        assert!(p.observe(&card("DEADBEEF"), t).is_some());
        for _ in 0..5 {
            assert_eq!(p.observe(&Seen::Unreadable("crc".into()), t), None);
        }
        assert_eq!(p.observe(&card("DEADBEEF"), t), None);
    }

    #[test]
    fn another_card_is_a_new_presentation_at_once() {
        let t = Instant::now();
        let mut p = Presence::new(None);
        p.observe(&card("DEADBEEF"), t);
        assert_eq!(
            p.observe(&card("01020304"), t)
                .map(|u| u.to_string())
                .as_deref(),
            Some("01020304")
        );
    }

    #[test]
    fn a_card_left_on_the_reader_re_arms_after_the_configured_time() {
        let t0 = Instant::now();
        let mut p = Presence::new(Some(Duration::from_secs(5)));
        assert!(p.observe(&card("DEADBEEF"), t0).is_some());
        assert_eq!(
            p.observe(&card("DEADBEEF"), t0 + Duration::from_millis(4999)),
            None
        );
        assert!(p
            .observe(&card("DEADBEEF"), t0 + Duration::from_secs(5))
            .is_some());
        assert_eq!(
            p.observe(&card("DEADBEEF"), t0 + Duration::from_secs(6)),
            None
        );
    }
}
