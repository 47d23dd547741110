//! `acceso run` twice on one state directory: the second refuses to start, touching nothing;
//! a read-only database is refused at start instead of losing every event.

mod support;

use std::time::Duration;

use support::daemon::{offline_config, Daemon};
use support::unwritable::Unwritable;

#[test]
fn a_second_agent_on_one_state_dir_refuses_to_start_and_the_first_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = offline_config(dir.path(), "reader.backend = \"none\"");
    let mut first = Daemon::start(&config);
    first.started();
    let (status, err) = Daemon::start(&config).finish(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("another acceso is running with state directory")
            && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    // It never drove the relay: the first one's door is not touched.
    assert!(!err.contains(r#""kind":"relay""#), "{err}");
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the first agent stopped"
    );
    let (status, err) = first.stop();
    assert!(status.success(), "{err}");
    // Gone, the lock is free again.
    let mut again = Daemon::start(&config);
    again.started();
    let (status, err) = again.stop();
    assert!(status.success(), "{err}");
}

#[test]
fn a_database_the_agent_cannot_write_stops_the_start_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let config = offline_config(dir.path(), "reader.backend = \"none\"");
    // A first start makes the database; a graceful stop keeps it.
    let mut first = Daemon::start(&config);
    first.started();
    let (status, err) = first.stop();
    assert!(status.success(), "{err}");
    let db = dir.path().join("state/acceso.db");

    // As if `sudo acceso run` had left it owned by root: unwritable for the agent.
    let guard = Unwritable::make(&db);
    let (status, err) = Daemon::start(&config).finish(Duration::from_secs(10));
    drop(guard);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("is read-only") && err.contains("chown"),
        "{err}"
    );
}
