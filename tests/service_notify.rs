//! systemd supervision, for real: the agent binary under a `NOTIFY_SOCKET` (a unix datagram
//! socket this test binds, as systemd would) sends READY, periodic WATCHDOG pings, STATUS lines
//! and STOPPING; and the real agent's watchdog pings stop while its reader or control loop is
//! stuck (a reader whose poll never returns, a relay that never answers), and resume after.

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use acceso::clock::SimClock;
use acceso::hw::{CardReader, HwError, Relay, Seen};
use acceso::observe::Reporter;
use acceso::service::{Notifier, Service};
use acceso::sim::hw::{RelayRecorder, SimInputs};
use acceso::{Agent, Backends, Config};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_acceso");
const BOUND: Duration = Duration::from_secs(10);

/// Datagrams arriving on `socket` within `within`, each with its arrival time.
fn collect(socket: &UnixDatagram, within: Duration) -> Vec<(Instant, String)> {
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let until = Instant::now() + within;
    let mut buf = vec![0u8; 8192];
    let mut out = Vec::new();
    while Instant::now() < until {
        if let Ok(n) = socket.recv(&mut buf) {
            out.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    }
    out
}

/// Datagrams until one satisfies `done` (returned last), failing after `within`.
fn until(
    socket: &UnixDatagram,
    within: Duration,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> Vec<String> {
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 8192];
    let mut seen = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no {what} within {within:?}; got {seen:?}"
        );
        if let Ok(n) = socket.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let last = done(&m);
            seen.push(m);
            if last {
                return seen;
            }
        }
    }
}

fn daemon_config(dir: &std::path::Path) -> std::path::PathBuf {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.join("acceso.toml");
    std::fs::write(
        &path,
        format!(
            "device_id = \"d\"\nstate_dir = \"{}\"\n[door]\nname = \"front\"\n[broker]\nport = {port}\n\
             [reader]\nbackend = \"sim\"\n[relay]\nbackend = \"sim\"\n[clock]\nrequire_sync = false\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

fn spawn_daemon(config: &std::path::Path, notify_socket: &str, watchdog_usec: &str) -> Child {
    Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", notify_socket)
        .env("WATCHDOG_USEC", watchdog_usec)
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn terminate_and_wait(child: &mut Child) -> std::process::ExitStatus {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("daemon did not stop within {BOUND:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_daemon_says_ready_pings_the_watchdog_reports_status_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path());
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    // A 1 s watchdog: pings every 250 ms.
    let mut child = spawn_daemon(&config, socket_path.to_str().unwrap(), "1000000");
    let start = until(&socket, BOUND, "READY=1", |m| m.contains("READY=1"));
    assert!(
        start[0].starts_with("STATUS=starting"),
        "the first message says it is starting: {start:?}"
    );
    let ready = start.last().unwrap();
    assert!(ready.contains("STATUS=door front"), "{ready}");

    let running = collect(&socket, Duration::from_secs(2));
    let pings: Vec<Instant> = running
        .iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect();
    // Every 250 ms for 2 s: 8, with slack for a loaded machine.
    assert!(pings.len() >= 5, "pings: {running:?}");
    let widest = pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        widest < Duration::from_millis(900),
        "pings must come well within the watchdog interval; widest gap {widest:?}"
    );
    // The status line follows the components' health: the broker (nobody listens on its
    // port) is not reached, the clock is trusted (require_sync = false).
    let statuses: Vec<&str> = start
        .iter()
        .chain(running.iter().map(|(_, m)| m))
        .flat_map(|m| m.lines())
        .filter_map(|l| l.strip_prefix("STATUS="))
        .collect();
    assert!(
        statuses.iter().any(|s| s.contains("clock ok")),
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .any(|s| s.starts_with("door front: running;") && s.contains("broker degraded (")),
        "{statuses:?}"
    );

    let status = terminate_and_wait(&mut child);
    let stopping = collect(&socket, Duration::from_millis(300));
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "{status:?}: {err}");
    let stop = stopping
        .iter()
        .find(|(_, m)| m.contains("STOPPING=1"))
        .unwrap_or_else(|| panic!("no STOPPING=1: {stopping:?}\n{err}"));
    assert!(stop.1.contains("STATUS=stopping"), "{}", stop.1);
    // Nothing after STOPPING: no ping from a daemon that is going away.
    let after: Vec<_> = stopping.iter().filter(|(t, _)| *t > stop.0).collect();
    assert!(
        after.iter().all(|(_, m)| !m.contains("WATCHDOG=1")),
        "{after:?}"
    );
}

#[test]
fn the_daemon_speaks_to_an_abstract_socket_and_runs_without_one() {
    use std::os::linux::net::SocketAddrExt;
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(dir.path());
    let name = format!("acceso-notify-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    let mut child = spawn_daemon(&config, &format!("@{name}"), "2000000");
    until(&socket, BOUND, "READY=1", |m| m.contains("READY=1"));
    until(&socket, BOUND, "WATCHDOG=1", |m| m.contains("WATCHDOG=1"));
    assert!(terminate_and_wait(&mut child).success());

    // A socket that is not there: the door runs and stops all the same, saying why.
    let mut child = spawn_daemon(&config, "/nonexistent/notify", "");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "daemon exited early");
    assert!(terminate_and_wait(&mut child).success());
    let err = String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned();
    assert!(
        err.contains("cannot send to the notification socket /nonexistent/notify"),
        "{err}"
    );
}

/// A valve a test closes to make a hardware call block, as a hung bus would, and opens again.
#[derive(Clone, Default)]
struct Valve(Arc<(Mutex<bool>, Condvar)>);

impl Valve {
    fn close(&self) {
        *self.0 .0.lock().unwrap() = true;
    }
    fn open(&self) {
        *self.0 .0.lock().unwrap() = false;
        self.0 .1.notify_all();
    }
    /// Blocks while closed.
    fn pass(&self) {
        let mut closed = self.0 .0.lock().unwrap();
        while *closed {
            closed = self.0 .1.wait(closed).unwrap();
        }
    }
}

/// A reader with no card, whose poll blocks while its valve is closed.
struct StuckableReader(Valve);

impl CardReader for StuckableReader {
    fn poll(&mut self) -> Result<Seen, HwError> {
        self.0.pass();
        Ok(Seen::Empty)
    }
}

/// A relay whose `set` blocks while its valve is closed (and records every level).
struct StuckableRelay(Valve, acceso::sim::hw::SimRelay);

impl Relay for StuckableRelay {
    fn set(&mut self, high: bool) -> Result<(), HwError> {
        self.0.pass();
        self.1.set(high)
    }
}

struct Supervised {
    agent: Agent,
    socket: UnixDatagram,
    inputs: SimInputs,
    relay: RelayRecorder,
    cancel: CancellationToken,
    supervisor: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// The real agent (simulated door, no broker) under a supervisor with a 1 s watchdog: pings
/// every 250 ms while every loop beat within 2 s.
async fn supervised(reader: Valve, relay: Valve) -> Supervised {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::sim_defaults(&dir.path().join("state"));
    config.broker.port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.validate().unwrap();
    let recorder = RelayRecorder::default();
    let inputs = SimInputs::wired(
        !config.inputs.door_open_level.is_high(),
        !config.inputs.exit_pressed_level.is_high(),
    );
    let backends = Backends {
        reader: Some(Box::new(StuckableReader(reader))),
        relay: Box::new(StuckableRelay(relay, recorder.relay())),
        inputs: Some(Box::new(inputs.clone())),
        camera: None,
        clock: Arc::new(SimClock::default()),
    };
    let reporter = Reporter::log_only();
    let agent = tokio::time::timeout(BOUND, Agent::start(&config, backends, reporter.clone()))
        .await
        .expect("start within bound")
        .expect("agent starts");
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    let service = Service::new(
        Some(Notifier::to(path.to_str().unwrap()).unwrap()),
        Some(Duration::from_secs(1)),
    );
    assert_eq!(service.allowed_silence(), Duration::from_secs(2));
    let cancel = CancellationToken::new();
    let supervisor =
        tokio::spawn(service.supervise("front".into(), agent.liveness(), reporter, cancel.clone()));
    Supervised {
        agent,
        socket,
        inputs,
        relay: recorder,
        cancel,
        supervisor,
        _dir: dir,
    }
}

async fn collect_async(socket: &UnixDatagram, within: Duration) -> Vec<(Instant, String)> {
    let socket = socket.try_clone().unwrap();
    tokio::time::timeout(
        within + BOUND,
        tokio::task::spawn_blocking(move || collect(&socket, within)),
    )
    .await
    .expect("collect within bound")
    .unwrap()
}

fn pings(messages: &[(Instant, String)]) -> usize {
    messages
        .iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .count()
}

/// What came after the first message that says `loop_name` is stuck; panics if none does.
fn after_stuck<'a>(messages: &'a [(Instant, String)], loop_name: &str) -> &'a [(Instant, String)] {
    let needle = format!("STATUS=stuck: the {loop_name} loop has not run for");
    let at = messages
        .iter()
        .position(|(_, m)| m.contains(&needle))
        .unwrap_or_else(|| panic!("no {needle:?} in {messages:?}"));
    &messages[at..]
}

async fn finish(s: Supervised) {
    s.cancel.cancel();
    tokio::time::timeout(BOUND, s.supervisor)
        .await
        .expect("supervisor stops")
        .unwrap();
    tokio::time::timeout(BOUND, s.agent.stop())
        .await
        .expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_stop_while_the_reader_loop_is_stuck_and_resume_after() {
    let reader = Valve::default();
    let s = supervised(reader.clone(), Valve::default()).await;
    let alive = collect_async(&s.socket, Duration::from_millis(1500)).await;
    assert!(pings(&alive) >= 4, "alive: {alive:?}");
    assert_eq!(
        s.agent.liveness().names(),
        ["reader", "control"],
        "both loops are watched"
    );

    // The next poll hangs, as an SPI transfer that never returns would.
    reader.close();
    let stuck = collect_async(&s.socket, Duration::from_millis(4000)).await;
    let after = after_stuck(&stuck, "reader");
    assert_eq!(
        pings(after),
        0,
        "pinged while the reader was stuck: {stuck:?}"
    );
    // Stuck for 2 s of the 4 at least: the stuck status came within about 2.3 s.
    assert!(
        after.first().unwrap().0 - stuck.first().map(|m| m.0).unwrap_or(after[0].0)
            < Duration::from_millis(3000),
        "{stuck:?}"
    );

    reader.open();
    let again = collect_async(&s.socket, Duration::from_millis(1500)).await;
    assert!(pings(&again) >= 3, "pings did not resume: {again:?}");
    finish(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pings_stop_while_the_control_loop_is_stuck() {
    let relay = Valve::default();
    let s = supervised(Valve::default(), relay.clone()).await;
    let alive = collect_async(&s.socket, Duration::from_millis(1000)).await;
    assert!(pings(&alive) >= 3, "alive: {alive:?}");

    // The exit button: the control loop drives the relay, which never answers.
    relay.close();
    s.inputs.set_exit_button(false);
    let stuck = collect_async(&s.socket, Duration::from_millis(4000)).await;
    let after = after_stuck(&stuck, "control");
    assert_eq!(pings(after), 0, "pinged while control was stuck: {stuck:?}");
    assert!(
        !after.iter().any(|(_, m)| m.contains("reader loop")),
        "only the control loop is stuck: {after:?}"
    );

    relay.open();
    s.inputs.set_exit_button(true);
    let again = collect_async(&s.socket, Duration::from_millis(1500)).await;
    assert!(pings(&again) >= 3, "pings did not resume: {again:?}");
    // The exit request went through once the relay answered: unlocked, then locked at stop.
    finish_and_check_locked(s).await;
}

async fn finish_and_check_locked(s: Supervised) {
    let relay = s.relay.clone();
    finish(s).await;
    let changes = relay.changes();
    assert_eq!(
        changes.last().map(|c| c.1),
        Some(false),
        "ends locked: {changes:?}"
    );
    assert!(
        changes.iter().any(|c| c.1),
        "the exit request unlocked: {changes:?}"
    );
}
