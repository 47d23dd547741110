//! The engine as the agent uses it: the camera thread's `Recognizer`, the configured camera,
//! and enrolment from photos.

use std::path::PathBuf;
use std::time::Duration;

use acceso_protocol::FaceEmbedding;

use super::camera::{CameraOptions, CameraSource, OpenCvCamera};
use super::{EngineOptions, FaceEngine, Image};
use crate::config::{CameraBackend, CameraConfig, FaceConfig};
use crate::face::pipeline::Recognizer;
use crate::face::{Detection, FaceError, MODEL_ID};
use crate::hw::{Frame, FrameSource};

/// The engine and the frame it last decoded (what `embed` works on).
struct Recognising {
    engine: FaceEngine,
    last: Option<Image>,
}

impl Recognizer for Recognising {
    fn detect(&mut self, frame: &Frame) -> Result<Vec<Detection>, FaceError> {
        self.last = None;
        let img = self.engine.decode(frame)?;
        let faces = self.engine.detect(&img)?;
        self.last = Some(img);
        Ok(faces)
    }

    fn embed(&mut self, face: &Detection) -> Result<Vec<f32>, FaceError> {
        let img = self
            .last
            .as_ref()
            .ok_or_else(|| FaceError::Pipeline("embed before detect".into()))?;
        self.engine.embed(img, face)
    }
}

pub fn engine(face: &FaceConfig) -> Result<FaceEngine, FaceError> {
    // OpenCV's dnn spreads a frame over every core. At the door the reader, the door loop and
    // the MQTT link must never wait for a face: leave them a core.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = match face.threads {
        0 => cores.saturating_sub(1).max(1),
        n => n as usize,
    };
    super::cv(
        opencv::core::set_num_threads(threads as i32),
        "setting OpenCV's thread count",
    )?;
    FaceEngine::load(
        &face.models_dir,
        EngineOptions {
            working_size: face.working_size,
            score_threshold: face.detect_score,
            ..EngineOptions::default()
        },
    )
}

pub fn recognizer(face: &FaceConfig) -> Result<Box<dyn Recognizer>, FaceError> {
    Ok(Box::new(Recognising {
        engine: engine(face)?,
        last: None,
    }))
}

pub fn open_camera(config: &CameraConfig) -> Box<dyn FrameSource> {
    let source = match config.backend {
        CameraBackend::Gstreamer => {
            CameraSource::Pipeline(config.pipeline.clone().unwrap_or_default())
        }
        _ => CameraSource::Device(config.device.display().to_string()),
    };
    Box::new(OpenCvCamera::opening(
        source,
        CameraOptions {
            // The camera thread caps the frame rate (`camera.max_fps`) for every source.
            min_interval: Duration::ZERO,
            max_failures: config.reopen_after,
        },
    ))
}

/// One embedding per photo, each photo showing exactly one face, with an engine loaded from
/// the config.
pub fn enroll_photos(
    face: &FaceConfig,
    photos: &[PathBuf],
) -> Result<Vec<FaceEmbedding>, FaceError> {
    enrolment(&mut engine(face)?, photos)
}

/// One embedding per photo, each photo showing exactly one face (with two, which one is the
/// user is a guess, and a wrong guess lets someone else in). A tight crop (an ID photo, the
/// face filling the picture) gets a border of half its size when no face is found as is: the
/// detector needs some context around a face. Problems with a photo are `FaceError::Image`.
pub fn enrolment(
    engine: &mut FaceEngine,
    photos: &[PathBuf],
) -> Result<Vec<FaceEmbedding>, FaceError> {
    let mut out = Vec::with_capacity(photos.len());
    for path in photos {
        let name = path.display().to_string();
        let bad = |reason: String| FaceError::Image {
            name: name.clone(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let img = engine.decode(&Frame::Encoded {
            name: name.clone(),
            bytes,
        })?;
        let mut found = engine.detect(&img)?;
        let mut used = img;
        if found.is_empty() {
            let border = (used.width().max(used.height()) / 2) as u32;
            used = used.with_border(border)?;
            found = engine.detect(&used)?;
        }
        match found.as_slice() {
            [one] => out.push(FaceEmbedding {
                model: MODEL_ID.to_string(),
                vector: engine.embed(&used, one)?,
            }),
            [] => return Err(bad("no face found".into())),
            many => {
                return Err(bad(format!(
                    "{} faces found; an enrolment photo must show only the user",
                    many.len()
                )))
            }
        }
    }
    Ok(out)
}
