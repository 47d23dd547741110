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
    let mut engine = engine(face)?;
    // OpenCV sets the net up on its first forward pass (a second or more on a Pi): pay it at
    // start, not with the first person at the door.
    let blank = engine.decode(&Frame::Bgr {
        width: 640,
        height: 480,
        data: vec![0; 640 * 480 * 3],
    })?;
    engine.detect(&blank)?;
    Ok(Box::new(Recognising { engine, last: None }))
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

/// `enrolment` of each group of photos (one group a user), with one engine loaded from the
/// config; an error says which group.
pub fn enroll_photos(
    face: &FaceConfig,
    groups: &[Vec<PathBuf>],
) -> Result<Vec<Vec<FaceEmbedding>>, (Option<usize>, FaceError)> {
    let mut engine = engine(face).map_err(|e| (None, e))?;
    groups
        .iter()
        .enumerate()
        .map(|(i, photos)| enrolment(&mut engine, photos).map_err(|e| (Some(i), e)))
        .collect()
}

/// The faces of a photo (not a camera frame). A tight crop (an ID photo, the face filling the
/// picture) gets a border of half its size when no face is found as it is: the detector needs
/// some context around a face. Returns the image the faces were found in, the faces, and the
/// border added (subtract it for the photo's own coordinates).
pub fn photo_faces(
    engine: &mut FaceEngine,
    img: Image,
) -> Result<(Image, Vec<Detection>, f32), FaceError> {
    let found = engine.detect(&img)?;
    if !found.is_empty() {
        return Ok((img, found, 0.0));
    }
    let border = (img.width().max(img.height()) / 2) as u32;
    let padded = img.with_border(border)?;
    let found = engine.detect(&padded)?;
    Ok((padded, found, border as f32))
}

/// One embedding per photo, each photo showing exactly one face (with two, which one is the
/// user is a guess, and a wrong guess lets someone else in), and every photo of the same
/// person: a photo that does not match the others at the default threshold is refused, since
/// one wrong photo would let its stranger in under this user's name. Problems with a photo
/// are `FaceError::Image`.
pub fn enrolment(
    engine: &mut FaceEngine,
    photos: &[PathBuf],
) -> Result<Vec<FaceEmbedding>, FaceError> {
    let mut out: Vec<(String, FaceEmbedding)> = Vec::with_capacity(photos.len());
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
        let (used, found, _) = photo_faces(engine, img)?;
        let vector = match found.as_slice() {
            [one] => engine.embed(&used, one)?,
            [] => return Err(bad("no face found".into())),
            many => {
                return Err(bad(format!(
                    "{} faces found; an enrolment photo must show only the user",
                    many.len()
                )))
            }
        };
        for (other, earlier) in &out {
            let similarity = super::cli::cosine(&vector, &earlier.vector);
            if similarity < crate::face::DEFAULT_THRESHOLD {
                return Err(bad(format!(
                    "does not show the same person as {other} (similarity {similarity:.2}, under {}); every enrolment photo must show the user",
                    crate::face::DEFAULT_THRESHOLD
                )));
            }
        }
        out.push((
            name,
            FaceEmbedding {
                model: MODEL_ID.to_string(),
                vector,
            },
        ));
    }
    Ok(out.into_iter().map(|(_, f)| f).collect())
}
