//! Simulated hardware: a relay that records every level change, a camera that shows image
//! files. (The card reader is simulated at register level: `super::mfrc522`.) Used by `acceso sim`, `acceso demo` and the tests.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::hw::{DoorInputs, FrameSource, HwError, InputLevels, Relay};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these simple locks leaves the data valid.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every level the relay was driven to, with the monotonic time it happened.
#[derive(Clone, Default)]
pub struct RelayRecorder(Arc<Mutex<Vec<(Instant, bool)>>>);

impl RelayRecorder {
    pub fn relay(&self) -> SimRelay {
        SimRelay(self.clone())
    }

    /// All level changes so far (`true` = high; writes of the level the line already had are
    /// not changes).
    pub fn changes(&self) -> Vec<(Instant, bool)> {
        let mut out: Vec<(Instant, bool)> = Vec::new();
        for &(t, level) in lock(&self.0).iter() {
            if out.last().map(|&(_, l)| l) != Some(level) {
                out.push((t, level));
            }
        }
        out
    }

    /// The level now, if the line was ever driven.
    pub fn level(&self) -> Option<bool> {
        lock(&self.0).last().map(|&(_, l)| l)
    }

    /// The intervals the line was at `level`, the last one open-ended if it still is.
    pub fn intervals_at(&self, level: bool) -> Vec<(Instant, Option<Instant>)> {
        let mut out = Vec::new();
        let mut since = None;
        for (t, l) in self.changes() {
            match (l == level, since) {
                (true, None) => since = Some(t),
                (false, Some(s)) => {
                    out.push((s, Some(t)));
                    since = None;
                }
                _ => {}
            }
        }
        if let Some(s) = since {
            out.push((s, None));
        }
        out
    }
}

pub struct SimRelay(RelayRecorder);

impl Relay for SimRelay {
    fn set(&mut self, high: bool) -> Result<(), HwError> {
        lock(&(self.0).0).push((Instant::now(), high));
        Ok(())
    }
}

/// The door contact and exit button lines, set by tests and scenarios (raw levels).
#[derive(Clone, Default)]
pub struct SimInputs(Arc<Mutex<InputLevels>>);

impl SimInputs {
    /// Both lines wired, at the given levels.
    pub fn wired(door_contact: bool, exit_button: bool) -> SimInputs {
        SimInputs(Arc::new(Mutex::new(InputLevels {
            door_contact: Some(door_contact),
            exit_button: Some(exit_button),
        })))
    }

    pub fn set_door_contact(&self, high: bool) {
        lock(&self.0).door_contact = Some(high);
    }

    pub fn set_exit_button(&self, high: bool) {
        lock(&self.0).exit_button = Some(high);
    }
}

impl DoorInputs for SimInputs {
    fn read(&mut self) -> Result<InputLevels, HwError> {
        Ok(*lock(&self.0))
    }
}

/// A camera that shows queued image files, one frame each, and an empty scene in between
/// when asked (the person walked away). With nothing queued it has no new frame.
#[derive(Clone, Default)]
pub struct FileCamera(Arc<Mutex<CameraQueue>>);

#[derive(Default)]
struct CameraQueue {
    /// `None`: an empty scene.
    shots: VecDeque<Option<PathBuf>>,
    /// Times the camera was asked for a frame and had none: once this grows after the queue
    /// emptied, the consumer has finished with the last frame.
    idle_polls: u64,
}

impl FileCamera {
    /// Queues `frames` frames of the photo at `path`; returns the idle count at that moment
    /// (see `progress`).
    pub fn show(&self, path: PathBuf, frames: usize) -> u64 {
        let mut q = lock(&self.0);
        for _ in 0..frames {
            q.shots.push_back(Some(path.clone()));
        }
        q.idle_polls
    }

    /// One frame of an empty scene: nobody in front of the camera.
    pub fn show_nobody(&self) {
        lock(&self.0).shots.push_back(None);
    }

    /// Frames still queued, and how often the camera has been found idle so far.
    pub fn progress(&self) -> (usize, u64) {
        let q = lock(&self.0);
        (q.shots.len(), q.idle_polls)
    }
}

impl FrameSource for FileCamera {
    fn next_frame(&mut self) -> Result<Option<crate::hw::Frame>, HwError> {
        let shot = {
            let mut q = lock(&self.0);
            match q.shots.pop_front() {
                Some(shot) => shot,
                None => {
                    q.idle_polls += 1;
                    return Ok(None);
                }
            }
        };
        let Some(path) = shot else {
            return Ok(Some(crate::hw::Frame::Bgr {
                width: 320,
                height: 240,
                data: vec![96; 320 * 240 * 3],
            }));
        };
        let bytes = std::fs::read(&path)
            .map_err(|e| HwError::Camera(format!("cannot read frame {}: {e}", path.display())))?;
        Ok(Some(crate::hw::Frame::Encoded {
            name: path.display().to_string(),
            bytes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_keeps_changes_and_intervals() {
        let rec = RelayRecorder::default();
        let mut r = rec.relay();
        assert_eq!(rec.level(), None);
        r.set(false).unwrap();
        r.set(true).unwrap();
        r.set(true).unwrap();
        r.set(false).unwrap();
        r.set(true).unwrap();
        assert_eq!(
            rec.changes().iter().map(|c| c.1).collect::<Vec<_>>(),
            vec![false, true, false, true]
        );
        let iv = rec.intervals_at(true);
        assert_eq!(iv.len(), 2);
        assert!(iv[0].1.is_some() && iv[1].1.is_none());
        assert_eq!(rec.intervals_at(false).len(), 2);
        assert_eq!(rec.level(), Some(true));
    }

    #[test]
    fn camera_shows_each_queued_frame_once_and_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.jpg");
        std::fs::write(&img, b"jpeg").unwrap();
        let mut cam = FileCamera::default();
        cam.show(img, 2);
        cam.show(dir.path().join("missing.jpg"), 1);
        assert!(cam.next_frame().unwrap().is_some());
        assert!(cam.next_frame().unwrap().is_some());
        let err = cam.next_frame().unwrap_err().to_string();
        assert!(err.contains("missing.jpg"), "{err}");
        assert_eq!(cam.progress(), (0, 0));
        assert_eq!(cam.next_frame().unwrap(), None);
        assert_eq!(cam.progress(), (0, 1), "an idle poll is counted");
        cam.show_nobody();
        assert!(matches!(
            cam.next_frame().unwrap(),
            Some(crate::hw::Frame::Bgr { width: 320, .. })
        ));
    }
}
