//! The TOKEN authorizer: the classic attacks denied, valid tokens allowed with the right
//! policy. Keys are made here, fresh each run.

use std::sync::OnceLock;

use acceso_cloud::authorizer::{Authorizer, Unauthorized};
use acceso_cloud::events::{AuthorizerResponse, TokenAuthorizerRequest};
use acceso_cloud::jwt::{KeySet, Rules};
use base64::Engine;
use ring::signature::RsaKeyPair;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

const ISS: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_TEST";
const CLIENT: &str = "app-client-1";
const NOW: i64 = 1_796_000_000;
const ARN: &str = "arn:aws:execute-api:eu-west-1:123456789012:abcdef1234/prod/GET/users/u1";

struct Key {
    pair: RsaKeyPair,
    n: Vec<u8>,
    e: Vec<u8>,
    spki_der: Vec<u8>,
    spki_pem: String,
}

fn make_key() -> Key {
    let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let pkcs8 = private.to_pkcs8_der().unwrap();
    let public = private.to_public_key();
    Key {
        pair: RsaKeyPair::from_pkcs8(pkcs8.as_bytes()).unwrap(),
        n: public.n().to_bytes_be(),
        e: public.e().to_bytes_be(),
        spki_der: public.to_public_key_der().unwrap().as_bytes().to_vec(),
        spki_pem: public
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap(),
    }
}

/// Trusted k1 and k2 (a rotation), and k3 that nobody trusts.
fn keys() -> &'static [Key; 3] {
    static KEYS: OnceLock<[Key; 3]> = OnceLock::new();
    KEYS.get_or_init(|| [make_key(), make_key(), make_key()])
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn jwks() -> String {
    let k = keys();
    json!({"keys": [
        {"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": b64(&k[0].n), "e": b64(&k[0].e)},
        {"kty": "RSA", "kid": "k2", "alg": "RS256", "use": "sig", "n": b64(&k[1].n), "e": b64(&k[1].e)},
    ]})
    .to_string()
}

fn authorizer() -> Authorizer {
    Authorizer {
        keys: KeySet::from_jwks(&jwks()).unwrap(),
        rules: Rules {
            issuer: ISS.into(),
            audiences: vec![CLIENT.into()],
            client_ids: vec![CLIENT.into()],
            leeway_s: 30,
        },
    }
}

fn rs256(key: &Key, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut sig = vec![0u8; key.pair.public().modulus_len()];
    key.pair
        .sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .unwrap();
    format!("{input}.{}", b64(&sig))
}

fn hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&k, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

fn header(kid: &str) -> Value {
    json!({"alg": "RS256", "kid": kid, "typ": "JWT"})
}

/// A Cognito ID token of an admin.
fn id_claims() -> Value {
    json!({
        "sub": "5f0c-admin", "iss": ISS, "aud": CLIENT, "token_use": "id",
        "exp": NOW + 3600, "iat": NOW - 60, "auth_time": NOW - 60,
        "cognito:groups": ["acceso-admins"], "email": "admin@example.com"
    })
}

/// A Cognito access token with the read scope.
fn access_claims() -> Value {
    json!({
        "sub": "7a1d-viewer", "iss": ISS, "client_id": CLIENT, "token_use": "access",
        "exp": NOW + 3600, "iat": NOW - 60, "scope": "openid acceso/read"
    })
}

fn ask(token: &str) -> Result<AuthorizerResponse, Unauthorized> {
    authorizer().authorize(
        &TokenAuthorizerRequest {
            kind: Some("TOKEN".into()),
            authorization_token: Some(format!("Bearer {token}")),
            method_arn: ARN.into(),
        },
        NOW,
    )
}

fn denied(what: &str, token: &str) {
    let res = ask(token);
    assert_eq!(res, Err(Unauthorized), "{what} was let in");
}

fn resources(r: &AuthorizerResponse) -> Vec<String> {
    assert_eq!(r.policy_document.version, "2012-10-17");
    r.policy_document
        .statement
        .iter()
        .map(|s| {
            assert_eq!(
                (s.effect.as_str(), s.action.as_str()),
                ("Allow", "execute-api:Invoke")
            );
            s.resource.join(",")
        })
        .collect()
}

#[test]
fn a_valid_id_token_of_an_admin_may_write_everything() {
    let k = &keys()[0];
    let r = ask(&rs256(k, &header("k1"), &id_claims())).unwrap();
    assert_eq!(r.principal_id, "5f0c-admin");
    assert_eq!(
        resources(&r),
        vec!["arn:aws:execute-api:eu-west-1:123456789012:abcdef1234/prod/*/*"]
    );
    assert_eq!(r.context["role"], "write");
    // The rotated-in key works too; and an access token with the write scope.
    let mut c = access_claims();
    c["scope"] = json!("acceso/write");
    let r = ask(&rs256(&keys()[1], &header("k2"), &c)).unwrap();
    assert_eq!(r.context["role"], "write");
    // The JSON API Gateway reads.
    let wire = serde_json::to_value(&r).unwrap();
    assert_eq!(wire["principalId"], "7a1d-viewer");
    assert_eq!(wire["policyDocument"]["Statement"][0]["Effect"], "Allow");
    assert_eq!(
        wire["policyDocument"]["Statement"][0]["Action"],
        "execute-api:Invoke"
    );
    assert_eq!(wire["context"]["role"], "write");
}

#[test]
fn a_valid_access_token_with_the_read_scope_may_only_get() {
    let r = ask(&rs256(&keys()[0], &header("k1"), &access_claims())).unwrap();
    assert_eq!(
        resources(&r),
        vec!["arn:aws:execute-api:eu-west-1:123456789012:abcdef1234/prod/GET/*"]
    );
    assert_eq!(r.context["role"], "read");
    // A viewer group does the same; both groups: the greater right.
    let mut c = id_claims();
    c["cognito:groups"] = json!(["acceso-viewers"]);
    assert_eq!(
        ask(&rs256(&keys()[0], &header("k1"), &c)).unwrap().context["role"],
        "read"
    );
    c["cognito:groups"] = json!(["acceso-viewers", "acceso-admins"]);
    assert_eq!(
        ask(&rs256(&keys()[0], &header("k1"), &c)).unwrap().context["role"],
        "write"
    );
    // Within the leeway of expiry: still valid.
    let mut c = access_claims();
    c["exp"] = json!(NOW - 10);
    assert!(ask(&rs256(&keys()[0], &header("k1"), &c)).is_ok());
}

#[test]
fn an_unsigned_token_is_denied() {
    let h = b64(json!({"alg": "none", "kid": "k1"}).to_string().as_bytes());
    let p = b64(id_claims().to_string().as_bytes());
    denied("alg none, empty signature", &format!("{h}.{p}."));
    denied("alg none, no signature part", &format!("{h}.{p}"));
    let h = b64(json!({"alg": "None", "kid": "k1"}).to_string().as_bytes());
    denied("alg None", &format!("{h}.{p}."));
    let h = b64(json!({"kid": "k1"}).to_string().as_bytes());
    denied("no alg", &format!("{h}.{p}."));
}

#[test]
fn an_algorithm_swap_to_hs256_keyed_with_the_public_key_is_denied() {
    let k = &keys()[0];
    let h = json!({"alg": "HS256", "kid": "k1", "typ": "JWT"});
    for (what, secret) in [
        ("the PEM", k.spki_pem.as_bytes().to_vec()),
        ("the DER", k.spki_der.clone()),
        ("the modulus", k.n.clone()),
        ("the JWKS text", jwks().into_bytes()),
    ] {
        denied(
            &format!("HS256 keyed with {what}"),
            &hs256(&secret, &h, &id_claims()),
        );
    }
    // RS256 in the header over an HMAC signature: not a valid RSA signature either.
    denied(
        "RS256 header, HMAC signature",
        &hs256(k.spki_pem.as_bytes(), &header("k1"), &id_claims()),
    );
    for alg in ["RS384", "RS512", "PS256", "ES256", "rs256"] {
        let h = json!({"alg": alg, "kid": "k1"});
        denied(alg, &rs256(k, &h, &id_claims()));
    }
}

#[test]
fn expired_and_not_yet_valid_tokens_are_denied() {
    let k = &keys()[0];
    let mut c = id_claims();
    c["exp"] = json!(NOW - 3600);
    denied("expired an hour ago", &rs256(k, &header("k1"), &c));
    c["exp"] = json!(NOW - 31);
    denied("expired past the leeway", &rs256(k, &header("k1"), &c));
    let mut c = id_claims();
    c["nbf"] = json!(NOW + 600);
    denied("valid in ten minutes", &rs256(k, &header("k1"), &c));
    let mut c = id_claims();
    c.as_object_mut().unwrap().remove("exp");
    denied("no exp", &rs256(k, &header("k1"), &c));
    let mut c = id_claims();
    c["exp"] = json!("tomorrow");
    denied("exp not a number", &rs256(k, &header("k1"), &c));
}

#[test]
fn foreign_tokens_are_denied() {
    let k = &keys()[0];
    let mut c = id_claims();
    c["iss"] = json!("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_OTHER");
    denied("another issuer", &rs256(k, &header("k1"), &c));
    c.as_object_mut().unwrap().remove("iss");
    denied("no issuer", &rs256(k, &header("k1"), &c));
    let mut c = id_claims();
    c["aud"] = json!("another-app");
    denied("another audience", &rs256(k, &header("k1"), &c));
    c["aud"] = json!(["x", "y"]);
    denied("other audiences", &rs256(k, &header("k1"), &c));
    let mut c = access_claims();
    c["client_id"] = json!("another-app");
    denied(
        "an access token of another client",
        &rs256(k, &header("k1"), &c),
    );
    let mut c = access_claims();
    c["token_use"] = json!("refresh");
    denied("token_use refresh", &rs256(k, &header("k1"), &c));
    // Signed by a key nobody trusts, under a trusted kid or its own.
    denied(
        "signed by another key as k1",
        &rs256(&keys()[2], &header("k1"), &id_claims()),
    );
    denied(
        "unknown kid",
        &rs256(&keys()[2], &header("k3"), &id_claims()),
    );
    denied("no kid", &rs256(k, &json!({"alg": "RS256"}), &id_claims()));
    denied(
        "crit header",
        &rs256(
            k,
            &json!({"alg": "RS256", "kid": "k1", "crit": ["b64"]}),
            &id_claims(),
        ),
    );
}

#[test]
fn a_tampered_token_is_denied() {
    let k = &keys()[0];
    let good = rs256(k, &header("k1"), &access_claims());
    let parts: Vec<&str> = good.split('.').collect();
    // A reader makes itself an admin, keeping the signature.
    let mut c = access_claims();
    c["scope"] = json!("acceso/write");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(c.to_string().as_bytes()),
        parts[2]
    );
    denied("escalated scope", &forged);
    let mut c = access_claims();
    c["exp"] = json!(NOW + 10 * 365 * 86400);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(c.to_string().as_bytes()),
        parts[2]
    );
    denied("extended expiry", &forged);
    // A flipped signature bit; padding; garbage.
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[2])
        .unwrap();
    sig[10] ^= 1;
    denied(
        "altered signature",
        &format!("{}.{}.{}", parts[0], parts[1], b64(&sig)),
    );
    denied("padded", &format!("{good}=="));
    denied("four parts", &format!("{good}.x"));
    denied("not a token", "hello");
    denied("empty", "");
}

#[test]
fn a_valid_token_without_an_acceso_role_is_denied() {
    let mut c = id_claims();
    c["cognito:groups"] = json!(["finance"]);
    denied("another group", &rs256(&keys()[0], &header("k1"), &c));
    let mut c = access_claims();
    c["scope"] = json!("openid profile");
    denied("other scopes", &rs256(&keys()[0], &header("k1"), &c));
}

#[test]
fn the_header_must_carry_a_bearer_token_for_a_method_arn() {
    let token = rs256(&keys()[0], &header("k1"), &id_claims());
    let a = authorizer();
    let mk = |auth: Option<String>, arn: &str| TokenAuthorizerRequest {
        kind: Some("TOKEN".into()),
        authorization_token: auth,
        method_arn: arn.into(),
    };
    assert!(a
        .authorize(&mk(Some(format!("bearer {token}")), ARN), NOW)
        .is_ok());
    assert!(a.authorize(&mk(Some(token.clone()), ARN), NOW).is_ok());
    assert_eq!(
        a.authorize(&mk(Some(format!("Basic {token}")), ARN), NOW),
        Err(Unauthorized)
    );
    assert_eq!(a.authorize(&mk(None, ARN), NOW), Err(Unauthorized));
    assert_eq!(
        a.authorize(&mk(Some(token), "not-an-arn"), NOW),
        Err(Unauthorized)
    );
    // What the Lambda answers: exactly the message API Gateway turns into a 401.
    assert_eq!(Unauthorized.to_string(), "Unauthorized");
}

#[test]
fn key_sets_that_cannot_verify_rs256_are_refused_at_start() {
    let k = &keys()[0];
    for (jwks, expect) in [
        (json!({"keys": []}), "no keys"),
        (
            json!({"keys": [{"kty": "EC", "kid": "e", "crv": "P-256"}]}),
            "kty",
        ),
        (
            json!({"keys": [{"kty": "RSA", "kid": "h", "alg": "HS256", "n": b64(&k.n), "e": b64(&k.e)}]}),
            "alg",
        ),
        (
            json!({"keys": [{"kty": "RSA", "kid": "x", "use": "enc", "n": b64(&k.n), "e": b64(&k.e)}]}),
            "use",
        ),
        (
            json!({"keys": [{"kty": "RSA", "n": b64(&k.n), "e": b64(&k.e)}]}),
            "no kid",
        ),
        (
            json!({"keys": [{"kty": "RSA", "kid": "s", "n": b64(&k.n[..128]), "e": b64(&k.e)}]}),
            "2048",
        ),
        (
            json!({"keys": [{"kty": "RSA", "kid": "d", "n": b64(&k.n), "e": b64(&k.e)}, {"kty": "RSA", "kid": "d", "n": b64(&k.n), "e": b64(&k.e)}]}),
            "twice",
        ),
        (json!([]), "not a JWKS"),
    ] {
        let err = KeySet::from_jwks(&jwks.to_string()).unwrap_err();
        assert!(err.contains(expect), "{jwks}: {err:?} lacks {expect:?}");
    }
    assert_eq!(KeySet::from_jwks(&jwks()).unwrap().len(), 2);
}
