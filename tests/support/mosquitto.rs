//! Test support: a private Mosquitto broker per test, plus small rumqttc helpers.
//!
//! Include from an integration test with `mod support;` and
//! `use support::mosquitto::{Mosquitto, publisher, subscriber};`.
//!
//! Requires Debian's `/usr/sbin/mosquitto` (`apt-get install mosquitto`). The system
//! service is never used: every [`Mosquitto`] runs its own process on a free loopback
//! port with its own config file in a temporary directory.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, SubscribeReasonCode};
use tokio::sync::{mpsc, oneshot};

const MOSQUITTO_BIN: &str = "/usr/sbin/mosquitto";
const HOST: &str = "127.0.0.1";
const POLL_INTERVAL: Duration = Duration::from_millis(20);
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);
const MQTT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_PACKET_SIZE: usize = 256 * 1024;
/// How many fresh ports `start()` tries if another process grabs the chosen one first.
const START_PORT_ATTEMPTS: usize = 5;

/// A private mosquitto broker bound to `127.0.0.1:<port>`.
///
/// The process is killed (SIGKILL) when the value is dropped. If the drop happens while
/// the thread is panicking (a failed assertion), the broker log is printed to stderr.
#[allow(dead_code)]
pub struct Mosquitto {
    dir: tempfile::TempDir,
    conf_path: PathBuf,
    log_path: PathBuf,
    port: u16,
    child: Option<Child>,
    /// Keep sessions and queued messages across restarts (in the temp dir).
    persistent: bool,
    /// A second listener with TLS and required client certificates.
    tls: Option<TlsListener>,
}

/// The broker's side of mutual TLS: its certificate and key, and the CA its clients' certificates
/// must chain to.
#[derive(Clone)]
#[allow(dead_code)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

struct TlsListener {
    port: u16,
    files: TlsFiles,
}

/// Outcome of one attempt at launching mosquitto.
enum Launch {
    Ready(Child),
    /// The process exited before accepting connections (typically: bind failed).
    Exited(String),
}

#[allow(dead_code)]
impl Mosquitto {
    /// Starts a broker on a free loopback port and waits until it accepts TCP connections.
    ///
    /// Panics if `/usr/sbin/mosquitto` is missing or the broker is not ready within 10 s.
    pub fn start() -> Mosquitto {
        Mosquitto::launch_new(false, None)
    }

    /// Like `start`, plus a TLS listener on [`Mosquitto::tls_port`] that requires a client
    /// certificate chaining to `files.ca` (`require_certificate true`, as AWS IoT Core does).
    /// The plain listener stays for the tests' own observers.
    pub fn start_tls(files: TlsFiles) -> Mosquitto {
        Mosquitto::launch_new(false, Some(files))
    }

    /// Like `start`, with `persistence true`: durable sessions and the QoS 1 messages queued
    /// for them survive `stop` + `restart`, as they do on a production broker.
    pub fn start_persistent() -> Mosquitto {
        Mosquitto::launch_new(true, None)
    }

    fn launch_new(persistent: bool, tls: Option<TlsFiles>) -> Mosquitto {
        if !Path::new(MOSQUITTO_BIN).exists() {
            panic!(
                "{MOSQUITTO_BIN} not found: these tests need a local mosquitto broker \
                 (run `apt-get install mosquitto`; the system service does not need to run)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("acceso-mosquitto-")
            .tempdir()
            .expect("create temp dir for mosquitto");
        let conf_path = dir.path().join("mosquitto.conf");
        let log_path = dir.path().join("mosquitto.log");
        File::create(&log_path).expect("create mosquitto log file");

        let mut broker = Mosquitto {
            dir,
            conf_path,
            log_path,
            port: 0,
            child: None,
            persistent,
            tls: tls.map(|files| TlsListener { port: 0, files }),
        };

        // Between dropping our probe listener and mosquitto binding, another process may
        // take the port; in that case pick a new one.
        let mut failures = Vec::new();
        for _ in 0..START_PORT_ATTEMPTS {
            broker.port = free_port();
            if let Some(tls) = broker.tls.as_mut() {
                tls.port = free_port();
            }
            broker.write_config();
            match broker.launch(START_TIMEOUT) {
                Launch::Ready(child) => {
                    broker.child = Some(child);
                    return broker;
                }
                Launch::Exited(status) => {
                    failures.push(format!("port {}: {status}", broker.port));
                }
            }
        }
        panic!(
            "mosquitto failed to start after {START_PORT_ATTEMPTS} attempts ({})\n\
             --- mosquitto log ---\n{}",
            failures.join("; "),
            broker.log()
        );
    }

    /// The TCP port the broker listens on (stable across [`Mosquitto::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS listener's port; panics if the broker was not started with `start_tls`.
    pub fn tls_port(&self) -> u16 {
        self.tls.as_ref().expect("started with start_tls").port
    }

    /// Always `"127.0.0.1"`.
    pub fn host(&self) -> &'static str {
        HOST
    }

    /// Directory holding the config and log files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether a broker process is currently running (started and not stopped).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the broker: SIGTERM, wait up to 5 s for it to exit (then SIGKILL), then wait
    /// until the port refuses connections. Does nothing if already stopped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if wait_exit(&mut child, STOP_TIMEOUT).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        } else {
            let _ = child.wait();
        }

        let deadline = Instant::now() + STOP_TIMEOUT;
        while accepts(self.port) {
            if Instant::now() >= deadline {
                panic!(
                    "port {} still accepts connections 5 s after mosquitto exited\n\
                     --- mosquitto log ---\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Starts a new broker process on the same port with the same config. Stops the
    /// current one first if it is still running. Retries for up to 5 s while the port
    /// cannot be bound, then waits (up to 10 s) for the port to accept connections.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + REBIND_TIMEOUT;
        loop {
            match self.launch(START_TIMEOUT) {
                Launch::Ready(child) => {
                    self.child = Some(child);
                    return;
                }
                Launch::Exited(status) => {
                    if Instant::now() >= deadline {
                        panic!(
                            "mosquitto could not be restarted on port {} within 5 s \
                             (last attempt: {status})\n--- mosquitto log ---\n{}",
                            self.port,
                            self.log()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Alias of [`Mosquitto::restart`].
    pub fn start_again(&mut self) {
        self.restart();
    }

    /// Everything mosquitto wrote to stdout/stderr, across all (re)starts.
    pub fn log(&self) -> String {
        match std::fs::read(&self.log_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("<cannot read {}: {e}>", self.log_path.display()),
        }
    }

    fn launch_log_says_running(&self, offset: u64) -> bool {
        let Ok(bytes) = std::fs::read(&self.log_path) else {
            return false;
        };
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).contains(" running")
    }

    fn write_config(&self) {
        let conf = format!(
            "listener {port} {HOST}\n\
             allow_anonymous true\n\
             set_tcp_nodelay true\n\
             log_dest stderr\n\
             max_inflight_messages 100\n\
             max_queued_messages 10000\n",
            port = self.port
        );
        let conf = match &self.tls {
            Some(tls) => format!(
                "{conf}listener {port} {HOST}\n\
                 cafile {ca}\n\
                 certfile {cert}\n\
                 keyfile {key}\n\
                 require_certificate true\n",
                port = tls.port,
                ca = tls.files.ca.display(),
                cert = tls.files.cert.display(),
                key = tls.files.key.display(),
            ),
            None => conf,
        };
        // Started as root, mosquitto drops to the `mosquitto` user, which cannot write to our
        // private temporary directory: persistence would silently fail. Stay as the caller.
        let conf = if std::fs::metadata(self.dir.path())
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
        {
            format!("{conf}user root\n")
        } else {
            conf
        };
        let conf = if self.persistent {
            format!(
                "{conf}persistence true\npersistence_location {}/\n",
                self.dir.path().display()
            )
        } else {
            format!("{conf}persistence false\n")
        };
        std::fs::write(&self.conf_path, conf).expect("write mosquitto config");
    }

    /// Spawns one mosquitto process and waits until it accepts connections or exits.
    fn launch(&self, timeout: Duration) -> Launch {
        let mut log = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.log_path)
            .expect("open mosquitto log file");
        let _ = writeln!(
            log,
            "=== test harness: starting {MOSQUITTO_BIN} on port {} ===",
            self.port
        );
        // Only log lines written after this offset belong to this launch.
        let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stdout = log.try_clone().expect("clone mosquitto log handle");
        let mut child = match Command::new(MOSQUITTO_BIN)
            .arg("-c")
            .arg(&self.conf_path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot run {MOSQUITTO_BIN}: {e} (install it with `apt-get install mosquitto`)"
            ),
        };

        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Launch::Exited(format!("mosquitto exited: {status}")),
                Ok(None) => {}
                Err(e) => return Launch::Exited(format!("cannot wait for mosquitto: {e}")),
            }
            // A connectable port alone could be a foreign listener that mosquitto is about
            // to fail to bind against; mosquitto logs "running" only once its listeners
            // are open, so require that too (and that our process is still alive).
            if self.launch_log_says_running(log_offset)
                && accepts(self.port)
                && self.tls.as_ref().is_none_or(|t| accepts(t.port))
                && matches!(child.try_wait(), Ok(None))
            {
                return Launch::Ready(child);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mosquitto did not accept connections on {HOST}:{} within {:?}\n\
                     --- mosquitto log ---\n{}",
                    self.port,
                    timeout,
                    self.log()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- mosquitto log (port {}) ---\n{}--- end mosquitto log ---",
                self.port,
                self.log()
            );
        }
    }
}

/// Picks a currently free loopback port by binding port 0 and releasing it.
fn free_port() -> u16 {
    let listener = TcpListener::bind((HOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Whether something accepts TCP connections on `127.0.0.1:<port>`.
fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Polls `child` until it exits or `timeout` passes.
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
            _ => return None,
        }
    }
}

static CLIENT_COUNTER: AtomicUsize = AtomicUsize::new(0);

fn client_options(kind: &str, host: &str, port: u16) -> MqttOptions {
    let n = CLIENT_COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = format!("test-{kind}-{}-{n}", std::process::id());
    let mut options = MqttOptions::new(id, host, port);
    options.set_clean_session(kind != "durable-sub");
    options.set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE);
    options
}

/// Connects a client subscribed to `topic` (QoS 1) and returns it with a channel that
/// receives every incoming publish.
///
/// Returns once the first SUBACK arrived (panics after 10 s). The background task polls
/// the event loop forever: it reconnects after errors (every 100 ms) and re-subscribes
/// after every CONNACK, so the subscription survives [`Mosquitto::restart`].
#[allow(dead_code)]
pub async fn subscriber(
    host: &str,
    port: u16,
    topic: &str,
) -> (AsyncClient, mpsc::UnboundedReceiver<Publish>) {
    subscribe_with(client_options("sub", host, port), topic).await
}

/// Like `subscriber`, with a persistent session (clean session off): with a broker from
/// `Mosquitto::start_persistent`, messages published while it is disconnected (a broker
/// restart) are queued for it and delivered when it reconnects.
#[allow(dead_code)]
pub async fn durable_subscriber(
    host: &str,
    port: u16,
    topic: &str,
) -> (AsyncClient, mpsc::UnboundedReceiver<Publish>) {
    subscribe_with(client_options("durable-sub", host, port), topic).await
}

async fn subscribe_with(
    options: MqttOptions,
    topic: &str,
) -> (AsyncClient, mpsc::UnboundedReceiver<Publish>) {
    let (host, port) = options.broker_address();
    let (host, port) = (host.as_str(), port);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let (tx, rx) = mpsc::unbounded_channel();
    let (subacked_tx, subacked_rx) = oneshot::channel::<Result<(), String>>();

    let task_client = client.clone();
    let task_topic = topic.to_owned();
    let task = tokio::spawn(async move {
        let mut subacked = Some(subacked_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    // try_subscribe: an awaiting subscribe could deadlock against this very
                    // loop if the request channel were full.
                    if let Err(e) = task_client.try_subscribe(task_topic.as_str(), QoS::AtLeastOnce)
                    {
                        if let Some(s) = subacked.take() {
                            let _ = s.send(Err(format!("subscribe request failed: {e}")));
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(suback))) => {
                    if let Some(s) = subacked.take() {
                        let ok = suback
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
                        let _ = s.send(if ok {
                            Ok(())
                        } else {
                            Err(format!("broker refused subscription: {suback:?}"))
                        });
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    // The receiver may be gone; keep polling so the client stays healthy.
                    let _ = tx.send(publish);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });

    match tokio::time::timeout(MQTT_TIMEOUT, subacked_rx).await {
        Ok(Ok(Ok(()))) => (client, rx),
        Ok(Ok(Err(e))) => {
            task.abort();
            panic!("subscriber for {topic:?} on {host}:{port}: {e}");
        }
        Ok(Err(_)) => {
            task.abort();
            panic!("subscriber for {topic:?} on {host}:{port}: event loop task ended");
        }
        Err(_) => {
            task.abort();
            panic!(
                "subscriber for {topic:?} on {host}:{port}: no SUBACK within {MQTT_TIMEOUT:?} \
                 (is the broker running?)"
            );
        }
    }
}

/// Connects a publishing client and returns once the first CONNACK arrived (panics after
/// 10 s). The background task polls the event loop forever, reconnecting after errors
/// (every 100 ms).
#[allow(dead_code)]
pub async fn publisher(host: &str, port: u16) -> AsyncClient {
    let (client, mut eventloop) = AsyncClient::new(client_options("pub", host, port), 1000);
    let (connected_tx, connected_rx) = oneshot::channel::<()>();

    let task = tokio::spawn(async move {
        let mut connected = Some(connected_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(s) = connected.take() {
                        let _ = s.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });

    match tokio::time::timeout(MQTT_TIMEOUT, connected_rx).await {
        Ok(Ok(())) => client,
        Ok(Err(_)) => {
            task.abort();
            panic!("publisher on {host}:{port}: event loop task ended");
        }
        Err(_) => {
            task.abort();
            panic!(
                "publisher on {host}:{port}: no CONNACK within {MQTT_TIMEOUT:?} \
                 (is the broker running?)"
            );
        }
    }
}
