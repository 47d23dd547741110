//! The agent's state on disk: one SQLite file (WAL) with versioned migrations.
//!
//! Owns users and their cards, the outbox of events not yet acknowledged by the broker, the
//! applied update version and the persistent event sequence number. Every multi-row change is
//! one transaction. A damaged file is moved aside and a fresh one started, never crash-looped on.
//! This module does blocking IO: call it from a blocking thread, never from the async reactor.

pub(crate) mod outbox;
mod users;

use std::path::{Path, PathBuf};
use std::time::Duration;

use acceso_protocol::AccessEvent;
use rusqlite::{Connection, OpenFlags};

pub use outbox::QueuedEvent;
pub use users::{classify, ApplyOutcome, Disposition, MAX_STASH};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database {path} has schema version {found}, newer than this agent knows ({known}); refusing to touch it (downgrade not supported)")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("cannot move damaged database {path} aside: {source}")]
    MoveAside {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database {path} is read-only for the user this agent runs as: it could decide but not keep a single event; make the file and its directory writable by that user (the package's service user is `acceso`: chown -R acceso:acceso {dir})", dir = path.parent().unwrap_or(path).display())]
    ReadOnly { path: PathBuf },
}

/// A database that could not be used and was moved aside at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedAside {
    pub to: PathBuf,
    pub why: String,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// Each entry moves the schema from version i to i+1. Never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: users, cards, outbox, counters.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
     INSERT INTO meta (key, value) VALUES ('applied_version', 0), ('next_seq', 1);
     CREATE TABLE users (
         id TEXT PRIMARY KEY,
         version INTEGER NOT NULL,
         body TEXT NOT NULL
     ) STRICT;
     CREATE TABLE cards (
         uid BLOB PRIMARY KEY,
         user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE
     ) STRICT;
     CREATE INDEX cards_by_user ON cards(user_id);
     CREATE TABLE outbox (
         seq INTEGER PRIMARY KEY,
         event_id TEXT NOT NULL UNIQUE,
         payload TEXT NOT NULL
     ) STRICT;",
    // 2: outbox overflow bookkeeping (see outbox.rs).
    "INSERT INTO meta (key, value) VALUES ('dropped_unreported', 0), ('drop_report_seq', 0),
         ('drop_report_count', 0);",
    // 3: updates that arrived past a gap, held until a sync fills it; refused signatures.
    "CREATE TABLE stash (version INTEGER PRIMARY KEY, body TEXT NOT NULL) STRICT;
     INSERT INTO meta (key, value) VALUES ('rejected_signatures', 0);",
];

impl Store {
    /// Opens (creating if needed) the database at `path`. If the file is not a usable database,
    /// it is renamed to `<path>.damaged-<unix time>` and a fresh one is created; the returned
    /// `MovedAside` says so, and the caller must report it.
    pub fn open(path: &Path) -> Result<(Store, Option<MovedAside>), StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::StateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        match Store::open_checked(path) {
            Ok(store) => Ok((store, None)),
            Err(StoreError::Sqlite { source, .. }) if is_damage(&source) => {
                let moved = move_aside(path, &source.to_string())?;
                let store = Store::open_checked(path)?;
                Ok((store, Some(moved)))
            }
            Err(StoreError::Corrupt(why)) => {
                let moved = move_aside(path, &why)?;
                let store = Store::open_checked(path)?;
                Ok((store, Some(moved)))
            }
            Err(e) => Err(e),
        }
    }

    fn open_checked(path: &Path) -> Result<Store, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(err)?;
        // SQLite quietly opens a file it may not write read-only; the agent would then run
        // and lose every event.
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(err)? {
            return Err(StoreError::ReadOnly {
                path: path.to_path_buf(),
            });
        }
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(err)?;
        if check != "ok" {
            return Err(StoreError::Corrupt(format!("quick_check: {check}")));
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        // FULL: a committed event or update survives a power cut. Commits are rare (a door
        // sees a few taps a minute), so the fsync each costs is cheap insurance.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(err)?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let known = MIGRATIONS.len() as i64;
        let found: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if found > known {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = self.conn.transaction().map_err(|e| StoreError::Sqlite {
                path: self.path.clone(),
                source: e,
            })?;
            tx.execute_batch(sql)
                .and_then(|_| tx.pragma_update(None, "user_version", i as i64 + 1))
                .and_then(|_| tx.commit())
                .map_err(|e| StoreError::Sqlite {
                    path: self.path.clone(),
                    source: e,
                })?;
        }
        Ok(())
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn meta(&self, key: &str) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes every later write fail (or work again) as on a failed disk: for tests of what
    /// the agent does when its database stops taking writes.
    #[doc(hidden)]
    pub fn fail_writes(&self, fail: bool) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "query_only", fail)
            .map_err(|e| self.err(e))
    }
}

fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase) | Some(rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

fn move_aside(path: &Path, why: &str) -> Result<MovedAside, StoreError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut to = path.as_os_str().to_owned();
    to.push(format!(".damaged-{stamp}"));
    let to = PathBuf::from(to);
    std::fs::rename(path, &to).map_err(|source| StoreError::MoveAside {
        path: path.to_path_buf(),
        source,
    })?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let mut side_to = to.as_os_str().to_owned();
        side_to.push(suffix);
        // The side files may not exist; a leftover one would be applied to the fresh file.
        let _ = std::fs::rename(&side, &side_to);
    }
    Ok(MovedAside {
        to,
        why: why.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_database_starts_at_version_zero_and_seq_one() {
        let dir = tempfile::tempdir().unwrap();
        let (store, moved) = Store::open(&dir.path().join("a.db")).unwrap();
        assert!(moved.is_none());
        assert_eq!(store.applied_version().unwrap(), 0);
        assert_eq!(store.meta("next_seq").unwrap(), 1);
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    /// Makes `path` unwritable for this process: by its mode, or for root (whom modes do not
    /// stop) by the immutable attribute, taken off again on drop.
    struct Unwritable(PathBuf, bool);

    impl Unwritable {
        fn make(path: &Path) -> Unwritable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
            if std::fs::OpenOptions::new().write(true).open(path).is_err() {
                return Unwritable(path.to_owned(), false);
            }
            let ok = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "running as root and chattr +i failed: cannot make {path:?} unwritable here"
            );
            Unwritable(path.to_owned(), true)
        }
    }

    impl Drop for Unwritable {
        fn drop(&mut self) {
            if self.1 {
                let _ = std::process::Command::new("chattr")
                    .arg("-i")
                    .arg(&self.0)
                    .status();
            }
        }
    }

    #[test]
    fn a_database_this_user_cannot_write_is_refused_not_opened_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        drop(Store::open(&path).unwrap());
        let _guard = Unwritable::make(&path);
        let err = Store::open(&path).map(|_| ()).unwrap_err();
        assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("read-only") && msg.contains("chown"), "{msg}");
        assert!(path.exists(), "the file is left where it is");
    }

    #[test]
    fn garbage_file_is_moved_aside_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        std::fs::write(
            &path,
            b"this is not a database, it is a shopping list".repeat(200),
        )
        .unwrap();
        let (store, moved) = Store::open(&path).unwrap();
        let moved = moved.expect("damage was not reported");
        assert!(moved.to.exists(), "{moved:?}");
        assert_eq!(std::fs::read(&moved.to).unwrap()[..12], b"this is not "[..]);
        assert_eq!(store.applied_version().unwrap(), 0);
    }

    #[test]
    fn database_from_a_newer_agent_is_refused_not_moved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = Store::open(&path).err().expect("opened a newer database");
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
        assert!(path.exists());
    }
}

/// The store, shared between tasks; every call runs on a blocking thread.
#[derive(Clone)]
pub struct SharedStore {
    inner: std::sync::Arc<std::sync::Mutex<Store>>,
    /// Notified whenever an event enters the outbox; the link waits on it.
    queued: std::sync::Arc<tokio::sync::Notify>,
}

impl SharedStore {
    pub fn new(store: Store) -> SharedStore {
        SharedStore {
            inner: std::sync::Arc::new(std::sync::Mutex::new(store)),
            queued: std::sync::Arc::default(),
        }
    }

    /// Resolves when an event was queued since the last time it resolved.
    pub async fn event_queued(&self) {
        self.queued.notified().await
    }

    /// Queues a decided event: it gets the next sequence number, the outbox keeps at most
    /// `max_queued` events (dropping the oldest and queueing one `events_dropped` report), and
    /// the link is woken. Returns the stored event and how many old events were dropped.
    pub async fn enqueue(
        &self,
        event: AccessEvent,
        max_queued: u64,
    ) -> Result<(AccessEvent, u64), StoreError> {
        let result = self
            .call(move |s| {
                let (event, dropped) =
                    s.append_event(move |seq| AccessEvent { seq, ..event }, max_queued)?;
                if dropped > 0 {
                    s.report_drops(|seq, count| outbox::drop_report(&event, seq, count))?;
                }
                Ok((event, dropped))
            })
            .await;
        if result.is_ok() {
            // One waiter (the link); a stored permit keeps a wake-up between its waits.
            self.queued.notify_one();
        }
        result
    }

    /// Counts `lost` events that never reached the outbox (held in memory while the database
    /// failed, past what memory holds) and queues the `events_dropped` report for them, made
    /// from `like` (device, door, boot).
    pub async fn report_lost(&self, like: &AccessEvent, lost: u64) -> Result<(), StoreError> {
        let like = like.clone();
        self.call(move |s| {
            s.count_dropped(lost)?;
            s.report_drops(|seq, count| outbox::drop_report(&like, seq, count))?;
            Ok(())
        })
        .await?;
        self.queued.notify_one();
        Ok(())
    }

    /// Runs `f` with the store on a blocking thread.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = inner.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut store)
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("store task failed: {e}")))?
    }
}
