//! `acceso doctor`: every dependency an installer can get wrong, checked one by one, each
//! with what to do when it fails. Reads only: the lock relay line is never claimed or driven,
//! the database is opened read-only, the broker sees a TLS handshake and no MQTT session (a
//! second session with the thing's client id would kick the running agent's).

mod checks;
mod tls;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::config::Config;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
    /// Not needed with this configuration (no camera on a card door, no TLS configured...).
    Skipped,
}

/// One check: what it looked at, what it found, and what to do if it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
    pub detail: String,
    /// What the installer should do (failed checks only).
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            outcome: Outcome::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn failed(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            outcome: Outcome::Failed,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn skipped(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            outcome: Outcome::Skipped,
            detail: detail.into(),
            fix: None,
        }
    }
}

/// Every check, in the order they ran.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub checks: Vec<Check>,
    /// Said before the checks: how to read them.
    pub notes: Vec<String>,
}

impl Report {
    /// No check failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.outcome != Outcome::Failed)
    }

    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The report as the installer reads it: one line a check, its fix indented below.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &self.checks {
            let mark = match c.outcome {
                Outcome::Ok => "ok  ",
                Outcome::Failed => "FAIL",
                Outcome::Skipped => "skip",
            };
            let _ = writeln!(out, "{mark}  {:width$}  {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                let _ = writeln!(out, "      {:width$}  fix: {fix}", "");
            }
        }
        let count = |o| self.checks.iter().filter(|c| c.outcome == o).count();
        let _ = writeln!(
            out,
            "{} checks: {} ok, {} failed, {} skipped",
            self.checks.len(),
            count(Outcome::Ok),
            count(Outcome::Failed),
            count(Outcome::Skipped)
        );
        out
    }
}

/// Names of the checks, in order. Each one appears in every report, checked or not.
pub const CHECKS: [&str; 13] = [
    "config",
    "ca certificate",
    "device certificate",
    "device key",
    "sync keys",
    "clock",
    "spi device",
    "mfrc522",
    "gpio",
    "camera",
    "face models",
    "database",
    "broker",
];

/// How long the network and hardware probes may take, each.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect: Duration,
    pub camera: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect: Duration::from_secs(10),
            camera: Duration::from_secs(10),
        }
    }
}

/// Runs every check against the configuration file at `path`.
pub fn run(path: &Path, limits: Limits) -> Report {
    let mut report = Report::default();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        report.notes.push(format!(
            "running as root: files and devices are checked with root's rights, which the agent does not have; `sudo -u acceso acceso doctor --config {}` checks what the service can reach",
            path.display()
        ));
    }
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            report.checks.push(Check::failed(
                "config",
                e.to_string(),
                format!(
                    "fix {} (every key is described in /usr/share/doc/acceso/acceso.example.toml); `acceso check-config --config {}` prints it with every default",
                    path.display(),
                    path.display()
                ),
            ));
            for name in &CHECKS[1..] {
                report.checks.push(Check::skipped(
                    name,
                    "not checked: the config must load first",
                ));
            }
            return report;
        }
    };
    report.checks.push(Check::ok(
        "config",
        format!(
            "{}: device {}, door {} ({} mode)",
            path.display(),
            config.device_id,
            config.door.name,
            serde_json::to_value(config.door.mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ),
    ));
    report.checks.extend(check_config(&config, limits));
    report
}

/// Every check after the config's, on a loaded config.
pub fn check_config(config: &Config, limits: Limits) -> Vec<Check> {
    let mut out = tls::files(config);
    out.push(checks::sync_keys(config));
    out.push(checks::clock(config));
    out.extend(checks::reader(config));
    out.push(checks::gpio(config));
    out.push(checks::camera(config, limits.camera));
    out.push(checks::models(config));
    out.push(checks::database(config));
    out.push(tls::broker(config, limits.connect));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_renders_each_check_with_its_fix_and_a_tally() {
        let report = Report {
            checks: vec![
                Check::ok("config", "fine"),
                Check::failed("clock", "not synchronised", "enable NTP"),
                Check::skipped("camera", "card door"),
            ],
            notes: vec!["read me first".into()],
        };
        assert!(!report.passed());
        let text = report.render();
        assert!(text.starts_with("note: read me first\n"), "{text}");
        assert!(text.contains("ok    config  fine"), "{text}");
        assert!(text.contains("FAIL  clock   not synchronised"), "{text}");
        assert!(text.contains("fix: enable NTP"), "{text}");
        assert!(
            text.contains("3 checks: 1 ok, 1 failed, 1 skipped"),
            "{text}"
        );
    }

    #[test]
    fn a_config_that_does_not_load_fails_and_skips_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acceso.toml");
        std::fs::write(
            &path,
            "device_id = \"d\"\n[door]\nname = \"f\"\nunlock_ms = 5\n",
        )
        .unwrap();
        let report = run(&path, Limits::default());
        assert_eq!(
            report.checks.iter().map(|c| c.name).collect::<Vec<_>>(),
            CHECKS
        );
        let config = report.get("config").unwrap();
        assert_eq!(config.outcome, Outcome::Failed);
        assert!(
            config.detail.contains("door.unlock_ms"),
            "{}",
            config.detail
        );
        assert!(report.checks[1..]
            .iter()
            .all(|c| c.outcome == Outcome::Skipped));
    }
}
