//! Test support for the door tests: every relay wiring, a door on simulated hardware with no
//! broker, and the lock states read back from the relay recorder.

use std::time::{Duration, Instant};

use acceso::door::{LockState, Wiring};
use acceso::store::SharedStore;
use acceso_protocol::Update;

use super::door::TestDoor;

#[allow(dead_code)]
pub const UNLOCK: Duration = Duration::from_millis(400);

/// A port where no broker listens: these tests are about the door, which never waits on it.
#[allow(dead_code)]
pub fn no_broker() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[allow(dead_code)]
pub const WIRINGS: [Wiring; 4] = [
    Wiring {
        active_low: false,
        fail_safe: false,
    },
    Wiring {
        active_low: true,
        fail_safe: false,
    },
    Wiring {
        active_low: false,
        fail_safe: true,
    },
    Wiring {
        active_low: true,
        fail_safe: true,
    },
];

#[allow(dead_code)]
pub async fn door(wiring: Wiring) -> TestDoor {
    TestDoor::start_with(no_broker(), |c| {
        c.door.unlock_ms = UNLOCK.as_millis() as u64;
        c.relay.active_low = wiring.active_low;
        c.door.fail_safe = wiring.fail_safe;
        c.door.held_open_ms = 1000;
    })
    .await
}

/// Gives `ana` the card DEADBEEF, straight into the store (no broker in these tests).
#[allow(dead_code)]
pub async fn enrol(store: SharedStore) {
    let update: Update = serde_json::from_str(
        r#"{"version":1,"op":"upsert_user","user":{"id":"ana","name":"Ana","cards":["DEADBEEF"]}}"#,
    )
    .unwrap();
    store.call(move |s| s.apply_update(&update)).await.unwrap();
}

/// The lock states the relay line went through, with their times.
#[allow(dead_code)]
pub fn lock_states(d: &TestDoor, wiring: Wiring) -> Vec<(Instant, LockState)> {
    d.relay
        .changes()
        .into_iter()
        .map(|(t, level)| (t, wiring.state_of(level)))
        .collect()
}

#[allow(dead_code)]
pub fn unlocked_intervals(d: &TestDoor, wiring: Wiring) -> Vec<Duration> {
    d.relay
        .intervals_at(wiring.level(LockState::Unlocked))
        .into_iter()
        .map(|(from, to)| to.unwrap_or_else(Instant::now).duration_since(from))
        .collect()
}

#[allow(dead_code)]
pub async fn restart_with_user(d: &mut TestDoor) {
    d.stop().await;
    let store = acceso::store::Store::open(&d.config.db_path()).unwrap().0;
    enrol(SharedStore::new(store)).await;
    d.start_agent().await;
}
