//! Signed messages from the cloud: the envelope every update and sync response travels in.
//!
//! On the wire: `{"body": {...}, "signature": "<base64 of a DER ECDSA signature>"}`. The
//! signature is ECDSA over NIST P-256 with SHA-256 of `purpose context || body`, where `body`
//! is the exact bytes of the `body` value as they stand in the message. Nothing is
//! canonicalised: the door verifies the bytes it received and then parses those same bytes, so
//! a cloud and a door built from different library versions can never disagree on what was
//! signed.
//!
//! Why ECDSA P-256: AWS KMS signs with it (key spec `ECC_NIST_P256`, algorithm
//! `ECDSA_SHA_256`, message type `DIGEST` with [`digest`], since a snapshot page is larger than
//! the 4 KB KMS takes as a raw message) and returns exactly this DER form, so the private key
//! never leaves KMS; the public half is 91 bytes of PEM to pin in each door's config; and
//! verification is one `ring` call, the same crypto library the agent's TLS already uses.
//!
//! The purpose context keeps a signature over one kind of message from being valid for
//! another (a snapshot page replayed as an update, say).

use base64::Engine;
use ring::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What a signature is for; part of what is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// One change on the updates topic.
    Update,
    /// A sync response (a snapshot page, or "you are current").
    Sync,
}

impl Purpose {
    fn context(self) -> &'static [u8] {
        match self {
            Purpose::Update => b"acceso update v1\n",
            Purpose::Sync => b"acceso sync v1\n",
        }
    }
}

/// The bytes a signature covers: the purpose context followed by the body.
pub fn signed_bytes(purpose: Purpose, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(purpose.context().len() + body.len());
    m.extend_from_slice(purpose.context());
    m.extend_from_slice(body);
    m
}

/// SHA-256 of what is signed: what to hand AWS KMS `Sign` with `MessageType=DIGEST`.
pub fn digest(purpose: Purpose, body: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, &signed_bytes(purpose, body));
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Why a message's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("unsigned: this door only accepts messages signed by a pinned cloud key")]
    Missing,
    #[error("signature is not base64")]
    NotBase64,
    #[error("signature does not verify with any pinned cloud key (forged, altered or signed by another key)")]
    Invalid,
}

/// Why a public key could not be pinned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no PUBLIC KEY block in PEM: {0}")]
    Pem(String),
    #[error("not an EC P-256 public key (a SubjectPublicKeyInfo of id-ecPublicKey / prime256v1 is expected)")]
    NotP256,
}

/// The DER prefix of a P-256 SubjectPublicKeyInfo with an uncompressed point: SEQUENCE {
/// SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (0 unused bits) 0x04 ... }.
const P256_SPKI_PREFIX: [u8; 27] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
];

/// A cloud public key a door trusts.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The uncompressed point, 65 bytes.
    point: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl PublicKey {
    /// From the DER of a SubjectPublicKeyInfo (what `aws kms get-public-key` returns).
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        if der.len() != P256_SPKI_PREFIX.len() + 64 || !der.starts_with(&P256_SPKI_PREFIX) {
            return Err(KeyError::NotP256);
        }
        Ok(PublicKey {
            point: der[P256_SPKI_PREFIX.len() - 1..].to_vec(),
        })
    }

    /// From PEM text with a `-----BEGIN PUBLIC KEY-----` block.
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey, KeyError> {
        use rustls_pki_types::pem::PemObject;
        let spki = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(pem)
            .map_err(|e| KeyError::Pem(e.to_string()))?;
        PublicKey::from_spki_der(spki.as_ref())
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn to_spki_der(&self) -> Vec<u8> {
        let mut der = P256_SPKI_PREFIX[..P256_SPKI_PREFIX.len() - 1].to_vec();
        der.extend_from_slice(&self.point);
        der
    }

    /// PEM text, as a door's config file holds it.
    pub fn to_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.to_spki_der());
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    /// A short name for logs: the first 8 bytes of the SHA-256 of the SPKI, in hex.
    pub fn fingerprint(&self) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.to_spki_der());
        d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn verifies(&self, message: &[u8], der: &[u8]) -> bool {
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(message, der)
            .is_ok()
    }
}

/// The keys a door accepts signatures from (more than one while a key is being rotated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

impl TrustedKeys {
    pub fn new(keys: Vec<PublicKey>) -> TrustedKeys {
        TrustedKeys { keys }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Checks `signature` (base64 DER) over `body` for `purpose`.
    pub fn verify(
        &self,
        purpose: Purpose,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<(), SignatureError> {
        let sig = signature.ok_or(SignatureError::Missing)?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .map_err(|_| SignatureError::NotBase64)?;
        let message = signed_bytes(purpose, body);
        if self.keys.iter().any(|k| k.verifies(&message, &der)) {
            Ok(())
        } else {
            Err(SignatureError::Invalid)
        }
    }
}

/// A private signing key, for the simulated cloud, tests and a cloud without KMS. (The real
/// cloud signs through KMS with [`digest`]; the result verifies the same way.)
pub struct SigningKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public_key().fingerprint())
    }
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> Result<SigningKey, String> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| "cannot generate a P-256 key".to_string())?;
        SigningKey::from_pkcs8(pkcs8.as_ref())
    }

    /// From PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, String> {
        let rng = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng)
            .map_err(|e| format!("not a P-256 PKCS#8 private key: {e}"))?;
        Ok(SigningKey {
            pair,
            pkcs8: der.to_vec(),
        })
    }

    /// PKCS#8 DER, to keep the key.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            point: self.pair.public_key().as_ref().to_vec(),
        }
    }

    /// The base64 DER signature over `body` for `purpose`.
    pub fn sign(&self, purpose: Purpose, body: &[u8]) -> String {
        let rng = ring::rand::SystemRandom::new();
        let message = signed_bytes(purpose, body);
        match self.pair.sign(&rng, &message) {
            Ok(sig) => base64::engine::general_purpose::STANDARD.encode(sig.as_ref()),
            // ring fails only if the system RNG does; an empty signature is then rejected
            // by every door, which is the safe way to fail.
            Err(_) => String::new(),
        }
    }
}

/// Signs bodies for the cloud's messages.
pub trait Signer {
    fn sign(&self, purpose: Purpose, body: &[u8]) -> String;
}

impl Signer for SigningKey {
    fn sign(&self, purpose: Purpose, body: &[u8]) -> String {
        SigningKey::sign(self, purpose, body)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(borrow)]
    body: &'a RawValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
}

/// A received envelope, not yet verified.
#[derive(Debug, Clone)]
pub struct Opened<'a> {
    /// The body exactly as it stood in the message.
    pub body: &'a str,
    pub signature: Option<String>,
}

/// Reads the envelope of a message. Errors name what is wrong with the envelope itself.
pub fn open<'a>(payload: &'a [u8]) -> Result<Opened<'a>, String> {
    let text = std::str::from_utf8(payload).map_err(|e| format!("not UTF-8: {e}"))?;
    let env: Envelope<'_> = serde_json::from_str(text)
        .map_err(|e| format!("not a signed envelope {{\"body\": ..., \"signature\": ...}}: {e}"))?;
    let body: &'a str = env.body.get();
    Ok(Opened {
        body,
        signature: env.signature,
    })
}

/// Wraps `body` (JSON text) in an envelope signed by `signer`, or unsigned if `None`.
pub fn seal(purpose: Purpose, body: &str, signer: Option<&dyn Signer>) -> Vec<u8> {
    let signature = signer.map(|s| s.sign(purpose, body.as_bytes()));
    envelope(body, signature.as_deref())
}

/// Wraps `body` (JSON text) with a signature made elsewhere (base64 DER, e.g. from AWS KMS
/// `Sign` over [`digest`]), or none.
pub fn envelope(body: &str, signature: Option<&str>) -> Vec<u8> {
    let mut out = String::with_capacity(body.len() + 128);
    out.push_str("{\"body\":");
    out.push_str(body);
    if let Some(sig) = signature {
        out.push_str(",\"signature\":\"");
        out.push_str(sig);
        out.push('"');
    }
    out.push('}');
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_body_verifies_and_any_change_does_not() {
        let key = SigningKey::generate().unwrap();
        let trusted = TrustedKeys::new(vec![key.public_key()]);
        let sealed = seal(Purpose::Update, r#"{"version":1}"#, Some(&key));
        let o = open(&sealed).unwrap();
        assert_eq!(o.body, r#"{"version":1}"#);
        trusted
            .verify(Purpose::Update, o.body.as_bytes(), o.signature.as_deref())
            .unwrap();
        // Another purpose, another body, no signature, another key: all refused.
        assert_eq!(
            trusted.verify(Purpose::Sync, o.body.as_bytes(), o.signature.as_deref()),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            trusted.verify(Purpose::Update, br#"{"version":2}"#, o.signature.as_deref()),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            trusted.verify(Purpose::Update, o.body.as_bytes(), None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            trusted.verify(Purpose::Update, o.body.as_bytes(), Some("%%")),
            Err(SignatureError::NotBase64)
        );
        let other = SigningKey::generate().unwrap();
        let forged = seal(Purpose::Update, r#"{"version":1}"#, Some(&other));
        let f = open(&forged).unwrap();
        assert_eq!(
            trusted.verify(Purpose::Update, f.body.as_bytes(), f.signature.as_deref()),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn the_body_is_verified_byte_for_byte_as_received() {
        let key = SigningKey::generate().unwrap();
        let trusted = TrustedKeys::new(vec![key.public_key()]);
        let body = "{ \"version\" : 1 ,\n \"x\": 1.50 }";
        let sig = key.sign(Purpose::Update, body.as_bytes());
        let msg = format!("{{ \"signature\": \"{sig}\", \"body\": {body} }}");
        let o = open(msg.as_bytes()).unwrap();
        assert_eq!(o.body, body);
        trusted
            .verify(Purpose::Update, o.body.as_bytes(), o.signature.as_deref())
            .unwrap();
    }

    #[test]
    fn a_public_key_round_trips_through_pem_and_other_keys_are_refused() {
        let key = SigningKey::generate().unwrap();
        let pem = key.public_key().to_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(
            PublicKey::from_pem(pem.as_bytes()).unwrap(),
            key.public_key()
        );
        assert!(matches!(
            PublicKey::from_pem(b"not pem"),
            Err(KeyError::Pem(_))
        ));
        // A P-384 SPKI has another curve OID and length.
        let mut der = key.public_key().to_spki_der();
        der[20] ^= 1;
        assert_eq!(PublicKey::from_spki_der(&der), Err(KeyError::NotP256));
        let again = SigningKey::from_pkcs8(key.pkcs8()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
    }

    #[test]
    fn envelopes_that_are_not_envelopes_are_refused_with_why() {
        for bad in [
            &b"{"[..],
            br#"{"version":1,"op":"delete_user","user_id":"u"}"#,
            br#"{"body":{},"signature":"x","extra":1}"#,
            b"\xff",
        ] {
            assert!(open(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
