//! Signing with an AWS KMS key (key spec `ECC_NIST_P256`, usage `SIGN_VERIFY`): the private
//! key never leaves KMS. KMS signs the SHA-256 digest of what the doors verify
//! (`acceso_protocol::signed::digest`, `MessageType=DIGEST`, since a snapshot page is larger
//! than the 4 KB KMS takes as a raw message) and returns the DER signature the doors expect.

use acceso_protocol::signed::{self, Purpose};
use acceso_protocol::PublicKey;
use aws_sdk_kms::error::DisplayErrorContext;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use aws_sdk_kms::Client;
use base64::Engine;

use crate::ports::{CloudSigner, SignError};

#[derive(Debug, Clone)]
pub struct KmsSigner {
    client: Client,
    key_id: String,
}

impl KmsSigner {
    /// `key_id`: a key id, key ARN or alias (`alias/acceso-signing`).
    pub fn new(client: Client, key_id: impl Into<String>) -> Self {
        KmsSigner {
            client,
            key_id: key_id.into(),
        }
    }

    /// The public half, to pin in the doors' config (`GetPublicKey`).
    pub async fn public_key(&self) -> Result<PublicKey, SignError> {
        let out = self
            .client
            .get_public_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(|e| SignError(format!("KMS GetPublicKey: {}", DisplayErrorContext(&e))))?;
        let der = out
            .public_key()
            .ok_or_else(|| SignError("KMS GetPublicKey returned no key".into()))?;
        PublicKey::from_spki_der(der.as_ref())
            .map_err(|e| SignError(format!("KMS key {}: {e}", self.key_id)))
    }
}

impl CloudSigner for KmsSigner {
    async fn sign(&self, purpose: Purpose, body: &str) -> Result<String, SignError> {
        let digest = signed::digest(purpose, body.as_bytes());
        let out = self
            .client
            .sign()
            .key_id(&self.key_id)
            .message(Blob::new(digest.to_vec()))
            .message_type(MessageType::Digest)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(|e| SignError(format!("KMS Sign: {}", DisplayErrorContext(&e))))?;
        let der = out
            .signature()
            .ok_or_else(|| SignError("KMS Sign returned no signature".into()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(der.as_ref()))
    }
}
