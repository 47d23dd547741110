//! The DynamoDB implementations of [`EventStore`] and [`Directory`].
//!
//! Events table (`EVENTS_TABLE`): partition key `event_id` (S), so storing an event is a put
//! conditional on `attribute_not_exists(event_id)`: a repeat fails the condition and is a
//! duplicate, never a second item. The global secondary index `by_device` (`device` S,
//! `time_ns` N, all attributes) lists a device's events by time. The event itself is the
//! `event` attribute, its JSON.
//!
//! Directory table (`DIRECTORY_TABLE`): partition key `pk` (S), sort key `sk` (S):
//! - (`fleet`, `version`): the fleet version counter, `version` N;
//! - (`user`, id): a user, `body` S (its JSON) and `version` N (the fleet version of its
//!   last write), so a query of `pk = user` lists users by id, consistently and in pages;
//! - (`card`, UID): the card index, `user_id` S: one holder per card across the fleet.
//!
//! A write is one transaction: the counter goes from V to V+1 (conditional on V, read just
//! before), the user item is put or deleted (conditional on the version read), and the card
//! items of added cards are put (conditional on no other holder) and of removed cards deleted.
//! Any condition that fails cancels all of it; a moved counter is retried from the reads.

use std::collections::{BTreeSet, HashMap};

use acceso_protocol::{AccessEvent, User};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Delete, Put, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use base64::Engine;
use jiff::Timestamp;

use crate::ports::{
    CursorOr, Directory, EventPage, EventStore, StoreError, Stored, StoredUser, UserPage, Write,
    WriteError,
};

/// Classifies an SDK error: throttling, timeouts, transport failures and 5xx are transient.
pub(crate) fn classify<E, R>(what: &str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let transient = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(s) => matches!(
            s.err().code(),
            Some(
                "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
                    | "TransactionConflictException"
            )
        ),
        _ => false,
    };
    let msg = format!("{what}: {}", DisplayErrorContext(&err));
    if transient {
        StoreError::Transient(msg)
    } else {
        StoreError::Permanent(msg)
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s<'a>(item: &'a HashMap<String, AttributeValue>, key: &str) -> Result<&'a str, StoreError> {
    match item.get(key) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(StoreError::Permanent(format!(
            "stored item has no string attribute {key:?}"
        ))),
    }
}

fn get_n<T: std::str::FromStr>(
    item: &HashMap<String, AttributeValue>,
    key: &str,
) -> Result<T, StoreError> {
    match item.get(key) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| {
            StoreError::Permanent(format!("stored attribute {key:?} is not a number: {v:?}"))
        }),
        _ => Err(StoreError::Permanent(format!(
            "stored item has no number attribute {key:?}"
        ))),
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The events table.
#[derive(Debug, Clone)]
pub struct DynamoEvents {
    client: Client,
    table: String,
}

/// The index of a device's events by time.
pub const EVENTS_BY_DEVICE: &str = "by_device";

impl DynamoEvents {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoEvents {
            client,
            table: table.into(),
        }
    }
}

fn time_ns(t: Timestamp) -> i128 {
    t.as_nanosecond()
}

impl EventStore for DynamoEvents {
    async fn put_event(&self, event: &AccessEvent) -> Result<Stored, StoreError> {
        let json = serde_json::to_string(event)
            .map_err(|e| StoreError::Permanent(format!("event {}: {e}", event.event_id)))?;
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("event_id", s(&event.event_id))
            .item("device", s(&event.device))
            .item("time_ns", n(time_ns(event.time)))
            .item("door", s(&event.door))
            .item("decision", s(enum_name(&event.decision)))
            .item("reason", s(enum_name(&event.reason)))
            .item("event", s(json))
            .condition_expression("attribute_not_exists(event_id)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(Stored::New),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(Stored::Duplicate)
            }
            Err(e) => Err(classify("DynamoDB PutItem (event)", e)),
        }
    }

    async fn list_events(
        &self,
        device: &str,
        from: Timestamp,
        until: Timestamp,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<EventPage, CursorOr<StoreError>> {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(EVENTS_BY_DEVICE)
            .key_condition_expression("device = :d AND time_ns BETWEEN :from AND :last")
            .expression_attribute_values(":d", s(device))
            .expression_attribute_values(":from", n(time_ns(from)))
            .expression_attribute_values(":last", n(time_ns(until) - 1))
            .scan_index_forward(true)
            .limit(limit as i32);
        if let Some(c) = cursor {
            let (event_id, t) = decode_event_cursor(c).map_err(CursorOr::BadCursor)?;
            q = q
                .exclusive_start_key("event_id", s(event_id))
                .exclusive_start_key("device", s(device))
                .exclusive_start_key("time_ns", n(t));
        }
        let out = q
            .send()
            .await
            .map_err(|e| classify("DynamoDB Query (events)", e))?;
        let mut events = Vec::new();
        for item in out.items() {
            let json = get_s(item, "event")?;
            let event: AccessEvent = serde_json::from_str(json).map_err(|e| {
                StoreError::Permanent(format!("stored event is not an AccessEvent: {e}"))
            })?;
            events.push(event);
        }
        let next = match out.last_evaluated_key() {
            Some(k) => {
                let id = get_s(k, "event_id")?;
                let t: i128 = get_n(k, "time_ns")?;
                Some(B64.encode(format!("{t}/{id}")))
            }
            None => None,
        };
        Ok(EventPage { events, next })
    }
}

fn decode_event_cursor(c: &str) -> Result<(String, i128), String> {
    let bad = || "not a cursor this API returned".to_string();
    let raw = B64.decode(c).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (t, id) = text.split_once('/').ok_or_else(bad)?;
    let t: i128 = t.parse().map_err(|_| bad())?;
    if id.is_empty() {
        return Err(bad());
    }
    Ok((id.to_string(), t))
}

/// The wire name of a unit enum (`"unknown_card"`).
fn enum_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The directory table.
#[derive(Debug, Clone)]
pub struct DynamoDirectory {
    client: Client,
    table: String,
}

const PK_FLEET: &str = "fleet";
const SK_VERSION: &str = "version";
const PK_USER: &str = "user";
const PK_CARD: &str = "card";

/// How many times a write or a snapshot starts over when the fleet version moved under it.
pub const ATTEMPTS: u32 = 8;

impl DynamoDirectory {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoDirectory {
            client,
            table: table.into(),
        }
    }

    async fn counter(&self) -> Result<u64, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(PK_FLEET))
            .key("sk", s(SK_VERSION))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("DynamoDB GetItem (fleet version)", e))?;
        match out.item() {
            Some(item) => get_n(item, "version"),
            None => Ok(0),
        }
    }

    async fn card_holder(&self, card: &str) -> Result<Option<String>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(PK_CARD))
            .key("sk", s(card))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("DynamoDB GetItem (card)", e))?;
        match out.item() {
            Some(item) => Ok(Some(get_s(item, "user_id")?.to_string())),
            None => Ok(None),
        }
    }

    /// One attempt at a write: `Ok(None)` when a condition on what was read failed (the
    /// counter or the user moved), so the caller reads again.
    async fn try_write(&self, write: &Write) -> Result<Option<u64>, WriteError> {
        let version = self.counter().await?;
        let old = self.get_user(write.user_id()).await?;
        let next = version + 1;
        let id = write.user_id().to_string();
        let (new_user, old_version) = match (write, &old) {
            (Write::Create(_), Some(_)) => return Err(WriteError::Exists(id)),
            (Write::Replace(_) | Write::Delete(_), None) => return Err(WriteError::NotFound(id)),
            (Write::Create(u), None) => (Some(u), None),
            (Write::Replace(u), Some(o)) => (Some(u), Some(o.version)),
            (Write::Delete(_), Some(o)) => (None, Some(o.version)),
        };
        let build = |e: aws_sdk_dynamodb::error::BuildError| {
            WriteError::Store(StoreError::Permanent(format!("transaction item: {e}")))
        };

        let mut items = Vec::new();
        let counter = Update::builder()
            .table_name(&self.table)
            .key("pk", s(PK_FLEET))
            .key("sk", s(SK_VERSION))
            .update_expression("SET #v = :next")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":next", n(next));
        let counter = if version == 0 {
            counter.condition_expression("attribute_not_exists(pk)")
        } else {
            counter
                .condition_expression("#v = :have")
                .expression_attribute_values(":have", n(version))
        };
        items.push(
            TransactWriteItem::builder()
                .update(counter.build().map_err(build)?)
                .build(),
        );

        match new_user {
            Some(u) => {
                let body = serde_json::to_string(u)
                    .map_err(|e| StoreError::Permanent(format!("user {id}: {e}")))?;
                let put = Put::builder()
                    .table_name(&self.table)
                    .item("pk", s(PK_USER))
                    .item("sk", s(&id))
                    .item("body", s(body))
                    .item("version", n(next));
                let put = match old_version {
                    None => put.condition_expression("attribute_not_exists(pk)"),
                    Some(v) => put
                        .condition_expression("#v = :was")
                        .expression_attribute_names("#v", "version")
                        .expression_attribute_values(":was", n(v)),
                };
                items.push(
                    TransactWriteItem::builder()
                        .put(put.build().map_err(build)?)
                        .build(),
                );
            }
            None => {
                let del = Delete::builder()
                    .table_name(&self.table)
                    .key("pk", s(PK_USER))
                    .key("sk", s(&id))
                    .condition_expression("#v = :was")
                    .expression_attribute_names("#v", "version")
                    .expression_attribute_values(":was", n(old_version.unwrap_or(0)));
                items.push(
                    TransactWriteItem::builder()
                        .delete(del.build().map_err(build)?)
                        .build(),
                );
            }
        }

        let cards_of = |u: Option<&User>| -> BTreeSet<String> {
            u.map(|u| u.cards.iter().map(|c| c.to_string()).collect())
                .unwrap_or_default()
        };
        let had = cards_of(old.as_ref().map(|o| &o.user));
        let has = cards_of(new_user);
        // Index in `items` -> the card it claims.
        let mut claims: Vec<(usize, String)> = Vec::new();
        for card in has.difference(&had) {
            let put = Put::builder()
                .table_name(&self.table)
                .item("pk", s(PK_CARD))
                .item("sk", s(card))
                .item("user_id", s(&id))
                .condition_expression("attribute_not_exists(pk) OR user_id = :me")
                .expression_attribute_values(":me", s(&id));
            claims.push((items.len(), card.clone()));
            items.push(
                TransactWriteItem::builder()
                    .put(put.build().map_err(build)?)
                    .build(),
            );
        }
        for card in had.difference(&has) {
            let del = Delete::builder()
                .table_name(&self.table)
                .key("pk", s(PK_CARD))
                .key("sk", s(card))
                .condition_expression("user_id = :me")
                .expression_attribute_values(":me", s(&id));
            items.push(
                TransactWriteItem::builder()
                    .delete(del.build().map_err(build)?)
                    .build(),
            );
        }

        let res = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let err = match res {
            Ok(_) => return Ok(Some(next)),
            Err(e) => e,
        };
        let reasons: Vec<CancellationReason> = match err.as_service_error() {
            Some(se) if se.is_transaction_canceled_exception() => match se {
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => {
                    c.cancellation_reasons().to_vec()
                }
                _ => Vec::new(),
            },
            _ => return Err(classify("DynamoDB TransactWriteItems (user write)", err).into()),
        };
        let failed = |i: usize| {
            reasons
                .get(i)
                .and_then(|r| r.code())
                .is_some_and(|c| c == "ConditionalCheckFailed")
        };
        for (i, card) in &claims {
            if failed(*i) {
                let holder = self.card_holder(card).await?;
                match holder {
                    Some(holder) if holder != id => {
                        return Err(WriteError::CardHeld {
                            card: card.clone(),
                            holder,
                        })
                    }
                    // Released since: try again.
                    _ => return Ok(None),
                }
            }
        }
        if failed(0)
            || failed(1)
            || reasons
                .iter()
                .any(|r| r.code() == Some("TransactionConflict"))
        {
            return Ok(None);
        }
        // Cancelled for another reason (a removed card's item not ours: only if someone
        // edited the table by hand): say what DynamoDB said.
        let why: Vec<String> = reasons
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                r.code()
                    .filter(|c| *c != "None")
                    .map(|c| format!("item {i}: {c}"))
            })
            .collect();
        Err(WriteError::Store(StoreError::Permanent(format!(
            "user write cancelled: {}",
            why.join(", ")
        ))))
    }

    async fn all_users(&self) -> Result<Vec<User>, StoreError> {
        let mut users = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :u")
                .expression_attribute_values(":u", s(PK_USER))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify("DynamoDB Query (users)", e))?;
            for item in out.items() {
                users.push(parse_user(item)?.user);
            }
            match out.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => break,
            }
        }
        Ok(users)
    }
}

fn parse_user(item: &HashMap<String, AttributeValue>) -> Result<StoredUser, StoreError> {
    let body = get_s(item, "body")?;
    let user: User = serde_json::from_str(body)
        .map_err(|e| StoreError::Permanent(format!("stored user is not a User: {e}")))?;
    let version = get_n(item, "version")?;
    Ok(StoredUser { user, version })
}

impl Directory for DynamoDirectory {
    async fn fleet_version(&self) -> Result<u64, StoreError> {
        self.counter().await
    }

    async fn get_user(&self, id: &str) -> Result<Option<StoredUser>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(PK_USER))
            .key("sk", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("DynamoDB GetItem (user)", e))?;
        out.item().map(parse_user).transpose()
    }

    async fn list_users(
        &self,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<UserPage, CursorOr<StoreError>> {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :u")
            .expression_attribute_values(":u", s(PK_USER))
            .consistent_read(true)
            .limit(limit as i32);
        if let Some(c) = cursor {
            let id = B64
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|id| !id.is_empty())
                .ok_or_else(|| CursorOr::BadCursor("not a cursor this API returned".into()))?;
            q = q
                .exclusive_start_key("pk", s(PK_USER))
                .exclusive_start_key("sk", s(id));
        }
        let out = q
            .send()
            .await
            .map_err(|e| classify("DynamoDB Query (users)", e))?;
        let users = out
            .items()
            .iter()
            .map(parse_user)
            .collect::<Result<Vec<_>, _>>()?;
        let next = match out.last_evaluated_key() {
            Some(k) => Some(B64.encode(get_s(k, "sk")?)),
            None => None,
        };
        Ok(UserPage { users, next })
    }

    async fn write(&self, write: &Write) -> Result<u64, WriteError> {
        for _ in 0..ATTEMPTS {
            if let Some(version) = self.try_write(write).await? {
                return Ok(version);
            }
        }
        Err(WriteError::Contention { attempts: ATTEMPTS })
    }

    /// Reads the counter, every user (consistent reads), and the counter again; a write
    /// commits the counter with its items in one transaction, so an unchanged counter means
    /// no write landed in between and the users are those of that version.
    async fn snapshot(&self) -> Result<(u64, Vec<User>), StoreError> {
        for _ in 0..ATTEMPTS {
            let before = self.counter().await?;
            let users = self.all_users().await?;
            let after = self.counter().await?;
            if before == after {
                return Ok((before, users));
            }
        }
        Err(StoreError::Transient(format!(
            "the fleet version moved during each of {ATTEMPTS} snapshot reads"
        )))
    }
}
