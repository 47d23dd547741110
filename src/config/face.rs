//! `[camera]` and `[face]`: where frames come from, and how a face becomes a credential.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{invalid, not_empty, ConfigError};

/// `[camera]`: the camera for face recognition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// `none` (card only), `v4l2` (a V4L2 device, e.g. a USB camera), `gstreamer` (a GStreamer
    /// pipeline, e.g. libcamera on Raspberry Pi OS) or `sim` (frames from image files).
    /// Default `none`.
    #[serde(default)]
    pub backend: CameraBackend,
    /// The V4L2 device for `v4l2`. Default `/dev/video0`.
    #[serde(default = "default_device")]
    pub device: PathBuf,
    /// The pipeline for `gstreamer`, ending in `appsink`. Required with `gstreamer`.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Most frames looked at per second, 1 to 60. Default 10.
    #[serde(default = "default_max_fps")]
    pub max_fps: u32,
    /// Failed or empty frames in a row before the camera is closed and opened again, 1 to 100.
    /// Default 5.
    #[serde(default = "default_reopen_after")]
    pub reopen_after: u32,
}

fn default_device() -> PathBuf {
    PathBuf::from("/dev/video0")
}

fn default_max_fps() -> u32 {
    10
}

fn default_reopen_after() -> u32 {
    5
}

impl Default for CameraConfig {
    fn default() -> Self {
        CameraConfig {
            backend: CameraBackend::None,
            device: default_device(),
            pipeline: None,
            max_fps: default_max_fps(),
            reopen_after: default_reopen_after(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraBackend {
    #[default]
    None,
    V4l2,
    Gstreamer,
    Sim,
}

/// `[face]`: recognising the person at the door.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaceConfig {
    /// Where the YuNet and SFace model files are (checked against their SHA-256 at load).
    /// Default `/usr/share/acceso/models`.
    #[serde(default = "default_models_dir")]
    pub models_dir: PathBuf,
    /// Least cosine similarity between a face and a user's enrolled face to count as that
    /// user, 0.2 to 0.95. Default 0.45 (see BENCHMARKS.md for the measured error rates).
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// How much closer the face must be to the best user than to anyone else, 0 to 0.5.
    /// Default 0.05.
    #[serde(default = "default_margin")]
    pub margin: f32,
    /// Consecutive frames that must agree on the same person before a decision, 1 to 30.
    /// Default 3.
    #[serde(default = "default_frames")]
    pub frames: u32,
    /// Longest pause between two frames of one run, in milliseconds, 50 to 10000; a longer
    /// one starts the count again (and means a latched person has left). Default 1000.
    #[serde(default = "default_max_gap_ms")]
    pub max_gap_ms: u64,
    /// Faces whose box is smaller than this many pixels (shorter side) are ignored, 20 to
    /// 1000. Default 60.
    #[serde(default = "default_min_face_px")]
    pub min_face_px: u32,
    /// A second face at least this fraction of the largest face's size makes the frame
    /// ambiguous (no decision), 0.1 to 1. Default 0.7.
    #[serde(default = "default_crowd_ratio")]
    pub crowd_ratio: f32,
    /// Least detector confidence for a face, 0.5 to 0.99. Default 0.9.
    #[serde(default = "default_detect_score")]
    pub detect_score: f32,
    /// Frames are scaled to fit this many pixels on their longer side before detection,
    /// 160 to 1920 (a multiple of 32). Default 640.
    #[serde(default = "default_working_size")]
    pub working_size: u32,
    /// Threads OpenCV may use for one frame, 0 to 16; 0 = every core but one, so cards and
    /// the door never wait for a face. Default 0.
    #[serde(default)]
    pub threads: u32,
}

fn default_models_dir() -> PathBuf {
    PathBuf::from("/usr/share/acceso/models")
}
fn default_threshold() -> f32 {
    crate::face::DEFAULT_THRESHOLD
}
fn default_margin() -> f32 {
    0.05
}
fn default_frames() -> u32 {
    3
}
fn default_max_gap_ms() -> u64 {
    1000
}
fn default_min_face_px() -> u32 {
    60
}
fn default_crowd_ratio() -> f32 {
    0.7
}
fn default_detect_score() -> f32 {
    0.9
}
fn default_working_size() -> u32 {
    640
}

impl Default for FaceConfig {
    fn default() -> Self {
        FaceConfig {
            models_dir: default_models_dir(),
            threshold: default_threshold(),
            margin: default_margin(),
            frames: default_frames(),
            max_gap_ms: default_max_gap_ms(),
            min_face_px: default_min_face_px(),
            crowd_ratio: default_crowd_ratio(),
            detect_score: default_detect_score(),
            working_size: default_working_size(),
            threads: 0,
        }
    }
}

fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &'static str,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), ConfigError> {
    if v >= lo && v <= hi {
        Ok(())
    } else {
        Err(invalid(key, format!("{v} is outside {lo}..={hi}")))
    }
}

impl CameraConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        in_range("camera.max_fps", self.max_fps, 1, 60)?;
        in_range("camera.reopen_after", self.reopen_after, 1, 100)?;
        not_empty("camera.device", &self.device)?;
        if self.backend == CameraBackend::Gstreamer
            && self.pipeline.as_deref().is_none_or(|p| p.trim().is_empty())
        {
            return Err(invalid(
                "camera.pipeline",
                "is required with camera.backend = \"gstreamer\"",
            ));
        }
        Ok(())
    }
}

impl FaceConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        not_empty("face.models_dir", &self.models_dir)?;
        in_range("face.threshold", self.threshold, 0.2, 0.95)?;
        in_range("face.margin", self.margin, 0.0, 0.5)?;
        in_range("face.frames", self.frames, 1, 30)?;
        in_range("face.max_gap_ms", self.max_gap_ms, 50, 10_000)?;
        in_range("face.min_face_px", self.min_face_px, 20, 1000)?;
        in_range("face.crowd_ratio", self.crowd_ratio, 0.1, 1.0)?;
        in_range("face.detect_score", self.detect_score, 0.5, 0.99)?;
        in_range("face.working_size", self.working_size, 160, 1920)?;
        in_range("face.threads", self.threads, 0, 16)?;
        if !self.working_size.is_multiple_of(32) {
            return Err(invalid(
                "face.working_size",
                format!("{} is not a multiple of 32", self.working_size),
            ));
        }
        Ok(())
    }
}
