//! The lock through start, stop, crash, panic and restart, for every wiring; and the door's
//! behaviour with its contact and exit button. All over the relay recorder (monotonic times).

mod support;

use std::time::{Duration, Instant};

use acceso::door::{LockState, Wiring};
use acceso::observe::Observation;
use acceso_protocol::{Outcome, Reason};
use support::wiring::{door, lock_states, restart_with_user, unlocked_intervals, UNLOCK, WIRINGS};

fn is_granted(o: &Observation) -> bool {
    matches!(
        o,
        Observation::Decision {
            decision: Outcome::Granted,
            ..
        }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_graceful_stop_and_grants_for_every_wiring() {
    for wiring in WIRINGS {
        let mut d = door(wiring).await;
        restart_with_user(&mut d).await;
        // Cold start: the first level ever written is the locked one, and nothing else follows.
        let states = lock_states(&d, wiring);
        assert!(
            states.iter().all(|s| s.1 == LockState::Locked),
            "{wiring:?}: {states:?}"
        );
        assert!(!states.is_empty());

        for _ in 0..2 {
            let decision = d.tap("DEADBEEF").await;
            assert!(is_granted(&decision), "{decision:?}");
            tokio::time::sleep(UNLOCK + Duration::from_millis(150)).await;
        }
        // Every grant: exactly one unlocked interval, of the configured length.
        let intervals = unlocked_intervals(&d, wiring);
        assert_eq!(intervals.len(), 2, "{wiring:?}: {intervals:?}");
        for iv in &intervals {
            assert!(
                *iv >= UNLOCK && *iv < UNLOCK + Duration::from_millis(100),
                "{wiring:?}: {iv:?}"
            );
        }
        // Denied cards never move the lock.
        d.tap("01020304").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(unlocked_intervals(&d, wiring).len(), 2);

        // Graceful stop while unlocked: locked at once.
        d.tap("DEADBEEF").await;
        let stopping = Instant::now();
        d.stop().await;
        let states = lock_states(&d, wiring);
        let last = states.last().unwrap();
        assert_eq!(last.1, LockState::Locked, "{wiring:?}");
        assert!(
            last.0 >= stopping && last.0 - stopping < UNLOCK,
            "{wiring:?}: relocked by stop, not by time"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_kill_while_unlocked_then_restart_locks_before_anything_else() {
    for wiring in WIRINGS {
        let mut d = door(wiring).await;
        restart_with_user(&mut d).await;
        d.tap("DEADBEEF").await;
        assert_eq!(d.relay.level(), Some(wiring.level(LockState::Unlocked)));
        // A kill runs nothing: the line stays where it was (as a GPIO latch would).
        d.agent.take().unwrap().crash();
        tokio::time::sleep(UNLOCK * 2).await;
        assert_eq!(
            d.relay.level(),
            Some(wiring.level(LockState::Unlocked)),
            "{wiring:?}"
        );
        // The restarted agent's first act is to lock.
        let restarting = Instant::now();
        d.start_agent().await;
        let states = lock_states(&d, wiring);
        let after: Vec<_> = states.iter().filter(|s| s.0 >= restarting).collect();
        assert_eq!(
            after.first().map(|s| s.1),
            Some(LockState::Locked),
            "{wiring:?}: {states:?}"
        );
        assert_eq!(after.len(), 1, "{wiring:?}: {after:?}");
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_button_unlocks_and_is_logged_and_closing_the_door_relocks_early() {
    let wiring = Wiring::default();
    let mut d = door(wiring).await;
    // Press: unlocked, event exit_request.
    d.inputs.set_exit_button(false);
    let obs = d
        .expect("exit decision", |o| {
            matches!(o, Observation::Decision { .. }).then(|| o.clone())
        })
        .await;
    assert!(
        matches!(
            obs,
            Observation::Decision {
                reason: Reason::ExitRequest,
                decision: Outcome::Granted,
                ..
            }
        ),
        "{obs:?}"
    );
    d.inputs.set_exit_button(true);
    assert_eq!(d.relay.level(), Some(true));
    // The person opens the door and closes it behind them: relock now, not at the unlock time.
    d.inputs.set_door_contact(true);
    tokio::time::sleep(Duration::from_millis(80)).await;
    let closing = Instant::now();
    d.inputs.set_door_contact(false);
    let obs = d
        .expect("relock", |o| {
            matches!(o, Observation::Decision { .. }).then(|| o.clone())
        })
        .await;
    assert!(
        matches!(
            obs,
            Observation::Decision {
                reason: Reason::RelockedOnClose,
                ..
            }
        ),
        "{obs:?}"
    );
    let iv = unlocked_intervals(&d, wiring);
    assert_eq!(iv.len(), 1);
    assert!(iv[0] < UNLOCK, "{iv:?}");
    assert!(closing.elapsed() < UNLOCK);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_open_and_held_open_raise_alarms_and_never_unlock() {
    let wiring = Wiring {
        active_low: true,
        fail_safe: false,
    };
    let mut d = door(wiring).await;
    let reason = |o: &Observation| match o {
        Observation::Decision {
            reason, decision, ..
        } => Some((*reason, *decision)),
        _ => None,
    };
    d.inputs.set_door_contact(true);
    assert_eq!(
        d.expect("forced open", reason).await,
        (Reason::ForcedOpen, Outcome::Alarm)
    );
    // Still open after held_open_ms (1 s): held open; closing ends it.
    assert_eq!(
        d.expect("held open", reason).await,
        (Reason::HeldOpen, Outcome::Alarm)
    );
    d.inputs.set_door_contact(false);
    assert_eq!(
        d.expect("held open ended", reason).await,
        (Reason::HeldOpenEnded, Outcome::Info)
    );
    assert!(
        unlocked_intervals(&d, wiring).is_empty(),
        "an alarm moved the lock"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_step_while_unlocked_does_not_change_the_unlock_time() {
    let wiring = Wiring::default();
    let mut d = door(wiring).await;
    restart_with_user(&mut d).await;
    for step in ["2030-01-01T00:00:00Z", "2026-01-01T00:00:00Z"] {
        d.tap("DEADBEEF").await;
        // NTP steps the clock by years in the middle of the unlock.
        d.clock.set(step.parse().unwrap(), true);
        tokio::time::sleep(UNLOCK + Duration::from_millis(150)).await;
    }
    let iv = unlocked_intervals(&d, wiring);
    assert_eq!(iv.len(), 2);
    for iv in iv {
        assert!(
            iv >= UNLOCK && iv < UNLOCK + Duration::from_millis(100),
            "{iv:?}"
        );
    }
    d.stop().await;
}
