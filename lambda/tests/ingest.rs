//! ingest against moto: events stored once, duplicates harmless, partial batch failures.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use acceso_cloud::dynamo::DynamoEvents;
use acceso_cloud::events::{SqsBatchResponse, SqsEvent, SqsRecord};
use acceso_cloud::ingest::{Ingest, IngestError, Retry};
use acceso_cloud::ports::{CursorOr, EventPage, EventStore, StoreError, Stored};
use acceso_protocol::AccessEvent;
use common::*;
use jiff::Timestamp;
use serde_json::{json, Value};

fn event(id: u32, device: &str, time: &str) -> Value {
    json!({
        "event_id": format!("0192f0c4-0000-7000-8000-{id:012x}"),
        "device": device,
        "door": "front",
        "seq": id,
        "boot_id": "6f1c",
        "time": time,
        "time_trusted": true,
        "method": "card",
        "card_uid": "DEADBEEF",
        "user_id": null,
        "face_score": null,
        "decision": "denied",
        "reason": "unknown_card",
        "latency_us": 180,
        "dropped": null
    })
}

fn fast() -> Retry {
    Retry {
        attempts: 3,
        backoff: Duration::from_millis(5),
    }
}

async fn setup() -> (aws_sdk_dynamodb::Client, String, Ingest<DynamoEvents>) {
    let client = aws_sdk_dynamodb::Client::new(&sdk().await);
    let table = events_table(&client).await;
    let mut ingest = Ingest::new(DynamoEvents::new(client.clone(), &table));
    ingest.retry = fast();
    (client, table, ingest)
}

fn record(id: &str, body: &str) -> SqsRecord {
    SqsRecord {
        message_id: id.into(),
        body: Some(body.into()),
    }
}

fn failures(res: &SqsBatchResponse) -> Vec<&str> {
    res.batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect()
}

#[tokio::test]
async fn an_event_is_stored_once_and_its_repeat_is_a_success() {
    let (client, table, ingest) = setup().await;
    let e = event(1, "door-1", "2026-12-03T10:00:00Z");
    let first = within("ingest", ingest.handle(e.clone())).await.unwrap();
    assert_eq!(first["stored"], "new");
    let again = within("ingest", ingest.handle(e.clone())).await.unwrap();
    assert_eq!(again["stored"], "duplicate");
    assert_eq!(count_items(&client, &table).await, 1);

    // What is stored is the event, unchanged.
    let page = within(
        "list",
        ingest.store.list_events(
            "door-1",
            "2026-12-03T00:00:00Z".parse().unwrap(),
            "2026-12-04T00:00:00Z".parse().unwrap(),
            10,
            None,
        ),
    )
    .await
    .unwrap();
    let want: AccessEvent = serde_json::from_value(e).unwrap();
    assert_eq!(page.events, vec![want]);
    assert_eq!(page.next, None);
}

#[tokio::test]
async fn an_invalid_event_is_refused_naming_the_field_and_nothing_is_stored() {
    let (client, table, ingest) = setup().await;
    let cases = [
        ("reason", json!("opened_by_magic"), "reason"),
        ("event_id", json!("not-a-uuid"), "event_id"),
        (
            "event_id",
            json!("0192F0C4-0000-7000-8000-000000000001"),
            "lowercase",
        ),
        ("device", json!("door/1"), "device"),
        ("decision", json!("granted"), "does not go with reason"),
        ("card_uid", json!("XYZ"), "card_uid"),
        ("time", json!("yesterday"), "time"),
    ];
    for (field, value, expect) in cases {
        let mut e = event(2, "door-1", "2026-12-03T10:00:00Z");
        e[field] = value;
        let err = within("ingest", ingest.handle(e)).await.expect_err(field);
        let IngestError::Invalid(why) = &err else {
            panic!("{field}: {err:?}");
        };
        assert!(why.contains(expect), "{field}: {why:?} lacks {expect:?}");
    }
    let mut extra = event(3, "door-1", "2026-12-03T10:00:00Z");
    extra["colour"] = json!("red");
    assert!(within("ingest", ingest.handle(extra)).await.is_err());
    assert_eq!(count_items(&client, &table).await, 0);
}

#[tokio::test]
async fn a_batch_stores_the_good_records_and_reports_exactly_the_bad_ones() {
    let (client, table, ingest) = setup().await;
    let a = event(10, "door-1", "2026-12-03T10:00:00Z").to_string();
    let b = event(11, "door-1", "2026-12-03T10:00:01Z").to_string();
    let mut bad = event(12, "door-1", "2026-12-03T10:00:02Z");
    bad["seq"] = json!(-1);
    let batch = SqsEvent {
        records: vec![
            record("m1", &a),
            record("m2", "{not json"),
            record("m3", &b),
            // The same event again in the batch: one item, and a success.
            record("m4", &a),
            record("m5", &bad.to_string()),
            SqsRecord {
                message_id: "m6".into(),
                body: None,
            },
        ],
    };
    let input = serde_json::to_value(&batch).unwrap();
    let res: SqsBatchResponse =
        serde_json::from_value(within("batch", ingest.handle(input)).await.unwrap()).unwrap();
    assert_eq!(failures(&res), vec!["m2", "m5", "m6"]);
    assert_eq!(count_items(&client, &table).await, 2);
    // The response is what Lambda's ReportBatchItemFailures reads.
    let wire = serde_json::to_value(&res).unwrap();
    assert_eq!(wire["batchItemFailures"][0]["itemIdentifier"], "m2");

    // Redelivered (SQS retries the failures; a retried good record is a duplicate).
    let again = within("batch", ingest.handle_batch(&batch)).await;
    assert_eq!(failures(&again), vec!["m2", "m5", "m6"]);
    assert_eq!(count_items(&client, &table).await, 2);
}

#[tokio::test]
async fn a_door_s_event_through_the_rule_is_stored_and_one_in_another_door_s_name_is_not() {
    let (client, table, ingest) = setup().await;
    let e = event(30, "door-1", "2026-12-03T10:00:00Z");
    let got = within("ingest", ingest.handle(from_rule("door-1", &e)))
        .await
        .unwrap();
    assert_eq!(got["stored"], "new");
    // door-2 (a stolen certificate, a bug) publishes an event that says it is door-1's.
    let forged = event(31, "door-1", "2026-12-03T10:00:01Z");
    let err = within("ingest", ingest.handle(from_rule("door-2", &forged)))
        .await
        .expect_err("an event in another door's name");
    let IngestError::Invalid(why) = &err else {
        panic!("{err:?}")
    };
    assert!(why.contains("door-2") && why.contains("door-1"), "{why}");
    // A broken wrapping is refused naming what is wrong.
    let broken = json!({"client_id": "door-1", "payload": "%%%"});
    let err = within("ingest", ingest.handle(broken)).await.unwrap_err();
    assert!(err.to_string().contains("payload"), "{err}");
    assert_eq!(count_items(&client, &table).await, 1);
}

#[tokio::test]
async fn the_retry_queue_s_messages_are_stored_whichever_way_they_got_there() {
    let (client, table, ingest) = setup().await;
    let a = event(40, "door-1", "2026-12-03T10:00:00Z");
    let b = event(41, "door-1", "2026-12-03T10:00:01Z");
    let forged = event(42, "door-1", "2026-12-03T10:00:02Z");
    let batch = SqsEvent {
        records: vec![
            // The rule's Lambda action failed: its error action.
            record("m1", &error_action("door-1", &a).to_string()),
            // The asynchronous invocation failed: Lambda's dead-letter queue holds its input.
            record("m2", &from_rule("door-1", &b).to_string()),
            record("m3", &error_action("door-2", &forged).to_string()),
            // The same event by both ways: one item.
            record("m4", &from_rule("door-1", &a).to_string()),
        ],
    };
    let res = within("batch", ingest.handle_batch(&batch)).await;
    assert_eq!(failures(&res), vec!["m3"]);
    assert_eq!(count_items(&client, &table).await, 2);
}

#[tokio::test]
async fn a_batch_the_store_cannot_take_is_reported_whole_not_as_a_success() {
    let client = aws_sdk_dynamodb::Client::new(&sdk().await);
    let mut ingest = Ingest::new(DynamoEvents::new(client, "no-such-table"));
    ingest.retry = fast();
    let batch = SqsEvent {
        records: vec![
            record(
                "m1",
                &event(20, "door-1", "2026-12-03T10:00:00Z").to_string(),
            ),
            record(
                "m2",
                &event(21, "door-1", "2026-12-03T10:00:01Z").to_string(),
            ),
        ],
    };
    let res = within("batch", ingest.handle_batch(&batch)).await;
    assert_eq!(failures(&res), vec!["m1", "m2"]);
    // One event: an error, so Lambda retries it and then hands it to the failure destination.
    let one = within(
        "one",
        ingest.handle(event(22, "door-1", "2026-12-03T10:00:00Z")),
    )
    .await;
    assert!(
        matches!(&one, Err(IngestError::Store { source: StoreError::Permanent(m), .. }) if m.contains("ResourceNotFound")),
        "{one:?}"
    );
}

/// The real store behind a flaky front: the first `fail_first` puts of each event fail as
/// throttled (what BatchWriteItem would return as unprocessed items).
struct Flaky<S> {
    inner: S,
    fail_first: u32,
    seen: Mutex<std::collections::HashMap<String, u32>>,
    calls: AtomicU32,
}

impl<S: EventStore> EventStore for Flaky<S> {
    async fn put_event(&self, event: &AccessEvent) -> Result<Stored, StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let n = {
            let mut seen = self.seen.lock().unwrap();
            let n = seen.entry(event.event_id.clone()).or_insert(0);
            *n += 1;
            *n
        };
        if n <= self.fail_first {
            return Err(StoreError::Transient(
                "ProvisionedThroughputExceeded".into(),
            ));
        }
        self.inner.put_event(event).await
    }

    async fn list_events(
        &self,
        device: &str,
        from: Timestamp,
        until: Timestamp,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<EventPage, CursorOr<StoreError>> {
        self.inner
            .list_events(device, from, until, limit, cursor)
            .await
    }
}

#[tokio::test]
async fn throttled_records_are_retried_and_reported_only_if_they_never_go_in() {
    let client = aws_sdk_dynamodb::Client::new(&sdk().await);
    let table = events_table(&client).await;
    let batch = SqsEvent {
        records: (0..4)
            .map(|i| {
                record(
                    &format!("m{i}"),
                    &event(30 + i, "door-1", "2026-12-03T10:00:00Z").to_string(),
                )
            })
            .collect(),
    };
    // Throttled twice each, three tries: all go in on the third.
    let ingest = Ingest {
        store: Flaky {
            inner: DynamoEvents::new(client.clone(), &table),
            fail_first: 2,
            seen: Default::default(),
            calls: AtomicU32::new(0),
        },
        retry: fast(),
    };
    let res = within("batch", ingest.handle_batch(&batch)).await;
    assert_eq!(failures(&res), Vec::<&str>::new());
    assert_eq!(ingest.store.calls.load(Ordering::Relaxed), 12);
    assert_eq!(count_items(&client, &table).await, 4);

    // Throttled more often than it is tried: every record reported, none claimed.
    let table2 = events_table(&client).await;
    let ingest = Ingest {
        store: Flaky {
            inner: DynamoEvents::new(client.clone(), &table2),
            fail_first: 3,
            seen: Default::default(),
            calls: AtomicU32::new(0),
        },
        retry: fast(),
    };
    let res = within("batch", ingest.handle_batch(&batch)).await;
    assert_eq!(failures(&res), vec!["m0", "m1", "m2", "m3"]);
    assert_eq!(count_items(&client, &table2).await, 0);
}

#[tokio::test]
async fn a_device_s_events_list_by_time_range_in_pages() {
    let (_client, _table, ingest) = setup().await;
    for i in 0..5u32 {
        let t = format!("2026-12-03T10:00:0{i}Z");
        within("ingest", ingest.handle(event(40 + i, "door-7", &t)))
            .await
            .unwrap();
    }
    within(
        "ingest",
        ingest.handle(event(50, "door-8", "2026-12-03T10:00:02Z")),
    )
    .await
    .unwrap();
    let from: Timestamp = "2026-12-03T10:00:01Z".parse().unwrap();
    let until: Timestamp = "2026-12-03T10:00:04Z".parse().unwrap();
    let mut seqs = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = within(
            "list",
            ingest
                .store
                .list_events("door-7", from, until, 2, cursor.as_deref()),
        )
        .await
        .unwrap();
        pages += 1;
        seqs.extend(page.events.iter().map(|e| e.seq));
        assert!(page.events.iter().all(|e| e.device == "door-7"));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 10, "pages never end");
    }
    // [from, until): 10:00:01, :02, :03, oldest first.
    assert_eq!(seqs, vec![41, 42, 43]);
    let bad = within(
        "list",
        ingest
            .store
            .list_events("door-7", from, until, 2, Some("%%%")),
    )
    .await;
    assert!(matches!(bad, Err(CursorOr::BadCursor(_))), "{bad:?}");
}
