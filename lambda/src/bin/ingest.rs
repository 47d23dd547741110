//! The ingest function: access events (one from the IoT Rule, or an SQS batch) into DynamoDB.

use acceso_cloud::aws::{init_tracing, Env};
use acceso_cloud::ingest::Ingest;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let env = Env::load(&["EVENTS_TABLE"]).await?;
    let ingest = Ingest::new(env.events()?);
    let ingest = &ingest;
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| async move {
        ingest.handle(ev.payload).await.map_err(Error::from)
    }))
    .await
}
