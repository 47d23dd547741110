//! Building the AWS clients: one HTTPS client (rustls with the ring provider), timeouts on
//! every call, and the functions' settings from the environment.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// The one HTTPS client of every AWS client: rustls with ring (no aws-lc-rs, no OpenSSL),
/// trusting the system's roots. It also speaks plain HTTP, for a local emulator.
pub fn http_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// No call waits longer than this in all (retries included), nor one attempt longer than
/// [`ATTEMPT_TIMEOUT`]: a Lambda should fail and be retried, not hang until it is killed.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);

pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// The SDK configuration of a function: region and credentials from the Lambda environment,
/// our HTTP client and timeouts.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .timeout_config(timeouts())
        .load()
        .await
}

/// A required environment variable, or an error naming it.
pub fn env(name: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        Ok(_) => Err(format!("environment variable {name} is empty")),
        Err(_) => Err(format!("environment variable {name} is not set")),
    }
}

/// An optional environment variable (unset or empty is `None`).
pub fn env_opt(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Logs as JSON lines (CloudWatch), filter from `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_ansi(false)
        .without_time()
        .init();
}

/// The clients and settings every function but the authorizer shares, from the environment:
/// `DIRECTORY_TABLE`, `EVENTS_TABLE`, `SIGNING_KEY_ID` (a KMS key id, ARN or alias),
/// `TOPIC_PREFIX` (default `acceso`) and `IOT_DATA_ENDPOINT` (the account's
/// `iot:Data-ATS` endpoint, `https://...`; the SDK's default otherwise).
pub struct Env {
    pub config: SdkConfig,
    pub topics: acceso_protocol::Topics,
}

impl Env {
    /// Checks that the variables in `required` are set (before anything else, so a
    /// misconfigured function says so at once), then loads the SDK configuration.
    pub async fn load(required: &[&str]) -> Result<Env, String> {
        for name in required {
            env(name)?;
        }
        let topics = acceso_protocol::Topics::new(
            &env_opt("TOPIC_PREFIX").unwrap_or_else(|| "acceso".to_string()),
        );
        Ok(Env {
            config: sdk_config().await,
            topics,
        })
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.config)
    }

    pub fn directory(&self) -> Result<crate::dynamo::DynamoDirectory, String> {
        Ok(crate::dynamo::DynamoDirectory::new(
            self.dynamodb(),
            env("DIRECTORY_TABLE")?,
        ))
    }

    pub fn events(&self) -> Result<crate::dynamo::DynamoEvents, String> {
        Ok(crate::dynamo::DynamoEvents::new(
            self.dynamodb(),
            env("EVENTS_TABLE")?,
        ))
    }

    pub fn publisher(&self) -> crate::iot::IotPublisher {
        let mut conf = aws_sdk_iotdataplane::config::Builder::from(&self.config);
        if let Some(endpoint) = env_opt("IOT_DATA_ENDPOINT") {
            conf = conf.endpoint_url(endpoint);
        }
        crate::iot::IotPublisher::new(aws_sdk_iotdataplane::Client::from_conf(conf.build()))
    }

    pub fn signer(&self) -> Result<crate::kms::KmsSigner, String> {
        Ok(crate::kms::KmsSigner::new(
            aws_sdk_kms::Client::new(&self.config),
            env("SIGNING_KEY_ID")?,
        ))
    }
}
