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
pub mod pipeline;

/// The embedding model this build computes, as `FaceEmbedding::model` names it. Embeddings
/// tagged with any other model id are never compared with ours.
pub const MODEL_ID: &str = "sface-2021dec";

/// The default `face.threshold`: least cosine similarity to a user's enrolled face. Measured on
/// the test photos (`tests/face_photos.rs`, BENCHMARKS.md "Face accuracy"): every impostor pair
/// below it with margin, every genuine pair above it.
pub const DEFAULT_THRESHOLD: f32 = 0.45;

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
    #[error("image {name}: {reason}")]
    Image { name: String, reason: String },
    #[error("face pipeline: {0}")]
    Pipeline(String),
}

/// Scales `v` to unit length; `None` for a zero or non-finite vector.
pub fn normalised(v: &[f32]) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    (norm.is_finite() && norm > 0.0).then(|| v.iter().map(|x| x / norm).collect())
}

/// The recogniser the agent runs, from its config: the OpenCV engine with the models of
/// `face.models_dir`, checked against their hashes.
#[cfg(feature = "face")]
pub fn recognizer(
    face: &crate::config::FaceConfig,
) -> Result<Box<dyn pipeline::Recognizer>, FaceError> {
    engine::recognizer(face)
}

/// This build has no OpenCV: every face door is card-only, and says why.
#[cfg(not(feature = "face"))]
pub fn recognizer(
    _: &crate::config::FaceConfig,
) -> Result<Box<dyn pipeline::Recognizer>, FaceError> {
    Err(FaceError::Pipeline(
        "this build has no face recognition (built without the `face` feature)".into(),
    ))
}

/// The configured V4L2 or GStreamer camera, opened on first use and retried while missing.
#[cfg(feature = "face")]
pub fn open_camera(config: &crate::config::CameraConfig) -> Box<dyn crate::hw::FrameSource> {
    engine::open_camera(config)
}

/// This build has no OpenCV, so no camera: every frame says why.
#[cfg(not(feature = "face"))]
pub fn open_camera(_: &crate::config::CameraConfig) -> Box<dyn crate::hw::FrameSource> {
    struct NoCamera;
    impl crate::hw::FrameSource for NoCamera {
        fn next_frame(&mut self) -> Result<Option<crate::hw::Frame>, crate::hw::HwError> {
            Err(crate::hw::HwError::Camera(
                "this build has no camera support (built without the `face` feature)".into(),
            ))
        }
    }
    Box::new(NoCamera)
}

/// Enrolment, one group of photos a user: one embedding of this build's model per photo. Each
/// photo must show exactly one face, the same person as the group's other photos (a wrong
/// photo would let its stranger in). An error names the group at fault, when it is one's.
#[cfg(feature = "face")]
pub fn enroll_photos(
    face: &crate::config::FaceConfig,
    groups: &[Vec<std::path::PathBuf>],
) -> Result<Vec<Vec<acceso_protocol::FaceEmbedding>>, (Option<usize>, FaceError)> {
    engine::enroll_photos(face, groups)
}

/// Enrolment needs the engine; this build has none.
#[cfg(not(feature = "face"))]
pub fn enroll_photos(
    _: &crate::config::FaceConfig,
    _: &[Vec<std::path::PathBuf>],
) -> Result<Vec<Vec<acceso_protocol::FaceEmbedding>>, (Option<usize>, FaceError)> {
    Err((
        None,
        FaceError::Pipeline(
            "enrolling faces needs face recognition (built without the `face` feature)".into(),
        ),
    ))
}

/// The model directory a build from source uses when none is configured: the source tree's
/// `models/` if it is still there, else where the package installs them.
pub fn bundled_models_dir() -> std::path::PathBuf {
    let source = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models"));
    if source.is_dir() {
        source.to_path_buf()
    } else {
        crate::config::FaceConfig::default().models_dir
    }
}
