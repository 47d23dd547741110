//! The event writer: decided events into the outbox, in order, never dropped for a passing
//! database failure.
//!
//! A database can fail under a running agent (the SD card full, an I/O error). The door keeps
//! deciding regardless: the control task hands events over a bounded channel and must never
//! wait on the disk. So the writer takes every event off the channel at once and holds those
//! the database will not take, in order, retrying with backoff; once it takes them again they
//! go in as they came. Memory is bounded: past `hold` events the oldest are let go, counted,
//! and reported in one `events_dropped` event when the database is back (as a full outbox is).

use std::collections::VecDeque;
use std::time::Duration;

use acceso_protocol::AccessEvent;
use tokio::sync::mpsc;

use crate::observe::{Component, HealthState, Reporter};
use crate::store::SharedStore;

/// How the writer holds and retries events while the database fails.
#[derive(Debug, Clone, Copy)]
pub struct Holding {
    /// Most events held in memory.
    pub hold: usize,
    /// First wait before trying the database again; doubled up to `retry_max`.
    pub retry: Duration,
    pub retry_max: Duration,
    /// After the decision task has ended, how many more tries before the held events are
    /// given up (a graceful stop must end).
    pub tries_at_stop: u32,
}

impl Default for Holding {
    fn default() -> Self {
        Holding {
            hold: 10_000,
            retry: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            tries_at_stop: 3,
        }
    }
}

/// Puts decided events into the outbox. Ends when the decision task has ended and every event
/// it sent is stored (or, with the database failing, after `tries_at_stop` more tries), so a
/// graceful stop loses none that can be kept.
pub async fn run_writer(
    mut events: mpsc::Receiver<AccessEvent>,
    store: SharedStore,
    max_queued: u64,
    reporter: Reporter,
    holding: Holding,
) {
    let mut held: VecDeque<AccessEvent> = VecDeque::new();
    // Let go of while held (memory full); reported once the database takes events again.
    let mut lost: u64 = 0;
    let mut open = true;
    let mut failing = false;
    let mut wait = holding.retry;
    let mut tries_after_close = 0;
    let take = |held: &mut VecDeque<AccessEvent>, lost: &mut u64, event| {
        if held.len() >= holding.hold {
            held.pop_front();
            *lost += 1;
        }
        held.push_back(event);
    };
    loop {
        if held.is_empty() {
            match events.recv().await {
                Some(e) => held.push_back(e),
                None => break,
            }
        }
        while let Ok(e) = events.try_recv() {
            take(&mut held, &mut lost, e);
        }
        let Some(next) = held.front().cloned() else {
            continue;
        };
        match store.enqueue(next, max_queued).await {
            Ok((stored, dropped)) => {
                held.pop_front();
                if lost > 0 {
                    match store.report_lost(&stored, lost).await {
                        Ok(()) => lost = 0,
                        Err(e) => {
                            tracing::warn!("cannot queue the report of {lost} lost events yet: {e}")
                        }
                    }
                }
                if failing {
                    failing = false;
                    wait = holding.retry;
                    reporter.health(
                        Component::Store,
                        HealthState::Ok,
                        format!("storing events again ({} still held)", held.len()),
                    );
                }
                if dropped > 0 {
                    reporter.health(
                        Component::Store,
                        HealthState::Degraded,
                        format!(
                            "outbox full ({max_queued} events): dropped the {dropped} oldest; the cloud gets an events_dropped report"
                        ),
                    );
                }
            }
            Err(e) => {
                if !failing {
                    failing = true;
                    reporter.health(
                        Component::Store,
                        HealthState::Failed,
                        format!(
                            "cannot queue events: {e}; holding them in memory (up to {}) and retrying",
                            holding.hold
                        ),
                    );
                }
                if !open {
                    tries_after_close += 1;
                    if tries_after_close > holding.tries_at_stop {
                        tracing::error!(
                            "stopping with the database still failing: {} events could not be stored and are lost",
                            held.len() as u64 + lost
                        );
                        return;
                    }
                }
                // Wait before the next try, taking events meanwhile.
                let pause = tokio::time::sleep(wait);
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        _ = &mut pause => break,
                        e = events.recv(), if open => match e {
                            Some(e) => take(&mut held, &mut lost, e),
                            None => open = false,
                        },
                    }
                }
                wait = (wait * 2).min(holding.retry_max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Observation;
    use crate::store::outbox::sample_event as event;
    use crate::store::Store;
    use acceso_protocol::Reason;

    fn fast(hold: usize) -> Holding {
        Holding {
            hold,
            retry: Duration::from_millis(5),
            retry_max: Duration::from_millis(20),
            tries_at_stop: 3,
        }
    }

    struct Rig {
        store: SharedStore,
        tx: mpsc::Sender<AccessEvent>,
        obs: mpsc::UnboundedReceiver<Observation>,
        writer: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    fn rig(hold: usize) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join("a.db")).unwrap();
        let store = SharedStore::new(store);
        let (reporter, obs) = Reporter::channel();
        let (tx, rx) = mpsc::channel(8);
        let writer = tokio::spawn(run_writer(rx, store.clone(), 1000, reporter, fast(hold)));
        Rig {
            store,
            tx,
            obs,
            writer,
            _dir: dir,
        }
    }

    async fn fail_writes(store: &SharedStore, fail: bool) {
        store.call(move |s| s.fail_writes(fail)).await.unwrap();
    }

    /// The next store health report in `state`: its detail.
    async fn store_health(
        obs: &mut mpsc::UnboundedReceiver<Observation>,
        want: HealthState,
    ) -> String {
        let wait = async {
            loop {
                match obs.recv().await {
                    Some(Observation::Health {
                        component: Component::Store,
                        state,
                        detail,
                    }) if state == want => return detail,
                    Some(_) => {}
                    None => panic!("reporter closed"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("store health report")
    }

    async fn queued(store: &SharedStore) -> Vec<AccessEvent> {
        store
            .call(|s| s.queued_from(0, 100_000))
            .await
            .unwrap()
            .into_iter()
            .map(|q| serde_json::from_str(&q.payload).unwrap())
            .collect()
    }

    async fn send(tx: &mpsc::Sender<AccessEvent>, e: AccessEvent) {
        tokio::time::timeout(Duration::from_secs(5), tx.send(e))
            .await
            .expect("the writer takes events while the database fails")
            .unwrap();
    }

    #[tokio::test]
    async fn events_decided_while_the_database_fails_are_held_and_stored_in_order_once_it_works() {
        let mut r = rig(10_000);
        send(&r.tx, event(0)).await;
        fail_writes(&r.store, true).await;
        // Far more than the channel holds: the door never waits on the disk.
        for n in 1..200 {
            send(&r.tx, event(n)).await;
        }
        let why = store_health(&mut r.obs, HealthState::Failed).await;
        assert!(why.contains("holding them in memory"), "{why}");
        fail_writes(&r.store, false).await;
        store_health(&mut r.obs, HealthState::Ok).await;
        drop(r.tx);
        tokio::time::timeout(Duration::from_secs(10), r.writer)
            .await
            .unwrap()
            .unwrap();
        let got = queued(&r.store).await;
        let ids: Vec<u64> = got.iter().map(|e| e.latency_us).collect();
        assert_eq!(
            ids,
            (0..200).collect::<Vec<_>>(),
            "every event, once, in order"
        );
        let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn past_what_memory_holds_the_oldest_are_let_go_and_reported_once() {
        let mut r = rig(10);
        fail_writes(&r.store, true).await;
        for n in 0..25 {
            send(&r.tx, event(n)).await;
        }
        store_health(&mut r.obs, HealthState::Failed).await;
        // Let the writer take all 25 off the channel before the database comes back.
        let drained = async {
            while r.tx.capacity() < r.tx.max_capacity() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), drained)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        fail_writes(&r.store, false).await;
        store_health(&mut r.obs, HealthState::Ok).await;
        drop(r.tx);
        tokio::time::timeout(Duration::from_secs(10), r.writer)
            .await
            .unwrap()
            .unwrap();
        let got = queued(&r.store).await;
        let kept: Vec<u64> = got
            .iter()
            .filter(|e| e.reason == Reason::UnknownCard)
            .map(|e| e.latency_us)
            .collect();
        assert_eq!(
            kept,
            (15..25).collect::<Vec<_>>(),
            "the newest 10, in order"
        );
        let reports: Vec<Option<u64>> = got
            .iter()
            .filter(|e| e.reason == Reason::EventsDropped)
            .map(|e| e.dropped)
            .collect();
        assert_eq!(reports, vec![Some(15)], "one report counts the 15 let go");
    }

    #[tokio::test]
    async fn a_stop_with_the_database_still_failing_ends_after_a_few_tries() {
        let mut r = rig(100);
        fail_writes(&r.store, true).await;
        send(&r.tx, event(1)).await;
        store_health(&mut r.obs, HealthState::Failed).await;
        drop(r.tx);
        tokio::time::timeout(Duration::from_secs(10), r.writer)
            .await
            .expect("the writer ends")
            .unwrap();
        fail_writes(&r.store, false).await;
        assert!(queued(&r.store).await.is_empty());
    }
}
