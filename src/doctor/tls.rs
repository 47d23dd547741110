//! The certificate checks and the TLS handshake of `acceso doctor`.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::Check;
use crate::cloud::tls::{client_config, explain, find_rustls, TlsTrouble};
use crate::config::Config;

/// Warn-worthy: a certificate that ends this soon is renewed now, not at the door.
const RENEW_WITHIN: i64 = 30 * 24 * 3600;

const NO_TLS: &str = "broker.tls = false: no certificates (AWS IoT Core requires mutual TLS)";

/// The CA certificate, the device certificate and its key: present, parsed, in date,
/// matching, and the key readable by no one else.
pub fn files(config: &Config) -> Vec<Check> {
    let b = &config.broker;
    if !b.tls {
        return vec![
            Check::skipped("ca certificate", NO_TLS),
            Check::skipped("device certificate", NO_TLS),
            Check::skipped("device key", NO_TLS),
        ];
    }
    // `Config::validate` requires all three with tls.
    let (Some(ca), Some(cert), Some(key)) = (&b.ca_file, &b.cert_file, &b.key_file) else {
        let missing = Check::failed(
            "ca certificate",
            "broker.tls = true needs broker.ca_file, broker.cert_file and broker.key_file",
            "set the three files in the config",
        );
        return vec![
            missing,
            Check::skipped("device certificate", "not checked"),
            Check::skipped("device key", "not checked"),
        ];
    };
    let now = jiff::Timestamp::now().as_second();
    let ca_check = match read_certs(ca) {
        Ok(certs) => {
            let first = &certs[0];
            match validity(first, now) {
                Ok(text) => Check::ok(
                    "ca certificate",
                    format!("{}: {} certificate(s), first {text}", ca.display(), certs.len()),
                ),
                Err(text) => Check::failed(
                    "ca certificate",
                    format!("{}: {text}", ca.display()),
                    "for AWS IoT Core use Amazon Root CA 1 (AmazonRootCA1.pem); if the clock is wrong, fix it first",
                ),
            }
        }
        Err(e) => Check::failed(
            "ca certificate",
            format!("broker.ca_file {}: {e}", ca.display()),
            "put the broker's root CA in PEM there (for AWS IoT Core: AmazonRootCA1.pem)",
        ),
    };
    let (cert_check, spki) = match read_certs(cert) {
        Ok(certs) => match validity(&certs[0], now) {
            Ok(text) => (
                Check::ok("device certificate", format!("{}: {text}", cert.display())),
                spki_of(&certs[0]),
            ),
            Err(text) => (
                Check::failed(
                    "device certificate",
                    format!("{}: {text}", cert.display()),
                    "if the clock is right, issue a new certificate (`aws iot create-keys-and-certificate --set-as-active ...`), attach the policy and thing, and install it (README: Installing)",
                ),
                spki_of(&certs[0]),
            ),
        },
        Err(e) => (
            Check::failed(
                "device certificate",
                format!("broker.cert_file {}: {e}", cert.display()),
                "put the device certificate (PEM, from `aws iot create-keys-and-certificate`) there",
            ),
            None,
        ),
    };
    let key_check = key_check(key, spki.as_deref(), cert);
    vec![ca_check, cert_check, key_check]
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    for (i, c) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(c.as_ref())
            .map_err(|e| format!("certificate {} does not parse: {e}", i + 1))?;
    }
    Ok(certs)
}

/// "CN=..., valid until ...", or why it is not valid now (`now`: Unix seconds).
fn validity(der: &CertificateDer<'_>, now: i64) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    let subject = cert.subject().to_string();
    let from = cert.validity().not_before.timestamp();
    let until = cert.validity().not_after.timestamp();
    let show = |t: i64| {
        jiff::Timestamp::from_second(t)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| t.to_string())
    };
    if now < from {
        return Err(format!(
            "{subject}: not valid until {} (is this device's clock behind?)",
            show(from)
        ));
    }
    if now > until {
        return Err(format!("{subject}: expired {}", show(until)));
    }
    let soon = if until - now < RENEW_WITHIN {
        " (renew it: less than 30 days left)"
    } else {
        ""
    };
    Ok(format!("{subject}, valid until {}{soon}", show(until)))
}

fn spki_of(der: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.public_key().raw.to_vec())
}

fn key_check(path: &Path, cert_spki: Option<&[u8]>, cert: &Path) -> Check {
    let perms_fix = format!(
        "`chown root:acceso {p} && chmod 0640 {p}`",
        p = path.display()
    );
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            return Check::failed(
                "device key",
                format!("broker.key_file {}: {e}", path.display()),
                format!("put the device's private key (PEM) there, then {perms_fix}"),
            )
        }
    };
    let mode = meta.permissions().mode() & 0o777;
    if let Err(e) = std::fs::File::open(path) {
        return Check::failed(
            "device key",
            format!(
                "{}: mode {mode:04o}, owner uid {}: this user cannot read it: {e}",
                path.display(),
                std::os::unix::fs::MetadataExt::uid(&meta)
            ),
            format!("the agent (user acceso) must read it: {perms_fix}"),
        );
    }
    if mode & 0o007 != 0 {
        return Check::failed(
            "device key",
            format!(
                "{}: mode {mode:04o}: other users can read the device's private key",
                path.display()
            ),
            perms_fix,
        );
    }
    let der = match PrivateKeyDer::from_pem_file(path) {
        Ok(k) => k,
        Err(e) => {
            return Check::failed(
                "device key",
                format!("{}: no usable private key: {e}", path.display()),
                "put the private key (PEM) that was created with the certificate there",
            )
        }
    };
    let signing = match rustls::crypto::ring::sign::any_supported_type(&der) {
        Ok(k) => k,
        Err(e) => {
            return Check::failed(
                "device key",
                format!("{}: unsupported key: {e}", path.display()),
                "use an RSA or ECDSA P-256/P-384 key (as AWS IoT Core issues)",
            )
        }
    };
    match (signing.public_key(), cert_spki) {
        (Some(public), Some(spki)) if public.as_ref() != spki => Check::failed(
            "device key",
            format!(
                "{}: does not belong to the certificate {}",
                path.display(),
                cert.display()
            ),
            "install the key that was created with this certificate (keys and certificates come in pairs)",
        ),
        (Some(_), Some(_)) => Check::ok(
            "device key",
            format!(
                "{}: mode {mode:04o}, matches the device certificate",
                path.display()
            ),
        ),
        _ => Check::ok(
            "device key",
            format!("{}: mode {mode:04o}, parses", path.display()),
        ),
    }
}

/// The broker: a TCP connection and, with TLS, a full mutual-TLS handshake, then an MQTT
/// CONNECT as the agent makes it (client id = device_id, the session kept) and a DISCONNECT:
/// a broker or a policy that refuses this client says so only then. Skipped while an agent
/// runs on this state directory: the broker would drop the agent's connection for ours.
pub fn broker(config: &Config, limit: Duration) -> Check {
    let b = &config.broker;
    let target = format!("{}:{}", b.host, b.port);
    let fix_net = format!(
        "check broker.host and broker.port (AWS IoT Core: `aws iot describe-endpoint --endpoint-type iot:Data-ATS`, port 8883, or 443 with broker.alpn = true), DNS, and that the network lets TCP {} out",
        b.port
    );
    let addrs: Vec<_> = match target.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            return Check::failed("broker", format!("{target}: cannot resolve: {e}"), fix_net)
        }
    };
    let mut last = String::from("no address");
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, limit) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    let Some(mut sock) = stream else {
        return Check::failed(
            "broker",
            format!("{target}: cannot connect: {last}"),
            fix_net,
        );
    };
    let running = crate::instance::holder(&config.state_dir);
    let id = config.device_id.as_str();
    if !b.tls {
        if let Some(pid) = &running {
            return Check::ok(
                "broker",
                format!("{target}: TCP connection accepted (no TLS configured); MQTT not tried: the agent runs ({pid}) and would lose its connection to ours"),
            );
        }
        let io = |e: std::io::Error| e.to_string();
        let answer = sock
            .set_read_timeout(Some(limit))
            .and_then(|()| sock.set_write_timeout(Some(limit)))
            .map_err(io)
            .and_then(|()| mqtt_connect(&mut sock, id).map_err(|e| e.text()));
        return match answer {
            Ok(()) => Check::ok(
                "broker",
                format!("{target}: MQTT connection accepted for client {id:?} (no TLS configured)"),
            ),
            Err(e) => Check::failed(
                "broker",
                format!("{target}: {e}"),
                "check broker.port and broker.tls (a TLS port, 8883, needs broker.tls = true and the certificate files), and that the broker lets this client id connect",
            ),
        };
    }
    let (Some(ca), Some(cert), Some(key)) = (&b.ca_file, &b.cert_file, &b.key_file) else {
        return Check::failed(
            "broker",
            "TLS files not configured",
            "see the certificate checks",
        );
    };
    let tls = match client_config(ca, cert, key, b.alpn) {
        Ok(c) => c,
        Err(e) => {
            return Check::failed(
                "broker",
                format!("cannot set TLS up: {e}"),
                "fix the certificate checks above first",
            )
        }
    };
    let mqtt = match &running {
        Some(pid) => Err(pid.clone()),
        None => Ok(id),
    };
    match handshake(tls, &b.host, &mut sock, limit, mqtt) {
        Ok(text) => Check::ok("broker", format!("{target}: {text}")),
        Err(e) => {
            let fix = match &e {
                Failure::Clock(_) => {
                    "fix the clock (see the clock check), then try again".to_string()
                }
                Failure::Certificate(_) => "check that broker.ca_file is the broker's CA (AWS: AmazonRootCA1.pem), the certificate is ACTIVE and attached to the thing and its policy (`aws iot describe-certificate`, `aws iot list-thing-principals`), and broker.host is the account's endpoint".to_string(),
                Failure::Io(_) => fix_net,
                Failure::Refused(_) => format!("the broker refuses client id {id:?}: on AWS IoT Core device_id must be the thing name, and the thing's certificate must have a policy that allows iot:Connect for it (README, step 3); another device connected with this id takes over its connection"),
            };
            Check::failed("broker", format!("{target}: {}", e.text()), fix)
        }
    }
}

enum Failure {
    Clock(String),
    Certificate(String),
    Io(String),
    /// The TLS session is fine; MQTT refused this client.
    Refused(String),
}

impl Failure {
    fn text(&self) -> &str {
        match self {
            Failure::Clock(t) | Failure::Certificate(t) | Failure::Io(t) | Failure::Refused(t) => t,
        }
    }

    fn of(e: std::io::Error, during: &str) -> Failure {
        match find_rustls(&e) {
            Some(r) => match explain(r) {
                TlsTrouble::Clock(t) => Failure::Clock(format!("{during}: {t}")),
                TlsTrouble::Certificate(t) => Failure::Certificate(format!("{during}: {t}")),
            },
            None => Failure::Io(format!("{during}: {e}")),
        }
    }
}

/// Why an MQTT CONNECT did not go through.
enum MqttFail {
    /// The transport failed (for TLS, possibly an alert: classified by the caller).
    Io(std::io::Error, &'static str),
    /// The broker hung up without a CONNACK.
    Closed,
    /// A CONNACK with a refusal, or something else than a CONNACK.
    Refused(String),
}

impl MqttFail {
    fn text(&self) -> String {
        match self {
            MqttFail::Io(e, during) => format!("{during}: {e}"),
            MqttFail::Closed => {
                "the broker closed the connection without answering MQTT CONNECT".into()
            }
            MqttFail::Refused(t) => t.clone(),
        }
    }
}

/// An MQTT 3.1.1 CONNECT for `client_id` (clean session off, as the agent connects: the
/// broker keeps the agent's session and what is queued for it), the CONNACK, a DISCONNECT.
fn mqtt_connect<S: Read + Write>(s: &mut S, client_id: &str) -> Result<(), MqttFail> {
    let id = client_id.as_bytes();
    let id_len = u16::try_from(id.len())
        .map_err(|_| MqttFail::Refused("device_id is too long for MQTT".into()))?;
    // Variable header: protocol name, level 4, flags (none: session kept), keepalive 60 s.
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x00, 0, 60];
    body.extend_from_slice(&id_len.to_be_bytes());
    body.extend_from_slice(id);
    let mut packet = vec![0x10];
    let mut left = body.len();
    loop {
        let mut byte = (left % 128) as u8;
        left /= 128;
        if left > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if left == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    s.write_all(&packet)
        .and_then(|()| s.flush())
        .map_err(|e| MqttFail::Io(e, "sending MQTT CONNECT"))?;
    let mut ack = [0u8; 4];
    match s.read_exact(&mut ack) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(MqttFail::Closed),
        Err(e) => return Err(MqttFail::Io(e, "waiting for the answer to MQTT CONNECT")),
    }
    if ack[..2] != [0x20, 0x02] {
        return Err(MqttFail::Refused(format!(
            "the answer to MQTT CONNECT is not a CONNACK ({ack:02x?}): is this an MQTT port, and is broker.tls right for it?"
        )));
    }
    let why = match ack[3] {
        0 => {
            let _ = s.write_all(&[0xE0, 0x00]).and_then(|()| s.flush());
            return Ok(());
        }
        1 => "unacceptable protocol version",
        2 => "client identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "unknown reason",
    };
    Err(MqttFail::Refused(format!(
        "the broker refused MQTT CONNECT for client {client_id:?}: {why} (return code {})",
        ack[3]
    )))
}

/// The TLS handshake, then (with `mqtt` = Ok(client id)) an MQTT CONNECT, or (Err(who)) a
/// moment to hear the broker reject our certificate (TLS 1.3 says so after the handshake).
fn handshake(
    tls: Arc<rustls::ClientConfig>,
    host: &str,
    sock: &mut TcpStream,
    limit: Duration,
    mqtt: Result<&str, String>,
) -> Result<String, Failure> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| Failure::Io(format!("broker.host {host:?} is not a server name: {e}")))?;
    let mut conn = rustls::ClientConnection::new(tls, name)
        .map_err(|e| Failure::Certificate(format!("TLS setup: {e}")))?;
    let io = |e: std::io::Error| Failure::Io(e.to_string());
    sock.set_read_timeout(Some(limit)).map_err(io)?;
    sock.set_write_timeout(Some(limit)).map_err(io)?;
    while conn.is_handshaking() {
        conn.complete_io(sock)
            .map_err(|e| Failure::of(e, "TLS handshake"))?;
    }
    let version = conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    if let Ok(id) = mqtt {
        let result = mqtt_connect(&mut rustls::Stream::new(&mut conn, sock), id).map_err(|e| match e {
            // An alert (our certificate refused) arrives here as an IO error.
            MqttFail::Io(e, during) => Failure::of(e, during),
            MqttFail::Closed => Failure::Certificate(format!(
                "the broker closed the connection without answering MQTT CONNECT: it does not accept this device's certificate, or does not let client {id:?} connect"
            )),
            MqttFail::Refused(t) => Failure::Refused(t),
        });
        conn.send_close_notify();
        let _ = conn.complete_io(sock);
        return result.map(|()| {
            format!("mutual TLS handshake ok ({version}), client certificate accepted, MQTT connection accepted for client {id:?}")
        });
    }
    // A broker that does not accept our certificate says so now (an alert) or hangs up.
    sock.set_read_timeout(Some(Duration::from_millis(1500)))
        .map_err(io)?;
    let mut buf = [0u8; 64];
    let heard = rustls::Stream::new(&mut conn, sock).read(&mut buf);
    let result = match heard {
        Ok(0) => Err(Failure::Certificate(
            "the broker closed the connection right after the TLS handshake: it does not accept this device's certificate".into(),
        )),
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Failure::Certificate(
            "the broker closed the connection right after the TLS handshake: it does not accept this device's certificate".into(),
        )),
        Err(e) => Err(Failure::of(e, "after the TLS handshake")),
    };
    conn.send_close_notify();
    let _ = conn.complete_io(sock);
    let who = mqtt.err().unwrap_or_default();
    result.map(|()| {
        format!("mutual TLS handshake ok ({version}), client certificate accepted; MQTT not tried: the agent runs ({who}) and would lose its connection to ours")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_judged_by_its_dates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["door".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2027, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_second();
        let ok = validity(&der, at("2026-06-01T00:00:00Z")).unwrap();
        assert!(ok.contains("valid until 2027-01-01"), "{ok}");
        let soon = validity(&der, at("2026-12-20T00:00:00Z")).unwrap();
        assert!(soon.contains("renew it"), "{soon}");
        let early = validity(&der, at("2025-12-01T00:00:00Z")).unwrap_err();
        assert!(early.contains("not valid until 2026-01-01"), "{early}");
        assert!(early.contains("clock"), "{early}");
        let late = validity(&der, at("2027-02-01T00:00:00Z")).unwrap_err();
        assert!(late.contains("expired 2027-01-01"), "{late}");
    }
}
