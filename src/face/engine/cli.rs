//! What the `acceso face ...` and `acceso enroll` commands do, as plain functions returning
//! serialisable structs (the protocol's `User` for enroll); `main.rs` only parses arguments
//! and prints them as JSON.

use std::path::{Path, PathBuf};

use acceso_protocol::{CardUid, User};

use super::{EngineOptions, FaceEngine, Image};
use crate::face::{FaceError, FoundFace, MODEL_ID};
use crate::hw::Frame;

/// Cosine similarity at or above which `compare` calls two faces the same person: the
/// agent's default `face.threshold`.
pub const COMPARE_THRESHOLD: f32 = crate::face::DEFAULT_THRESHOLD;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The input is wrong: an unreadable image, no face where one is needed, a bad card UID.
    #[error("{what}: {reason}")]
    BadInput { what: String, reason: String },
    /// The engine failed (models, OpenCV).
    #[error(transparent)]
    Face(FaceError),
}

impl CliError {
    /// Bad input exits with 2, anything else with 1 (as the rest of the CLI).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, CliError::BadInput { .. })
    }

    fn bad(what: impl std::fmt::Display, reason: impl Into<String>) -> CliError {
        CliError::BadInput {
            what: what.to_string(),
            reason: reason.into(),
        }
    }
}

impl From<FaceError> for CliError {
    fn from(e: FaceError) -> Self {
        match e {
            // An image OpenCV cannot decode is the user's input, not our failure.
            FaceError::Image { name, reason } => CliError::BadInput { what: name, reason },
            other => CliError::Face(other),
        }
    }
}

/// The models directory when `--models` is not given.
pub use crate::face::bundled_models_dir as default_models_dir;

/// Loads the engine with default options.
pub fn load_engine(models: &Path) -> Result<FaceEngine, CliError> {
    Ok(FaceEngine::load(models, EngineOptions::default())?)
}

/// Reads and decodes an image file.
pub fn load_photo(engine: &FaceEngine, path: &Path) -> Result<Image, CliError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::bad(path.display(), format!("cannot read: {e}")))?;
    let frame = Frame::Encoded {
        name: path.display().to_string(),
        bytes,
    };
    Ok(engine.decode(&frame)?)
}

/// One face as `acceso face embed` prints it. Structs rather than `serde_json::Value`, so the
/// f32 values print at f32 precision (a `Value` widens them to f64: 0.45 becomes
/// 0.44999998807907104).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FaceReport {
    pub bbox: [f32; 4],
    pub landmarks: [[f32; 2]; 5],
    pub score: f32,
    pub embedding: Vec<f32>,
}

/// What `acceso face embed` prints for one image.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EmbedReport {
    pub image: String,
    pub width: usize,
    pub height: usize,
    pub model: &'static str,
    /// Largest first.
    pub faces: Vec<FaceReport>,
}

/// `acceso face embed`: every face of one image, largest first. No face is not an error here
/// (`faces` is empty): this is the command to look at what the engine sees.
pub fn embed_photo(engine: &mut FaceEngine, path: &Path) -> Result<EmbedReport, CliError> {
    let img = load_photo(engine, path)?;
    let (width, height) = (img.width(), img.height());
    let (used, found, border) = super::agent::photo_faces(engine, img)?;
    let mut faces = Vec::with_capacity(found.len());
    for d in found {
        let embedding = engine.embed(&used, &d)?;
        // In the photo's own coordinates, whether or not a border was added to find the face.
        let [x, y, w, h] = d.bbox;
        faces.push(FaceReport {
            bbox: [x - border, y - border, w, h],
            landmarks: d.landmarks.map(|[lx, ly]| [lx - border, ly - border]),
            score: d.score,
            embedding,
        });
    }
    Ok(EmbedReport {
        image: path.display().to_string(),
        width,
        height,
        model: MODEL_ID,
        faces,
    })
}

/// The largest face of a photo; no face is bad input naming the photo.
pub fn largest_face(engine: &mut FaceEngine, path: &Path) -> Result<FoundFace, CliError> {
    let img = load_photo(engine, path)?;
    let (used, dets, _) = super::agent::photo_faces(engine, img)?;
    let Some(d) = dets.into_iter().next() else {
        return Err(CliError::bad(path.display(), "no face found"));
    };
    let embedding = engine.embed(&used, &d)?;
    Ok(FoundFace {
        detection: d,
        embedding,
    })
}

/// Cosine similarity of two embeddings (unit length, so the dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// What `acceso face compare` prints.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    pub model: &'static str,
    /// Cosine similarity of the largest face of each.
    pub similarity: f32,
    pub threshold: f32,
    pub same_person: bool,
}

/// `acceso face compare A B`: the similarity of the largest face of each.
pub fn compare_photos(engine: &mut FaceEngine, a: &Path, b: &Path) -> Result<Comparison, CliError> {
    let fa = largest_face(engine, a)?;
    let fb = largest_face(engine, b)?;
    let similarity = cosine(&fa.embedding, &fb.embedding);
    Ok(Comparison {
        a: a.display().to_string(),
        b: b.display().to_string(),
        model: MODEL_ID,
        similarity,
        threshold: COMPARE_THRESHOLD,
        same_person: similarity >= COMPARE_THRESHOLD,
    })
}

/// `acceso enroll`: a user with one embedding per photo. Each photo must show exactly one
/// face: with two, which one is the user is a guess, and a wrong guess lets someone else in.
/// The user passes the protocol's own checks (`User::validate`, as a door applies them to an
/// update), so what is printed is never refused by the doors it is sent to.
pub fn enroll(
    engine: &mut FaceEngine,
    id: &str,
    name: &str,
    cards: &[String],
    photos: &[PathBuf],
) -> Result<User, CliError> {
    let cards = cards
        .iter()
        .map(|c| {
            c.parse::<CardUid>()
                .map_err(|e| CliError::bad(format!("--card {c}"), e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut user = User {
        id: id.to_string(),
        name: name.to_string(),
        enabled: true,
        cards,
        faces: vec![],
        valid_from: None,
        valid_until: None,
        doors: None,
        schedule: vec![],
        two_factor: false,
    };
    // Before the photos (seconds of work) what does not depend on them, after them the rest
    // (the size of the whole user).
    let check = |user: &User| {
        user.validate()
            .map_err(|reason| CliError::bad("cannot enroll", reason))
    };
    check(&user)?;
    user.faces = super::agent::enrolment(engine, photos)?;
    check(&user)?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_unit_vectors() {
        assert_eq!(cosine(&[1.0, 0.0], &[1.0, 0.0]), 1.0);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
        assert_eq!(cosine(&[0.6, 0.8], &[-0.6, -0.8]), -1.0);
    }

    #[test]
    fn image_errors_are_bad_input_engine_errors_are_not() {
        let bad: CliError = FaceError::Image {
            name: "x.jpg".into(),
            reason: "garbage".into(),
        }
        .into();
        assert!(bad.is_bad_input());
        assert_eq!(bad.to_string(), "x.jpg: garbage");
        let model: CliError = FaceError::Model {
            path: "m.onnx".into(),
            reason: "wrong".into(),
        }
        .into();
        assert!(!model.is_bad_input());
    }

    #[test]
    fn default_models_dir_is_the_source_tree_here() {
        assert!(default_models_dir()
            .join(super::super::models::YUNET_FILE)
            .is_file());
    }
}
