//! api: the admin REST API (API Gateway REST API, Lambda proxy integration).
//!
//! | method and resource | right | what |
//! |---|---|---|
//! | `GET /users?limit&cursor` | read | users by id, in pages |
//! | `GET /users/{id}` | read | one user and the fleet version of its last write |
//! | `POST /users` | write | create (the body is a user: `acceso_protocol::User`) |
//! | `PUT /users/{id}` | write | replace (the body's `id` must be the path's) |
//! | `DELETE /users/{id}` | write | delete |
//! | `GET /devices/{device}/events?from&until&limit&cursor` | read | a device's events, oldest first |
//!
//! Every write takes the next fleet version atomically with the change (see
//! [`crate::dynamo`]) and then publishes the signed `Update` to `acceso/updates` (QoS 1). The
//! write is committed before the publish: if the publish is lost (or signing fails), the
//! response says `"published": false` and the doors still converge: they ask for a sync on
//! every connect, every `sync.check_every_s`, and when the next update they see has a gap.
//!
//! Bad input is a 400 whose body names the field at fault:
//! `{"error": "user.cards lists DEADBEEF twice", "field": "cards"}`.

use acceso_protocol::signed::Purpose;
use acceso_protocol::{Topics, Update, UpdateOp, User};
use base64::Engine;
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::events::{ProxyRequest, ProxyResponse};
use crate::ports::{
    seal, CloudSigner, CursorOr, Directory, EventStore, Publisher, StoreError, Write, WriteError,
};

/// The most cards one user may hold (a write's transaction then stays under 25 items).
pub const MAX_CARDS: usize = 10;
pub const MAX_USERS_PAGE: u32 = 100;
pub const MAX_EVENTS_PAGE: u32 = 1000;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub field: Option<String>,
    pub message: String,
}

impl ApiError {
    fn bad(field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            field: Some(field.to_string()),
            message: message.into(),
        }
    }

    fn status(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            field: None,
            message: message.into(),
        }
    }

    fn response(&self) -> ProxyResponse {
        let mut body = json!({ "error": self.message });
        if let Some(f) = &self.field {
            body["field"] = json!(f);
        }
        ProxyResponse::json(self.status, &body)
    }
}

fn store_error(e: &StoreError) -> ApiError {
    tracing::error!(error = %e, "store");
    match e {
        StoreError::Transient(_) => ApiError::status(503, "storage is busy; try again"),
        StoreError::Permanent(_) => ApiError::status(500, "internal error"),
    }
}

fn cursor_error(e: CursorOr<StoreError>) -> ApiError {
    match e {
        CursorOr::BadCursor(why) => ApiError::bad("cursor", why),
        CursorOr::Other(e) => store_error(&e),
    }
}

/// The field a `User::validate` message is about: `user.cards lists X twice` -> `cards`.
fn field_of(message: &str) -> String {
    let first = message.split([' ', ':']).next().unwrap_or("");
    first.strip_prefix("user.").unwrap_or(first).to_string()
}

fn check_path_id(field: &str, id: &str) -> Result<(), ApiError> {
    if id.trim().is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
        return Err(ApiError::bad(
            field,
            format!("{field} must be 1 to 128 bytes without control characters"),
        ));
    }
    Ok(())
}

/// Parses and validates a user from a request body.
pub fn parse_user(text: &str) -> Result<User, ApiError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let user: User = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at = e.path().to_string();
        let at = if at == "." { String::new() } else { at };
        // The path names the field at fault (an unknown field's path is its own name).
        let inner = e.inner().to_string();
        let field = at.clone();
        if at.is_empty() {
            ApiError::bad(&field, format!("body is not a user: {inner}"))
        } else {
            ApiError::bad(&field, format!("{at}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad("", format!("body has more after the user: {e}")))?;
    user.validate()
        .map_err(|m| ApiError::bad(&field_of(&m), m))?;
    if user.cards.len() > MAX_CARDS {
        return Err(ApiError::bad(
            "cards",
            format!(
                "a user holds at most {MAX_CARDS} cards, not {}",
                user.cards.len()
            ),
        ));
    }
    for (i, f) in user.faces.iter().enumerate() {
        if let Some((j, g)) = user
            .faces
            .iter()
            .enumerate()
            .take(i)
            .find(|(_, g)| g.model == f.model && g.vector.len() != f.vector.len())
        {
            return Err(ApiError::bad(
                &format!("faces[{i}].vector"),
                format!(
                    "faces[{i}].vector has {} values but faces[{j}] of the same model {:?} has {}",
                    f.vector.len(),
                    f.model,
                    g.vector.len()
                ),
            ));
        }
    }
    Ok(user)
}

fn parse_limit(req: &ProxyRequest, default: u32, max: u32) -> Result<u32, ApiError> {
    match req.query("limit") {
        None => Ok(default),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad(
                "limit",
                format!("limit {v:?} is not a number from 1 to {max}"),
            )),
        },
    }
}

fn parse_time(req: &ProxyRequest, name: &str) -> Result<Option<Timestamp>, ApiError> {
    req.query(name)
        .map(|v| {
            v.parse::<Timestamp>().map_err(|_| {
                ApiError::bad(
                    name,
                    format!("{name} {v:?} is not an RFC 3339 time (2026-12-03T10:00:00Z)"),
                )
            })
        })
        .transpose()
}

/// The API function's dependencies.
pub struct Api<D, E, P, S> {
    pub directory: D,
    pub events: E,
    pub publisher: P,
    pub signer: S,
    pub topics: Topics,
}

impl<D: Directory, E: EventStore, P: Publisher, S: CloudSigner> Api<D, E, P, S> {
    /// One request; every outcome is a response (errors are logged with the request id).
    pub async fn handle(&self, req: &ProxyRequest) -> ProxyResponse {
        let request_id = req.request_context.request_id.clone().unwrap_or_default();
        let span = tracing::info_span!("request", id = %request_id, method = %req.http_method, resource = %req.resource);
        match self.route(req).instrument(span).await {
            Ok((status, body)) => ProxyResponse::json(status, &body),
            Err(e) => {
                if e.status >= 500 {
                    tracing::error!(status = e.status, error = %e.message, "failed");
                } else {
                    tracing::info!(status = e.status, error = %e.message, "refused");
                }
                e.response()
            }
        }
    }

    async fn route(&self, req: &ProxyRequest) -> Result<(u16, Value), ApiError> {
        let method = req.http_method.as_str();
        match (method, req.resource.as_str()) {
            ("GET", "/users") => self.list_users(req).await,
            ("POST", "/users") => {
                require_write(req)?;
                let user = parse_user(&body_text(req)?)?;
                self.write(Write::Create(user)).await
            }
            ("GET", "/users/{id}") => {
                let id = path_id(req, "id")?;
                match self.directory.get_user(id).await {
                    Ok(Some(u)) => Ok((200, json!({ "version": u.version, "user": u.user }))),
                    Ok(None) => Err(not_found(id)),
                    Err(e) => Err(store_error(&e)),
                }
            }
            ("PUT", "/users/{id}") => {
                require_write(req)?;
                let id = path_id(req, "id")?;
                let user = parse_user(&body_text(req)?)?;
                if user.id != id {
                    return Err(ApiError::bad(
                        "id",
                        format!("the body's id {:?} is not the path's {id:?}", user.id),
                    ));
                }
                self.write(Write::Replace(user)).await
            }
            ("DELETE", "/users/{id}") => {
                require_write(req)?;
                let id = path_id(req, "id")?;
                self.write(Write::Delete(id.to_string())).await
            }
            ("GET", "/devices/{device}/events") => self.list_events(req).await,
            (_, "/users" | "/users/{id}" | "/devices/{device}/events") => Err(ApiError::status(
                405,
                format!("{method} is not a method of {}", req.resource),
            )),
            _ => Err(ApiError::status(
                404,
                format!("no resource {}", req.resource),
            )),
        }
    }

    async fn list_users(&self, req: &ProxyRequest) -> Result<(u16, Value), ApiError> {
        let limit = parse_limit(req, 50, MAX_USERS_PAGE)?;
        let page = self
            .directory
            .list_users(limit, req.query("cursor"))
            .await
            .map_err(cursor_error)?;
        let users: Vec<Value> = page
            .users
            .iter()
            .map(|u| json!({ "version": u.version, "user": u.user }))
            .collect();
        Ok((200, json!({ "users": users, "next": page.next })))
    }

    async fn list_events(&self, req: &ProxyRequest) -> Result<(u16, Value), ApiError> {
        let device = path_id(req, "device")?;
        if !device
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':'))
        {
            return Err(ApiError::bad(
                "device",
                "device has a character other than letters, digits, '-', '_' and ':'",
            ));
        }
        let until = parse_time(req, "until")?.unwrap_or_else(Timestamp::now);
        let from = match parse_time(req, "from")? {
            Some(t) => t,
            None => until
                .checked_sub(SignedDuration::from_hours(24))
                .map_err(|_| ApiError::bad("until", "until is too early"))?,
        };
        if from >= until {
            return Err(ApiError::bad(
                "from",
                format!("from {from} is not before until {until}"),
            ));
        }
        let limit = parse_limit(req, 100, MAX_EVENTS_PAGE)?;
        let page = self
            .events
            .list_events(device, from, until, limit, req.query("cursor"))
            .await
            .map_err(cursor_error)?;
        Ok((
            200,
            json!({ "device": device, "from": from, "until": until, "events": page.events, "next": page.next }),
        ))
    }

    async fn write(&self, write: Write) -> Result<(u16, Value), ApiError> {
        let version = self.directory.write(&write).await.map_err(|e| match e {
            WriteError::NotFound(id) => not_found(&id),
            WriteError::Exists(id) => ApiError {
                status: 409,
                field: Some("id".into()),
                message: format!("user {id:?} already exists"),
            },
            e @ WriteError::CardHeld { .. } => ApiError {
                status: 409,
                field: Some("cards".into()),
                message: e.to_string(),
            },
            e @ WriteError::Contention { .. } => ApiError::status(503, e.to_string()),
            WriteError::Store(e) => store_error(&e),
        })?;
        let (status, op) = match write {
            Write::Create(u) => (201, UpdateOp::UpsertUser(u)),
            Write::Replace(u) => (200, UpdateOp::UpsertUser(u)),
            Write::Delete(user_id) => (200, UpdateOp::DeleteUser { user_id }),
        };
        let update = Update { version, op };
        let published = self.publish(&update).await;
        tracing::info!(
            version,
            op = update.op.name(),
            user = update.op.user_id(),
            published,
            "user write"
        );
        let mut body =
            json!({ "version": version, "op": update.op.name(), "published": published });
        match update.op {
            UpdateOp::UpsertUser(u) => body["user"] = json!(u),
            UpdateOp::DeleteUser { user_id } => body["user_id"] = json!(user_id),
        }
        Ok((status, body))
    }

    /// Signs and publishes `update`; false if it did not go out (logged: sync heals it).
    async fn publish(&self, update: &Update) -> bool {
        let sealed = match seal(&self.signer, Purpose::Update, &update.body()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(version = update.version, error = %e, "update committed but not signed: doors catch up by sync");
                return false;
            }
        };
        match self.publisher.publish(&self.topics.updates(), sealed).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(version = update.version, error = %e, "update committed but not published: doors catch up by sync");
                false
            }
        }
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError {
        status: 404,
        field: Some("id".into()),
        message: format!("no user {id:?}"),
    }
}

fn require_write(req: &ProxyRequest) -> Result<(), ApiError> {
    match req.authorizer("role") {
        Some("write") => Ok(()),
        _ => Err(ApiError::status(
            403,
            "this token may read but not change users (role write needed)",
        )),
    }
}

fn path_id<'a>(req: &'a ProxyRequest, name: &str) -> Result<&'a str, ApiError> {
    let id = req
        .path_param(name)
        .ok_or_else(|| ApiError::bad(name, format!("path has no {name}")))?;
    check_path_id(name, id)?;
    Ok(id)
}

fn body_text(req: &ProxyRequest) -> Result<String, ApiError> {
    let raw = req
        .body
        .as_deref()
        .ok_or_else(|| ApiError::bad("", "the request has no body (a user as JSON)"))?;
    if req.is_base64_encoded {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|_| ApiError::bad("", "body is marked base64 but is not"))?;
        String::from_utf8(bytes).map_err(|_| ApiError::bad("", "body is not UTF-8"))
    } else {
        Ok(raw.to_string())
    }
}
