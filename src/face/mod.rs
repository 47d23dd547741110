//! Faces: find the faces in a frame, turn each into an embedding, match embeddings against the
//! users' enrolled ones. Everything runs on the device; nothing here calls the network.
//!
//! - `engine` (feature `face`): OpenCV. YuNet 2023mar through `cv::dnn` with our own output
//!   decoding (OpenCV 4.6's `FaceDetectorYN` cannot run that file), SFace through
//!   `FaceRecognizerSF`, the model files checked against their SHA-256.
//! - `index`: the in-memory matcher over the users' normalised embeddings (pure).
//! - `agree`: agreement over consecutive frames before a face becomes a credential (pure).
//!
//! A build without the `face` feature has no OpenCV; its doors are card-only.

pub mod agree;
#[cfg(feature = "face")]
pub mod engine;
pub mod index;

/// The embedding model this build computes, as `FaceEmbedding::model` names it. Embeddings
/// tagged with any other model id are never compared with ours.
pub const MODEL_ID: &str = "sface-2021dec";

/// Length of an SFace embedding.
pub const EMBEDDING_LEN: usize = 128;

/// One face found in a frame, in the frame's pixel coordinates.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Detection {
    /// Left, top, width, height.
    pub bbox: [f32; 4],
    /// Right eye, left eye, nose tip, right and left mouth corners (as YuNet orders them).
    pub landmarks: [[f32; 2]; 5],
    /// Detector confidence, 0..=1.
    pub score: f32,
}

impl Detection {
    /// The shorter side of the box, in pixels: what the minimum face size is compared with.
    pub fn size(&self) -> f32 {
        self.bbox[2].min(self.bbox[3])
    }
}

/// A detected face and its embedding (unit length).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FoundFace {
    pub detection: Detection,
    pub embedding: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    #[error("face model {path}: {reason}")]
    Model { path: String, reason: String },
    #[error("cannot decode image {name}: {reason}")]
    Image { name: String, reason: String },
    #[error("face pipeline: {0}")]
    Pipeline(String),
}

/// Scales `v` to unit length; `None` for a zero or non-finite vector.
pub fn normalised(v: &[f32]) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    (norm.is_finite() && norm > 0.0).then(|| v.iter().map(|x| x / norm).collect())
}
