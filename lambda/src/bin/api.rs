//! The admin API function (API Gateway REST API, proxy integration).

use acceso_cloud::api::Api;
use acceso_cloud::aws::{init_tracing, Env};
use acceso_cloud::events::{ProxyRequest, ProxyResponse};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let env = Env::load(&["DIRECTORY_TABLE", "EVENTS_TABLE", "SIGNING_KEY_ID"]).await?;
    let api = Api {
        directory: env.directory()?,
        events: env.events()?,
        publisher: env.publisher(),
        signer: env.signer()?,
        topics: env.topics.clone(),
    };
    let api = &api;
    lambda_runtime::run(service_fn(
        move |ev: LambdaEvent<ProxyRequest>| async move {
            Ok::<ProxyResponse, Error>(api.handle(&ev.payload).await)
        },
    ))
    .await
}
