//! Reliability runs of the agent's outbox and MQTT link against a real mosquitto, shared by
//! `tests/link_reliability.rs` (which asserts that no event is lost or reordered) and
//! `benches/link.rs` (which prints the figures for BENCHMARKS.md).
//!
//! Events are produced through the agent's own store handle with `SharedStore::enqueue`, the
//! path the writer task takes after a decision, so that thousands can be made in seconds
//! without a card reader in the loop.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use acceso::store::SharedStore;
use acceso_protocol::{AccessEvent, Method, Outcome, Reason};
use tokio::sync::mpsc;

use super::door::TestDoor;
use super::mosquitto::{durable_subscriber, Mosquitto};

const LOGS: &str = "acceso/logs";
/// Bound on waiting for one run's deliveries.
const DELIVERY_BOUND: Duration = Duration::from_secs(120);

/// What a run saw at the broker, and how long delivery took.
#[derive(Debug)]
pub struct Run {
    pub name: &'static str,
    pub events: usize,
    /// Distinct events (by sequence number) the observer received.
    pub received: usize,
    /// Publishes received again with an event id already seen (QoS 1 redelivery).
    pub repeats: usize,
    /// From the broker being reachable (or the burst starting) to the last event arriving.
    pub delivery: Duration,
    /// The test process's resident memory at the checkpoints of the run, in KiB.
    pub rss_kib: Vec<(&'static str, u64)>,
    /// Events still in the outbox when the broker was stopped mid-delivery (0 where the run
    /// does not stop it).
    pub queued_at_stop: u64,
}

impl Run {
    pub fn per_second(&self) -> f64 {
        self.events as f64 / self.delivery.as_secs_f64()
    }
}

/// Everything the observer received: each sequence number once (with its event id), in order
/// of first arrival.
pub struct Receipt {
    rx: mpsc::UnboundedReceiver<rumqttc::Publish>,
    ids: HashMap<u64, String>,
    order: Vec<u64>,
    repeats: usize,
}

impl Receipt {
    pub fn new(rx: mpsc::UnboundedReceiver<rumqttc::Publish>) -> Receipt {
        Receipt {
            rx,
            ids: HashMap::new(),
            order: Vec::new(),
            repeats: 0,
        }
    }

    pub fn distinct(&self) -> usize {
        self.order.len()
    }

    /// Receives until `n` distinct events arrived. Panics on a timeout, a malformed event, or
    /// a sequence number arriving with two different event ids.
    pub async fn until(&mut self, n: usize) {
        let deadline = tokio::time::Instant::now() + DELIVERY_BOUND;
        while self.order.len() < n {
            let p = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "only {} of {n} events arrived within {DELIVERY_BOUND:?}",
                        self.order.len()
                    )
                })
                .expect("subscriber closed");
            let e: AccessEvent = serde_json::from_slice(&p.payload).expect("an AccessEvent");
            match self.ids.get(&e.seq) {
                Some(id) => {
                    assert_eq!(*id, e.event_id, "seq {} came with two event ids", e.seq);
                    self.repeats += 1;
                }
                None => {
                    self.ids.insert(e.seq, e.event_id);
                    self.order.push(e.seq);
                }
            }
        }
    }

    /// Every sequence number from 1 to `n` arrived, first arrivals in order.
    pub fn assert_complete_in_order(&self, n: usize) {
        let want: Vec<u64> = (1..=n as u64).collect();
        if self.order != want {
            let missing: Vec<u64> = want
                .iter()
                .filter(|s| !self.ids.contains_key(s))
                .copied()
                .collect();
            let out_of_order = self.order.windows(2).find(|w| w[0] > w[1]);
            panic!(
                "{} distinct events; missing {:?}; first out of order {:?}",
                self.order.len(),
                &missing[..missing.len().min(20)],
                out_of_order
            );
        }
    }
}

/// An event as the decision task would make it (the store gives it its sequence number).
fn event(i: usize) -> AccessEvent {
    AccessEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        device: "test-door".into(),
        door: "front".into(),
        seq: 0,
        boot_id: "reliability".into(),
        time: jiff::Timestamp::now(),
        time_trusted: true,
        method: Method::Card,
        card_uid: Some(
            format!("{:08X}", i as u32 | 0x0100_0000)
                .parse()
                .expect("UID"),
        ),
        user_id: None,
        face_score: None,
        decision: Outcome::Denied,
        reason: Reason::UnknownCard,
        latency_us: 100,
        dropped: None,
    }
}

/// Queues `n` events through `store`, as the writer task does.
pub async fn produce(store: &SharedStore, n: usize) {
    for i in 0..n {
        let (_, dropped) = store
            .enqueue(event(i), 10_000_000)
            .await
            .expect("queue event");
        assert_eq!(dropped, 0);
    }
}

fn store_of(door: &TestDoor) -> SharedStore {
    door.agent.as_ref().expect("agent running").store()
}

/// This process's resident set size, in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Waits until the agent's outbox is empty (every event acknowledged).
async fn drained(store: &SharedStore) {
    let deadline = tokio::time::Instant::now() + DELIVERY_BOUND;
    loop {
        let queued = store.call(|s| s.queued_count()).await.expect("count");
        if queued == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queued} events still queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A persistent broker, a durable observer on the logs topic, and a connected door.
async fn setup() -> (Mosquitto, Receipt, TestDoor) {
    let broker = Mosquitto::start_persistent();
    let (client, rx) = durable_subscriber(broker.host(), broker.port(), LOGS).await;
    // The observer lives as long as the run: its task owns the event loop.
    std::mem::forget(client);
    let mut door = TestDoor::start(broker.port(), 1000).await;
    door.connected().await;
    (broker, Receipt::new(rx), door)
}

/// `n` events queued while the broker is down; the broker comes back, is stopped again in the
/// middle of the delivery, and comes back once more.
pub async fn broker_restart_with_queued(n: usize) -> Run {
    let (mut broker, mut receipt, mut door) = setup().await;
    let store = store_of(&door);
    broker.stop();
    door.disconnected().await;
    produce(&store, n).await;
    let start = Instant::now();
    broker.restart();
    receipt.until(n / 10).await;
    broker.stop();
    let queued_at_stop = store.call(|s| s.queued_count()).await.expect("count");
    broker.restart();
    receipt.until(n).await;
    let delivery = start.elapsed();
    receipt.assert_complete_in_order(n);
    drained(&store).await;
    door.stop().await;
    Run {
        name: "broker stopped and restarted twice, mid-delivery",
        events: n,
        received: receipt.distinct(),
        repeats: receipt.repeats,
        delivery,
        rss_kib: vec![("end", rss_kib())],
        queued_at_stop,
    }
}

/// A burst of `n` events while connected; the agent is killed abruptly (no cleanup at all)
/// halfway through and started again on the same state, and the burst goes on.
pub async fn crash_mid_burst(n: usize) -> Run {
    let (_broker, mut receipt, mut door) = setup().await;
    let start = Instant::now();
    produce(&store_of(&door), n / 2).await;
    door.agent.take().expect("running").crash();
    door.start_agent().await;
    produce(&store_of(&door), n - n / 2).await;
    receipt.until(n).await;
    let delivery = start.elapsed();
    receipt.assert_complete_in_order(n);
    drained(&store_of(&door)).await;
    door.stop().await;
    Run {
        name: "agent killed mid-burst and restarted",
        events: n,
        received: receipt.distinct(),
        repeats: receipt.repeats,
        delivery,
        rss_kib: vec![("end", rss_kib())],
        queued_at_stop: 0,
    }
}

/// `n` events produced during an outage, then delivered when the broker returns.
pub async fn long_outage(n: usize) -> Run {
    let (mut broker, mut receipt, mut door) = setup().await;
    let store = store_of(&door);
    broker.stop();
    door.disconnected().await;
    let mut rss = vec![("before the outage's events", rss_kib())];
    produce(&store, n / 2).await;
    rss.push(("halfway", rss_kib()));
    produce(&store, n - n / 2).await;
    rss.push(("all queued", rss_kib()));
    let start = Instant::now();
    broker.restart();
    receipt.until(n).await;
    let delivery = start.elapsed();
    rss.push(("all delivered", rss_kib()));
    receipt.assert_complete_in_order(n);
    drained(&store).await;
    door.stop().await;
    Run {
        name: "events produced during an outage, then delivered",
        events: n,
        received: receipt.distinct(),
        repeats: receipt.repeats,
        delivery,
        rss_kib: rss,
        queued_at_stop: 0,
    }
}
