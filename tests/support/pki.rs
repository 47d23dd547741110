//! Test support: a throwaway PKI (CAs, broker and device certificates) written as PEM files,
#![allow(dead_code)]
//! for mosquitto's TLS listener and the agent's mutual TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

/// A certificate authority that can issue certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its private key, as PEM files.
#[allow(dead_code)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// When a certificate is valid.
#[derive(Clone, Copy)]
#[allow(dead_code)]
pub enum Validity {
    /// From a day ago for a year.
    Current,
    /// Expired yesterday.
    Expired,
    /// Becomes valid this long from now.
    StartsIn(Duration),
}

impl Validity {
    fn apply(self, params: &mut CertificateParams) {
        let now = OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let (from, until) = match self {
            Validity::Current => (now - day, now + 365 * day),
            Validity::Expired => (now - 30 * day, now - day),
            Validity::StartsIn(d) => {
                let d = time::Duration::try_from(d).expect("a short duration");
                (now + d, now + 365 * day)
            }
        };
        params.not_before = from;
        params.not_after = until;
    }
}

fn named(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name = named(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Validity::Current.apply(&mut params);
        let cert = params.self_signed(&key).expect("self-sign CA");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes this CA's certificate to `dir/<file>` and returns the path.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, &self.pem).expect("write CA PEM");
        path
    }

    /// The broker's certificate, for 127.0.0.1 and localhost.
    pub fn issue_server(&self, dir: &Path, name: &str, validity: Validity) -> Issued {
        let mut params = CertificateParams::default();
        params.distinguished_name = named("acceso test broker");
        params.subject_alt_names = vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::DnsName("localhost".try_into().expect("a DNS name")),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(dir, name, params, validity)
    }

    /// A device's client certificate (common name = thing name, as AWS IoT Core issues them).
    pub fn issue_client(&self, dir: &Path, name: &str, validity: Validity) -> Issued {
        let mut params = CertificateParams::default();
        params.distinguished_name = named(name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(dir, name, params, validity)
    }

    fn issue(
        &self,
        dir: &Path,
        name: &str,
        mut params: CertificateParams,
        validity: Validity,
    ) -> Issued {
        validity.apply(&mut params);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().expect("generate key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let issued = Issued {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("write certificate");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write key");
        issued
    }
}
