//! Sync: how a door that missed changes catches up with the whole user set.
//!
//! The door asks on `acceso/sync/request` with a [`SyncRequest`]; the cloud answers on
//! `acceso/sync/{device}` with signed [`SyncResponse`]s: either "you are current at version V"
//! or a snapshot of every user at version V in pages, each under AWS IoT Core's payload limit
//! however many users there are. Every response names the device and echoes the request id, so
//! an old answer replayed later (or one meant for another door) is not taken for this one.
//!
//! A snapshot's `checksum` binds its pages together: SHA-256 over the SHA-256 of each user's
//! JSON text as it stands in the pages, in page order. It is computed from the bytes received,
//! never from a re-serialisation.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::signed::{self, Purpose, SignatureError, Signer, TrustedKeys};
use crate::update::{User, MAX_PAYLOAD_BYTES};

/// Device -> cloud: "I have applied everything up to `have_version`; bring me up to date."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    pub device: String,
    pub have_version: u64,
    /// Chosen by the device, echoed in every response to this request.
    pub request: String,
}

/// Cloud -> one device, the body of a signed envelope.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncResponse {
    /// The fleet is at `version` and the device said it has it.
    Current {
        device: String,
        request: String,
        version: u64,
    },
    /// One page of the snapshot of every user at `version`.
    Page(SnapshotPage),
}

impl SyncResponse {
    pub fn device(&self) -> &str {
        match self {
            SyncResponse::Current { device, .. } => device,
            SyncResponse::Page(p) => &p.device,
        }
    }

    pub fn request(&self) -> &str {
        match self {
            SyncResponse::Current { request, .. } => request,
            SyncResponse::Page(p) => &p.request,
        }
    }

    pub fn version(&self) -> u64 {
        match self {
            SyncResponse::Current { version, .. } => *version,
            SyncResponse::Page(p) => p.version,
        }
    }
}

/// Page `page` (from 0) of `pages` of the snapshot at `version`.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotPage {
    pub device: String,
    pub request: String,
    pub version: u64,
    pub page: u32,
    pub pages: u32,
    /// Hex SHA-256 binding every page of this snapshot (see the module docs).
    pub checksum: String,
    pub users: Vec<User>,
    /// SHA-256 of each user's JSON text as received, in order (for the checksum).
    pub user_digests: Vec<[u8; 32]>,
}

/// Why a sync message was refused.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync message is {size} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")]
    Oversized { size: usize },
    #[error("invalid sync message: {0}")]
    Invalid(String),
    #[error("sync message refused: {0}")]
    Signature(#[from] SignatureError),
    #[error("snapshot version {version}: {why}")]
    Snapshot { version: u64, why: String },
}

#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCurrent {
    kind: String,
    device: String,
    request: String,
    version: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPage<'a> {
    kind: String,
    device: String,
    request: String,
    version: u64,
    page: u32,
    pages: u32,
    checksum: String,
    #[serde(borrow)]
    users: Vec<&'a RawValue>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The checksum of a snapshot whose users' JSON texts have these digests, in order.
pub fn checksum(user_digests: impl IntoIterator<Item = [u8; 32]>) -> String {
    let mut all = Vec::new();
    for d in user_digests {
        all.extend_from_slice(&d);
    }
    hex(&sha256(&all))
}

fn invalid(e: impl std::fmt::Display) -> SyncError {
    SyncError::Invalid(e.to_string())
}

impl SyncResponse {
    /// Opens a message from `acceso/sync/{device}`: envelope, signature (when `keys` pins
    /// any), then the response, every user in it validated.
    pub fn open(payload: &[u8], keys: Option<&TrustedKeys>) -> Result<SyncResponse, SyncError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(SyncError::Oversized {
                size: payload.len(),
            });
        }
        let opened = signed::open(payload).map_err(SyncError::Invalid)?;
        if let Some(keys) = keys {
            keys.verify(
                Purpose::Sync,
                opened.body.as_bytes(),
                opened.signature.as_deref(),
            )?;
        }
        SyncResponse::parse(opened.body)
    }

    /// Parses and validates a response body.
    pub fn parse(body: &str) -> Result<SyncResponse, SyncError> {
        let kind: Kind<'_> = serde_json::from_str(body).map_err(invalid)?;
        match kind.kind.as_ref() {
            "current" => {
                let c: RawCurrent = serde_json::from_str(body).map_err(invalid)?;
                Ok(SyncResponse::Current {
                    device: c.device,
                    request: c.request,
                    version: c.version,
                })
            }
            "page" => {
                let p: RawPage<'_> = serde_json::from_str(body).map_err(invalid)?;
                if p.pages == 0 || p.page >= p.pages {
                    return Err(invalid(format!(
                        "page {} of {}: pages count from 0 and a snapshot has at least one",
                        p.page, p.pages
                    )));
                }
                if p.version == 0 {
                    return Err(invalid("version must be 1 or more"));
                }
                let mut users = Vec::with_capacity(p.users.len());
                let mut user_digests = Vec::with_capacity(p.users.len());
                for (i, raw) in p.users.iter().enumerate() {
                    let mut de = serde_json::Deserializer::from_str(raw.get());
                    let user: User = serde_path_to_error::deserialize(&mut de)
                        .map_err(|e| invalid(format!("users[{i}].{}: {}", e.path(), e.inner())))?;
                    user.validate()
                        .map_err(|e| invalid(format!("users[{i}] ({}): {e}", user.id)))?;
                    user_digests.push(sha256(raw.get().as_bytes()));
                    users.push(user);
                }
                Ok(SyncResponse::Page(SnapshotPage {
                    device: p.device,
                    request: p.request,
                    version: p.version,
                    page: p.page,
                    pages: p.pages,
                    checksum: p.checksum,
                    users,
                    user_digests,
                }))
            }
            other => Err(invalid(format!(
                "unknown kind {:?} (expected \"current\" or \"page\")",
                other.chars().take(32).collect::<String>()
            ))),
        }
    }
}

/// The body of the cloud's answer "you are current" (to sign for [`Purpose::Sync`]).
pub fn current_body(device: &str, request: &str, version: u64) -> String {
    let body = RawCurrent {
        kind: "current".into(),
        device: device.into(),
        request: request.into(),
        version,
    };
    serde_json::to_string(&body).unwrap_or_default()
}

/// The cloud's answer "you are current", sealed.
pub fn seal_current(
    device: &str,
    request: &str,
    version: u64,
    signer: Option<&dyn Signer>,
) -> Vec<u8> {
    signed::seal(
        Purpose::Sync,
        &current_body(device, request, version),
        signer,
    )
}

/// Room in a page for the envelope, the signature and the header fields.
const PAGE_OVERHEAD: usize = 2 * 1024;

/// The snapshot of `users` at `version` for `device`'s request, as sealed messages, each at
/// most [`MAX_PAYLOAD_BYTES`]. Users go in the order given (sort them by id for stable pages).
pub fn seal_snapshot(
    device: &str,
    request: &str,
    version: u64,
    users: &[User],
    signer: Option<&dyn Signer>,
) -> Result<Vec<Vec<u8>>, String> {
    let bodies = snapshot_bodies(device, request, version, users)?;
    Ok(bodies
        .iter()
        .map(|b| signed::seal(Purpose::Sync, b, signer))
        .collect())
}

/// The page bodies of a snapshot (to sign for [`Purpose::Sync`] and wrap with
/// [`signed::envelope`]); each sealed page fits [`MAX_PAYLOAD_BYTES`] with room for the
/// envelope and a signature.
pub fn snapshot_bodies(
    device: &str,
    request: &str,
    version: u64,
    users: &[User],
) -> Result<Vec<String>, String> {
    // The device and request ids come from the door's request: long ones leave no room (and
    // must not underflow the budget).
    let budget = MAX_PAYLOAD_BYTES
        .checked_sub(PAGE_OVERHEAD + device.len() + request.len())
        .ok_or_else(|| {
            format!(
                "device and request ids of {} bytes leave no room for users in a page",
                device.len() + request.len()
            )
        })?;
    let mut texts = Vec::with_capacity(users.len());
    for u in users {
        let raw = serde_json::value::to_raw_value(u).map_err(|e| format!("user {}: {e}", u.id))?;
        if raw.get().len() > budget {
            return Err(format!(
                "user {} is {} bytes of JSON: too big for a snapshot page",
                u.id,
                raw.get().len()
            ));
        }
        texts.push(raw);
    }
    let sum = checksum(texts.iter().map(|t| sha256(t.get().as_bytes())));
    // Greedy packing: a page takes users while their texts (and commas) fit the budget.
    let mut pages: Vec<Vec<&RawValue>> = vec![Vec::new()];
    let mut used = 0;
    for t in &texts {
        let len = t.get().len() + 1;
        if used + len > budget && !pages.last().is_none_or(Vec::is_empty) {
            pages.push(Vec::new());
            used = 0;
        }
        used += len;
        if let Some(page) = pages.last_mut() {
            page.push(t);
        }
    }
    let n = pages.len() as u32;
    let mut out = Vec::with_capacity(pages.len());
    for (i, users) in pages.into_iter().enumerate() {
        let body = RawPage {
            kind: "page".into(),
            device: device.into(),
            request: request.into(),
            version,
            page: i as u32,
            pages: n,
            checksum: sum.clone(),
            users,
        };
        let text = serde_json::to_string(&body).map_err(|e| e.to_string())?;
        // An envelope adds its keys and a signature of at most 72 DER bytes (96 in base64).
        if text.len() + 160 > MAX_PAYLOAD_BYTES {
            return Err(format!(
                "page {i} came to {} bytes, over the payload limit",
                text.len()
            ));
        }
        out.push(text);
    }
    Ok(out)
}

/// The pages of one snapshot as they arrive, in any order, until all are in.
#[derive(Debug)]
pub struct Assembly {
    pub request: String,
    pub version: u64,
    pages: u32,
    checksum: String,
    got: BTreeMap<u32, SnapshotPage>,
}

impl Assembly {
    pub fn new(first: &SnapshotPage) -> Assembly {
        Assembly {
            request: first.request.clone(),
            version: first.version,
            pages: first.pages,
            checksum: first.checksum.clone(),
            got: BTreeMap::new(),
        }
    }

    /// Whether `page` belongs to this snapshot (same request, version, page count, checksum).
    pub fn fits(&self, page: &SnapshotPage) -> bool {
        page.request == self.request
            && page.version == self.version
            && page.pages == self.pages
            && page.checksum == self.checksum
    }

    /// How many of how many pages are in.
    pub fn progress(&self) -> (usize, u32) {
        (self.got.len(), self.pages)
    }

    /// Adds a page (a repeat replaces its earlier copy). When the last one is in, checks the
    /// whole and returns every user; an inconsistent snapshot is refused whole.
    pub fn add(&mut self, page: SnapshotPage) -> Result<Option<Vec<User>>, SyncError> {
        debug_assert!(self.fits(&page));
        self.got.insert(page.page, page);
        if self.got.len() < self.pages as usize {
            return Ok(None);
        }
        let version = self.version;
        let refuse = |why: String| SyncError::Snapshot { version, why };
        let got = std::mem::take(&mut self.got);
        let sum = checksum(got.values().flat_map(|p| p.user_digests.iter().copied()));
        if sum != self.checksum {
            return Err(refuse(format!(
                "pages do not add up to the checksum (got {sum}, the pages say {})",
                self.checksum
            )));
        }
        let mut ids = HashSet::new();
        let mut cards: HashMap<crate::CardUid, String> = HashMap::new();
        let mut users = Vec::new();
        for user in got.into_values().flat_map(|p| p.users) {
            if !ids.insert(user.id.clone()) {
                return Err(refuse(format!("user {} appears twice", user.id)));
            }
            for card in &user.cards {
                if let Some(holder) = cards.insert(card.clone(), user.id.clone()) {
                    return Err(refuse(format!(
                        "card {card} is claimed by users {holder} and {}",
                        user.id
                    )));
                }
            }
            users.push(user);
        }
        Ok(Some(users))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signed::SigningKey;
    use crate::{CardUid, FaceEmbedding};

    fn user(i: usize, face_len: usize) -> User {
        User {
            id: format!("u{i:05}"),
            name: format!("User {i}"),
            enabled: true,
            cards: vec![
                CardUid::from_bytes(&(2 * i as u32 + 1).to_be_bytes()).unwrap(),
                CardUid::from_bytes(&(2 * i as u32 + 2).to_be_bytes()).unwrap(),
            ],
            faces: vec![FaceEmbedding {
                model: "sface_2021dec".into(),
                vector: (0..face_len)
                    .map(|k| (k as f32 * 0.37 + i as f32).sin())
                    .collect(),
            }],
            valid_from: None,
            valid_until: None,
            doors: None,
            schedule: vec![],
            two_factor: false,
        }
    }

    fn assemble(pages: &[Vec<u8>], keys: &TrustedKeys) -> Result<Vec<User>, SyncError> {
        let mut assembly: Option<Assembly> = None;
        for p in pages.iter().rev() {
            let SyncResponse::Page(page) = SyncResponse::open(p, Some(keys))? else {
                panic!("not a page");
            };
            let a = assembly.get_or_insert_with(|| Assembly::new(&page));
            assert!(a.fits(&page));
            if let Some(users) = a.add(page)? {
                return Ok(users);
            }
        }
        panic!("incomplete");
    }

    #[test]
    fn ten_thousand_users_page_under_the_limit_and_come_back_whole() {
        let key = SigningKey::generate().unwrap();
        let keys = TrustedKeys::new(vec![key.public_key()]);
        let users: Vec<User> = (0..10_000).map(|i| user(i, 128)).collect();
        let pages = seal_snapshot("door-1", "r1", 42, &users, Some(&key)).unwrap();
        assert!(pages.len() > 10, "{} pages", pages.len());
        assert!(pages.iter().all(|p| p.len() <= MAX_PAYLOAD_BYTES));
        let back = assemble(&pages, &keys).unwrap();
        assert_eq!(back, users);
    }

    #[test]
    fn an_empty_user_set_is_one_empty_page() {
        let pages = seal_snapshot("d", "r", 3, &[], None).unwrap();
        assert_eq!(pages.len(), 1);
        let SyncResponse::Page(p) = SyncResponse::open(&pages[0], None).unwrap() else {
            panic!()
        };
        assert_eq!((p.page, p.pages, p.users.len()), (0, 1, 0));
        assert_eq!(Assembly::new(&p).add(p).unwrap(), Some(vec![]));
    }

    #[test]
    fn pages_of_two_snapshots_do_not_mix_and_a_swapped_page_breaks_the_checksum() {
        let users: Vec<User> = (0..300).map(|i| user(i, 128)).collect();
        let a = seal_snapshot("d", "r", 5, &users, None).unwrap();
        let mut other = users.clone();
        other[0].name = "Changed".into();
        let b = seal_snapshot("d", "r", 5, &other, None).unwrap();
        assert!(a.len() >= 2);
        let open = |m: &[u8]| match SyncResponse::open(m, None).unwrap() {
            SyncResponse::Page(p) => p,
            _ => panic!(),
        };
        let first = open(&a[1]);
        let intruder = open(&b[0]);
        let asm = Assembly::new(&first);
        assert!(
            !asm.fits(&intruder),
            "another snapshot's page has another checksum"
        );
        // A page whose users were altered but whose header was kept (unsigned here).
        let mut tampered = open(&a[0]);
        tampered.users = intruder.users.clone();
        tampered.user_digests = intruder.user_digests.clone();
        let mut asm = Assembly::new(&first);
        let mut result = None;
        for p in [tampered, first] {
            result = Some(asm.add(p));
        }
        let mut asm_rest = asm;
        for m in &a[2..] {
            result = Some(asm_rest.add(open(m)));
        }
        let err = result.unwrap().unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
    }

    #[test]
    fn a_snapshot_with_one_card_held_twice_is_refused_whole() {
        let mut users: Vec<User> = (0..3).map(|i| user(i, 4)).collect();
        users[2].cards = users[0].cards.clone();
        let pages = seal_snapshot("d", "r", 9, &users, None).unwrap();
        let SyncResponse::Page(p) = SyncResponse::open(&pages[0], None).unwrap() else {
            panic!()
        };
        let err = Assembly::new(&p).add(p).unwrap_err().to_string();
        assert!(err.contains("claimed by users u00000 and u00002"), "{err}");
    }

    #[test]
    fn responses_round_trip_and_bad_ones_say_what_is_wrong() {
        let key = SigningKey::generate().unwrap();
        let keys = TrustedKeys::new(vec![key.public_key()]);
        let m = seal_current("d", "r7", 12, Some(&key));
        assert_eq!(
            SyncResponse::open(&m, Some(&keys)).unwrap(),
            SyncResponse::Current {
                device: "d".into(),
                request: "r7".into(),
                version: 12
            }
        );
        let sync_sig_as_update = crate::Update::open(&m, Some(&keys)).unwrap_err();
        assert!(sync_sig_as_update.to_string().contains("does not verify"));
        for (body, expect) in [
            (r#"{"kind":"snap"}"#, "unknown kind"),
            (
                r#"{"kind":"page","device":"d","request":"r","version":1,"page":1,"pages":1,"checksum":"","users":[]}"#,
                "page 1 of 1",
            ),
            (
                r#"{"kind":"page","device":"d","request":"r","version":1,"page":0,"pages":1,"checksum":"","users":[{"id":"u","name":"A","cards":["XY"]}]}"#,
                "users[0].cards[0]",
            ),
            (
                r#"{"kind":"current","device":"d","request":"r","version":1,"extra":2}"#,
                "unknown field",
            ),
        ] {
            let err = SyncResponse::parse(body).unwrap_err().to_string();
            assert!(err.contains(expect), "{body}: {err}");
        }
    }
}
