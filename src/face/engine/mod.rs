//! The OpenCV face engine: decode a frame, find its faces (YuNet 2023mar), embed each one
//! (SFace), with both model files checked against their SHA-256 at load.
//!
//! Every OpenCV call goes through [`cv`], so a C++ exception (which the `opencv` crate turns
//! into an `opencv::Error`) comes back as a `FaceError` saying which step failed; inputs are
//! checked before they reach OpenCV so bad frames are errors, never panics.

pub mod agent;
pub mod camera;
pub mod cli;
pub mod models;
pub mod sface;
pub mod yunet;

use std::path::Path;

use opencv::core::{self, Mat, Scalar, Size, Vec3b, Vector};
use opencv::imgcodecs;
use opencv::imgproc;
use opencv::prelude::*;

use crate::face::{Detection, FaceError, FoundFace};
use crate::hw::Frame;
pub use agent::{enroll_photos, open_camera, recognizer};
pub use models::ModelFiles;

/// Turns an OpenCV result into ours, saying which step failed.
pub(crate) fn cv<T>(r: opencv::Result<T>, what: &str) -> Result<T, FaceError> {
    r.map_err(|e| FaceError::Pipeline(format!("{what}: {e}")))
}

/// How the detector runs.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOptions {
    /// Frames are scaled (down or up) so their longer side is this many pixels before
    /// detection: a fixed cost per frame, faces far larger than the net's receptive field in
    /// large frames still found, small faces in small frames enlarged enough to be found.
    pub working_size: u32,
    /// Minimum detector score (YuNet's sqrt(cls * obj)).
    pub score_threshold: f32,
    /// Boxes overlapping a better one by more than this IoU are dropped.
    pub nms_threshold: f32,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            working_size: 640,
            score_threshold: 0.9,
            nms_threshold: 0.3,
        }
    }
}

/// A decoded frame: 8-bit BGR pixels, never empty. Opaque so only the engine touches OpenCV.
pub struct Image {
    pub(crate) mat: Mat,
    pub(crate) width: usize,
    pub(crate) height: usize,
}

impl Image {
    fn from_mat(mat: Mat, name: &str) -> Result<Image, FaceError> {
        let bad = |reason: String| FaceError::Image {
            name: name.to_string(),
            reason,
        };
        if mat.empty() || mat.rows() <= 0 || mat.cols() <= 0 {
            return Err(bad("empty image (0x0)".into()));
        }
        if mat.typ() != core::CV_8UC3 {
            return Err(bad(format!(
                "expected 8-bit BGR pixels, got OpenCV type {}",
                mat.typ()
            )));
        }
        // Every later step (data_bytes, the nets) wants one contiguous buffer.
        let mat = if mat.is_continuous() {
            mat
        } else {
            cv(mat.try_clone(), "image: copy to a continuous buffer")?
        };
        Ok(Image {
            width: mat.cols() as usize,
            height: mat.rows() as usize,
            mat,
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// This image with a black border of `px` pixels on every side. Tight face crops (the
    /// face filling the picture) need one: the detector wants some context around a face.
    pub fn with_border(&self, px: u32) -> Result<Image, FaceError> {
        let px = i32::try_from(px)
            .map_err(|_| FaceError::Pipeline(format!("border of {px} pixels is too large")))?;
        let mut out = Mat::default();
        cv(
            core::copy_make_border(
                &self.mat,
                &mut out,
                px,
                px,
                px,
                px,
                core::BORDER_CONSTANT,
                Scalar::all(0.0),
            ),
            "image: add border",
        )?;
        Image::from_mat(out, "bordered image")
    }

    /// This image scaled (keeping its aspect) to fit `width` x `height` and centred on black:
    /// how a camera frame of that size would show it.
    pub fn fit_into(&self, width: u32, height: u32) -> Result<Image, FaceError> {
        if width == 0 || height == 0 {
            return Err(FaceError::Pipeline(format!(
                "cannot fit an image into {width}x{height}"
            )));
        }
        let (tw, th) = (f64::from(width), f64::from(height));
        let scale = (tw / self.width as f64).min(th / self.height as f64);
        let sw = ((self.width as f64 * scale).round() as i32).clamp(1, width as i32);
        let sh = ((self.height as f64 * scale).round() as i32).clamp(1, height as i32);
        // Area averaging to shrink (no aliasing); bilinear to enlarge (INTER_AREA would
        // repeat pixels).
        let interpolation = if scale < 1.0 {
            imgproc::INTER_AREA
        } else {
            imgproc::INTER_LINEAR
        };
        let mut resized = Mat::default();
        cv(
            imgproc::resize(
                &self.mat,
                &mut resized,
                Size::new(sw, sh),
                0.0,
                0.0,
                interpolation,
            ),
            "image: resize",
        )?;
        let (left, top) = ((width as i32 - sw) / 2, (height as i32 - sh) / 2);
        let mut out = Mat::default();
        cv(
            core::copy_make_border(
                &resized,
                &mut out,
                top,
                height as i32 - sh - top,
                left,
                width as i32 - sw - left,
                core::BORDER_CONSTANT,
                Scalar::all(0.0),
            ),
            "image: pad",
        )?;
        Image::from_mat(out, "fitted image")
    }

    /// The pixels as a raw camera frame.
    pub fn to_frame(&self) -> Result<Frame, FaceError> {
        let data = cv(self.mat.data_bytes(), "image: pixels")?.to_vec();
        Ok(Frame::Bgr {
            width: self.width as u32,
            height: self.height as u32,
            data,
        })
    }

    /// The image encoded as PNG or JPEG (by `ext`, e.g. ".png"), for tests and tools.
    pub fn encode(&self, ext: &str) -> Result<Vec<u8>, FaceError> {
        let mut buf = Vector::<u8>::new();
        let ok = cv(
            imgcodecs::imencode(ext, &self.mat, &mut buf, &Vector::new()),
            "image: encode",
        )?;
        if !ok {
            return Err(FaceError::Pipeline(format!(
                "image: cannot encode as {ext}"
            )));
        }
        Ok(buf.to_vec())
    }
}

/// The face engine: the detector and the recognizer, each with its reusable buffers. Not
/// `Sync` (OpenCV nets are not reentrant) but `Send`: it lives on its own thread.
pub struct FaceEngine {
    detector: yunet::YuNet,
    recognizer: sface::SFace,
}

impl FaceEngine {
    /// Loads both models from `models_dir`, refusing files whose SHA-256 does not match.
    pub fn load(models_dir: &Path, opts: EngineOptions) -> Result<FaceEngine, FaceError> {
        let files = ModelFiles::in_dir(models_dir);
        files.verify()?;
        if !(opts.score_threshold.is_finite() && opts.nms_threshold.is_finite())
            || opts.working_size < yunet::ALIGN as u32
        {
            return Err(FaceError::Pipeline(format!(
                "engine options out of range: {opts:?} (working_size >= {}, finite thresholds)",
                yunet::ALIGN
            )));
        }
        let mut detector = yunet::YuNet::load(&files.yunet)?;
        detector.working_size = opts.working_size;
        detector.score_threshold = opts.score_threshold;
        detector.nms_threshold = opts.nms_threshold;
        let recognizer = sface::SFace::load(&files.sface)?;
        Ok(FaceEngine {
            detector,
            recognizer,
        })
    }

    /// Decodes a frame into an image. An undecodable, empty or 0x0 frame, or raw pixels whose
    /// length is not `width * height * 3`, is an error.
    pub fn decode(&self, frame: &Frame) -> Result<Image, FaceError> {
        decode_frame(frame)
    }

    /// All faces in the image (frame coordinates), largest first.
    pub fn detect(&mut self, img: &Image) -> Result<Vec<Detection>, FaceError> {
        self.detector.detect(img)
    }

    /// The unit-length embedding of face `d` of `img`.
    pub fn embed(&mut self, img: &Image, d: &Detection) -> Result<Vec<f32>, FaceError> {
        self.recognizer.embed(img, d)
    }

    /// Every face in the frame with its embedding, largest first.
    pub fn faces(&mut self, frame: &Frame) -> Result<Vec<FoundFace>, FaceError> {
        let img = self.decode(frame)?;
        self.faces_in(&img)
    }

    /// Every face in a decoded image with its embedding, largest first.
    pub fn faces_in(&mut self, img: &Image) -> Result<Vec<FoundFace>, FaceError> {
        let dets = self.detect(img)?;
        let mut out = Vec::with_capacity(dets.len());
        for detection in dets {
            let embedding = self.embed(img, &detection)?;
            out.push(FoundFace {
                detection,
                embedding,
            });
        }
        Ok(out)
    }
}

/// See [`FaceEngine::decode`]; needs no models.
pub fn decode_frame(frame: &Frame) -> Result<Image, FaceError> {
    match frame {
        Frame::Encoded { name, bytes } => {
            let bad = |reason: String| FaceError::Image {
                name: name.clone(),
                reason,
            };
            if bytes.is_empty() {
                return Err(bad("no bytes".into()));
            }
            let buf = Mat::from_slice(bytes.as_slice())
                .map_err(|e| bad(format!("cannot wrap the bytes: {e}")))?;
            let mat = imgcodecs::imdecode(&buf, imgcodecs::IMREAD_COLOR)
                .map_err(|e| bad(format!("OpenCV imdecode failed: {e}")))?;
            if mat.empty() {
                return Err(bad(format!(
                    "not an image OpenCV can read ({} bytes, starting {:02x?})",
                    bytes.len(),
                    &bytes[..bytes.len().min(8)]
                )));
            }
            Image::from_mat(mat, name)
        }
        Frame::Bgr {
            width,
            height,
            data,
        } => {
            let name = format!("raw {width}x{height} BGR frame");
            let bad = |reason: String| FaceError::Image {
                name: name.clone(),
                reason,
            };
            if *width == 0 || *height == 0 {
                return Err(bad("empty frame".into()));
            }
            let (w, h) = match (i32::try_from(*width), i32::try_from(*height)) {
                (Ok(w), Ok(h)) => (w, h),
                _ => return Err(bad("dimensions too large".into())),
            };
            let want = (*width as usize)
                .checked_mul(*height as usize)
                .and_then(|n| n.checked_mul(3));
            if want != Some(data.len()) {
                return Err(bad(format!(
                    "{} bytes of pixels, expected width * height * 3 = {}",
                    data.len(),
                    want.map_or("more than fits in memory".to_string(), |n| n.to_string())
                )));
            }
            let view = Mat::new_rows_cols_with_bytes::<Vec3b>(h, w, data)
                .map_err(|e| bad(format!("cannot wrap the pixels: {e}")))?;
            // Own the pixels: the image outlives the frame.
            let mat = view
                .try_clone()
                .map_err(|e| bad(format!("cannot copy the pixels: {e}")))?;
            Image::from_mat(mat, &name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}

    #[test]
    fn engine_and_image_are_send() {
        assert_send::<FaceEngine>();
        assert_send::<Image>();
    }

    fn encoded(bytes: &[u8]) -> Frame {
        Frame::Encoded {
            name: "t.jpg".into(),
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        for frame in [
            encoded(&[]),
            encoded(b"definitely not a jpeg, just text"),
            // A PNG signature and nothing after it.
            encoded(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]),
            Frame::Bgr {
                width: 0,
                height: 0,
                data: vec![],
            },
            Frame::Bgr {
                width: 4,
                height: 0,
                data: vec![],
            },
            Frame::Bgr {
                width: 4,
                height: 4,
                data: vec![0; 47],
            },
            Frame::Bgr {
                width: u32::MAX,
                height: u32::MAX,
                data: vec![0; 3],
            },
        ] {
            let err = decode_frame(&frame).err();
            assert!(
                matches!(err, Some(FaceError::Image { .. })),
                "{frame:?}: {err:?}"
            );
        }
    }

    #[test]
    fn bgr_frame_round_trips_through_png() {
        let data: Vec<u8> = (0..4 * 3 * 3).map(|v| v as u8).collect();
        let frame = Frame::Bgr {
            width: 4,
            height: 3,
            data: data.clone(),
        };
        let img = decode_frame(&frame).unwrap();
        assert_eq!((img.width(), img.height()), (4, 3));
        assert_eq!(img.to_frame().unwrap(), frame);
        let png = img.encode(".png").unwrap();
        let back = decode_frame(&Frame::Encoded {
            name: "x.png".into(),
            bytes: png,
        })
        .unwrap();
        assert_eq!(back.to_frame().unwrap(), frame);
    }

    #[test]
    fn border_and_fit_give_the_asked_sizes() {
        let frame = Frame::Bgr {
            width: 150,
            height: 100,
            data: vec![200; 150 * 100 * 3],
        };
        let img = decode_frame(&frame).unwrap();
        let b = img.with_border(75).unwrap();
        assert_eq!((b.width(), b.height()), (300, 250));
        let f = img.fit_into(640, 480).unwrap();
        assert_eq!((f.width(), f.height()), (640, 480));
        let Frame::Bgr { data, .. } = f.to_frame().unwrap() else {
            panic!("not raw")
        };
        // 150x100 scaled by 4.27 = 640x427, centred: the first rows are the black padding, the
        // middle row is the image.
        assert_eq!(data[0], 0);
        assert_eq!(data[240 * 640 * 3 + 320 * 3], 200);
        assert!(img.fit_into(0, 10).is_err());
    }

    #[test]
    fn an_opencv_exception_is_an_error_saying_which_step() {
        let img = decode_frame(&Frame::Bgr {
            width: 2,
            height: 2,
            data: vec![0; 12],
        })
        .unwrap();
        // A 2^31-pixel-wide image: OpenCV throws (cannot allocate), the crate catches it.
        let err = img.with_border(1 << 30).err().unwrap();
        let text = err.to_string();
        assert!(matches!(err, FaceError::Pipeline(_)), "{text}");
        assert!(text.contains("image: add border"), "{text}");
    }

    #[test]
    fn missing_models_are_a_model_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = FaceEngine::load(dir.path(), EngineOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, FaceError::Model { .. }), "{err}");
    }
}
