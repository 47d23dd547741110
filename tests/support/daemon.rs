//! `acceso run` as a process: an offline config, the daemon's log read as it comes, bounded
//! waits for it to start and to exit.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_acceso");

/// Writes `dir/acceso.toml`: state in `dir/state`, a simulated relay, a broker port nobody
/// listens on (the daemon runs offline), the clock trusted without NTP. `top` is more
/// top-level TOML (dotted keys such as `reader.backend = "none"`), put before the sections.
pub fn offline_config(dir: &Path, top: &str) -> PathBuf {
    let path = dir.join("acceso.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &path,
        format!(
            "device_id = \"d\"\nstate_dir = \"{}\"\n{top}\n[door]\nname = \"f\"\n[broker]\nport = {port}\n[relay]\nbackend = \"sim\"\n[clock]\nrequire_sync = false\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

/// A started `acceso run`, its stderr read line by line on a thread.
pub struct Daemon {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        let mut child = Command::new(BIN)
            .args(["run", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
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
        Daemon {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits (10 s at most) until every one of `texts` has been logged; panics if the daemon
    /// exits or the time runs out first.
    pub fn wait_for(&mut self, texts: &[&str]) {
        let until = Instant::now() + Duration::from_secs(10);
        while !texts
            .iter()
            .all(|t| self.seen.iter().any(|l| l.contains(t)))
        {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "the daemon did not log {texts:?}:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits until the daemon says it runs: its stop signals are listened for from then on.
    pub fn started(&mut self) {
        self.wait_for(&["acceso running"]);
    }

    /// Sends `signal` (as kill(1) names it: `-TERM`) and waits for the exit.
    pub fn signal(self, signal: &str) -> (ExitStatus, String) {
        let sent = Command::new("kill")
            .args([signal, &self.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {signal}");
        self.finish(Duration::from_secs(10))
    }

    pub fn stop(self) -> (ExitStatus, String) {
        self.signal("-TERM")
    }

    /// Waits (bounded) for the daemon to exit: its status and its whole log.
    pub fn finish(mut self, within: Duration) -> (ExitStatus, String) {
        let until = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!(
                    "acceso did not exit within {within:?}:\n{}",
                    self.seen.join("\n")
                );
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
