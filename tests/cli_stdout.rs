//! Every command whose standard output cannot be written (a reader that went away, `| head
//! -c1`, `| true`; a full disk, `> /dev/full`) says so and exits 1: never a panic (101).

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_acceso");

/// Where the command's standard output goes.
#[derive(Debug, Clone, Copy)]
enum Sink {
    /// A pipe whose reading end is already closed: every write fails with EPIPE.
    ClosedPipe,
    /// `/dev/full`: every write fails with ENOSPC.
    Full,
}

impl Sink {
    fn stdio(self) -> Stdio {
        match self {
            Sink::ClosedPipe => {
                let (reader, writer) = std::io::pipe().expect("pipe");
                drop(reader);
                writer.into()
            }
            Sink::Full => std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .expect("/dev/full")
                .into(),
        }
    }
}

/// Runs the binary with `stdout` going to `sink`, with a time limit; its status and stderr.
fn acceso(args: &[&str], sink: Sink) -> (ExitStatus, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(sink.stdio())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run acceso");
    let until = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("acceso {args:?} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each command, to each sink: exit 1 and `cannot write output`, no panic.
fn refuses_quietly(args: &[&str]) {
    for sink in [Sink::ClosedPipe, Sink::Full] {
        let (status, err) = acceso(args, sink);
        assert!(!err.contains("panicked"), "{args:?} > {sink:?}: {err}");
        assert_eq!(status.code(), Some(1), "{args:?} > {sink:?}: {err}");
        let why = match sink {
            Sink::ClosedPipe => "Broken pipe",
            Sink::Full => "No space left on device",
        };
        assert!(
            err.contains("acceso: cannot write output") && err.contains(why),
            "{args:?} > {sink:?}: {err}"
        );
    }
}

fn repo(rel: &str) -> String {
    format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_config_doctor_and_help_cannot_write_their_output() {
    refuses_quietly(&["check-config", "--config", &repo("acceso.example.toml")]);
    // No config here: the report (config failed, the rest skipped) is what cannot be written.
    refuses_quietly(&["doctor", "--config", "/nonexistent/acceso.toml"]);
    refuses_quietly(&["--help"]);
    refuses_quietly(&["--version"]);
}

#[test]
fn sim_cannot_write_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    std::fs::write(&path, r#"{"steps":[{"wait_ms":1}]}"#).unwrap();
    refuses_quietly(&["sim", "--scenario", path.to_str().unwrap()]);
}

#[cfg(feature = "face")]
#[test]
fn face_commands_and_enroll_cannot_write_their_output() {
    let obama = repo("tests/fixtures/faces/portraits/obama.jpg");
    let obama2 = repo("tests/fixtures/faces/portraits/obama2.jpg");
    refuses_quietly(&["face", "compare", &obama, &obama2]);
    refuses_quietly(&["face", "embed", &obama, &obama2]);
    refuses_quietly(&[
        "enroll", "--id", "ok", "--name", "ok", "--card", "01020304", &obama,
    ]);
}
