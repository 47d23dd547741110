//! Mutual TLS for the MQTT link (AWS IoT Core): the device certificate and key, the CA to trust,
//! ALPN for port 443. Certificate checks are never turned off. One crypto provider (ring), passed
//! explicitly, so no second provider elsewhere in the tree can make rustls panic.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// ALPN protocol that lets AWS IoT Core take MQTT on port 443.
pub const AWS_ALPN: &[u8] = b"x-amzn-mqtt-ca";

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("broker.{key} {path}: {why}")]
    File {
        key: &'static str,
        path: String,
        why: String,
    },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_error(key: &'static str, path: &Path, why: impl ToString) -> TlsSetupError {
    TlsSetupError::File {
        key,
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// The client configuration: built once and reused, so TLS sessions resume across reconnects.
pub fn client_config(
    ca_file: &Path,
    cert_file: &Path,
    key_file: &Path,
    alpn: bool,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| file_error("ca_file", ca_file, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error("ca_file", ca_file, e))?;
    if cas.is_empty() {
        return Err(file_error("ca_file", ca_file, "holds no PEM certificate"));
    }
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| file_error("ca_file", ca_file, e))?;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| file_error("cert_file", cert_file, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error("cert_file", cert_file, e))?;
    if certs.is_empty() {
        return Err(file_error(
            "cert_file",
            cert_file,
            "holds no PEM certificate",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| file_error("key_file", key_file, format!("no usable private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| file_error("key_file", key_file, format!("does not fit cert_file: {e}")))?;
    if alpn {
        config.alpn_protocols = vec![AWS_ALPN.to_vec()];
    }
    Ok(Arc::new(config))
}

/// What a TLS failure means for the person looking at the door's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsTrouble {
    /// The broker's certificate is not valid yet: most likely our clock is behind.
    Clock(String),
    /// Any other certificate problem, said plainly.
    Certificate(String),
}

/// Explains a rustls error found anywhere in a connection error's chain.
pub fn explain(e: &rustls::Error) -> TlsTrouble {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::NotValidYet) | E::InvalidCertificate(C::NotValidYetContext { .. }) => {
            TlsTrouble::Clock(
                "the broker's certificate is not valid yet: this device's clock is probably behind (no RTC, no NTP yet)"
                    .into(),
            )
        }
        // An expired certificate is the broker's (the clock's trust is judged on its own, and a
        // clock far ahead is rare): reported against the broker, so it clears on connect.
        E::InvalidCertificate(C::Expired) | E::InvalidCertificate(C::ExpiredContext { .. }) => TlsTrouble::Certificate(
            "the broker's certificate has expired (or this device's clock is ahead)".into(),
        ),
        E::InvalidCertificate(C::UnknownIssuer) => TlsTrouble::Certificate(
            "the broker's certificate is not signed by broker.ca_file".into(),
        ),
        E::InvalidCertificate(C::NotValidForName) | E::InvalidCertificate(C::NotValidForNameContext { .. }) => {
            TlsTrouble::Certificate("the broker's certificate does not name broker.host".into())
        }
        E::AlertReceived(A::CertificateExpired) => TlsTrouble::Certificate(
            "the broker rejected this device's certificate as expired (broker.cert_file)".into(),
        ),
        E::AlertReceived(A::UnknownCA) | E::AlertReceived(A::BadCertificate) => TlsTrouble::Certificate(
            "the broker does not trust this device's certificate (broker.cert_file)".into(),
        ),
        E::AlertReceived(A::CertificateRequired) => TlsTrouble::Certificate(
            "the broker requires a client certificate".into(),
        ),
        E::AlertReceived(alert) => {
            TlsTrouble::Certificate(format!("the broker ended the TLS handshake: {alert:?}"))
        }
        other => TlsTrouble::Certificate(format!("TLS error: {other}")),
    }
}

/// The rustls error inside an error chain, if there is one.
pub fn find_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(r);
            }
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod explain_tests {
    use super::*;
    use rustls::{CertificateError as C, Error as E};

    #[test]
    fn a_certificate_not_valid_yet_blames_the_clock_and_an_expired_one_the_broker() {
        assert!(matches!(
            explain(&E::InvalidCertificate(C::NotValidYet)),
            TlsTrouble::Clock(t) if t.contains("clock is probably behind")
        ));
        assert!(matches!(
            explain(&E::InvalidCertificate(C::Expired)),
            TlsTrouble::Certificate(t) if t.contains("has expired")
        ));
    }
}
