//! The TOKEN authorizer of the admin API.
//!
//! Settings: `JWKS` (the key set's JSON text, e.g. a Cognito pool's
//! `.well-known/jwks.json`, pinned at deploy: no network call on the auth path), `JWT_ISSUER`,
//! `JWT_AUDIENCES` and `JWT_CLIENT_IDS` (comma-separated; at least one of the two),
//! `JWT_LEEWAY_S` (clock skew, default 30).

use acceso_cloud::authorizer::Authorizer;
use acceso_cloud::aws::{env, env_opt, init_tracing};
use acceso_cloud::events::TokenAuthorizerRequest;
use acceso_cloud::jwt::{KeySet, Rules};
use lambda_runtime::{service_fn, Error, LambdaEvent};

fn list(name: &str) -> Vec<String> {
    env_opt(name)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn load() -> Result<Authorizer, String> {
    let keys = KeySet::from_jwks(&env("JWKS")?).map_err(|e| format!("JWKS: {e}"))?;
    let rules = Rules {
        issuer: env("JWT_ISSUER")?,
        audiences: list("JWT_AUDIENCES"),
        client_ids: list("JWT_CLIENT_IDS"),
        leeway_s: match env_opt("JWT_LEEWAY_S") {
            Some(v) => v
                .parse()
                .ok()
                .filter(|s| (0..=300).contains(s))
                .ok_or_else(|| format!("JWT_LEEWAY_S {v:?} is not 0 to 300 seconds"))?,
            None => 30,
        },
    };
    if rules.audiences.is_empty() && rules.client_ids.is_empty() {
        return Err("set JWT_AUDIENCES or JWT_CLIENT_IDS: no token would be accepted".into());
    }
    Ok(Authorizer { keys, rules })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    init_tracing();
    let auth = load()?;
    let auth = &auth;
    lambda_runtime::run(service_fn(
        move |ev: LambdaEvent<TokenAuthorizerRequest>| async move {
            let now = jiff::Timestamp::now().as_second();
            // The one message API Gateway turns into a 401.
            auth.authorize(&ev.payload, now)
                .map_err(|e| Error::from(e.to_string()))
        },
    ))
    .await
}
