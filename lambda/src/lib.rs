//! The cloud side of acceso, as AWS Lambda functions: one binary each.
//!
//! - [`ingest`]: access events from the IoT Rule on `acceso/logs` (one event) or from SQS
//!   (batches), stored once per `event_id`.
//! - [`api`]: the admin REST API behind API Gateway: users and events. Every user write takes
//!   the next fleet version in the same DynamoDB transaction and publishes the signed update.
//! - [`authorizer`]: the API Gateway TOKEN authorizer: RS256 JWTs against a pinned key set.
//! - [`sync`]: answers `acceso/sync/request` with signed snapshot pages.
//!
//! Each handler is generic over the small traits in [`ports`], so its logic is tested with
//! local fakes and against moto; the real implementations are in [`dynamo`], [`iot`] and
//! [`kms`].

pub mod api;
pub mod authorizer;
pub mod aws;
pub mod dynamo;
pub mod events;
pub mod ingest;
pub mod iot;
pub mod jwt;
pub mod kms;
pub mod ports;
pub mod rule;
pub mod sync;
