//! The door inputs thread: polls the door contact and exit button lines, debounces them, and
//! sends what they mean (door opened or closed, exit button pressed) to the door task.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hw::DoorInputs;
use crate::observe::{Component, HealthState, Reporter};

/// A debounced change on a door input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputEvent {
    Door { open: bool },
    ExitPressed,
}

/// One line: a new level counts once it has held for `settle`.
#[derive(Debug)]
pub struct Debounce {
    settle: Duration,
    stable: Option<bool>,
    candidate: Option<(bool, Instant)>,
}

impl Debounce {
    pub fn new(settle: Duration) -> Debounce {
        Debounce {
            settle,
            stable: None,
            candidate: None,
        }
    }

    /// The raw level at `now`; returns the new stable level when it changes (and the first
    /// stable level after start).
    pub fn feed(&mut self, level: bool, now: Instant) -> Option<bool> {
        if self.stable == Some(level) {
            self.candidate = None;
            return None;
        }
        match self.candidate {
            Some((l, since)) if l == level => {
                if now.duration_since(since) >= self.settle {
                    self.stable = Some(level);
                    self.candidate = None;
                    return Some(level);
                }
            }
            _ => self.candidate = Some((level, now)),
        }
        None
    }
}

/// What the lines' levels mean.
#[derive(Debug, Clone, Copy)]
pub struct InputMeaning {
    /// The door contact's level when the door is open.
    pub door_open_high: bool,
    /// The exit button's level while pressed.
    pub exit_pressed_high: bool,
}

pub fn spawn_inputs(
    mut inputs: Box<dyn DoorInputs>,
    meaning: InputMeaning,
    settle: Duration,
    out: mpsc::Sender<InputEvent>,
    reporter: Reporter,
    cancel: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    const EVERY: Duration = Duration::from_millis(5);
    std::thread::Builder::new()
        .name("door-inputs".into())
        .spawn(move || {
            let mut contact = Debounce::new(settle);
            let mut exit = Debounce::new(settle);
            let mut failing = false;
            let mut started = false;
            while !cancel.is_cancelled() {
                match inputs.read() {
                    Ok(levels) => {
                        if std::mem::take(&mut failing) {
                            reporter.health(
                                Component::Inputs,
                                HealthState::Ok,
                                "door inputs read again",
                            );
                        }
                        let now = Instant::now();
                        let mut events = Vec::new();
                        if let Some(level) = levels.door_contact.and_then(|l| contact.feed(l, now))
                        {
                            events.push(InputEvent::Door {
                                open: level == meaning.door_open_high,
                            });
                        }
                        if let Some(level) = levels.exit_button.and_then(|l| exit.feed(l, now)) {
                            // A button held down through start is not a press.
                            if level == meaning.exit_pressed_high && started {
                                events.push(InputEvent::ExitPressed);
                            }
                        }
                        started = true;
                        for e in events {
                            if out.blocking_send(e).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        if !std::mem::replace(&mut failing, true) {
                            reporter.health(Component::Inputs, HealthState::Failed, e.to_string());
                        }
                    }
                }
                std::thread::sleep(EVERY);
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_counts_once_it_has_held_for_the_settle_time() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Debounce::new(Duration::from_millis(30));
        assert_eq!(d.feed(false, ms(0)), None);
        assert_eq!(d.feed(false, ms(30)), Some(false));
        // Bounce: high for 10 ms, low again: nothing.
        assert_eq!(d.feed(true, ms(100)), None);
        assert_eq!(d.feed(true, ms(110)), None);
        assert_eq!(d.feed(false, ms(115)), None);
        assert_eq!(d.feed(true, ms(120)), None);
        assert_eq!(d.feed(true, ms(149)), None);
        assert_eq!(d.feed(true, ms(150)), Some(true));
        assert_eq!(d.feed(true, ms(500)), None);
    }
}
