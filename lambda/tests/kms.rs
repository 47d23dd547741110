//! The KMS signer against moto: the request KMS gets (key, digest, algorithm) and the DER it
//! returns, verified with the public key from `GetPublicKey`.
//!
//! moto (5.2.5) ignores `MessageType=DIGEST`: it signs the 32 digest bytes as a raw message
//! (hashing them again). So against moto the signature verifies over the digest as a message,
//! which is what this test checks; real KMS signs the digest itself, and then the signature
//! verifies over `signed_bytes(purpose, body)`, the door's check, exactly as a local key's
//! does (`acceso_protocol::signed` tests).

mod common;

use acceso_cloud::kms::KmsSigner;
use acceso_cloud::ports::{seal, CloudSigner};
use acceso_protocol::signed::{self, Purpose};
use acceso_protocol::{PublicKey, TrustedKeys, Update};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use base64::Engine;
use common::*;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};

#[tokio::test]
async fn kms_signs_the_digest_of_what_doors_verify_with_the_key_it_publishes() {
    let kms = aws_sdk_kms::Client::new(&sdk().await);
    let key = within(
        "create key",
        kms.create_key()
            .key_spec(KeySpec::EccNistP256)
            .key_usage(KeyUsageType::SignVerify)
            .send(),
    )
    .await
    .unwrap();
    let key_id = key.key_metadata().unwrap().key_id().to_string();
    let signer = KmsSigner::new(kms.clone(), &key_id);
    let public: PublicKey = within("public key", signer.public_key()).await.unwrap();

    let body = r#"{"version":1,"op":"delete_user","user_id":"u1"}"#;
    let sig = within("sign", signer.sign(Purpose::Update, body))
        .await
        .unwrap();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&sig)
        .unwrap();
    assert_eq!(der[0], 0x30, "a DER SEQUENCE");
    let digest = signed::digest(Purpose::Update, body.as_bytes());
    let trusted = TrustedKeys::new(vec![public.clone()]);
    let point = &public.to_spki_der()[26..];
    let verifies_raw = |d: &[u8]| {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point)
            .verify(d, &der)
            .is_ok()
    };
    if trusted
        .verify(Purpose::Update, body.as_bytes(), Some(&sig))
        .is_ok()
    {
        // A moto that implements DIGEST: the door's own check passes.
    } else {
        // moto 5.2: a signature over the digest taken as a message. It verifies only over
        // this purpose's digest of this body, so the signer sent exactly what KMS must sign.
        assert!(
            verifies_raw(&digest),
            "KMS did not sign the digest of the signed bytes"
        );
        assert!(!verifies_raw(&signed::digest(
            Purpose::Sync,
            body.as_bytes()
        )));
        assert!(!verifies_raw(&signed::digest(Purpose::Update, b"{}")));
    }

    // The envelope is the door's shape: the body as signed, and the signature.
    let sealed = within("seal", seal(&signer, Purpose::Update, body))
        .await
        .unwrap();
    let opened = signed::open(&sealed).unwrap();
    assert_eq!(opened.body, body);
    let again = base64::engine::general_purpose::STANDARD
        .decode(opened.signature.as_deref().unwrap())
        .unwrap();
    assert_eq!(again[0], 0x30);
    // An unsigned envelope is refused by a door that pins the key.
    assert!(Update::open(&signed::envelope(body, None), Some(&trusted)).is_err());

    // A key that is not there is an error naming KMS, not a signature.
    let missing = KmsSigner::new(kms, "alias/not-there");
    let err = within("sign", missing.sign(Purpose::Update, body))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("KMS Sign"), "{err}");
}
