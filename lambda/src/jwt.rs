//! JSON Web Token verification for the authorizer: RS256 only, keys by `kid` from an explicit
//! key set (a JWKS, such as a Cognito user pool's), and the registered claims checked.
//!
//! Written on `ring` (already the protocol crate's crypto) rather than a general JWT crate:
//! the one algorithm accepted is fixed here, not chosen by the token, so `alg: none` and
//! algorithm swaps (an HS256 token "signed" with the public key) have no code path to succeed.
//!
//! Checked, in order: three base64url parts; a header with `alg` exactly `RS256`, a `kid` in
//! the key set and no `crit`; the RSA PKCS#1 v1.5 SHA-256 signature over `header.payload`
//! (keys of 2048 to 8192 bits); then the claims: `exp` (required) in the future and `nbf`
//! (when present) in the past, each with [`Rules::leeway_s`] of clock skew, `iss` equal to the
//! issuer, and the audience: for a token with `token_use: "access"` (Cognito access tokens
//! carry no `aud`) its `client_id` must be an allowed client; otherwise (`token_use: "id"`,
//! or none) its `aud` must name an allowed audience. Any other `token_use` is refused.

use std::collections::HashMap;

use base64::Engine;
use ring::signature::{RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The one algorithm accepted.
pub const ALGORITHM: &str = "RS256";

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why a token was refused (logged; the caller only ever hears "Unauthorized").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("algorithm {0:?} is not accepted (only RS256)")]
    Algorithm(String),
    #[error("header has crit {0}: no extensions are understood")]
    Critical(String),
    #[error("no key with kid {0:?} in the key set")]
    UnknownKey(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("expired at {exp} (now {now})")]
    Expired { exp: i64, now: i64 },
    #[error("not valid before {nbf} (now {now})")]
    NotYetValid { nbf: i64, now: i64 },
    #[error("claim {0} is missing or not of its type")]
    MissingClaim(&'static str),
    #[error("issuer {0:?} is not the one trusted")]
    Issuer(String),
    #[error("audience {0} is not an allowed one")]
    Audience(String),
    #[error("token_use {0:?} is not accepted")]
    TokenUse(String),
}

/// One RSA public key.
#[derive(Clone, PartialEq, Eq)]
struct RsaKey {
    n: Vec<u8>,
    e: Vec<u8>,
}

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaKey({} bits)", self.n.len() * 8)
    }
}

/// The trusted keys, by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, RsaKey>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

impl KeySet {
    /// From a JWKS document (`{"keys": [{"kty": "RSA", "kid": ..., "n": ..., "e": ...}]}`).
    /// Keys that could not verify an RS256 signature (another type, another algorithm, an
    /// encryption key) are refused with an error, not skipped, so a misconfiguration shows.
    pub fn from_jwks(text: &str) -> Result<KeySet, String> {
        let jwks: Jwks =
            serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = HashMap::new();
        for (i, k) in jwks.keys.into_iter().enumerate() {
            let at = |why: &str| format!("keys[{i}]: {why}");
            if k.kty != "RSA" {
                return Err(at(&format!("kty {:?}: only RSA keys are used", k.kty)));
            }
            if let Some(alg) = &k.alg {
                if alg != ALGORITHM {
                    return Err(at(&format!("alg {alg:?}: only RS256 is used")));
                }
            }
            if let Some(u) = &k.use_ {
                if u != "sig" {
                    return Err(at(&format!("use {u:?}: not a signing key")));
                }
            }
            let kid = k.kid.ok_or_else(|| at("no kid"))?;
            let decode = |name: &str, v: Option<String>| {
                B64URL
                    .decode(v.ok_or_else(|| at(&format!("no {name}")))?)
                    .map_err(|_| at(&format!("{name} is not base64url")))
            };
            let n = decode("n", k.n)?;
            let e = decode("e", k.e)?;
            if n.len() < 256 {
                return Err(at("the modulus is under 2048 bits"));
            }
            if keys.insert(kid.clone(), RsaKey { n, e }).is_some() {
                return Err(at(&format!("kid {kid:?} twice")));
            }
        }
        if keys.is_empty() {
            return Err("the key set has no keys".into());
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// What a token's claims must say.
#[derive(Debug, Clone)]
pub struct Rules {
    /// `iss`, exactly (a Cognito pool: `https://cognito-idp.<region>.amazonaws.com/<pool id>`).
    pub issuer: String,
    /// Accepted `aud` values (ID tokens, other issuers).
    pub audiences: Vec<String>,
    /// Accepted `client_id` values (Cognito access tokens).
    pub client_ids: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_s: i64,
}

fn part(b64: &str, what: &str) -> Result<Vec<u8>, JwtError> {
    B64URL
        .decode(b64)
        .map_err(|_| JwtError::Malformed(format!("{what} is not base64url")))
}

fn object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, JwtError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JwtError::Malformed(format!("{what} is not a JSON object"))),
    }
}

fn number(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            })
            .map(Some)
            .ok_or(JwtError::MissingClaim(name)),
    }
}

/// Verifies `token` at Unix time `now`; returns its claims.
pub fn verify(
    token: &str,
    keys: &KeySet,
    rules: &Rules,
    now: i64,
) -> Result<Map<String, Value>, JwtError> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h64, p64, s64] = parts[..] else {
        return Err(JwtError::Malformed(format!(
            "{} parts, a signed JWT has 3",
            parts.len()
        )));
    };
    let header = object(&part(h64, "header")?, "header")?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if alg != ALGORITHM {
        return Err(JwtError::Algorithm(alg.chars().take(16).collect()));
    }
    if let Some(crit) = header.get("crit") {
        return Err(JwtError::Critical(crit.to_string()));
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or_else(|| JwtError::Malformed("header has no kid".into()))?;
    let key = keys
        .keys
        .get(kid)
        .ok_or_else(|| JwtError::UnknownKey(kid.chars().take(64).collect()))?;
    let sig = part(s64, "signature")?;
    let signed = &token[..h64.len() + 1 + p64.len()];
    RsaPublicKeyComponents {
        n: &key.n,
        e: &key.e,
    }
    .verify(&RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &sig)
    .map_err(|_| JwtError::BadSignature)?;

    let claims = object(&part(p64, "payload")?, "payload")?;
    let exp = number(&claims, "exp")?.ok_or(JwtError::MissingClaim("exp"))?;
    if now >= exp.saturating_add(rules.leeway_s) {
        return Err(JwtError::Expired { exp, now });
    }
    if let Some(nbf) = number(&claims, "nbf")? {
        if now < nbf.saturating_sub(rules.leeway_s) {
            return Err(JwtError::NotYetValid { nbf, now });
        }
    }
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(JwtError::MissingClaim("iss"))?;
    if iss != rules.issuer {
        return Err(JwtError::Issuer(iss.chars().take(128).collect()));
    }
    match claims.get("token_use").map(|v| v.as_str()) {
        Some(Some("access")) => {
            let client = claims
                .get("client_id")
                .and_then(Value::as_str)
                .ok_or(JwtError::MissingClaim("client_id"))?;
            if !rules.client_ids.iter().any(|c| c == client) {
                return Err(JwtError::Audience(format!("client_id {client:?}")));
            }
        }
        None | Some(Some("id")) => {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => rules.audiences.contains(a),
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| rules.audiences.iter().any(|x| x == a)),
                _ => return Err(JwtError::MissingClaim("aud")),
            };
            if !ok {
                return Err(JwtError::Audience(
                    claims.get("aud").map(Value::to_string).unwrap_or_default(),
                ));
            }
        }
        Some(other) => {
            return Err(JwtError::TokenUse(
                other
                    .map(str::to_string)
                    .unwrap_or_else(|| "(not a string)".into()),
            ))
        }
    }
    Ok(claims)
}
