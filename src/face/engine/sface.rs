//! SFace through `cv::FaceRecognizerSF` (which works in OpenCV 4.6): align the face on its
//! landmarks to 112x112, run the net, copy and normalise the 128 values.

use std::path::Path;

use opencv::core::{Mat, Ptr};
use opencv::objdetect::FaceRecognizerSF;
use opencv::prelude::*;

use super::{cv, Image};
use crate::face::{normalised, Detection, FaceError, EMBEDDING_LEN};

/// The row `FaceRecognizerSF::alignCrop` expects, as `FaceDetectorYN` gives it: x, y, w, h,
/// five landmark (x, y) pairs, score.
pub fn detection_row(d: &Detection) -> [f32; 15] {
    let mut row = [0.0f32; 15];
    row[..4].copy_from_slice(&d.bbox);
    for (j, lm) in d.landmarks.iter().enumerate() {
        row[4 + 2 * j] = lm[0];
        row[5 + 2 * j] = lm[1];
    }
    row[14] = d.score;
    row
}

pub struct SFace {
    inner: Ptr<FaceRecognizerSF>,
    aligned: Mat,
    feature: Mat,
}

impl SFace {
    /// Loads the ONNX file (its hash is checked by the caller).
    pub fn load(path: &Path) -> Result<SFace, FaceError> {
        let model = path.to_str().ok_or_else(|| FaceError::Model {
            path: path.display().to_string(),
            reason: "path is not UTF-8, which OpenCV's FaceRecognizerSF needs".into(),
        })?;
        let inner = FaceRecognizerSF::create(model, "", 0, 0).map_err(|e| FaceError::Model {
            path: path.display().to_string(),
            reason: format!("OpenCV FaceRecognizerSF cannot load it: {e}"),
        })?;
        Ok(SFace {
            inner,
            aligned: Mat::default(),
            feature: Mat::default(),
        })
    }

    /// The unit-length embedding of the face `d` of `img` (original frame coordinates).
    pub fn embed(&mut self, img: &Image, d: &Detection) -> Result<Vec<f32>, FaceError> {
        let row = detection_row(d);
        // OpenCV aligns a NaN face without complaint, on a black crop whose embedding is
        // finite but of nobody: refuse it here instead.
        if !row.iter().all(|v| v.is_finite()) {
            return Err(FaceError::Pipeline(format!(
                "sface: detection has non-finite coordinates: {d:?}"
            )));
        }
        let face_box = cv(Mat::from_slice(&row), "sface: detection row")?;
        cv(
            self.inner
                .align_crop(&img.mat, &face_box, &mut self.aligned),
            "sface: align crop",
        )?;
        cv(
            self.inner.feature(&self.aligned, &mut self.feature),
            "sface: feature",
        )?;
        // In OpenCV 4.6 the feature Mat shares memory with the network's output blob, which
        // the next call overwrites: copy the values out now (`to_vec`), never keep the Mat.
        let raw = cv(self.feature.data_typed::<f32>(), "sface: feature values")?.to_vec();
        if raw.len() != EMBEDDING_LEN {
            return Err(FaceError::Pipeline(format!(
                "sface: feature has {} values, expected {EMBEDDING_LEN}",
                raw.len()
            )));
        }
        normalised(&raw).ok_or_else(|| {
            FaceError::Pipeline("sface: feature is zero or not finite, cannot normalise".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_row_has_the_face_detector_layout() {
        let d = Detection {
            bbox: [1.0, 2.0, 3.0, 4.0],
            landmarks: [
                [5.0, 6.0],
                [7.0, 8.0],
                [9.0, 10.0],
                [11.0, 12.0],
                [13.0, 14.0],
            ],
            score: 0.5,
        };
        let row = detection_row(&d);
        let want: Vec<f32> = (1..=14).map(|v| v as f32).chain([0.5]).collect();
        assert_eq!(row.to_vec(), want);
    }
}
