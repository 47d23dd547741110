//! A camera read that never returns (OpenCV has no read timeout) must not hold up a graceful
//! stop: the door locks, the events are kept, and the agent stops within its bound.
#![cfg(feature = "face")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use acceso::clock::SimClock;
use acceso::config::{CameraBackend, DoorMode};
use acceso::door::{LockState, Wiring};
use acceso::hw::{Frame, FrameSource, HwError};
use acceso::observe::Reporter;
use acceso::sim::hw::RelayRecorder;
use acceso::{Agent, Backends, Config};

/// Blocks in its first read, for good.
struct Stuck(Arc<AtomicBool>);

impl FrameSource for Stuck {
    fn next_frame(&mut self) -> Result<Option<Frame>, HwError> {
        self.0.store(true, Ordering::SeqCst);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_stuck_in_a_read_does_not_hold_up_a_graceful_stop() {
    let state = tempfile::tempdir().unwrap();
    let mut config = Config::sim_defaults(state.path());
    config.door.mode = DoorMode::CardOrFace;
    config.camera.backend = CameraBackend::Sim;
    // No broker listens here: the agent runs offline.
    config.broker.port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.validate().unwrap();
    let entered = Arc::new(AtomicBool::new(false));
    let relay = RelayRecorder::default();
    let backends = Backends {
        reader: None,
        relay: Box::new(relay.relay()),
        inputs: None,
        camera: Some(Box::new(Stuck(entered.clone()))),
        clock: Arc::new(SimClock::default()),
    };
    let agent = tokio::time::timeout(
        Duration::from_secs(30),
        Agent::start(&config, backends, Reporter::log_only()),
    )
    .await
    .expect("start timed out")
    .expect("agent starts");
    let until = Instant::now() + Duration::from_secs(30);
    while !entered.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < until,
            "the camera thread never read a frame"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopping = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), agent.stop())
        .await
        .expect("a stuck camera held up the stop");
    // The stop waited for the camera thread for its bound (5 s), no longer.
    assert!(
        stopping.elapsed() < Duration::from_secs(12),
        "{:?}",
        stopping.elapsed()
    );
    assert_eq!(
        relay.level(),
        Some(Wiring::default().level(LockState::Locked)),
        "the door ends locked"
    );
}
