//! The sync function: answers `acceso/sync/request` (IoT Rule) with signed responses.

use acceso_cloud::aws::{init_tracing, Env};
use acceso_cloud::sync::Sync;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let env = Env::load(&["DIRECTORY_TABLE", "SIGNING_KEY_ID"]).await?;
    let sync = Sync {
        directory: env.directory()?,
        publisher: env.publisher(),
        signer: env.signer()?,
        topics: env.topics.clone(),
    };
    let sync = &sync;
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| async move {
        sync.handle(ev.payload).await.map_err(Error::from)
    }))
    .await
}
