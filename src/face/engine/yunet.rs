//! YuNet 2023mar through `cv::dnn`, with the output decoding done here.
//!
//! OpenCV 4.6's `FaceDetectorYN` only understands the 2022mar output layout and throws on the
//! 2023mar file, so the network is run as a plain ONNX net and its 12 outputs (cls, obj, bbox,
//! kps at strides 8, 16, 32) are decoded the way OpenCV >= 4.8 does inside `FaceDetectorYN`
//! (`FaceDetectorYNImpl::postProcess`). Decoding and NMS are pure functions over slices, so
//! they are tested without OpenCV.

use std::path::Path;

use opencv::core::{self, Mat, Scalar, Size, Vector};
use opencv::dnn;
use opencv::imgproc;
use opencv::prelude::*;

use super::{cv, Image};
use crate::face::{Detection, FaceError};

/// The strides of YuNet's three detection heads.
pub const STRIDES: [usize; 3] = [8, 16, 32];
/// YuNet's input must be a multiple of this on both sides.
pub const ALIGN: usize = 32;

/// The raw outputs of one detection head, as flat f32 slices in the network's row-major order
/// (one entry, or 4 / 10 for bbox / kps, per grid cell, cells row after row).
#[derive(Debug, Clone, Copy)]
pub struct HeadOutputs<'a> {
    pub stride: usize,
    pub cls: &'a [f32],
    pub obj: &'a [f32],
    pub bbox: &'a [f32],
    pub kps: &'a [f32],
}

/// Decodes the heads of a `pad_w` x `pad_h` input into detections in input pixels, keeping
/// those scoring at least `score_threshold`. Not yet suppressed (see [`nms`]).
///
/// Per cell (row r, column c) of a head with stride s: score = sqrt(cls * obj), both clamped to
/// 0..=1; centre = ((c + dx) s, (r + dy) s); size = (exp(dw) s, exp(dh) s); landmark k =
/// ((kx + c) s, (ky + r) s). Output sizes that do not match the grid are an error, not a panic:
/// a different model file would give them.
pub fn decode(
    heads: &[HeadOutputs<'_>],
    pad_w: usize,
    pad_h: usize,
    score_threshold: f32,
) -> Result<Vec<Detection>, FaceError> {
    let mut out = Vec::new();
    for h in heads {
        if h.stride == 0 {
            return Err(FaceError::Pipeline("yunet decode: stride 0".into()));
        }
        let cols = pad_w / h.stride;
        let rows = pad_h / h.stride;
        let cells = rows * cols;
        if h.cls.len() != cells
            || h.obj.len() != cells
            || h.bbox.len() != cells * 4
            || h.kps.len() != cells * 10
        {
            return Err(FaceError::Pipeline(format!(
                "yunet decode: stride {} on a {pad_w}x{pad_h} input needs {cells} cells, got \
                 cls {}, obj {}, bbox {}/4, kps {}/10 (not the 2023mar model?)",
                h.stride,
                h.cls.len(),
                h.obj.len(),
                h.bbox.len(),
                h.kps.len()
            )));
        }
        let s = h.stride as f32;
        for k in 0..cells {
            let score = (h.cls[k].clamp(0.0, 1.0) * h.obj[k].clamp(0.0, 1.0)).sqrt();
            // NaN compares as not-greater-or-equal: dropped too.
            if score
                .partial_cmp(&score_threshold)
                .is_none_or(|o| o.is_lt())
            {
                continue;
            }
            let (r, c) = ((k / cols) as f32, (k % cols) as f32);
            let b = &h.bbox[k * 4..k * 4 + 4];
            let cx = (c + b[0]) * s;
            let cy = (r + b[1]) * s;
            let w = b[2].exp() * s;
            let hh = b[3].exp() * s;
            let p = &h.kps[k * 10..k * 10 + 10];
            let mut landmarks = [[0.0f32; 2]; 5];
            for (j, lm) in landmarks.iter_mut().enumerate() {
                *lm = [(p[2 * j] + c) * s, (p[2 * j + 1] + r) * s];
            }
            let d = Detection {
                bbox: [cx - w / 2.0, cy - hh / 2.0, w, hh],
                landmarks,
                score,
            };
            // A real face has a size and its centre on the input: anything else is a broken
            // output (see MIN_INPUT), not a face.
            let finite = d
                .bbox
                .iter()
                .chain(d.landmarks.iter().flatten())
                .all(|v| v.is_finite());
            let sane = finite
                && w >= 1.0
                && hh >= 1.0
                && (0.0..=pad_w as f32).contains(&cx)
                && (0.0..=pad_h as f32).contains(&cy);
            if sane {
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// Intersection over union of two (x, y, w, h) boxes; 0 when either is empty.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let iy = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if ix <= 0.0 || iy <= 0.0 {
        return 0.0;
    }
    let inter = ix * iy;
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Greedy non-maximum suppression, as `cv::dnn::NMSBoxes` with eta 1: best score first, a box
/// is dropped when it overlaps a kept one by more than `iou_threshold`. At most `top_k` kept.
pub fn nms(mut dets: Vec<Detection>, iou_threshold: f32, top_k: usize) -> Vec<Detection> {
    // Stable, so equal scores keep the decoding order, as OpenCV's does.
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in dets {
        if kept.len() >= top_k {
            break;
        }
        if kept.iter().all(|k| iou(&k.bbox, &d.bbox) <= iou_threshold) {
            kept.push(d);
        }
    }
    kept
}

/// Largest first (by the shorter side, what the minimum face size is compared with), then the
/// more confident.
pub fn sort_by_size(dets: &mut [Detection]) {
    dets.sort_by(|a, b| {
        b.size()
            .total_cmp(&a.size())
            .then(b.score.total_cmp(&a.score))
    });
}

/// Maps a detection from working-image pixels back to the original frame's, `sx` and `sy`
/// being the working size over the frame size per axis.
pub fn rescale(d: &mut Detection, sx: f32, sy: f32) {
    d.bbox[0] /= sx;
    d.bbox[1] /= sy;
    d.bbox[2] /= sx;
    d.bbox[3] /= sy;
    for lm in d.landmarks.iter_mut() {
        lm[0] /= sx;
        lm[1] /= sy;
    }
}

/// The smallest input side we give the net. OpenCV 4.6 returns garbage (scores of 1 with
/// boxes of -1e10, different on every run) for a 640x32 input, measured here with Python cv2
/// too; every side from 64 up (in steps of 32, both orientations) is stable. A face cannot fit
/// in the extra padding, so it costs nothing but a few zero pixels.
pub const MIN_INPUT: usize = 64;

/// The net's input side for a working image side of `n`: rounded up to the next multiple of
/// [`ALIGN`], at least [`MIN_INPUT`].
pub fn padded(n: usize) -> usize {
    n.max(MIN_INPUT).div_ceil(ALIGN) * ALIGN
}

/// The working size of a `w` x `h` frame: scaled so its longer side is `working_size`
/// (down or up), each side rounded to whole pixels and at least 1.
pub fn working_dims(w: usize, h: usize, working_size: u32) -> (usize, usize) {
    let longer = w.max(h).max(1) as f64;
    let scale = f64::from(working_size.max(1)) / longer;
    let sw = ((w as f64 * scale).round() as usize).max(1);
    let sh = ((h as f64 * scale).round() as usize).max(1);
    (sw, sh)
}

/// The detector: the YuNet net and the thresholds.
pub struct YuNet {
    net: dnn::Net,
    out_names: Vector<String>,
    pub working_size: u32,
    pub score_threshold: f32,
    pub nms_threshold: f32,
    pub top_k: usize,
    // Reused between frames: the resized and the padded image.
    resized: Mat,
    input: Mat,
}

impl YuNet {
    /// Loads the ONNX file (its hash is checked by the caller).
    pub fn load(path: &Path) -> Result<YuNet, FaceError> {
        let mut net = dnn::read_net_from_onnx(path).map_err(|e| FaceError::Model {
            path: path.display().to_string(),
            reason: format!("OpenCV cannot load it as ONNX: {e}"),
        })?;
        cv(
            net.set_preferable_backend(dnn::DNN_BACKEND_OPENCV),
            "yunet: set backend",
        )?;
        cv(
            net.set_preferable_target(dnn::DNN_TARGET_CPU),
            "yunet: set target",
        )?;
        let mut out_names = Vector::<String>::new();
        for kind in ["cls", "obj", "bbox", "kps"] {
            for s in STRIDES {
                out_names.push(&format!("{kind}_{s}"));
            }
        }
        Ok(YuNet {
            net,
            out_names,
            working_size: 640,
            score_threshold: 0.9,
            nms_threshold: 0.3,
            top_k: 5000,
            resized: Mat::default(),
            input: Mat::default(),
        })
    }

    /// All faces in the image, in its pixel coordinates, largest first.
    pub fn detect(&mut self, img: &Image) -> Result<Vec<Detection>, FaceError> {
        let (w, h) = (img.width, img.height);
        let (sw, sh) = working_dims(w, h, self.working_size);
        let src: &Mat = if (sw, sh) == (w, h) {
            &img.mat
        } else {
            // Area averaging when shrinking (no aliasing on large frames), bilinear when
            // enlarging (small frames: small faces become big enough for stride 8).
            let interpolation = if sw < w {
                imgproc::INTER_AREA
            } else {
                imgproc::INTER_LINEAR
            };
            cv(
                imgproc::resize(
                    &img.mat,
                    &mut self.resized,
                    Size::new(to_i32(sw)?, to_i32(sh)?),
                    0.0,
                    0.0,
                    interpolation,
                ),
                "yunet: resize to working size",
            )?;
            &self.resized
        };
        let (pw, ph) = (padded(sw), padded(sh));
        cv(
            core::copy_make_border(
                src,
                &mut self.input,
                0,
                to_i32(ph - sh)?,
                0,
                to_i32(pw - sw)?,
                core::BORDER_CONSTANT,
                Scalar::all(0.0),
            ),
            "yunet: pad to a multiple of 32",
        )?;
        let blob = cv(
            dnn::blob_from_image(
                &self.input,
                1.0,
                Size::default(),
                Scalar::default(),
                false,
                false,
                core::CV_32F,
            ),
            "yunet: make input blob",
        )?;
        cv(
            self.net.set_input(&blob, "", 1.0, Scalar::default()),
            "yunet: set input",
        )?;
        let mut outs = Vector::<Mat>::new();
        cv(
            self.net.forward(&mut outs, &self.out_names),
            "yunet: forward",
        )?;
        if outs.len() != 12 {
            return Err(FaceError::Pipeline(format!(
                "yunet: forward gave {} outputs, expected 12",
                outs.len()
            )));
        }
        let mats: Vec<Mat> = outs.iter().collect();
        let mut slices = Vec::with_capacity(12);
        for (m, name) in mats.iter().zip(self.out_names.iter()) {
            slices.push(cv(m.data_typed::<f32>(), &format!("yunet: output {name}"))?);
        }
        let n = STRIDES.len();
        let heads: Vec<HeadOutputs<'_>> = STRIDES
            .iter()
            .enumerate()
            .map(|(i, &stride)| HeadOutputs {
                stride,
                cls: slices[i],
                obj: slices[i + n],
                bbox: slices[i + 2 * n],
                kps: slices[i + 3 * n],
            })
            .collect();
        let found = decode(&heads, pw, ph, self.score_threshold)?;
        let mut dets = nms(found, self.nms_threshold, self.top_k);
        // The scale actually applied, per axis (the sizes were rounded to whole pixels).
        let (sx, sy) = (sw as f32 / w as f32, sh as f32 / h as f32);
        for d in dets.iter_mut() {
            rescale(d, sx, sy);
        }
        sort_by_size(&mut dets);
        Ok(dets)
    }
}

fn to_i32(n: usize) -> Result<i32, FaceError> {
    i32::try_from(n).map_err(|_| FaceError::Pipeline(format!("yunet: size {n} too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outputs of one head for a grid, zero everywhere (score 0) except what the test sets.
    struct Head {
        stride: usize,
        cls: Vec<f32>,
        obj: Vec<f32>,
        bbox: Vec<f32>,
        kps: Vec<f32>,
    }

    impl Head {
        fn new(stride: usize, pad_w: usize, pad_h: usize) -> Head {
            let cells = (pad_w / stride) * (pad_h / stride);
            Head {
                stride,
                cls: vec![0.0; cells],
                obj: vec![0.0; cells],
                bbox: vec![0.0; cells * 4],
                kps: vec![0.0; cells * 10],
            }
        }
        fn outputs(&self) -> HeadOutputs<'_> {
            HeadOutputs {
                stride: self.stride,
                cls: &self.cls,
                obj: &self.obj,
                bbox: &self.bbox,
                kps: &self.kps,
            }
        }
    }

    #[test]
    fn synthetic_cell_decodes_to_the_expected_face() {
        // 64x32 input: stride 16 gives a 4x2 grid. Cell row 1, column 2 = index 6.
        let mut h = Head::new(16, 64, 32);
        h.cls[6] = 0.81;
        h.obj[6] = 1.0;
        h.bbox[24..28].copy_from_slice(&[0.5, 0.25, 2f32.ln(), 1.0f32.ln()]);
        let kps: Vec<f32> = (0..10).map(|i| i as f32 * 0.1).collect();
        h.kps[60..70].copy_from_slice(&kps);
        let dets = decode(&[h.outputs()], 64, 32, 0.9).unwrap();
        assert_eq!(dets.len(), 1);
        let d = &dets[0];
        assert!((d.score - 0.9).abs() < 1e-6, "{}", d.score);
        // centre ((2 + 0.5) 16, (1 + 0.25) 16) = (40, 20); size (2 * 16, 1 * 16) = (32, 16).
        let want = [24.0, 12.0, 32.0, 16.0];
        for (a, b) in d.bbox.iter().zip(want) {
            assert!((a - b).abs() < 1e-4, "{:?}", d.bbox);
        }
        for (j, lm) in d.landmarks.iter().enumerate() {
            let x = (kps[2 * j] + 2.0) * 16.0;
            let y = (kps[2 * j + 1] + 1.0) * 16.0;
            assert!(
                (lm[0] - x).abs() < 1e-4 && (lm[1] - y).abs() < 1e-4,
                "{lm:?}"
            );
        }
    }

    #[test]
    fn scores_below_threshold_or_nan_are_dropped_and_inputs_clamped() {
        let mut h = Head::new(8, 32, 32);
        h.cls[0] = 0.8; // sqrt(0.8 * 1) = 0.894 < 0.9
        h.obj[0] = 1.0;
        h.cls[1] = f32::NAN;
        h.obj[1] = 1.0;
        h.cls[2] = 7.0; // clamped to 1: sqrt(1 * 1) = 1
        h.obj[2] = 3.0;
        h.cls[3] = -1.0; // clamped to 0
        h.obj[3] = 1.0;
        let dets = decode(&[h.outputs()], 32, 32, 0.9).unwrap();
        assert_eq!(dets.len(), 1);
        assert_eq!(dets[0].score, 1.0);
        // Cell 2 is column 2 of row 0: centre x = 2 * 8, size exp(0) * 8.
        assert_eq!(dets[0].bbox, [12.0, -4.0, 8.0, 8.0]);
    }

    #[test]
    fn broken_outputs_are_not_faces() {
        let mut h = Head::new(8, 32, 32);
        for k in 0..4 {
            h.cls[k] = 1.0;
            h.obj[k] = 1.0;
        }
        h.bbox[2] = -100.0; // zero width
        h.bbox[4] = -1e10; // centre far off the input
        h.bbox[11] = f32::INFINITY; // infinite height
        h.kps[30] = f32::NAN; // cell 3: a NaN landmark
        let dets = decode(&[h.outputs()], 32, 32, 0.9).unwrap();
        assert!(dets.is_empty(), "{dets:?}");
    }

    #[test]
    fn wrong_output_sizes_are_an_error_not_a_panic() {
        let h = Head::new(8, 32, 32);
        let mut bad = h.outputs();
        bad.kps = &h.kps[..10];
        let err = decode(&[bad], 32, 32, 0.9).unwrap_err();
        assert!(err.to_string().contains("kps 10/10"), "{err}");
        let zero = HeadOutputs {
            stride: 0,
            ..h.outputs()
        };
        assert!(decode(&[zero], 32, 32, 0.9).is_err());
    }

    fn det(bbox: [f32; 4], score: f32) -> Detection {
        Detection {
            bbox,
            landmarks: [[0.0; 2]; 5],
            score,
        }
    }

    #[test]
    fn iou_of_known_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[0.0, 0.0, 10.0, 10.0]), 1.0);
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[10.0, 0.0, 10.0, 10.0]), 0.0);
        // Half overlap: 50 / 150.
        let v = iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 10.0, 10.0]);
        assert!((v - 1.0 / 3.0).abs() < 1e-6, "{v}");
        assert_eq!(iou(&[0.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.0]), 0.0);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_and_distinct_ones() {
        let dets = vec![
            det([0.0, 0.0, 10.0, 10.0], 0.91),
            det([1.0, 0.0, 10.0, 10.0], 0.95), // overlaps the first by 0.82
            det([5.0, 0.0, 10.0, 10.0], 0.93), // overlaps the best by 0.43 (> 0.3): dropped
            det([50.0, 50.0, 10.0, 10.0], 0.92),
        ];
        let kept = nms(dets, 0.3, 5000);
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.95, 0.92]);
        let top1 = nms(kept, 0.3, 1);
        assert_eq!(top1.len(), 1);
    }

    #[test]
    fn sorting_is_by_size_then_score() {
        let mut dets = vec![
            det([0.0, 0.0, 10.0, 40.0], 0.99), // size 10
            det([0.0, 0.0, 20.0, 20.0], 0.91), // size 20
            det([0.0, 0.0, 20.0, 30.0], 0.95), // size 20, better score
        ];
        sort_by_size(&mut dets);
        let scores: Vec<f32> = dets.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.95, 0.91, 0.99]);
    }

    #[test]
    fn working_dims_scale_down_and_up_and_padding_rounds_up() {
        assert_eq!(working_dims(1986, 1545, 640), (640, 498));
        assert_eq!(working_dims(150, 300, 640), (320, 640));
        assert_eq!(working_dims(640, 480, 640), (640, 480));
        assert_eq!(working_dims(5000, 1, 640), (640, 1));
        assert_eq!(padded(498), 512);
        assert_eq!(padded(640), 640);
        assert_eq!(padded(33), 64);
        assert_eq!(padded(65), 96);
        assert_eq!(padded(1), 64);
        assert_eq!(padded(0), 64);
    }

    #[test]
    fn rescale_maps_back_to_frame_pixels() {
        let mut d = det([10.0, 20.0, 30.0, 40.0], 0.9);
        d.landmarks[4] = [50.0, 60.0];
        rescale(&mut d, 0.5, 0.25);
        assert_eq!(d.bbox, [20.0, 80.0, 60.0, 160.0]);
        assert_eq!(d.landmarks[4], [100.0, 240.0]);
    }
}
