//! A moto server for the tests, started once per test binary on a loopback port, and helpers:
//! clients with fixed fake credentials and a region, tables, and the IoT data plane
//! publishes moto recorded.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
use base64::Engine;

pub const REGION: &str = "eu-west-1";

pub struct Moto {
    pub endpoint: String,
    pub recording: PathBuf,
    _child: Mutex<Child>,
    // Held open for the life of the test process; its end (the process exiting) stops moto.
    _stdin: Mutex<ChildStdin>,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

/// The python that has moto: `ACCESO_MOTO_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("ACCESO_MOTO_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// The moto server of this test binary. A missing moto fails the test, saying how to get it.
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("acceso-cloud-moto-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let recording = dir.join("recording.jsonl");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/moto_server.py");
        let mut child = Command::new(python())
            .arg(script)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("MOTO_ENABLE_RECORDING", "true")
            .env("MOTO_RECORDER_FILEPATH", &recording)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} for moto server ({e}): install it with \
                     `pip install 'moto[server]'` (scripts/test does) or set ACCESO_MOTO_PYTHON",
                    python()
                )
            });
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        // The port line, within 60 s.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("moto server did not start within 60 s");
        let port: u16 = line.trim().parse().unwrap_or_else(|_| {
            panic!(
                "moto server did not start: {:?}. Install it with `pip install 'moto[server]'` \
                 (scripts/test does) or set ACCESO_MOTO_PYTHON to a python that has it",
                line.trim()
            )
        });
        Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            recording,
            _child: Mutex::new(child),
            _stdin: Mutex::new(stdin),
        }
    })
}

/// Every await in the tests is bounded.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 30 s"))
}

/// SDK settings for moto: fixed fake credentials, a region, the endpoint, our HTTP client
/// and timeouts. Nothing is read from the instance metadata service.
pub async fn sdk() -> SdkConfig {
    let m = moto();
    let creds =
        aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "tests");
    within(
        "sdk config",
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(creds)
            .endpoint_url(&m.endpoint)
            .http_client(acceso_cloud::aws::http_client())
            .timeout_config(acceso_cloud::aws::timeouts())
            .load(),
    )
    .await
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn attr(name: &str, t: ScalarAttributeType) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(t)
        .build()
        .expect("attribute")
}

fn key(name: &str, t: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(t)
        .build()
        .expect("key")
}

/// The events table as the template makes it.
pub async fn events_table(client: &aws_sdk_dynamodb::Client) -> String {
    let name = unique("events-");
    within(
        "create events table",
        client
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("event_id", ScalarAttributeType::S))
            .attribute_definitions(attr("device", ScalarAttributeType::S))
            .attribute_definitions(attr("time_ns", ScalarAttributeType::N))
            .key_schema(key("event_id", KeyType::Hash))
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(acceso_cloud::dynamo::EVENTS_BY_DEVICE)
                    .key_schema(key("device", KeyType::Hash))
                    .key_schema(key("time_ns", KeyType::Range))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build()
                    .expect("gsi"),
            )
            .send(),
    )
    .await
    .expect("create events table");
    name
}

/// The directory table as the template makes it.
pub async fn directory_table(client: &aws_sdk_dynamodb::Client) -> String {
    let name = unique("directory-");
    within(
        "create directory table",
        client
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk", ScalarAttributeType::S))
            .attribute_definitions(attr("sk", ScalarAttributeType::S))
            .key_schema(key("pk", KeyType::Hash))
            .key_schema(key("sk", KeyType::Range))
            .send(),
    )
    .await
    .expect("create directory table");
    name
}

/// How many items a table holds (a full scan).
pub async fn count_items(client: &aws_sdk_dynamodb::Client, table: &str) -> usize {
    let out = within("scan", client.scan().table_name(table).send())
        .await
        .expect("scan");
    out.items().len()
}

/// One publish moto's IoT data plane received.
#[derive(Debug, Clone)]
pub struct Published {
    pub topic: String,
    pub qos: Option<String>,
    pub payload: Vec<u8>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The publishes moto recorded on topics starting with `prefix`, in order.
pub fn published(prefix: &str) -> Vec<Published> {
    let text = std::fs::read_to_string(&moto().recording).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let url = entry["url"].as_str().unwrap_or("");
        if entry["method"] != "POST" {
            continue;
        }
        let Some(rest) = url.split_once("/topics/").map(|(_, r)| r) else {
            continue;
        };
        let (topic, query) = rest.split_once('?').unwrap_or((rest, ""));
        let topic = percent_decode(topic);
        if !topic.starts_with(prefix) {
            continue;
        }
        let params: HashMap<&str, &str> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let body = entry["body"].as_str().unwrap_or("");
        let payload = if entry["body_encoded"] == true {
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .expect("recorded body is base64")
        } else {
            body.as_bytes().to_vec()
        };
        out.push(Published {
            topic,
            qos: params.get("qos").map(|s| s.to_string()),
            payload,
        });
    }
    out
}

fn b64(message: &serde_json::Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(message.to_string())
}

/// What the IoT Rule hands a function for `message` published by `client`
/// (`SELECT clientid() AS client_id, encode(*, 'base64') AS payload`).
pub fn from_rule(client: &str, message: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({ "client_id": client, "payload": b64(message) })
}

/// What the rule's error action puts on the retry queue when its action failed for `message`
/// (AWS IoT Core's error action message format).
pub fn error_action(client: &str, message: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "ruleName": "IngestRule",
        "topic": "acceso/logs",
        "cloudwatchTraceId": "7e146a2c-95b5-6caf-98b9-50e3969734c7",
        "clientId": client,
        "base64OriginalPayload": b64(message),
        "failures": [{
            "failedAction": "LambdaAction",
            "failedResource": "arn:aws:lambda:eu-west-1:123456789012:function:ingest",
            "errorMessage": "Failed to invoke lambda function. Rate exceeded"
        }]
    })
}
