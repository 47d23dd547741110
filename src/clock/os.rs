//! The operating system as a [`TimeSource`]: the wall clock, the monotonic clock, and whether
//! the kernel or systemd-timesyncd says the clock is synchronised.

use std::path::PathBuf;
use std::time::Instant;

use jiff::Timestamp;

use super::TimeSource;

/// systemd-timesyncd creates this file once it has synchronised the clock (and the kernel's
/// flag can lag behind it, or be cleared by a tool that does not keep it up).
pub const TIMESYNCD_MARKER: &str = "/run/systemd/timesync/synchronized";

/// The real clocks. `marker` is systemd-timesyncd's file (a field so tests can point it
/// elsewhere).
#[derive(Debug, Clone)]
pub struct OsTime {
    pub marker: PathBuf,
}

impl Default for OsTime {
    fn default() -> Self {
        OsTime {
            marker: PathBuf::from(TIMESYNCD_MARKER),
        }
    }
}

impl TimeSource for OsTime {
    fn wall(&self) -> Timestamp {
        Timestamp::now()
    }

    fn monotonic(&self) -> Instant {
        Instant::now()
    }

    fn synchronised(&self) -> bool {
        // The kernel first: it knows about any NTP daemon (chrony, ntpd, timesyncd).
        match kernel_synchronised() {
            Ok(true) => return true,
            Ok(false) => {}
            // Seen at most once per cache period; a kernel without adjtimex (not Linux)
            // still has the marker file.
            Err(e) => tracing::debug!("cannot read the kernel's clock status: {e}"),
        }
        self.marker.exists()
    }
}

/// The kernel's NTP status (`adjtimex(2)` in read-only mode): synchronised when the clock
/// state is not `TIME_ERROR` and the `STA_UNSYNC` flag is clear.
#[cfg(target_os = "linux")]
pub fn kernel_synchronised() -> std::io::Result<bool> {
    // SAFETY: `timex` is plain old data (integers only), so all-zero bytes are a valid value.
    // `modes = 0` (from the zeroing) makes adjtimex read-only: it fills in the struct, which
    // lives on our stack for the whole call, and changes nothing; no privilege is needed.
    let (state, status) = unsafe {
        let mut tx: libc::timex = std::mem::zeroed();
        let state = libc::adjtimex(&mut tx);
        (state, tx.status)
    };
    if state == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(state != libc::TIME_ERROR && status & libc::STA_UNSYNC == 0)
}

#[cfg(not(target_os = "linux"))]
pub fn kernel_synchronised() -> std::io::Result<bool> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "adjtimex is Linux only",
    ))
}
