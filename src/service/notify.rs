//! systemd's notification protocol (sd_notify(3)), spoken directly: newline-separated
//! `KEY=VALUE` assignments in one datagram to the unix socket named by `$NOTIFY_SOCKET`, a
//! filesystem path or, starting with '@', a Linux abstract socket. No libsystemd needed.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET={value:?}: {why}")]
    Socket { value: String, why: String },
    #[error("{var}={value:?}: {why}")]
    Watchdog {
        var: &'static str,
        value: String,
        why: String,
    },
    #[error("cannot send to the notification socket {to}: {source}")]
    Send { to: String, source: std::io::Error },
}

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    name: String,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `None` when it is unset or empty (not started by systemd with
    /// `Type=notify`: nothing to tell).
    pub fn from_env() -> Result<Option<Notifier>, NotifyError> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(value) if !value.is_empty() => Notifier::to(&value).map(Some),
            Ok(_) => Ok(None),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(v)) => Err(NotifyError::Socket {
                value: v.to_string_lossy().into_owned(),
                why: "not UTF-8".into(),
            }),
        }
    }

    /// To the socket named `value`, as `$NOTIFY_SOCKET` would name it.
    pub fn to(value: &str) -> Result<Notifier, NotifyError> {
        let bad = |why: String| NotifyError::Socket {
            value: value.to_string(),
            why,
        };
        let addr = if let Some(name) = value.strip_prefix('@') {
            abstract_addr(name.as_bytes()).map_err(|e| bad(e.to_string()))?
        } else if value.starts_with('/') {
            SocketAddr::from_pathname(value).map_err(|e| bad(e.to_string()))?
        } else {
            return Err(bad(
                "neither an absolute path nor an abstract socket name ('@...')".into(),
            ));
        };
        let socket = UnixDatagram::unbound().map_err(|e| bad(e.to_string()))?;
        Ok(Notifier {
            socket,
            addr,
            name: value.to_string(),
        })
    }

    /// Sends `state` (for instance "READY=1\nSTATUS=running"), whole, in one datagram.
    pub fn send(&self, state: &str) -> Result<(), NotifyError> {
        self.socket
            .send_to_addr(state.as_bytes(), &self.addr)
            .map(|_| ())
            .map_err(|source| NotifyError::Send {
                to: self.name.clone(),
                source,
            })
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> std::io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_: &[u8]) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract unix sockets are Linux only",
    ))
}

/// The watchdog interval systemd expects pings within (`WatchdogSec=`), from `$WATCHDOG_USEC`;
/// `None` when it is unset, or meant for another process (`$WATCHDOG_PID`).
pub fn watchdog_from_env() -> Result<Option<Duration>, NotifyError> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// The rule of [`watchdog_from_env`], given the variables and our process id.
pub fn watchdog(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Result<Option<Duration>, NotifyError> {
    let Some(usec) = usec.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    if let Some(pid) = pid.filter(|p| !p.is_empty()) {
        let pid: u32 = pid.trim().parse().map_err(|_| NotifyError::Watchdog {
            var: "WATCHDOG_PID",
            value: pid.to_string(),
            why: "not a process id".into(),
        })?;
        if pid != own_pid {
            return Ok(None);
        }
    }
    let n: u64 = usec.trim().parse().map_err(|_| NotifyError::Watchdog {
        var: "WATCHDOG_USEC",
        value: usec.to_string(),
        why: "not a whole number of microseconds".into(),
    })?;
    if n == 0 {
        return Err(NotifyError::Watchdog {
            var: "WATCHDOG_USEC",
            value: usec.to_string(),
            why: "must be more than 0".into(),
        });
    }
    Ok(Some(Duration::from_micros(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::to(path.to_str().unwrap()).unwrap();
        n.send("READY=1\nSTATUS=up").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=up");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("acceso-test-{}-{}", std::process::id(), line!());
        let server = UnixDatagram::bind_addr(&abstract_addr(name.as_bytes()).unwrap()).unwrap();
        let n = Notifier::to(&format!("@{name}")).unwrap();
        n.send("WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn a_relative_socket_is_refused_by_name() {
        let e = Notifier::to("run/notify").unwrap_err().to_string();
        assert!(e.contains("NOTIFY_SOCKET=\"run/notify\""), "{e}");
        assert!(e.contains("absolute path"), "{e}");
    }

    #[test]
    fn a_missing_socket_is_a_send_error_naming_it() {
        let n = Notifier::to("/nonexistent/acceso-notify").unwrap();
        let e = n.send("READY=1").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/acceso-notify"), "{e}");
    }

    #[test]
    fn watchdog_interval_rules() {
        assert_eq!(watchdog(None, None, 7).unwrap(), None);
        assert_eq!(
            watchdog(Some("2000000"), None, 7).unwrap(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            watchdog(Some("2000000"), Some("7"), 7).unwrap(),
            Some(Duration::from_secs(2))
        );
        // Meant for another process (a parent that forked us): not ours to ping.
        assert_eq!(watchdog(Some("2000000"), Some("8"), 7).unwrap(), None);
        let e = watchdog(Some("2s"), None, 7).unwrap_err().to_string();
        assert!(e.contains("WATCHDOG_USEC=\"2s\""), "{e}");
        assert!(watchdog(Some("0"), None, 7).is_err());
        let e = watchdog(Some("1"), Some("x"), 7).unwrap_err().to_string();
        assert!(e.contains("WATCHDOG_PID"), "{e}");
    }
}
