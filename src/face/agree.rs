//! From frames to a face credential: which face in a frame counts, and how many consecutive
//! frames must agree before it becomes one decision. Pure: frames and their times come in.
//!
//! The rule for several faces: faces smaller than the minimum size are ignored (far away, on a
//! poster across the hall). Of the rest, the largest is the person at the door, unless another
//! face is nearly as large (at least `crowd_ratio` of its size): then nobody can tell who is at
//! the door, the frame is ambiguous, and it decides nothing and breaks the run of agreeing
//! frames. A door must never open for the person standing behind.
//!
//! Agreement: the same verdict (this user, or "nobody we know") for `frames` frames in a row,
//! each within `max_gap` of the one before, makes one decision. Then the verdict is latched: the
//! same person standing there is not decided again until the camera sees them leave (a frame
//! without them, or a gap), just as a card held on the reader is one tap.

use std::time::{Duration, Instant};

use super::Detection;

/// What the matcher made of the face chosen in one frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Accepted as this user, with this score.
    User { id: String, score: f32 },
    /// A face, but not one accepted as anyone's (best score given, if anyone is enrolled).
    /// `ambiguous`: close enough to a user, but as close to another (within the margin).
    Stranger { score: Option<f32>, ambiguous: bool },
}

impl Verdict {
    fn same_as(&self, other: &Verdict) -> bool {
        match (self, other) {
            (Verdict::User { id: a, .. }, Verdict::User { id: b, .. }) => a == b,
            (Verdict::Stranger { .. }, Verdict::Stranger { .. }) => true,
            _ => false,
        }
    }
}

/// Which face of a frame counts, by the rule in the module doc.
#[derive(Debug, Clone, PartialEq)]
pub enum Chosen<'a> {
    NoFace,
    Ambiguous,
    Face(&'a Detection),
}

pub fn choose(faces: &[Detection], min_size: f32, crowd_ratio: f32) -> Chosen<'_> {
    let mut big = faces.iter().filter(|d| d.size() >= min_size);
    let Some(first) = big.next() else {
        return Chosen::NoFace;
    };
    let (largest, rest): (&Detection, Vec<&Detection>) = {
        let mut all: Vec<&Detection> = std::iter::once(first).chain(big).collect();
        all.sort_by(|a, b| b.size().total_cmp(&a.size()));
        let largest = all.remove(0);
        (largest, all)
    };
    if rest
        .iter()
        .any(|d| d.size() >= largest.size() * crowd_ratio)
    {
        return Chosen::Ambiguous;
    }
    Chosen::Face(largest)
}

#[derive(Debug, Clone, Copy)]
pub struct AgreeRules {
    pub frames: u32,
    pub max_gap: Duration,
}

/// Counts agreeing frames.
#[derive(Debug)]
pub struct Agreement {
    rules: AgreeRules,
    run: Option<(Verdict, u32, Instant)>,
    /// The verdict already decided, while it is still in front of the camera.
    latched: Option<(Verdict, Instant)>,
}

impl Agreement {
    pub fn new(rules: AgreeRules) -> Agreement {
        Agreement {
            rules: AgreeRules {
                frames: rules.frames.max(1),
                ..rules
            },
            run: None,
            latched: None,
        }
    }

    /// The last frame given to `frame` was fully processed at `done`.
    pub fn done(&mut self, done: Instant) {
        if let Some((_, _, last)) = &mut self.run {
            *last = (*last).max(done);
        }
        if let Some((_, last)) = &mut self.latched {
            *last = (*last).max(done);
        }
    }

    /// One frame: `None` when it had no usable face (or was ambiguous), taken at `at`.
    /// Returns the verdict when this frame completes a run of agreeing frames. The gap to the
    /// previous frame is counted from when that frame was done (`done`), so a slow frame
    /// (the first after boot, a loaded Pi) does not break a run by itself.
    pub fn frame(&mut self, verdict: Option<Verdict>, at: Instant) -> Option<Verdict> {
        let within = |prev: Instant| at.saturating_duration_since(prev) <= self.rules.max_gap;
        let Some(verdict) = verdict else {
            self.run = None;
            self.latched = None;
            return None;
        };
        if let Some((latched, last)) = &self.latched {
            if latched.same_as(&verdict) && within(*last) {
                self.latched = Some((verdict, at));
                return None;
            }
            self.latched = None;
        }
        let count = match &self.run {
            Some((v, n, last)) if v.same_as(&verdict) && within(*last) => n + 1,
            _ => 1,
        };
        if count >= self.rules.frames {
            self.run = None;
            self.latched = Some((verdict.clone(), at));
            return Some(verdict);
        }
        self.run = Some((verdict, count, at));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(size: f32) -> Detection {
        Detection {
            bbox: [0.0, 0.0, size, size * 1.2],
            landmarks: [[0.0; 2]; 5],
            score: 0.95,
        }
    }

    fn ana() -> Option<Verdict> {
        Some(Verdict::User {
            id: "ana".into(),
            score: 0.7,
        })
    }

    fn stranger() -> Option<Verdict> {
        Some(Verdict::Stranger {
            score: Some(0.1),
            ambiguous: false,
        })
    }

    const RULES: AgreeRules = AgreeRules {
        frames: 3,
        max_gap: Duration::from_millis(500),
    };

    #[test]
    fn the_largest_face_counts_small_ones_are_ignored_and_a_crowd_is_ambiguous() {
        assert_eq!(choose(&[], 40.0, 0.8), Chosen::NoFace);
        assert_eq!(choose(&[det(30.0)], 40.0, 0.8), Chosen::NoFace);
        let faces = [det(50.0), det(120.0), det(30.0)];
        assert_eq!(choose(&faces, 40.0, 0.8), Chosen::Face(&faces[1]));
        let crowd = [det(100.0), det(85.0)];
        assert_eq!(choose(&crowd, 40.0, 0.8), Chosen::Ambiguous);
        // The second face is below the minimum size: it does not make a crowd.
        let far = [det(100.0), det(35.0)];
        assert_eq!(choose(&far, 40.0, 0.3), Chosen::Face(&far[0]));
    }

    #[test]
    fn three_agreeing_frames_make_one_decision_and_the_person_staying_makes_no_more() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let mut a = Agreement::new(RULES);
        assert_eq!(a.frame(ana(), ms(0)), None);
        assert_eq!(a.frame(ana(), ms(100)), None);
        assert_eq!(a.frame(ana(), ms(200)), ana());
        for n in 3..20 {
            assert_eq!(a.frame(ana(), ms(n * 100)), None, "frame {n}");
        }
        // They leave (a frame without a face) and come back: a new decision.
        assert_eq!(a.frame(None, ms(2000)), None);
        assert_eq!(a.frame(ana(), ms(2100)), None);
        assert_eq!(a.frame(ana(), ms(2200)), None);
        assert_eq!(a.frame(ana(), ms(2300)), ana());
    }

    #[test]
    fn a_different_face_or_a_gap_breaks_the_run() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let mut a = Agreement::new(RULES);
        a.frame(ana(), ms(0));
        a.frame(ana(), ms(100));
        assert_eq!(a.frame(stranger(), ms(200)), None);
        assert_eq!(a.frame(ana(), ms(300)), None);
        assert_eq!(a.frame(ana(), ms(400)), None);
        // 600 ms since the last frame: over max_gap, the run starts again.
        assert_eq!(a.frame(ana(), ms(1000)), None);
        assert_eq!(a.frame(ana(), ms(1100)), None);
        assert_eq!(a.frame(ana(), ms(1200)), ana());
        // Latched, but a long gap means they left and came back.
        assert_eq!(a.frame(ana(), ms(5000)), None);
    }

    #[test]
    fn a_slow_frame_does_not_break_the_run_but_an_idle_gap_does() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let mut a = Agreement::new(RULES);
        // Frame 1 takes 1.5 s to process (over max_gap); the next is taken 100 ms after.
        assert_eq!(a.frame(ana(), ms(0)), None);
        a.done(ms(1500));
        assert_eq!(a.frame(ana(), ms(1600)), None);
        a.done(ms(1650));
        assert_eq!(a.frame(ana(), ms(1700)), ana());
        a.done(ms(1750));
        // Latched while they stay: no second decision.
        assert_eq!(a.frame(ana(), ms(1800)), None);
        a.done(ms(1850));
        // Nothing for 600 ms after the last frame was done: they left; back, a new decision.
        assert_eq!(a.frame(ana(), ms(2450)), None);
        a.done(ms(2460));
        assert_eq!(a.frame(ana(), ms(2500)), None);
        a.done(ms(2510));
        assert_eq!(a.frame(ana(), ms(2550)), ana());
    }

    #[test]
    fn strangers_are_decided_once_too() {
        let t = Instant::now();
        let mut a = Agreement::new(AgreeRules { frames: 2, ..RULES });
        assert_eq!(a.frame(stranger(), t), None);
        let got = a.frame(stranger(), t + Duration::from_millis(50));
        assert!(matches!(got, Some(Verdict::Stranger { .. })));
        assert_eq!(a.frame(stranger(), t + Duration::from_millis(100)), None);
    }

    #[test]
    fn one_frame_is_enough_when_configured_so() {
        let mut a = Agreement::new(AgreeRules { frames: 0, ..RULES });
        assert_eq!(a.frame(ana(), Instant::now()), ana());
    }
}
