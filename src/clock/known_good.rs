//! The last known-good wall-clock time, in a small file in the state directory.
//!
//! A file, not a row of the SQLite store: the clock is built (and judges its first times)
//! before the store is opened and independently of it, its `now()` runs synchronously in the
//! decision path where the store is only reachable through async blocking tasks, and a
//! damaged database is moved aside and started empty, which must not also forget the time
//! that guards against the clock stepping back. The file holds one RFC 3339 timestamp; it is
//! replaced atomically (temp file in the same directory, fsync, rename, fsync of the
//! directory), so a power cut leaves the old value or the new one, never a torn one.
//! Blocking IO: call from a blocking thread.

use std::io::Write;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

/// The file's name inside the state directory.
pub const FILE_NAME: &str = "known-good-time";

/// `<state_dir>/known-good-time`.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

#[derive(Debug, thiserror::Error)]
pub enum KnownGoodError {
    #[error("cannot read the known-good time {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("known-good time {path} is damaged ({content:?} is not an RFC 3339 time: {reason})")]
    Damaged {
        path: PathBuf,
        content: String,
        reason: String,
    },
    #[error("cannot write the known-good time {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The stored time; `Ok(None)` when there is no file yet. A file that is not one timestamp
/// is `Damaged` (the caller starts without a known-good time and rewrites it).
pub fn read(path: &Path) -> Result<Option<Timestamp>, KnownGoodError> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KnownGoodError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    // Lossy: a damaged file may hold any bytes; the error shows what was there.
    let text = String::from_utf8_lossy(&text);
    let damaged = |reason: String| KnownGoodError::Damaged {
        path: path.to_path_buf(),
        content: text.chars().take(64).collect(),
        reason,
    };
    text.trim()
        .parse::<Timestamp>()
        .map(Some)
        .map_err(|e| damaged(e.to_string()))
}

/// Replaces the stored time with `time`, atomically and durably.
pub fn write(path: &Path, time: Timestamp) -> Result<(), KnownGoodError> {
    let err = |source| KnownGoodError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir,
        None => Path::new("."),
    };
    // The state directory is normally made by the store; the clock may write first.
    std::fs::create_dir_all(dir).map_err(err)?;
    // In the same directory, so the rename cannot cross filesystems.
    let mut tmp = tempfile::Builder::new()
        .prefix(".known-good-time.")
        .tempfile_in(dir)
        .map_err(err)?;
    writeln!(tmp, "{time}").map_err(err)?;
    // Data on disk before the rename makes it visible, or a power cut could leave an empty file.
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    // The rename itself is durable only once the directory is synced.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)?;
    Ok(())
}
