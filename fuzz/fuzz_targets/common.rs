//! Shared by the fuzz targets: one signing key per process and its pinned public half.

use std::sync::OnceLock;

use acceso_protocol::{SigningKey, TrustedKeys};

pub struct Keys {
    pub signer: SigningKey,
    pub trusted: TrustedKeys,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let signer = SigningKey::generate().expect("a P-256 key can be generated");
        let trusted = TrustedKeys::new(vec![signer.public_key()]);
        Keys { signer, trusted }
    })
}
