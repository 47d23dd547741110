//! authorizer: the API Gateway TOKEN authorizer of the admin API.
//!
//! The token (`Authorization: Bearer <jwt>`) is verified by [`crate::jwt::verify`]; its roles
//! map to one of two rights: `read` (GET on the API) or `write` (every method). Roles come from
//! the `cognito:groups` claim (groups [`WRITE_GROUP`], [`READ_GROUP`]) or the OAuth `scope`
//! claim (scopes [`WRITE_SCOPE`], [`READ_SCOPE`]). A token that fails any check, or grants
//! neither right, gets the error "Unauthorized", which API Gateway answers with 401.
//!
//! The policy covers every resource of the right's methods, not just the one asked for, so a
//! cached answer (API Gateway caches by token) holds for the token's other requests too; the
//! API function checks the right again from the context (`role`) before it writes.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::events::{AuthorizerResponse, PolicyDocument, Statement, TokenAuthorizerRequest};
use crate::jwt::{self, JwtError, KeySet, Rules};

pub const WRITE_GROUP: &str = "acceso-admins";
pub const READ_GROUP: &str = "acceso-viewers";
pub const WRITE_SCOPE: &str = "acceso/write";
pub const READ_SCOPE: &str = "acceso/read";

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
        }
    }
}

/// The one answer to every refused token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Unauthorized")]
pub struct Unauthorized;

/// The greatest right the claims grant, if any.
pub fn role_of(claims: &Map<String, Value>) -> Option<Role> {
    let mut role = None;
    if let Some(Value::Array(groups)) = claims.get("cognito:groups") {
        for g in groups.iter().filter_map(Value::as_str) {
            match g {
                WRITE_GROUP => role = role.max(Some(Role::Write)),
                READ_GROUP => role = role.max(Some(Role::Read)),
                _ => {}
            }
        }
    }
    if let Some(Value::String(scopes)) = claims.get("scope") {
        for s in scopes.split(' ') {
            match s {
                WRITE_SCOPE => role = role.max(Some(Role::Write)),
                READ_SCOPE => role = role.max(Some(Role::Read)),
                _ => {}
            }
        }
    }
    role
}

/// `arn:aws:execute-api:region:account:api/stage` of a method ARN
/// (`.../api/stage/METHOD/resource`).
fn api_stage_arn(method_arn: &str) -> Option<&str> {
    let mut slashes = method_arn.match_indices('/').map(|(i, _)| i);
    let _api_end = slashes.next()?;
    let stage_end = slashes.next()?;
    let base = &method_arn[..stage_end];
    base.starts_with("arn:aws").then_some(base)
}

pub struct Authorizer {
    pub keys: KeySet,
    pub rules: Rules,
}

impl Authorizer {
    /// Decides `req` at Unix time `now`.
    pub fn authorize(
        &self,
        req: &TokenAuthorizerRequest,
        now: i64,
    ) -> Result<AuthorizerResponse, Unauthorized> {
        let refuse = |why: &dyn std::fmt::Display| {
            tracing::warn!(reason = %why, "token refused");
            Unauthorized
        };
        let header = req
            .authorization_token
            .as_deref()
            .ok_or_else(|| refuse(&"no token"))?
            .trim();
        let token = match header.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            Some(_) => return Err(refuse(&"not a Bearer token")),
            None => header,
        };
        let claims =
            jwt::verify(token, &self.keys, &self.rules, now).map_err(|e: JwtError| refuse(&e))?;
        let role = role_of(&claims).ok_or_else(|| refuse(&"the token grants no acceso role"))?;
        let base = api_stage_arn(&req.method_arn)
            .ok_or_else(|| refuse(&format!("method ARN {:?} is not one", req.method_arn)))?;
        let resource = match role {
            Role::Read => format!("{base}/GET/*"),
            Role::Write => format!("{base}/*/*"),
        };
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        tracing::info!(sub = %sub, role = role.name(), "token accepted");
        Ok(AuthorizerResponse {
            principal_id: sub.clone(),
            policy_document: PolicyDocument {
                version: "2012-10-17".into(),
                statement: vec![Statement {
                    action: "execute-api:Invoke".into(),
                    effect: "Allow".into(),
                    resource: vec![resource],
                }],
            },
            context: HashMap::from([
                ("role".to_string(), role.name().to_string()),
                ("sub".to_string(), sub),
            ]),
        })
    }
}
