//! One agent per state directory.
//!
//! Two agents on one state directory (an installer's `acceso run` while the service runs)
//! would share the outbox and the device id, kick each other off the broker in turn, and on
//! real GPIO both drive the relay line. So an agent holds an exclusive lock on
//! `state_dir/acceso.lock` from before it touches the relay until it ends; the kernel lets go
//! of it when the process dies, however it dies. The file holds the holder's pid, for the
//! message the next one gives.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Held while the agent runs; dropping it lets the next agent start.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("another acceso is running with state directory {dir} ({holder}): stop it first (`systemctl stop acceso` for the service); a second door on this machine needs a config of its own: its own state_dir, device_id and relay pin", dir = dir.display())]
    Held { dir: PathBuf, holder: String },
    #[error("cannot lock {path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Takes the state directory's lock, creating the directory if needed.
pub fn acquire(state_dir: &Path) -> Result<InstanceLock, InstanceError> {
    let path = state_dir.join("acceso.lock");
    let io = |source| InstanceError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let holder = match pid.trim() {
                "" => "pid unknown".to_string(),
                p => format!("pid {p}"),
            };
            return Err(InstanceError::Held {
                dir: state_dir.to_path_buf(),
                holder,
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(InstanceLock { _file: file })
}

/// Who holds the state directory's lock now (`pid N`), if an agent runs on it; `None` when
/// none does or there is no lock file. Takes nothing and creates nothing.
pub fn holder(state_dir: &Path) -> Option<String> {
    let mut file = OpenOptions::new()
        .read(true)
        .open(state_dir.join("acceso.lock"))
        .ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Some(format!("pid {}", pid.trim()))
        }
        Err(TryLockError::Error(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_agent_on_one_state_dir_is_refused_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = acquire(&state).unwrap();
        let err = acquire(&state).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("another acceso is running")
                && msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        // Another state directory is another door.
        let _other = acquire(&dir.path().join("other")).unwrap();
        assert_eq!(holder(&state), Some(format!("pid {}", std::process::id())));
        drop(first);
        assert_eq!(holder(&state), None);
        let _again = acquire(&state).unwrap();
    }
}
