//! `acceso run` twice on one state directory: the second refuses to start, touching nothing;
//! a read-only database is refused at start instead of losing every event.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_acceso");

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("acceso.toml");
    // No broker listens on this port: the daemon runs offline.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &path,
        format!(
            "device_id = \"d\"\nstate_dir = \"{}\"\nreader.backend = \"none\"\n[door]\nname = \"f\"\n[broker]\nport = {port}\n[relay]\nbackend = \"sim\"\n[clock]\nrequire_sync = false\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

/// A started `acceso run`, its stderr read line by line on a thread.
struct Running {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

fn run(config: &std::path::Path) -> Running {
    let mut child = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        lines,
        seen: Vec::new(),
    }
}

impl Running {
    fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for the agent to say it runs: its stop signals are listened for then.
    fn started(&mut self) {
        let until = Instant::now() + Duration::from_secs(10);
        while !self.seen.iter().any(|l| l.contains("acceso running")) {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("the agent did not start:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn stop(self) -> (std::process::ExitStatus, String) {
        Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status()
            .unwrap();
        self.finish(Duration::from_secs(10))
    }

    /// Waits (bounded) for the agent to exit: its status and stderr.
    fn finish(mut self, within: Duration) -> (std::process::ExitStatus, String) {
        let until = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!("acceso did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        (status, self.seen.join("\n"))
    }
}

#[test]
fn a_second_agent_on_one_state_dir_refuses_to_start_and_the_first_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let mut first = run(&config);
    first.started();
    let (status, err) = run(&config).finish(Duration::from_secs(10));
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
    let mut again = run(&config);
    again.started();
    let (status, err) = again.stop();
    assert!(status.success(), "{err}");
}

#[test]
fn a_database_the_agent_cannot_write_stops_the_start_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    // A first start makes the database; a graceful stop keeps it.
    let mut first = run(&config);
    first.started();
    let (status, err) = first.stop();
    assert!(status.success(), "{err}");
    let db = dir.path().join("state/acceso.db");

    // As if `sudo acceso run` had left it owned by root: unwritable for the agent. Root
    // writes whatever the mode says, so for root the immutable attribute does it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    let immutable = std::fs::OpenOptions::new().write(true).open(&db).is_ok();
    if immutable {
        let ok = Command::new("chattr").arg("+i").arg(&db).status().unwrap();
        assert!(ok.success(), "running as root and chattr +i failed");
    }
    let (status, err) = run(&config).finish(Duration::from_secs(10));
    if immutable {
        Command::new("chattr").arg("-i").arg(&db).status().unwrap();
    }
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("is read-only") && err.contains("chown"),
        "{err}"
    );
}
