//! Running under systemd (`Type=notify`, `WatchdogSec=`): READY once the door works, STATUS
//! lines an operator reads in `systemctl status`, watchdog pings only while the reader and
//! control loops are alive, STOPPING at a graceful stop. Outside systemd all of it is a no-op.

pub mod liveness;
pub mod notify;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use liveness::{Heartbeat, Liveness, Stale};
pub use notify::{Notifier, NotifyError};

use crate::observe::{HealthState, Reporter};

/// How often the status line is refreshed when there is no watchdog to ping.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// A loop counts as stuck after half the watchdog interval without a beat, and never sooner
/// than this: the control loop beats at least every 500 ms, the reader every 50 ms even while
/// backing off.
const MIN_ALLOWED_SILENCE: Duration = Duration::from_secs(2);
/// Longest detail of one component in the status line.
const DETAIL_CHARS: usize = 80;

/// The service manager, as far as the agent talks to it. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Service {
    notifier: Option<Arc<Notifier>>,
    watchdog: Option<Duration>,
}

impl Service {
    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
    pub fn from_env() -> Result<Service, NotifyError> {
        Ok(Service::new(
            notify::Notifier::from_env()?,
            notify::watchdog_from_env()?,
        ))
    }

    pub fn new(notifier: Option<Notifier>, watchdog: Option<Duration>) -> Service {
        Service {
            notifier: notifier.map(Arc::new),
            watchdog,
        }
    }

    /// Whether anyone listens (started by systemd as `Type=notify`).
    pub fn is_supervised(&self) -> bool {
        self.notifier.is_some()
    }

    /// The watchdog interval, if systemd enabled one for us.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `state`; a failure is logged, never fatal (the door matters more than its
    /// supervision).
    pub fn notify(&self, state: &str) {
        if let Some(n) = &self.notifier {
            if let Err(e) = n.send(state) {
                tracing::warn!("{e}");
            }
        }
    }

    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={}", one_line(status)));
    }

    /// Start-up is over: the lock is driven, the loops run.
    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    pub fn stopping(&self, status: &str) {
        self.notify(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// How long a loop may be silent before the pings stop.
    pub fn allowed_silence(&self) -> Duration {
        self.watchdog
            .map(|w| (w / 2).max(MIN_ALLOWED_SILENCE))
            .unwrap_or(STATUS_EVERY * 2)
    }

    /// Until `cancel`: pings the watchdog every quarter of its interval while every loop in
    /// `liveness` has beaten within [`Service::allowed_silence`], and keeps the status line
    /// (`door`, then each component's health from `reporter`) up to date.
    pub async fn supervise(
        self,
        door: String,
        liveness: Liveness,
        reporter: Reporter,
        cancel: CancellationToken,
    ) {
        if !self.is_supervised() {
            return;
        }
        let period = self
            .watchdog
            .map(|w| (w / 4).min(STATUS_EVERY))
            .unwrap_or(STATUS_EVERY);
        let allowed = self.allowed_silence();
        let mut last_status = String::new();
        let mut stuck_before = false;
        loop {
            let stale = liveness.stale(allowed, Instant::now());
            let mut message = String::new();
            let status = if stale.is_empty() {
                if stuck_before {
                    tracing::warn!("every supervised loop runs again; watchdog pings resume");
                    stuck_before = false;
                }
                if self.watchdog.is_some() {
                    message.push_str("WATCHDOG=1\n");
                }
                status_line(&door, &reporter)
            } else {
                let what = stale
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                if !stuck_before {
                    tracing::error!(
                        "{what}: watchdog pings stopped, systemd restarts acceso (the door locks first)"
                    );
                    stuck_before = true;
                }
                format!("stuck: {what}; watchdog pings stopped")
            };
            if status != last_status {
                message.push_str("STATUS=");
                message.push_str(&one_line(&status));
                last_status = status;
            }
            if !message.is_empty() {
                self.notify(message.trim_end());
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    }
}

/// "door front: running; broker degraded (cannot connect: ...), clock ok": each component
/// that has reported its health, with why for those that are not ok.
pub fn status_line(door: &str, reporter: &Reporter) -> String {
    let board = reporter.board().snapshot();
    let mut parts = Vec::new();
    for (component, health) in board {
        let name = serde_json::to_value(component)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{component:?}"));
        let state = match health.state {
            HealthState::Ok => "ok",
            HealthState::Degraded => "degraded",
            HealthState::Failed => "failed",
        };
        if health.state == HealthState::Ok || health.detail.is_empty() {
            parts.push(format!("{name} {state}"));
        } else {
            let detail: String = health.detail.chars().take(DETAIL_CHARS).collect();
            let more = if health.detail.chars().count() > DETAIL_CHARS {
                "..."
            } else {
                ""
            };
            parts.push(format!("{name} {state} ({detail}{more})"));
        }
    }
    if parts.is_empty() {
        format!("door {door}: running")
    } else {
        format!("door {door}: running; {}", parts.join(", "))
    }
}

/// A STATUS value is one line: the protocol separates assignments by newlines.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Component;
    use std::os::unix::net::UnixDatagram;

    fn received(server: &UnixDatagram, within: Duration) -> Vec<String> {
        server
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let until = Instant::now() + within;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            if let Ok(n) = server.recv(&mut buf) {
                out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        out
    }

    #[test]
    fn the_status_line_names_each_component_and_what_is_wrong() {
        let reporter = Reporter::log_only();
        assert_eq!(status_line("front", &reporter), "door front: running");
        reporter.health(Component::Reader, HealthState::Ok, "reader answers");
        reporter.health(Component::Broker, HealthState::Degraded, "x".repeat(200));
        let line = status_line("front", &reporter);
        assert!(
            line.starts_with("door front: running; reader ok, broker degraded (xxx"),
            "{line}"
        );
        assert!(line.ends_with("...)"), "{line}");
        assert!(line.len() < 140, "{line}");
        assert_eq!(one_line("a\nb"), "a b");
    }

    #[tokio::test]
    async fn pings_while_alive_and_stops_when_a_loop_goes_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let service = Service::new(
            Some(Notifier::to(path.to_str().unwrap()).unwrap()),
            Some(Duration::from_millis(400)),
        );
        assert_eq!(service.allowed_silence(), MIN_ALLOWED_SILENCE);
        let live = Liveness::default();
        let beat = live.register("reader");
        let cancel = CancellationToken::new();
        let keep = CancellationToken::new();
        let beating = {
            let keep = keep.clone();
            tokio::spawn(async move {
                while !keep.is_cancelled() {
                    beat.beat();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let task = tokio::spawn(service.supervise(
            "front".into(),
            live,
            Reporter::log_only(),
            cancel.clone(),
        ));
        let srv = server.try_clone().unwrap();
        let alive = tokio::task::spawn_blocking(move || received(&srv, Duration::from_secs(1)))
            .await
            .unwrap();
        let pings = alive.iter().filter(|m| m.contains("WATCHDOG=1")).count();
        assert!(pings >= 5, "{alive:?}");
        assert!(alive[0].contains("STATUS=door front: running"), "{alive:?}");
        // The loop stops beating: after the allowed silence, no more pings, and the status
        // says which loop is stuck.
        keep.cancel();
        tokio::time::timeout(Duration::from_secs(5), beating)
            .await
            .unwrap()
            .unwrap();
        let srv = server.try_clone().unwrap();
        let quiet = tokio::task::spawn_blocking(move || received(&srv, Duration::from_secs(4)))
            .await
            .unwrap();
        let stuck_at = quiet
            .iter()
            .position(|m| m.contains("STATUS=stuck: the reader loop has not run for"))
            .unwrap_or_else(|| panic!("no stuck status: {quiet:?}"));
        assert!(
            quiet[stuck_at..].iter().all(|m| !m.contains("WATCHDOG=1")),
            "{quiet:?}"
        );
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
