//! The few fields of the Lambda event shapes the functions read (API Gateway REST proxy
//! requests, TOKEN authorizer requests, SQS batches) and the responses they give. Defined
//! here, not taken from a crate of every AWS event, so what is read is exactly what is
//! documented and tested (a REST API's `requestContext.authorizer` is a flat map of the
//! authorizer's context, for one).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// An API Gateway REST API proxy integration request (payload format 1.0).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyRequest {
    pub http_method: String,
    /// The resource template: `/users/{id}`.
    pub resource: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub path_parameters: Option<HashMap<String, String>>,
    #[serde(default)]
    pub query_string_parameters: Option<HashMap<String, String>>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub is_base64_encoded: bool,
    #[serde(default)]
    pub request_context: RequestContext,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    #[serde(default)]
    pub request_id: Option<String>,
    /// The authorizer's `context` plus `principalId`.
    #[serde(default)]
    pub authorizer: Option<HashMap<String, serde_json::Value>>,
}

impl ProxyRequest {
    pub fn path_param(&self, name: &str) -> Option<&str> {
        self.path_parameters.as_ref()?.get(name).map(String::as_str)
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query_string_parameters
            .as_ref()?
            .get(name)
            .map(String::as_str)
    }

    /// A string from the authorizer's context.
    pub fn authorizer(&self, key: &str) -> Option<&str> {
        self.request_context.authorizer.as_ref()?.get(key)?.as_str()
    }
}

/// The proxy integration's response.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyResponse {
    pub status_code: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
    pub is_base64_encoded: bool,
}

impl ProxyResponse {
    pub fn json(status: u16, body: &serde_json::Value) -> ProxyResponse {
        ProxyResponse {
            status_code: status,
            headers: HashMap::from([("content-type".to_string(), "application/json".to_string())]),
            body: body.to_string(),
            is_base64_encoded: false,
        }
    }

    /// The body as JSON (tests and logs).
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A TOKEN authorizer's request.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenAuthorizerRequest {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The `Authorization` header as sent (`Bearer <jwt>`).
    #[serde(default)]
    pub authorization_token: Option<String>,
    /// `arn:aws:execute-api:region:account:api-id/stage/METHOD/resource/path`.
    pub method_arn: String,
}

/// A TOKEN authorizer's answer: an IAM policy and a context for the integration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizerResponse {
    pub principal_id: String,
    pub policy_document: PolicyDocument,
    pub context: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyDocument {
    pub version: String,
    pub statement: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    pub action: String,
    pub effect: String,
    pub resource: Vec<String>,
}

/// An SQS batch.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SqsEvent {
    #[serde(rename = "Records")]
    pub records: Vec<SqsRecord>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsRecord {
    pub message_id: String,
    #[serde(default)]
    pub body: Option<String>,
}

/// The partial batch response (`ReportBatchItemFailures`): the messages that failed are
/// retried by SQS (and go to the dead-letter queue after `maxReceiveCount`); the others are
/// deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsBatchResponse {
    pub batch_item_failures: Vec<BatchItemFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemFailure {
    pub item_identifier: String,
}
