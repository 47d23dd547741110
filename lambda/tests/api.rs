//! The admin API against moto: user writes with fleet versions, signed updates published
//! (read back from moto's recorder), one card per user, validation naming the field.

mod common;

use std::collections::HashMap;

use acceso_cloud::api::Api;
use acceso_cloud::dynamo::{DynamoDirectory, DynamoEvents};
use acceso_cloud::events::{ProxyRequest, ProxyResponse, RequestContext};
use acceso_cloud::iot::IotPublisher;
use acceso_cloud::ports::{Directory, PublishError, Publisher};
use acceso_protocol::{SigningKey, Topics, TrustedKeys, Update, UpdateOp};
use common::*;
use serde_json::{json, Value};

pub struct Fixture<P> {
    pub api: Api<DynamoDirectory, DynamoEvents, P, SigningKey>,
    pub prefix: String,
    pub trusted: TrustedKeys,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub directory_table: String,
}

async fn fixture_with<P: Publisher>(publisher: P) -> Fixture<P> {
    let conf = sdk().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&conf);
    let directory_table = directory_table(&dynamo).await;
    let events = events_table(&dynamo).await;
    let key = SigningKey::generate().unwrap();
    let trusted = TrustedKeys::new(vec![key.public_key()]);
    let prefix = unique("t");
    Fixture {
        api: Api {
            directory: DynamoDirectory::new(dynamo.clone(), &directory_table),
            events: DynamoEvents::new(dynamo.clone(), &events),
            publisher,
            signer: key,
            topics: Topics::new(&prefix),
        },
        prefix,
        trusted,
        dynamo,
        directory_table,
    }
}

async fn fixture() -> Fixture<IotPublisher> {
    let conf = sdk().await;
    fixture_with(IotPublisher::new(aws_sdk_iotdataplane::Client::new(&conf))).await
}

fn req(method: &str, resource: &str, params: &[(&str, &str)], body: Option<Value>) -> ProxyRequest {
    ProxyRequest {
        http_method: method.into(),
        resource: resource.into(),
        path: None,
        path_parameters: Some(
            params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        query_string_parameters: None,
        body: body.map(|b| b.to_string()),
        is_base64_encoded: false,
        request_context: RequestContext {
            request_id: Some("r1".into()),
            authorizer: Some(HashMap::from([
                ("role".to_string(), json!("write")),
                ("principalId".to_string(), json!("admin")),
            ])),
        },
    }
}

fn with_query(mut r: ProxyRequest, q: &[(&str, &str)]) -> ProxyRequest {
    r.query_string_parameters = Some(
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    r
}

async fn call<P: Publisher>(f: &Fixture<P>, r: ProxyRequest) -> (u16, Value) {
    let res: ProxyResponse = within("api", f.api.handle(&r)).await;
    assert_eq!(
        res.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    (res.status_code, res.body_json())
}

fn user(id: &str, cards: &[&str]) -> Value {
    json!({ "id": id, "name": format!("User {id}"), "cards": cards })
}

/// The updates moto recorded for this fixture, opened and verified with the door's key.
fn updates<P>(f: &Fixture<P>) -> Vec<Update> {
    published(&format!("{}/", f.prefix))
        .into_iter()
        .map(|p| {
            assert_eq!(p.topic, format!("{}/updates", f.prefix));
            assert_eq!(p.qos.as_deref(), Some("1"));
            Update::open(&p.payload, Some(&f.trusted)).expect("a signed update")
        })
        .collect()
}

#[tokio::test]
async fn every_write_takes_the_next_version_and_publishes_the_signed_update() {
    let f = fixture().await;
    let (s, b) = call(
        &f,
        req(
            "POST",
            "/users",
            &[],
            Some(user("u1", &["04:6b:2f:91:c4:5a:80"])),
        ),
    )
    .await;
    assert_eq!(
        (s, b["version"].clone(), b["published"].clone()),
        (201, json!(1), json!(true)),
        "{b}"
    );
    // Card UIDs are stored and answered in canonical form.
    assert_eq!(b["user"]["cards"], json!(["046B2F91C45A80"]));
    let (s, b) = call(
        &f,
        req("POST", "/users", &[], Some(user("u2", &["DEADBEEF"]))),
    )
    .await;
    assert_eq!((s, b["version"].clone()), (201, json!(2)));
    let mut changed = user("u1", &["046B2F91C45A80", "CAFEF00D"]);
    changed["enabled"] = json!(false);
    changed["schedule"] = json!([{"days": ["mon", "tue"], "from": "07:00", "until": "19:00"}]);
    changed["faces"] = json!([{"model": "sface_2021dec", "vector": [0.1, 0.2, 0.3]}]);
    let (s, b) = call(
        &f,
        req("PUT", "/users/{id}", &[("id", "u1")], Some(changed)),
    )
    .await;
    assert_eq!((s, b["version"].clone()), (200, json!(3)), "{b}");
    let (s, b) = call(&f, req("DELETE", "/users/{id}", &[("id", "u2")], None)).await;
    assert_eq!(
        (s, b["version"].clone(), b["user_id"].clone()),
        (200, json!(4), json!("u2"))
    );

    assert_eq!(
        within("version", f.api.directory.fleet_version())
            .await
            .unwrap(),
        4
    );
    let (s, b) = call(&f, req("GET", "/users/{id}", &[("id", "u1")], None)).await;
    assert_eq!(s, 200);
    assert_eq!(b["version"], 3);
    assert_eq!(b["user"]["enabled"], false);
    assert_eq!(b["user"]["faces"][0]["model"], "sface_2021dec");
    let (s, _) = call(&f, req("GET", "/users/{id}", &[("id", "u2")], None)).await;
    assert_eq!(s, 404);

    let ups = updates(&f);
    let got: Vec<(u64, &str, &str)> = ups
        .iter()
        .map(|u| (u.version, u.op.name(), u.op.user_id()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "upsert_user", "u1"),
            (2, "upsert_user", "u2"),
            (3, "upsert_user", "u1"),
            (4, "delete_user", "u2"),
        ]
    );
    let UpdateOp::UpsertUser(u1) = &ups[2].op else {
        panic!()
    };
    assert_eq!(u1.cards.len(), 2);
    assert!(!u1.enabled);
    // Another key's doors refuse them.
    let other = TrustedKeys::new(vec![SigningKey::generate().unwrap().public_key()]);
    let p = &published(&format!("{}/", f.prefix))[0];
    assert!(Update::open(&p.payload, Some(&other)).is_err());
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field_and_changes_nothing() {
    let f = fixture().await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (user("u1", &["XYZ"]), "cards[0]", "not hex"),
        (user("u1", &["DEADBEEF", "de:ad:be:ef"]), "cards", "twice"),
        (user("u1", &["00000000"]), "cards[0]", "all zero"),
        (
            json!({"id": "u1", "name": "A", "schedule": [{"days": ["mon"], "from": "25:00", "until": "26:00"}]}),
            "schedule[0].from",
            "not a time of day",
        ),
        (
            json!({"id": "u1", "name": "A", "schedule": [{"days": ["mon"], "from": "09:00", "until": "09:00"}]}),
            "schedule[0]",
            "starts and ends",
        ),
        (
            json!({"id": "u1", "name": "A", "faces": [{"model": "sface", "vector": []}]}),
            "faces[0].vector",
            "empty",
        ),
        (
            json!({"id": "u1", "name": "A", "faces": [{"vector": [0.1]}]}),
            "faces[0]",
            "model",
        ),
        (
            json!({"id": "u1", "name": "A", "faces": [{"model": "sface", "vector": [0.1, 0.2]}, {"model": "sface", "vector": [0.1]}]}),
            "faces[1].vector",
            "same model",
        ),
        (
            json!({"id": "u1", "name": "A", "valid_from": "2026-02-01T00:00:00Z", "valid_until": "2026-01-01T00:00:00Z"}),
            "valid_from",
            "not before",
        ),
        (json!({"id": "", "name": "A"}), "id", "empty"),
        (
            json!({"id": "u1", "name": "A", "colour": "red"}),
            "colour",
            "unknown field",
        ),
        (json!({"id": "u1"}), "", "name"),
        (
            user(
                "u1",
                &[
                    "01020304", "01020305", "01020306", "01020307", "01020308", "01020309",
                    "0102030A", "0102030B", "0102030C", "0102030D", "0102030E",
                ],
            ),
            "cards",
            "at most 10",
        ),
    ];
    for (body, field, expect) in cases {
        let (s, b) = call(&f, req("POST", "/users", &[], Some(body.clone()))).await;
        assert_eq!(s, 400, "{body}: {b}");
        assert_eq!(b["field"], field, "{body}: {b}");
        let msg = b["error"].as_str().unwrap();
        assert!(msg.contains(expect), "{body}: {msg:?} lacks {expect:?}");
    }
    let mut raw = req("POST", "/users", &[], None);
    raw.body = Some("{not json".into());
    let (s, _) = call(&f, raw).await;
    assert_eq!(s, 400);
    let (s, b) = call(
        &f,
        req("PUT", "/users/{id}", &[("id", "u9")], Some(user("u1", &[]))),
    )
    .await;
    assert_eq!((s, b["field"].clone()), (400, json!("id")), "{b}");
    let (s, b) = call(
        &f,
        with_query(req("GET", "/users", &[], None), &[("limit", "0")]),
    )
    .await;
    assert_eq!((s, b["field"].clone()), (400, json!("limit")));
    let (s, b) = call(
        &f,
        with_query(req("GET", "/users", &[], None), &[("cursor", "!!")]),
    )
    .await;
    assert_eq!((s, b["field"].clone()), (400, json!("cursor")), "{b}");

    assert_eq!(
        within("version", f.api.directory.fleet_version())
            .await
            .unwrap(),
        0
    );
    assert!(updates(&f).is_empty());
}

#[tokio::test]
async fn a_card_opens_doors_for_one_user_only() {
    let f = fixture().await;
    let (s, _) = call(
        &f,
        req("POST", "/users", &[], Some(user("ana", &["DEADBEEF"]))),
    )
    .await;
    assert_eq!(s, 201);
    // Another user may not take it, in any spelling.
    let (s, b) = call(
        &f,
        req("POST", "/users", &[], Some(user("bob", &["de:ad:be:ef"]))),
    )
    .await;
    assert_eq!((s, b["field"].clone()), (409, json!("cards")), "{b}");
    assert!(b["error"].as_str().unwrap().contains("\"ana\""), "{b}");
    let (s, _) = call(&f, req("GET", "/users/{id}", &[("id", "bob")], None)).await;
    assert_eq!(s, 404, "a refused write leaves nothing behind");
    assert_eq!(
        within("version", f.api.directory.fleet_version())
            .await
            .unwrap(),
        1
    );

    // Ana gives it up; then Bob can have it. Ana keeping her other card is no conflict.
    let (s, _) = call(
        &f,
        req(
            "PUT",
            "/users/{id}",
            &[("id", "ana")],
            Some(user("ana", &["CAFEF00D"])),
        ),
    )
    .await;
    assert_eq!(s, 200);
    let (s, b) = call(
        &f,
        req(
            "PUT",
            "/users/{id}",
            &[("id", "ana")],
            Some(user("ana", &["CAFEF00D"])),
        ),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(
        &f,
        req("POST", "/users", &[], Some(user("bob", &["DEADBEEF"]))),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    // Deleting Bob frees the card again.
    let (s, _) = call(&f, req("DELETE", "/users/{id}", &[("id", "bob")], None)).await;
    assert_eq!(s, 200);
    let (s, b) = call(
        &f,
        req("POST", "/users", &[], Some(user("cy", &["DEADBEEF"]))),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        within("version", f.api.directory.fleet_version())
            .await
            .unwrap(),
        6
    );
    let versions: Vec<u64> = updates(&f).iter().map(|u| u.version).collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 6]);
    // The card index holds one item per card held: DEADBEEF (cy) and CAFEF00D (ana).
    let out = within(
        "query cards",
        f.dynamo
            .query()
            .table_name(&f.directory_table)
            .key_condition_expression("pk = :c")
            .expression_attribute_values(
                ":c",
                aws_sdk_dynamodb::types::AttributeValue::S("card".into()),
            )
            .send(),
    )
    .await
    .unwrap();
    let cards: Vec<(String, String)> = out
        .items()
        .iter()
        .map(|i| {
            (
                i["sk"].as_s().unwrap().clone(),
                i["user_id"].as_s().unwrap().clone(),
            )
        })
        .collect();
    assert_eq!(
        cards,
        vec![
            ("CAFEF00D".into(), "ana".into()),
            ("DEADBEEF".into(), "cy".into())
        ]
    );
}

#[tokio::test]
async fn conflicts_and_rights_answer_with_their_status() {
    let f = fixture().await;
    let (s, _) = call(&f, req("POST", "/users", &[], Some(user("u1", &[])))).await;
    assert_eq!(s, 201);
    let (s, b) = call(&f, req("POST", "/users", &[], Some(user("u1", &[])))).await;
    assert_eq!((s, b["field"].clone()), (409, json!("id")));
    let (s, _) = call(
        &f,
        req(
            "PUT",
            "/users/{id}",
            &[("id", "nobody")],
            Some(user("nobody", &[])),
        ),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call(&f, req("DELETE", "/users/{id}", &[("id", "nobody")], None)).await;
    assert_eq!(s, 404);
    // A reader may read but not write, whatever the gateway's policy let through.
    let mut r = req("DELETE", "/users/{id}", &[("id", "u1")], None);
    r.request_context.authorizer = Some(HashMap::from([("role".to_string(), json!("read"))]));
    let (s, _) = call(&f, r).await;
    assert_eq!(s, 403);
    let mut r = req("GET", "/users/{id}", &[("id", "u1")], None);
    r.request_context.authorizer = Some(HashMap::from([("role".to_string(), json!("read"))]));
    let (s, _) = call(&f, r).await;
    assert_eq!(s, 200);
    let (s, _) = call(&f, req("PATCH", "/users/{id}", &[("id", "u1")], None)).await;
    assert_eq!(s, 405);
    let (s, _) = call(&f, req("GET", "/doors", &[], None)).await;
    assert_eq!(s, 404);
    assert_eq!(
        within("version", f.api.directory.fleet_version())
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn users_list_by_id_in_pages() {
    let f = fixture().await;
    for id in ["e", "b", "d", "a", "c"] {
        let (s, _) = call(&f, req("POST", "/users", &[], Some(user(id, &[])))).await;
        assert_eq!(s, 201);
    }
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut q = vec![("limit", "2")];
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let (s, b) = call(&f, with_query(req("GET", "/users", &[], None), &q)).await;
        assert_eq!(s, 200);
        for u in b["users"].as_array().unwrap() {
            ids.push(u["user"]["id"].as_str().unwrap().to_string());
        }
        match b["next"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(ids, vec!["a", "b", "c", "d", "e"]);
}

#[tokio::test]
async fn events_list_by_device_and_time_range_in_pages() {
    let f = fixture().await;
    let ingest = acceso_cloud::ingest::Ingest::new(f.api.events.clone());
    for i in 0..4u32 {
        let e = json!({
            "event_id": format!("0192f0c4-0000-7000-8000-{:012x}", 100 + i),
            "device": "door-1", "door": "front", "seq": i, "boot_id": "b",
            "time": format!("2026-12-03T10:0{i}:00Z"), "time_trusted": true, "method": "card",
            "card_uid": "DEADBEEF", "user_id": "u1", "face_score": null, "decision": "granted",
            "reason": "granted", "latency_us": 200, "dropped": null
        });
        within("ingest", ingest.handle(e)).await.unwrap();
    }
    let base = req(
        "GET",
        "/devices/{device}/events",
        &[("device", "door-1")],
        None,
    );
    let q = [
        ("from", "2026-12-03T10:01:00Z"),
        ("until", "2026-12-03T11:00:00Z"),
        ("limit", "2"),
    ];
    let (s, b) = call(&f, with_query(base.clone(), &q)).await;
    assert_eq!(s, 200, "{b}");
    let seqs: Vec<u64> = b["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2]);
    let next = b["next"].as_str().unwrap().to_string();
    let mut q2 = q.to_vec();
    q2.push(("cursor", &next));
    let (s, b) = call(&f, with_query(base.clone(), &q2)).await;
    assert_eq!(s, 200);
    let seqs: Vec<u64> = b["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![3]);

    for (q, field) in [
        (vec![("from", "yesterday")], "from"),
        (
            vec![
                ("from", "2026-12-03T11:00:00Z"),
                ("until", "2026-12-03T10:00:00Z"),
            ],
            "from",
        ),
        (vec![("until", "2026-13-03T10:00:00Z")], "until"),
        (vec![("limit", "5000")], "limit"),
    ] {
        let (s, b) = call(&f, with_query(base.clone(), &q)).await;
        assert_eq!((s, b["field"].clone()), (400, json!(field)), "{q:?}: {b}");
    }
    let (s, b) = call(
        &f,
        req(
            "GET",
            "/devices/{device}/events",
            &[("device", "door#1")],
            None,
        ),
    )
    .await;
    assert_eq!((s, b["field"].clone()), (400, json!("device")));
}

/// A publisher whose every publish is lost.
struct Lost;

impl Publisher for Lost {
    async fn publish(&self, topic: &str, _payload: Vec<u8>) -> Result<(), PublishError> {
        Err(PublishError {
            topic: topic.into(),
            why: "connection reset".into(),
        })
    }
}

#[tokio::test]
async fn a_lost_publish_keeps_the_write_and_says_so() {
    let f = fixture_with(Lost).await;
    let (s, b) = call(
        &f,
        req("POST", "/users", &[], Some(user("u1", &["DEADBEEF"]))),
    )
    .await;
    assert_eq!(
        (s, b["version"].clone(), b["published"].clone()),
        (201, json!(1), json!(false))
    );
    let (s, _) = call(&f, req("GET", "/users/{id}", &[("id", "u1")], None)).await;
    assert_eq!(s, 200);
    // What heals it: a door's sync gets the snapshot with the user at version 1.
    let (v, users) = within("snapshot", f.api.directory.snapshot())
        .await
        .unwrap();
    assert_eq!((v, users.len()), (1, 1));
}
