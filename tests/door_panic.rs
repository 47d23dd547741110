//! A panic anywhere in the process drives the lock back to locked (the panic hook's guard).
//! Its own test binary: the hook is process-wide, so it must not touch other tests' doors.

mod support;

use acceso::door::LockState;
use support::wiring::{door, restart_with_user, WIRINGS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_anywhere_drives_the_lock_back_to_locked() {
    for wiring in WIRINGS {
        let mut d = door(wiring).await;
        restart_with_user(&mut d).await;
        d.tap("DEADBEEF").await;
        assert_eq!(d.relay.level(), Some(wiring.level(LockState::Unlocked)));
        let panicked = std::thread::spawn(|| panic!("simulated bug in some thread")).join();
        assert!(panicked.is_err());
        assert_eq!(
            d.relay.level(),
            Some(wiring.level(LockState::Locked)),
            "{wiring:?}"
        );
        d.stop().await;
    }
}
