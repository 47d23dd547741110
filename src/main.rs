//! The `acceso` command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use acceso::clock::{ClockSettings, SystemClock};
use acceso::config::{CameraBackend, Config, InputsBackend, ReaderBackend, RelayBackend};
use acceso::door::{LockState, Wiring};
use acceso::hw::gpio::{GpioInputs, GpioRelay};
use acceso::hw::mfrc522::Mfrc522Reader;
use acceso::hw::spidev::SpidevMfrc522;
use acceso::hw::CardReader;
use acceso::hw::{DoorInputs, FrameSource, Relay};
use acceso::observe::Reporter;
use acceso::sim::hw::{FileCamera, RelayRecorder, SimInputs};
use acceso::sim::mfrc522::SimChip;
use acceso::sim::{run_scenario, Scenario, SimError, DEMO_SCENARIO};
use acceso::{Agent, Backends};
use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// How often the clock's trust is checked while no one is at the door (and its known-good
/// time considered for writing, at most once a minute).
const CLOCK_KEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Parser)]
#[command(
    name = "acceso",
    version,
    about = "Door controller agent: cards and faces in, lock out, events to the cloud"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the door agent (the daemon) until SIGTERM, SIGINT (or any other signal that would
    /// end it), then stop with the door locked.
    Run {
        /// The configuration file.
        #[arg(long, default_value = "/etc/acceso/acceso.toml")]
        config: PathBuf,
    },
    /// Run the agent against simulated hardware, following a scenario file; prints JSON Lines.
    Sim {
        /// The scenario file (see "Scenarios" in the README).
        #[arg(long)]
        scenario: PathBuf,
    },
    /// A built-in scenario with an embedded broker: updates, grants, denials, events.
    Demo,
    /// Check a configuration file and print it with every default filled in.
    CheckConfig {
        #[arg(long, default_value = "/etc/acceso/acceso.toml")]
        config: PathBuf,
    },
    /// Check everything an installation needs (config, certificates, clock, reader, GPIO,
    /// camera, models, database, broker), each with what to do when it fails. Exit status 0
    /// when every check passed, 1 otherwise.
    Doctor {
        #[arg(long, default_value = "/etc/acceso/acceso.toml")]
        config: PathBuf,
    },
    /// Face tools: what the engine finds in photos, and how alike two faces are.
    #[cfg(feature = "face")]
    Face {
        #[command(subcommand)]
        command: FaceCommand,
    },
    /// Print a user (protocol JSON) with one face embedding per photo, for an update message.
    /// Each photo must show exactly one face.
    #[cfg(feature = "face")]
    Enroll {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        /// A card UID in hex (repeatable), e.g. 04:6B:2F:91:C4:5A:80.
        #[arg(long = "card")]
        cards: Vec<String>,
        /// The face models directory.
        #[arg(long)]
        models: Option<PathBuf>,
        #[arg(required = true)]
        photos: Vec<PathBuf>,
    },
}

#[cfg(feature = "face")]
#[derive(Subcommand)]
enum FaceCommand {
    /// Every face of each image: box, landmarks, score, embedding (one JSON line per image).
    Embed {
        /// The face models directory.
        #[arg(long)]
        models: Option<PathBuf>,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// The cosine similarity of the largest face of A and of B, and whether it is a match.
    Compare {
        /// The face models directory.
        #[arg(long)]
        models: Option<PathBuf>,
        a: PathBuf,
        b: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version (exit 0) or a usage error (exit 2), printed by clap; its help
        // written to a closed pipe is an error here too.
        Err(e) => {
            if let Err(w) = e.print() {
                say(&format!("acceso: {}", OutputError(w)));
                return ExitCode::FAILURE;
            }
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1));
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(&format!("acceso: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run { config } => run(config).await,
            Command::Sim { scenario } => {
                init_logging("error");
                let scenario = Scenario::load(&scenario)?;
                simulate(scenario).await
            }
            Command::Demo => {
                init_logging("error");
                let base = std::env::current_dir().context("no current directory")?;
                let scenario = Scenario::parse(DEMO_SCENARIO, &base).map_err(SimError::Scenario)?;
                simulate(scenario).await
            }
            Command::CheckConfig { config } => {
                let config = Config::load_checked(&config)?;
                let mut text = toml::to_string(&config)?;
                if config.door.time_zone.is_none() {
                    // TOML has no null: say what the absent key means here.
                    let zone = config.door.zone().map_err(anyhow::Error::msg)?;
                    text.push_str(&format!(
                        "# door.time_zone is not set: schedules use the system's, {}\n",
                        zone.iana_name().unwrap_or("(unnamed)")
                    ));
                }
                emit(&text)?;
                Ok(())
            }
            Command::Doctor { config } => {
                let report = tokio::task::spawn_blocking(move || {
                    acceso::doctor::run(&config, acceso::doctor::Limits::default())
                })
                .await
                .context("doctor failed")?;
                emit(&report.render())?;
                if !report.passed() {
                    return Err(DoctorFailed.into());
                }
                Ok(())
            }
            #[cfg(feature = "face")]
            Command::Face { command } => face_command(command),
            #[cfg(feature = "face")]
            Command::Enroll {
                id,
                name,
                cards,
                models,
                photos,
            } => {
                use acceso::face::engine::cli;
                let models = models.unwrap_or_else(cli::default_models_dir);
                let mut engine = cli::load_engine(&models)?;
                let user = cli::enroll(&mut engine, &id, &name, &cards, &photos)?;
                emit(&format!("{}\n", serde_json::to_string_pretty(&user)?))?;
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The report said what failed and what to do.
        Err(e) if e.is::<DoctorFailed>() => ExitCode::FAILURE,
        Err(e) => {
            say(&format!("acceso: {}", chain(&e)));
            // 2: the input (config, scenario) is wrong; 1: anything else.
            // A TLS file that does not parse or fit (a key of another certificate) is the
            // config's fault too: a restart cannot mend it.
            let bad_tls = matches!(
                e.downcast_ref::<acceso::agent::AgentError>(),
                Some(acceso::agent::AgentError::Tls(
                    acceso::cloud::tls::TlsSetupError::File { .. }
                ))
            );
            let bad_input = bad_tls
                || e.downcast_ref::<acceso::config::ConfigError>().is_some()
                || matches!(e.downcast_ref::<SimError>(), Some(SimError::Scenario(_)))
                || face_bad_input(&e);
            ExitCode::from(if bad_input { 2 } else { 1 })
        }
    }
}

/// `acceso doctor` found something to fix (already printed).
#[derive(Debug, thiserror::Error)]
#[error("some checks failed")]
struct DoctorFailed;

/// An unreadable photo, no face where one is needed, a bad card UID.
#[cfg(feature = "face")]
fn face_bad_input(e: &anyhow::Error) -> bool {
    e.downcast_ref::<acceso::face::engine::cli::CliError>()
        .is_some_and(|c| c.is_bad_input())
}

#[cfg(not(feature = "face"))]
fn face_bad_input(_: &anyhow::Error) -> bool {
    false
}

#[cfg(feature = "face")]
fn face_command(command: FaceCommand) -> anyhow::Result<()> {
    use acceso::face::engine::cli;
    match command {
        FaceCommand::Embed { models, images } => {
            let models = models.unwrap_or_else(cli::default_models_dir);
            let mut engine = cli::load_engine(&models)?;
            // One line per image as it is done, so a long list shows progress.
            for image in &images {
                let report = cli::embed_photo(&mut engine, image)?;
                emit(&format!("{}\n", serde_json::to_string(&report)?))?;
            }
        }
        FaceCommand::Compare { models, a, b } => {
            let models = models.unwrap_or_else(cli::default_models_dir);
            let mut engine = cli::load_engine(&models)?;
            let out = cli::compare_photos(&mut engine, &a, &b)?;
            emit(&format!("{}\n", serde_json::to_string_pretty(&out)?))?;
        }
    }
    Ok(())
}

/// Standard output could not be written (a closed pipe, a full disk): exit 1 saying so,
/// never a panic (as `sim` and `demo` do, `SimError::Output`).
#[derive(Debug, thiserror::Error)]
#[error("cannot write output: {0}")]
struct OutputError(std::io::Error);

/// Writes `text` to standard output and flushes it, mapping a failure to `OutputError`
/// (`print!` would panic).
fn emit(text: &str) -> Result<(), OutputError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(OutputError)
}

/// One line on standard error; if even that cannot be written there is no one to tell
/// (`eprintln!` would panic).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The error and its causes, each said once: our errors already carry their cause's text.
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

async fn simulate(scenario: Scenario) -> anyhow::Result<()> {
    run_scenario(&scenario, Box::new(std::io::stdout())).await?;
    Ok(())
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load_checked(&path)?;
    init_logging(&config.log);
    // Listened for from the start: a stop signal while the agent starts stops it, locked, once
    // it has started, instead of ending the process half-way.
    let stop_signals = StopSignals::listen()?;
    // systemd (Type=notify): a malformed socket variable costs supervision, never the door.
    let service = acceso::service::Service::from_env().unwrap_or_else(|e| {
        tracing::error!("{e}; running without telling systemd");
        acceso::service::Service::default()
    });
    service.status("starting: locking the door, opening the store");
    let reader: Option<Box<dyn CardReader>> = match config.reader.backend {
        ReaderBackend::Mfrc522 => {
            let r = &config.reader;
            let timeout = std::time::Duration::from_millis(r.exchange_timeout_ms);
            Some(Box::new(SpidevMfrc522::new(
                &r.spi_device,
                r.spi_mode,
                r.spi_hz,
                timeout,
            )))
        }
        ReaderBackend::Sim => {
            tracing::warn!(
                "reader.backend = \"sim\": a simulated MFRC522 with no card will ever come near it"
            );
            let timeout = std::time::Duration::from_millis(config.reader.exchange_timeout_ms);
            Some(Box::new(Mfrc522Reader::new(SimChip::new().spi(), timeout)))
        }
        ReaderBackend::None => None,
    };
    let wiring = Wiring {
        active_low: config.relay.active_low,
        fail_safe: config.door.fail_safe,
    };
    let relay: Box<dyn Relay> = match config.relay.backend {
        RelayBackend::Gpio => Box::new(GpioRelay::open(
            config.relay.pin,
            wiring.level(LockState::Locked),
        )?),
        RelayBackend::Sim => {
            tracing::warn!("relay.backend = \"sim\": the lock is not wired to anything");
            Box::new(RelayRecorder::default().relay())
        }
    };
    let i = &config.inputs;
    let inputs: Option<Box<dyn DoorInputs>> = match i.backend {
        InputsBackend::Gpio => Some(Box::new(GpioInputs::open(
            i.door_contact_pin,
            i.exit_button_pin,
        )?)),
        InputsBackend::Sim => {
            tracing::warn!("inputs.backend = \"sim\": door contact and exit button stay idle");
            Some(Box::new(SimInputs::wired(
                !i.door_open_level.is_high(),
                !i.exit_pressed_level.is_high(),
            )))
        }
        InputsBackend::None => None,
    };
    let camera = match config.camera.backend {
        CameraBackend::None => None,
        CameraBackend::Sim => {
            tracing::warn!("camera.backend = \"sim\": no frames unless a simulation queues them");
            Some(Box::new(FileCamera::default()) as Box<dyn FrameSource>)
        }
        CameraBackend::V4l2 | CameraBackend::Gstreamer => {
            // A camera that is missing now is retried by its backend; the door runs on cards.
            Some(acceso::face::open_camera(&config.camera))
        }
    };
    let reporter = Reporter::log_only();
    let settings = ClockSettings::from_config(&config);
    let clock_reporter = reporter.clone();
    // Blocking: reads the known-good time from the state directory.
    let clock = Arc::new(
        tokio::task::spawn_blocking(move || SystemClock::system(settings, clock_reporter))
            .await
            .context("cannot start the clock")?,
    );
    let backends = Backends {
        reader,
        relay,
        inputs,
        camera,
        clock: clock.clone(),
    };
    let agent = match Agent::start(&config, backends, reporter.clone()).await {
        Ok(agent) => agent,
        Err(e) => {
            service.status(&format!("failed to start: {e}"));
            return Err(e.into());
        }
    };
    // Reports trust changes while no one is at the door, and keeps the known-good time.
    let keeper_cancel = CancellationToken::new();
    let keeper = tokio::spawn(clock.run_keeper(CLOCK_KEEP_EVERY, keeper_cancel.clone()));
    tracing::info!(device = %config.device_id, door = %config.door.name, "acceso running");
    service.ready(&acceso::service::status_line(&config.door.name, &reporter));
    let supervisor_cancel = CancellationToken::new();
    let supervisor = tokio::spawn(service.clone().supervise(
        config.door.name.clone(),
        agent.liveness(),
        reporter,
        supervisor_cancel.clone(),
    ));
    stop_signals.wait().await;
    service.stopping("stopping: locking the door, keeping queued events");
    supervisor_cancel.cancel();
    if let Err(e) = supervisor.await {
        tracing::error!("service supervisor failed: {e}");
    }
    tracing::info!("stopping: locking the door, keeping queued events");
    agent.stop().await;
    // After the agent: the known-good time written at stop includes its last decisions.
    keeper_cancel.cancel();
    if let Err(e) = keeper.await {
        tracing::error!("clock keeper failed: {e}");
    }
    Ok(())
}

/// The signals that stop the agent as SIGTERM does (the lock locked, queued events kept):
/// every one whose default action would end the process without that, and that can be caught
/// and arrives from outside. Not among them: SIGKILL and SIGSTOP (cannot be caught); SIGPIPE
/// (ignored by the Rust runtime: a closed socket is an error to handle, not a stop); SIGABRT
/// (systemd's watchdog signal for a stuck agent, and the release build's panic abort after the
/// panic guard has locked the door: it must still end the process, with a core); SIGSEGV,
/// SIGBUS, SIGILL, SIGFPE, SIGTRAP and SIGSYS (faults of the thread that caused them, which
/// cannot go on running); SIGCHLD, SIGCONT, SIGURG, SIGWINCH (ignored by default).
fn stop_signals() -> Vec<(String, libc::c_int)> {
    let mut signals: Vec<(String, libc::c_int)> = [
        ("SIGTERM", libc::SIGTERM),
        ("SIGINT", libc::SIGINT),
        // A closed terminal must not kill the agent without locking the door.
        ("SIGHUP", libc::SIGHUP),
        ("SIGQUIT", libc::SIGQUIT),
        ("SIGUSR1", libc::SIGUSR1),
        ("SIGUSR2", libc::SIGUSR2),
        ("SIGALRM", libc::SIGALRM),
        ("SIGVTALRM", libc::SIGVTALRM),
        ("SIGPROF", libc::SIGPROF),
        ("SIGIO", libc::SIGIO),
        ("SIGPWR", libc::SIGPWR),
        ("SIGSTKFLT", libc::SIGSTKFLT),
        // Over a CPU time or file size limit: stop while we still can.
        ("SIGXCPU", libc::SIGXCPU),
        ("SIGXFSZ", libc::SIGXFSZ),
    ]
    .into_iter()
    .map(|(name, n)| (name.to_string(), n))
    .collect();
    // Real-time signals end the process by default too (the C library keeps the first few
    // below SIGRTMIN for itself).
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    for n in min..=max {
        // As kill(1) names them.
        let name = match n - min {
            0 => "SIGRTMIN".to_string(),
            k => format!("SIGRTMIN+{k}"),
        };
        signals.push((name, n));
    }
    signals
}

/// Every stop signal, listened for.
struct StopSignals(Vec<(String, tokio::signal::unix::Signal)>);

impl StopSignals {
    fn listen() -> anyhow::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut streams = Vec::new();
        for (name, n) in stop_signals() {
            let stream = signal(SignalKind::from_raw(n))
                .with_context(|| format!("cannot listen for {name}"))?;
            streams.push((name, stream));
        }
        Ok(StopSignals(streams))
    }

    /// Until the first of them arrives (or arrived since `listen`).
    async fn wait(mut self) {
        let name = std::future::poll_fn(|cx| {
            for (name, stream) in &mut self.0 {
                if stream.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(name.clone());
                }
            }
            std::task::Poll::Pending
        })
        .await;
        tracing::info!("{name} received");
    }
}

fn init_logging(default: &str) {
    use std::io::IsTerminal;
    let wanted = std::env::var("RUST_LOG").unwrap_or_else(|_| default.to_string());
    // rumqttd logs an ERROR on every normal disconnect.
    let (filter, bad) =
        match tracing_subscriber::EnvFilter::try_new(format!("{wanted},rumqttd=off")) {
            Ok(f) => (f, None),
            Err(e) => (
                tracing_subscriber::EnvFilter::new("warn,rumqttd=off"),
                Some(e),
            ),
        };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Some(e) = bad {
        tracing::warn!("log filter {wanted:?} is invalid ({e}); logging at warn");
    }
}
