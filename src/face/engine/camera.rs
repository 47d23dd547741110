//! Cameras through OpenCV's videoio: a V4L2 device (`/dev/video0`, USB webcams, the Pi's
//! legacy stack) or a GStreamer pipeline ending in `appsink` (libcamera on current
//! Raspberry Pi OS: `libcamerasrc ! video/x-raw,width=640,height=480 ! videoconvert !
//! video/x-raw,format=BGR ! appsink drop=true max-buffers=1`; `drop`/`max-buffers` keep
//! only the newest frame, as `CAP_PROP_BUFFERSIZE` = 1 does for V4L2, since we read far
//! slower than the camera delivers). Frames come out as raw BGR, at most one per
//! `min_interval`.
//!
//! The retry logic (failures in a row, release and reopen) is written over a small trait so
//! it is tested with a scripted capture; no camera exists on the build machines.

use std::thread;
use std::time::{Duration, Instant};

use opencv::core::Mat;
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};

use crate::hw::{Frame, FrameSource, HwError};

/// What to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraSource {
    /// A V4L2 device node, opened with `CAP_V4L2`.
    Device(String),
    /// A GStreamer pipeline ending in `appsink`, opened with `CAP_GSTREAMER`.
    Pipeline(String),
}

impl CameraSource {
    /// A path under `/dev/` is a device, anything else a GStreamer pipeline.
    pub fn parse(s: &str) -> CameraSource {
        if s.starts_with("/dev/") {
            CameraSource::Device(s.to_string())
        } else {
            CameraSource::Pipeline(s.to_string())
        }
    }

    fn describe(&self) -> String {
        match self {
            CameraSource::Device(d) => format!("V4L2 device {d}"),
            CameraSource::Pipeline(p) => format!("GStreamer pipeline \"{p}\""),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraOptions {
    /// At least this long between two frames (measured on the monotonic clock). Face
    /// recognition needs a few frames a second, not the camera's 30: the rest is CPU the Pi
    /// needs for the other cores' work.
    pub min_interval: Duration,
    /// After this many failed reads in a row the capture is released and opened again (a
    /// camera unplugged and plugged back, a pipeline that reached end of stream).
    pub max_failures: u32,
}

impl Default for CameraOptions {
    fn default() -> Self {
        CameraOptions {
            min_interval: Duration::from_millis(200),
            max_failures: 5,
        }
    }
}

/// One open capture: what the retry logic needs from OpenCV.
trait Capture: Send + 'static {
    /// The next frame; `Err` for a failed or empty read.
    fn read(&mut self) -> Result<Frame, String>;
}

type Opener<C> = Box<dyn FnMut(&CameraSource) -> Result<C, String> + Send>;

/// Frame-rate cap and reopen-after-failures over any capture.
struct Reopening<C: Capture> {
    source: CameraSource,
    opts: CameraOptions,
    open: Opener<C>,
    capture: Option<C>,
    failures: u32,
    last_frame: Option<Instant>,
}

impl<C: Capture> Reopening<C> {
    /// Not opened yet: the first `next_frame` opens it, and a camera missing at start is
    /// retried like one that went away.
    fn closed(source: CameraSource, opts: CameraOptions, open: Opener<C>) -> Self {
        Reopening {
            source,
            opts,
            open,
            capture: None,
            failures: 0,
            last_frame: None,
        }
    }

    fn new(
        source: CameraSource,
        opts: CameraOptions,
        mut open: Opener<C>,
    ) -> Result<Self, HwError> {
        let capture = open(&source)
            .map_err(|e| HwError::Camera(format!("cannot open {}: {e}", source.describe())))?;
        Ok(Reopening {
            source,
            opts,
            open,
            capture: Some(capture),
            failures: 0,
            last_frame: None,
        })
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, HwError> {
        // The cap: wait out the rest of the interval rather than return at once, so a caller
        // looping on next_frame does not spin.
        if let Some(last) = self.last_frame {
            let due = last + self.opts.min_interval;
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
        }
        if self.capture.is_none() {
            match (self.open)(&self.source) {
                Ok(c) => {
                    tracing::info!("camera: reopened {}", self.source.describe());
                    self.capture = Some(c);
                }
                Err(e) => {
                    // Count the wait as a frame slot, so a dead camera is retried at the frame
                    // rate, not in a tight loop.
                    self.last_frame = Some(Instant::now());
                    return Err(HwError::Camera(format!(
                        "cannot reopen {}: {e}",
                        self.source.describe()
                    )));
                }
            }
        }
        let Some(capture) = self.capture.as_mut() else {
            return Err(HwError::Camera(format!(
                "{} is not open",
                self.source.describe()
            )));
        };
        let result = capture.read();
        self.last_frame = Some(Instant::now());
        match result {
            Ok(frame) => {
                self.failures = 0;
                Ok(Some(frame))
            }
            Err(e) => {
                self.failures += 1;
                let mut msg = format!(
                    "{}: {e} ({} failed reads in a row)",
                    self.source.describe(),
                    self.failures
                );
                if self.failures >= self.opts.max_failures.max(1) {
                    // Dropping the capture releases it; the next call opens it again.
                    self.capture = None;
                    self.failures = 0;
                    msg.push_str("; released, reopening on the next frame");
                }
                Err(HwError::Camera(msg))
            }
        }
    }
}

/// An OpenCV `VideoCapture` that gives BGR frames.
struct CvCapture {
    cap: VideoCapture,
    mat: Mat,
}

// VideoCapture is Send (the crate says so); Mat too.
impl Capture for CvCapture {
    fn read(&mut self) -> Result<Frame, String> {
        let ok = self
            .cap
            .read(&mut self.mat)
            .map_err(|e| format!("read failed: {e}"))?;
        if !ok || self.mat.empty() {
            return Err("no frame (read returned nothing)".into());
        }
        let (w, h) = (self.mat.cols(), self.mat.rows());
        if self.mat.typ() != opencv::core::CV_8UC3 {
            return Err(format!(
                "frame is OpenCV type {}, expected 8-bit BGR (add videoconvert to the pipeline)",
                self.mat.typ()
            ));
        }
        let data = if self.mat.is_continuous() {
            self.mat.data_bytes().map(|b| b.to_vec())
        } else {
            self.mat
                .try_clone()
                .and_then(|m| m.data_bytes().map(|b| b.to_vec()))
        }
        .map_err(|e| format!("cannot copy the frame: {e}"))?;
        Ok(Frame::Bgr {
            width: w as u32,
            height: h as u32,
            data,
        })
    }
}

impl Drop for CvCapture {
    fn drop(&mut self) {
        if let Err(e) = self.cap.release() {
            tracing::warn!("camera: release failed: {e}");
        }
    }
}

fn open_cv(source: &CameraSource) -> Result<CvCapture, String> {
    let (name, api) = match source {
        CameraSource::Device(d) => (d.as_str(), videoio::CAP_V4L2),
        CameraSource::Pipeline(p) => (p.as_str(), videoio::CAP_GSTREAMER),
    };
    let mut cap = VideoCapture::from_file(name, api).map_err(|e| e.to_string())?;
    if !cap.is_opened().map_err(|e| e.to_string())? {
        return Err("OpenCV could not open it (no such device, busy, or not a camera)".into());
    }
    if matches!(source, CameraSource::Device(_)) {
        // Keep only the newest frame queued: at a few frames a second, a deeper V4L2 queue
        // would hand out frames that are already old. Not every driver supports it.
        let _ = cap.set(videoio::CAP_PROP_BUFFERSIZE, 1.0);
    }
    Ok(CvCapture {
        cap,
        mat: Mat::default(),
    })
}

/// A camera through OpenCV's videoio.
pub struct OpenCvCamera {
    inner: Reopening<CvCapture>,
}

impl OpenCvCamera {
    /// Opens the camera; an error names the device or pipeline.
    pub fn open(source: CameraSource, opts: CameraOptions) -> Result<OpenCvCamera, HwError> {
        Ok(OpenCvCamera {
            inner: Reopening::new(source, opts, Box::new(open_cv))?,
        })
    }
}

impl OpenCvCamera {
    /// Opens the camera at its first frame, and keeps trying at the frame rate while it is
    /// missing: the agent starts (on cards) whether or not the camera is there yet.
    pub fn opening(source: CameraSource, opts: CameraOptions) -> OpenCvCamera {
        OpenCvCamera {
            inner: Reopening::closed(source, opts, Box::new(open_cv)),
        }
    }
}

impl FrameSource for OpenCvCamera {
    fn next_frame(&mut self) -> Result<Option<Frame>, HwError> {
        self.inner.next_frame()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// A capture playing a script of reads; shared with the test to see what happened.
    #[derive(Default)]
    struct Script {
        reads: VecDeque<Result<Frame, String>>,
        opens: u32,
        open_fails: u32,
    }

    struct Scripted(Arc<Mutex<Script>>);

    impl Capture for Scripted {
        fn read(&mut self) -> Result<Frame, String> {
            let mut s = self.0.lock().unwrap();
            s.reads.pop_front().unwrap_or(Err("script ended".into()))
        }
    }

    fn frame() -> Frame {
        Frame::Bgr {
            width: 1,
            height: 1,
            data: vec![1, 2, 3],
        }
    }

    fn scripted(
        script: &Arc<Mutex<Script>>,
        opts: CameraOptions,
    ) -> Result<Reopening<Scripted>, HwError> {
        let s = script.clone();
        Reopening::new(
            CameraSource::Device("/dev/video9".into()),
            opts,
            Box::new(move |_| {
                let mut g = s.lock().unwrap();
                if g.open_fails > 0 {
                    g.open_fails -= 1;
                    return Err("unplugged".into());
                }
                g.opens += 1;
                Ok(Scripted(s.clone()))
            }),
        )
    }

    fn fast(max_failures: u32) -> CameraOptions {
        CameraOptions {
            min_interval: Duration::ZERO,
            max_failures,
        }
    }

    #[test]
    fn reopens_after_max_failures_in_a_row_and_counts_from_zero_after_a_frame() {
        let script = Arc::new(Mutex::new(Script::default()));
        {
            let mut s = script.lock().unwrap();
            // Two failures, a frame (resets the count), then three failures: the third
            // releases; the next call reopens and reads a frame.
            s.reads.extend([
                Err("empty".into()),
                Err("empty".into()),
                Ok(frame()),
                Err("empty".into()),
                Err("empty".into()),
                Err("empty".into()),
                Ok(frame()),
            ]);
        }
        let mut cam = scripted(&script, fast(3)).unwrap();
        assert!(cam.next_frame().is_err());
        assert!(cam.next_frame().is_err());
        assert_eq!(cam.next_frame().unwrap(), Some(frame()));
        assert!(cam.next_frame().is_err());
        assert!(cam.next_frame().is_err());
        assert_eq!(script.lock().unwrap().opens, 1);
        let third = cam.next_frame().unwrap_err().to_string();
        assert!(third.contains("released"), "{third}");
        assert!(third.contains("/dev/video9"), "{third}");
        assert_eq!(cam.next_frame().unwrap(), Some(frame()));
        assert_eq!(script.lock().unwrap().opens, 2);
    }

    #[test]
    fn a_failed_reopen_is_an_error_and_is_retried() {
        let script = Arc::new(Mutex::new(Script::default()));
        script
            .lock()
            .unwrap()
            .reads
            .extend([Err("gone".into()), Ok(frame())]);
        let mut cam = scripted(&script, fast(1)).unwrap();
        assert!(cam
            .next_frame()
            .unwrap_err()
            .to_string()
            .contains("released"));
        script.lock().unwrap().open_fails = 1;
        let err = cam.next_frame().unwrap_err().to_string();
        assert!(
            err.contains("cannot reopen V4L2 device /dev/video9: unplugged"),
            "{err}"
        );
        assert_eq!(cam.next_frame().unwrap(), Some(frame()));
    }

    #[test]
    fn frames_are_at_least_min_interval_apart() {
        let script = Arc::new(Mutex::new(Script::default()));
        script
            .lock()
            .unwrap()
            .reads
            .extend((0..3).map(|_| Ok(frame())));
        let opts = CameraOptions {
            min_interval: Duration::from_millis(50),
            max_failures: 5,
        };
        let mut cam = scripted(&script, opts).unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(cam.next_frame().unwrap(), Some(frame()));
        }
        // First frame at once, then two waits.
        assert!(
            start.elapsed() >= Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_camera_that_cannot_open_is_an_error_naming_it() {
        let script = Arc::new(Mutex::new(Script {
            open_fails: 1,
            ..Script::default()
        }));
        let err = scripted(&script, fast(5)).err().unwrap().to_string();
        assert!(err.contains("cannot open V4L2 device /dev/video9"), "{err}");
    }

    #[test]
    fn nonexistent_device_is_a_clear_error() {
        let err = OpenCvCamera::open(
            CameraSource::parse("/dev/video-acceso-none"),
            CameraOptions::default(),
        )
        .err()
        .unwrap();
        let text = err.to_string();
        assert!(matches!(err, HwError::Camera(_)));
        assert!(text.contains("/dev/video-acceso-none"), "{text}");
    }

    #[test]
    fn broken_pipeline_is_a_clear_error() {
        let src = CameraSource::parse("acceso-no-such-element ! appsink");
        assert!(matches!(src, CameraSource::Pipeline(_)));
        let text = OpenCvCamera::open(src, CameraOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(text.contains("acceso-no-such-element"), "{text}");
    }

    /// A real OpenCV capture end to end, where GStreamer's test source is installed: frames
    /// of the asked size, then end of stream, failures, and a reopen that gives frames again.
    #[test]
    fn gstreamer_test_source_gives_frames_and_is_reopened_after_end_of_stream() {
        let pipeline = "videotestsrc num-buffers=2 ! video/x-raw,width=64,height=48 ! \
                        videoconvert ! video/x-raw,format=BGR ! appsink";
        let opts = CameraOptions {
            min_interval: Duration::ZERO,
            max_failures: 2,
        };
        let mut cam = match OpenCvCamera::open(CameraSource::parse(pipeline), opts) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("skipped: no GStreamer test source here ({e})");
                return;
            }
        };
        let mut frames = 0;
        let mut errors = 0;
        for _ in 0..8 {
            match cam.next_frame() {
                Ok(Some(Frame::Bgr {
                    width,
                    height,
                    data,
                })) => {
                    assert_eq!((width, height), (64, 48));
                    assert_eq!(data.len(), 64 * 48 * 3);
                    frames += 1;
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(HwError::Camera(_)) => errors += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        // 2 frames, 2 failures (end of stream), reopen: 2 frames, 2 failures.
        assert!(frames >= 4, "frames {frames}, errors {errors}");
        assert!(errors >= 2, "frames {frames}, errors {errors}");
    }
}
