//! A camera that may not be there yet: opened on first use and, while it cannot be opened,
//! tried again every few seconds. Each failed frame is an error the camera thread reports, so
//! an unplugged camera degrades the door to card-only, says so, and heals when plugged back.

use std::time::{Duration, Instant};

use crate::hw::{Frame, FrameSource, HwError};

type Opener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, HwError> + Send>;

pub struct Reopening {
    open: Opener,
    camera: Option<Box<dyn FrameSource>>,
    last_try: Option<(Instant, String)>,
    retry_every: Duration,
}

impl Reopening {
    pub fn new(open: Opener, retry_every: Duration) -> Reopening {
        Reopening {
            open,
            camera: None,
            last_try: None,
            retry_every,
        }
    }
}

impl FrameSource for Reopening {
    fn next_frame(&mut self) -> Result<Option<Frame>, HwError> {
        if self.camera.is_none() {
            if let Some((at, why)) = &self.last_try {
                if at.elapsed() < self.retry_every {
                    return Err(HwError::Camera(why.clone()));
                }
            }
            match (self.open)() {
                Ok(camera) => {
                    self.camera = Some(camera);
                    self.last_try = None;
                }
                Err(e) => {
                    let why = e.to_string();
                    self.last_try = Some((Instant::now(), why.clone()));
                    return Err(HwError::Camera(why));
                }
            }
        }
        match self.camera.as_mut() {
            Some(camera) => camera.next_frame(),
            None => Err(HwError::Camera("camera not open".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    struct OneFrame;
    impl FrameSource for OneFrame {
        fn next_frame(&mut self) -> Result<Option<Frame>, HwError> {
            Ok(Some(Frame::Bgr {
                width: 1,
                height: 1,
                data: vec![0; 3],
            }))
        }
    }

    #[test]
    fn a_missing_camera_is_retried_at_the_set_pace_and_used_once_it_opens() {
        let tries = Arc::new(AtomicU32::new(0));
        let t = tries.clone();
        let mut cam = Reopening::new(
            Box::new(move || {
                let n = t.fetch_add(1, Ordering::SeqCst);
                if n < 2 {
                    Err(HwError::Camera(format!(
                        "cannot open /dev/video0 (try {n})"
                    )))
                } else {
                    Ok(Box::new(OneFrame) as Box<dyn FrameSource>)
                }
            }),
            Duration::from_millis(50),
        );
        let e = cam.next_frame().unwrap_err().to_string();
        assert!(e.contains("/dev/video0"), "{e}");
        // Within the retry interval: the same error, no new attempt.
        assert!(cam.next_frame().is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 1);
        std::thread::sleep(Duration::from_millis(60));
        assert!(cam.next_frame().is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 2);
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(cam.next_frame(), Ok(Some(Frame::Bgr { .. }))));
        assert!(matches!(cam.next_frame(), Ok(Some(_))));
        assert_eq!(tries.load(Ordering::SeqCst), 3);
    }
}
