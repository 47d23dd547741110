//! The camera thread: frames in, face credentials out to the control task.
//!
//! Per frame: detect, pick the face that counts (`agree::choose`), embed only that one, match
//! it against the current user index, and let `agree::Agreement` turn a run of agreeing frames
//! into one `FaceSeen`. OpenCV is slow and blocking, so all of it runs on its own thread,
//! never on the async reactor. A failing camera is reported and reopened by its backend; the
//! door keeps working on cards meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::agree::{choose, AgreeRules, Agreement, Chosen, Verdict};
use super::{Detection, FaceError};
use crate::access::UserIndex;
use crate::config::FaceConfig;
use crate::hw::{Frame, FrameSource};
use crate::observe::{Component, HealthState, Reporter};

/// Finds faces and embeds them: the OpenCV engine at the door, the same engine in `acceso sim`.
pub trait Recognizer: Send + 'static {
    /// The faces in `frame`. The recogniser keeps the decoded frame for `embed`.
    fn detect(&mut self, frame: &Frame) -> Result<Vec<Detection>, FaceError>;
    /// The unit-length embedding of `face`, one of those `detect` found in the last frame.
    fn embed(&mut self, face: &Detection) -> Result<Vec<f32>, FaceError>;
}

/// A face decision waiting to be made: who the camera agreed on, when the frame that completed
/// the agreement was taken (so `latency_us` includes detecting and embedding it), and how
/// close the match was.
#[derive(Debug)]
pub struct FaceSeen {
    /// `None`: a face accepted as nobody's. The decision looks the user up as they are then.
    pub user_id: Option<String>,
    /// Not accepted because it is as close to another user as to the closest one.
    pub ambiguous: bool,
    pub score: Option<f32>,
    pub at: Instant,
}

/// Settings of the camera thread.
#[derive(Debug, Clone)]
pub struct FaceLoop {
    pub threshold: f32,
    pub margin: f32,
    pub min_size: f32,
    pub crowd_ratio: f32,
    pub agree: AgreeRules,
    /// Shortest time between two frames (the frame-rate cap).
    pub frame_every: Duration,
    /// How long to wait when the camera had no frame or failed.
    pub idle: Duration,
}

impl FaceLoop {
    pub fn new(face: &FaceConfig, max_fps: u32) -> FaceLoop {
        FaceLoop {
            threshold: face.threshold,
            margin: face.margin,
            min_size: face.min_face_px as f32,
            crowd_ratio: face.crowd_ratio,
            agree: AgreeRules {
                frames: face.frames,
                max_gap: Duration::from_millis(face.max_gap_ms),
            },
            frame_every: Duration::from_secs(1) / max_fps.max(1),
            idle: Duration::from_millis(20),
        }
    }

    /// Starts the camera thread. It loads the recogniser itself (`load`: seconds on a Pi), so
    /// the door decides cards while the models load; if they cannot be loaded it reports
    /// why, with `unavailable` (what the door still does), and ends.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        self,
        camera: Box<dyn FrameSource>,
        load: Box<dyn FnOnce() -> Result<Box<dyn Recognizer>, FaceError> + Send>,
        unavailable: &'static str,
        index: watch::Receiver<Arc<UserIndex>>,
        out: mpsc::Sender<FaceSeen>,
        reporter: Reporter,
        cancel: CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("camera".into())
            .spawn(move || match load() {
                Ok(recognizer) => {
                    reporter.health(Component::Face, HealthState::Ok, "models loaded");
                    self.run(camera, recognizer, index, out, reporter, cancel)
                }
                Err(e) => reporter.health(
                    Component::Face,
                    HealthState::Failed,
                    format!("{e}; {unavailable}"),
                ),
            })
    }

    fn run(
        self,
        mut camera: Box<dyn FrameSource>,
        mut recognizer: Box<dyn Recognizer>,
        index: watch::Receiver<Arc<UserIndex>>,
        out: mpsc::Sender<FaceSeen>,
        reporter: Reporter,
        cancel: CancellationToken,
    ) {
        let mut agreement = Agreement::new(self.agree);
        // Reported as loaded: the first frame's verdict only reports a change.
        let mut pipeline_ok: Option<bool> = Some(true);
        let mut camera_ok: Option<bool> = None;
        let mut failures: u32 = 0;
        let mut last_frame: Option<Instant> = None;
        let health = |component, ok: &mut Option<bool>, now_ok: bool, detail: String| {
            if *ok != Some(now_ok) {
                *ok = Some(now_ok);
                let state = if now_ok {
                    HealthState::Ok
                } else {
                    HealthState::Degraded
                };
                reporter.health(component, state, detail);
            }
        };
        while !cancel.is_cancelled() {
            if let Some(at) = last_frame {
                let next = at + self.frame_every;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
            }
            let frame = match camera.next_frame() {
                Ok(Some(frame)) => {
                    failures = 0;
                    health(Component::Camera, &mut camera_ok, true, "frames".into());
                    frame
                }
                Ok(None) => {
                    std::thread::sleep(self.idle);
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    health(
                        Component::Camera,
                        &mut camera_ok,
                        false,
                        format!("{e}; faces are not recognised meanwhile"),
                    );
                    // Back off up to a second: a dead camera must not spin a core.
                    std::thread::sleep((self.idle * failures.min(50)).min(Duration::from_secs(1)));
                    continue;
                }
            };
            let taken = Instant::now();
            last_frame = Some(taken);
            let verdict = match self.look(recognizer.as_mut(), &frame, &index.borrow().clone()) {
                Ok(v) => {
                    health(
                        Component::Face,
                        &mut pipeline_ok,
                        true,
                        "recognising".into(),
                    );
                    v
                }
                Err(e) => {
                    health(Component::Face, &mut pipeline_ok, false, e.to_string());
                    None
                }
            };
            let decided = agreement.frame(verdict, taken);
            agreement.done(Instant::now());
            let Some(decided) = decided else { continue };
            let (user_id, score, ambiguous) = match decided {
                Verdict::User { id, score } => (Some(id), Some(score), false),
                Verdict::Stranger { score, ambiguous } => (None, score, ambiguous),
            };
            let seen = FaceSeen {
                user_id,
                ambiguous,
                score,
                at: taken,
            };
            if out.blocking_send(seen).is_err() {
                return; // the control task has stopped
            }
        }
    }

    /// One frame's verdict; `None` when no face counts.
    fn look(
        &self,
        recognizer: &mut dyn Recognizer,
        frame: &Frame,
        index: &UserIndex,
    ) -> Result<Option<Verdict>, FaceError> {
        let faces = recognizer.detect(frame)?;
        let face = match choose(&faces, self.min_size, self.crowd_ratio) {
            Chosen::NoFace | Chosen::Ambiguous => return Ok(None),
            Chosen::Face(face) => face,
        };
        let probe = recognizer.embed(face)?;
        Ok(Some(match index.faces().best(&probe) {
            Some(m) if m.accepted(self.threshold, self.margin) => Verdict::User {
                id: m.user.id.clone(),
                score: m.score,
            },
            Some(m) => Verdict::Stranger {
                score: Some(m.score),
                ambiguous: m.score >= self.threshold,
            },
            None => Verdict::Stranger {
                score: None,
                ambiguous: false,
            },
        }))
    }
}
