//! Simulated hardware: a relay that records every level change, a camera that shows image
//! files. (The card reader is simulated at register level: `super::mfrc522`.) Used by `acceso sim`, `acceso demo` and the tests.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::hw::{FrameSource, HwError, Relay};

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

    /// All level changes so far (writes of the level the line already had are not changes).
    pub fn changes(&self) -> Vec<(Instant, bool)> {
        let mut out: Vec<(Instant, bool)> = Vec::new();
        for &(t, level) in lock(&self.0).iter() {
            if out.last().map(|&(_, l)| l) != Some(level) {
                out.push((t, level));
            }
        }
        out
    }

    /// The level now (`false` before the first write: a relay powers up released).
    pub fn energised(&self) -> bool {
        lock(&self.0).last().is_some_and(|&(_, l)| l)
    }

    /// The intervals the relay was energised, the last one open-ended if it still is.
    pub fn energised_intervals(&self) -> Vec<(Instant, Option<Instant>)> {
        let mut out = Vec::new();
        let mut since = None;
        for (t, level) in self.changes() {
            match (level, since) {
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
    fn set(&mut self, energised: bool) -> Result<(), HwError> {
        lock(&(self.0).0).push((Instant::now(), energised));
        Ok(())
    }
}

/// A camera that shows queued image files, one frame each.
#[derive(Clone, Default)]
pub struct FileCamera(Arc<Mutex<VecDeque<PathBuf>>>);

impl FileCamera {
    pub fn show(&self, path: PathBuf, frames: usize) {
        let mut q = lock(&self.0);
        for _ in 0..frames {
            q.push_back(path.clone());
        }
    }
}

impl FrameSource for FileCamera {
    fn next_frame(&mut self) -> Result<Option<crate::hw::Frame>, HwError> {
        let Some(path) = lock(&self.0).pop_front() else {
            return Ok(None);
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
        assert!(!rec.energised());
        r.set(false).unwrap();
        r.set(true).unwrap();
        r.set(true).unwrap();
        r.set(false).unwrap();
        r.set(true).unwrap();
        assert_eq!(
            rec.changes().iter().map(|c| c.1).collect::<Vec<_>>(),
            vec![false, true, false, true]
        );
        let iv = rec.energised_intervals();
        assert_eq!(iv.len(), 2);
        assert!(iv[0].1.is_some() && iv[1].1.is_none());
        assert!(rec.energised());
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
        assert_eq!(cam.next_frame().unwrap(), None);
    }
}
