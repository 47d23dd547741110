//! Typed configuration, read from TOML once at start and validated before anything runs.
//!
//! Every key is documented here; unknown keys are rejected. Defaults live in code (the
//! `Default` impls), never in a template string. A bad file gives an error naming the key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod face;
pub use crate::access::UntrustedClock;
pub use face::{CameraBackend, CameraConfig, FaceConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// An `Invalid` error of the file at `path`, as the file's error naming the key.
fn in_file(path: &Path, e: ConfigError) -> ConfigError {
    match e {
        ConfigError::Invalid { key, reason } => ConfigError::Parse {
            path: path.to_path_buf(),
            message: format!("key `{key}`: {reason}"),
        },
        other => other,
    }
}

/// A path key that is set must not be empty: an empty path names nothing (the file or
/// device would be looked for as "", and the error would not say which key it came from).
fn not_empty(key: impl Into<String>, path: &Path) -> Result<(), ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(invalid(key, "is empty"));
    }
    Ok(())
}

/// The agent's whole configuration (`/etc/acceso/acceso.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This device's id: the AWS IoT thing name, the MQTT client id, `device` in every event.
    /// Letters, digits, `-`, `_` and `:` only (it is part of MQTT topics). Required.
    pub device_id: String,
    /// Where the agent keeps its database (`acceso.db`). Must be writable. Default
    /// `/var/lib/acceso`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Log filter for stderr/journald, in `tracing` env-filter syntax. Default `info`.
    #[serde(default = "default_log")]
    pub log: String,
    pub door: DoorConfig,
    #[serde(default)]
    pub broker: BrokerConfig,
    #[serde(default)]
    pub reader: ReaderConfig,
    #[serde(default)]
    pub relay: RelayConfig,
    #[serde(default)]
    pub inputs: InputsConfig,
    #[serde(default)]
    pub camera: CameraConfig,
    #[serde(default)]
    pub face: FaceConfig,
    #[serde(default)]
    pub outbox: OutboxConfig,
    #[serde(default)]
    pub clock: ClockConfig,
    #[serde(default)]
    pub sync: SyncConfig,
}

/// `[sync]`: trusting and catching up with the cloud's user updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// PEM files of the cloud's ECDSA P-256 public signing keys (two while a key is rotated).
    /// With any, every update and sync response must be signed by one of them; without, the
    /// agent accepts unsigned ones and warns at every start. Default none.
    #[serde(default)]
    pub public_keys: Vec<PathBuf>,
    /// How long to wait for the answer to a sync request before asking again (ms,
    /// 1000..=600000); each retry waits twice as long, up to `retry_max_ms`. Default 15000.
    #[serde(default = "default_sync_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Longest wait between sync retries (ms, request_timeout_ms..=3600000). Default 300000.
    #[serde(default = "default_sync_retry_max_ms")]
    pub retry_max_ms: u64,
    /// How often to check with the cloud that the user set is current, besides on every
    /// connect (s, 60..=86400). Default 3600.
    #[serde(default = "default_sync_check_s")]
    pub check_every_s: u64,
}

fn default_sync_timeout_ms() -> u64 {
    15_000
}

fn default_sync_retry_max_ms() -> u64 {
    300_000
}

fn default_sync_check_s() -> u64 {
    3600
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            public_keys: Vec::new(),
            request_timeout_ms: default_sync_timeout_ms(),
            retry_max_ms: default_sync_retry_max_ms(),
            check_every_s: default_sync_check_s(),
        }
    }
}

impl SyncConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1000..=600_000).contains(&self.request_timeout_ms) {
            return Err(invalid(
                "sync.request_timeout_ms",
                format!("{} is outside 1000..=600000", self.request_timeout_ms),
            ));
        }
        if self.retry_max_ms < self.request_timeout_ms || self.retry_max_ms > 3_600_000 {
            return Err(invalid(
                "sync.retry_max_ms",
                format!(
                    "{} must be between sync.request_timeout_ms ({}) and 3600000",
                    self.retry_max_ms, self.request_timeout_ms
                ),
            ));
        }
        if !(60..=86_400).contains(&self.check_every_s) {
            return Err(invalid(
                "sync.check_every_s",
                format!("{} is outside 60..=86400", self.check_every_s),
            ));
        }
        Ok(())
    }

    /// Reads the pinned keys. An unreadable or wrong file is an error naming its key
    /// (`sync.public_keys[0]`) and the file.
    pub fn trusted_keys(&self) -> Result<acceso_protocol::TrustedKeys, ConfigError> {
        let mut keys = Vec::new();
        for (i, path) in self.public_keys.iter().enumerate() {
            let key = format!("sync.public_keys[{i}]");
            not_empty(key.as_str(), path)?;
            let pem = std::fs::read(path).map_err(|e| {
                invalid(key.as_str(), format!("cannot read {}: {e}", path.display()))
            })?;
            let public = acceso_protocol::PublicKey::from_pem(&pem)
                .map_err(|e| invalid(key.as_str(), format!("{}: {e}", path.display())))?;
            keys.push(public);
        }
        Ok(acceso_protocol::TrustedKeys::new(keys))
    }
}

/// `[clock]`: when the wall clock is trusted (`time_trusted` in events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// Trust the wall clock only while the kernel or systemd-timesyncd says it is
    /// synchronised (NTP). `false` is for sites with no network time at all: the clock is then
    /// trusted when it is past this release and not behind the last known-good time. Default
    /// true.
    #[serde(default = "yes")]
    pub require_sync: bool,
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig { require_sync: true }
    }
}

/// `[outbox]`: events waiting for the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Most events kept while the broker cannot be reached, 100 to 10000000; past it the
    /// oldest are dropped, counted and reported. Default 100000 (about 50 MB on disk).
    #[serde(default = "default_max_events")]
    pub max_events: u64,
}

fn default_max_events() -> u64 {
    100_000
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_events: default_max_events(),
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/acceso")
}

fn default_log() -> String {
    "info".into()
}

/// `[door]`: the door this agent controls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorConfig {
    /// The door's name, `door` in every event and what users' `doors` lists refer to. Required.
    pub name: String,
    /// How long the lock stays open after a grant, in milliseconds, 200 to 60000. Default 3000.
    #[serde(default = "default_unlock_ms")]
    pub unlock_ms: u64,
    /// Which credentials open the door: `card`, `face`, `card_or_face` (either one) or
    /// `card_and_face` (both, of the same user, within `two_factor_ms`, either order). Every
    /// mode but `card` needs a camera. Default `card`.
    #[serde(default)]
    pub mode: DoorMode,
    /// `false` (fail-secure, the default): power off = locked, the relay is energised to unlock.
    /// `true` (fail-safe, e.g. a maglock on a fire exit): power off = unlocked, the relay is
    /// energised to lock.
    #[serde(default)]
    pub fail_safe: bool,
    /// Relock as soon as the door closes after opening, before `unlock_ms` runs out (needs a
    /// door contact). Default true.
    #[serde(default = "yes")]
    pub relock_on_close: bool,
    /// Raise the held-open alarm when the door stays open this long, in milliseconds; 0 = never,
    /// otherwise at least 1000. Default 30000.
    #[serde(default = "default_held_open_ms")]
    pub held_open_ms: u64,
    /// The door's IANA time zone (`Europe/Madrid`), the local time of users' schedules.
    /// Default: the system's time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// While the clock cannot be trusted: `deny_restricted` (users with a validity window or
    /// a schedule are denied `clock_untrusted`; others are decided as usual) or `allow`
    /// (decide by the clock as it is). Default `deny_restricted`.
    #[serde(default)]
    pub untrusted_clock: UntrustedClock,
    /// How long the second factor may take after the first (`card_and_face` doors and
    /// two-factor users), in milliseconds, 1000 to 60000. Default 10000.
    #[serde(default = "default_two_factor_ms")]
    pub two_factor_ms: u64,
}

fn default_two_factor_ms() -> u64 {
    10_000
}

impl DoorConfig {
    /// The door's time zone, as configured or the system's.
    pub fn zone(&self) -> Result<jiff::tz::TimeZone, String> {
        match &self.time_zone {
            None => Ok(jiff::tz::TimeZone::system()),
            Some(name) => jiff::tz::TimeZone::get(name).map_err(|e| format!("{name:?}: {e}")),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_held_open_ms() -> u64 {
    30_000
}

fn default_unlock_ms() -> u64 {
    3000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoorMode {
    #[default]
    Card,
    Face,
    CardOrFace,
    CardAndFace,
}

/// `[broker]`: the MQTT broker (AWS IoT Core in production).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Host name or address. Default `127.0.0.1`.
    #[serde(default = "default_host")]
    pub host: String,
    /// TCP port. Default 1883.
    #[serde(default = "default_port")]
    pub port: u16,
    /// MQTT keepalive in seconds, 30 to 1200 (AWS IoT Core's range). Default 60.
    #[serde(default = "default_keepalive")]
    pub keepalive_s: u64,
    /// Prefix of every topic (`<prefix>/logs`, `<prefix>/updates`, ...). Default `acceso`.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// First wait before reconnecting after the connection drops, in milliseconds, 100 to
    /// 300000; each failure doubles it (with jitter) up to `reconnect_max_ms`. Default 2000.
    #[serde(default = "default_reconnect")]
    pub reconnect_ms: u64,
    /// Longest wait between reconnects, in milliseconds, at least `reconnect_ms`. Default 60000.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// A connection must stay up this long, in seconds, before the wait starts again from
    /// `reconnect_ms`. Default 30.
    #[serde(default = "default_stable_after")]
    pub stable_after_s: u64,
    /// Mutual TLS (AWS IoT Core: port 8883, or 443 with `alpn`). Default false.
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the CA(s) to trust for the broker's certificate (Amazon Root CA 1 for AWS
    /// IoT Core). Required with `tls`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file of this device's certificate. Required with `tls`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM file of this device's private key. Required with `tls`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Offer ALPN `x-amzn-mqtt-ca`, which AWS IoT Core needs for MQTT on port 443 (for
    /// networks that block 8883). Default false.
    #[serde(default)]
    pub alpn: bool,
}

fn default_reconnect_max() -> u64 {
    60_000
}
fn default_stable_after() -> u64 {
    30
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    1883
}
fn default_keepalive() -> u64 {
    60
}
fn default_prefix() -> String {
    "acceso".into()
}
fn default_reconnect() -> u64 {
    2000
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            host: default_host(),
            port: default_port(),
            keepalive_s: default_keepalive(),
            topic_prefix: default_prefix(),
            reconnect_ms: default_reconnect(),
            reconnect_max_ms: default_reconnect_max(),
            stable_after_s: default_stable_after(),
            tls: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
            alpn: false,
        }
    }
}

/// `[reader]`: the card reader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderConfig {
    /// `mfrc522` (an MFRC522 on the SPI bus), `sim` (the MFRC522 simulator, driven by
    /// `acceso sim`) or `none`. Default `mfrc522`.
    #[serde(default)]
    pub backend: ReaderBackend,
    /// The spidev device of the MFRC522. Default `/dev/spidev0.0` (SPI0, CE0).
    #[serde(default = "default_spi_device")]
    pub spi_device: PathBuf,
    /// SPI clock in Hz, 10000 to 10000000 (the MFRC522's maximum). Default 1000000.
    #[serde(default = "default_spi_hz")]
    pub spi_hz: u32,
    /// SPI mode, 0 to 3. The MFRC522 uses mode 0. Default 0.
    #[serde(default)]
    pub spi_mode: u8,
    /// How often the reader is polled, in milliseconds, 5 to 1000. Default 20.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// A card left in the field counts as a new tap after this many milliseconds; 0 = never
    /// (it must leave first), otherwise at least 1000. Default 0.
    #[serde(default)]
    pub rearm_ms: u64,
    /// Longest time one exchange with the chip may take before the reader counts as failed
    /// and is re-initialised, in milliseconds, 10 to 5000. Default 100.
    #[serde(default = "default_exchange_ms")]
    pub exchange_timeout_ms: u64,
}

fn default_poll_ms() -> u64 {
    20
}
fn default_spi_device() -> PathBuf {
    PathBuf::from("/dev/spidev0.0")
}
fn default_spi_hz() -> u32 {
    1_000_000
}
fn default_exchange_ms() -> u64 {
    100
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            backend: ReaderBackend::default(),
            spi_device: default_spi_device(),
            spi_hz: default_spi_hz(),
            spi_mode: 0,
            poll_ms: default_poll_ms(),
            rearm_ms: 0,
            exchange_timeout_ms: default_exchange_ms(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReaderBackend {
    #[default]
    Mfrc522,
    Sim,
    None,
}

/// `[relay]`: the lock relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// `gpio` (a relay board on a GPIO line) or `sim` (records every level change).
    /// Default `gpio`.
    #[serde(default)]
    pub backend: RelayBackend,
    /// The relay's control line, a BCM GPIO number 0 to 27. Default 17 (header pin 11).
    #[serde(default = "default_relay_pin")]
    pub pin: u8,
    /// The relay board switches on a low input (most opto-isolated boards). Default false.
    #[serde(default)]
    pub active_low: bool,
}

fn default_relay_pin() -> u8 {
    17
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            backend: RelayBackend::default(),
            pin: default_relay_pin(),
            active_low: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayBackend {
    #[default]
    Gpio,
    Sim,
}

/// `[inputs]`: the door contact and the exit button.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputsConfig {
    /// `gpio`, `sim` (set by `acceso sim`) or `none` (neither is wired). Default `none`.
    #[serde(default)]
    pub backend: InputsBackend,
    /// The door contact's BCM GPIO number (read with the internal pull-up); absent = no contact.
    #[serde(default)]
    pub door_contact_pin: Option<u8>,
    /// The line level that means the door is open: `high` (a contact closed to GND while the
    /// door is shut, the usual reed switch) or `low`. Default `high`.
    #[serde(default = "high")]
    pub door_open_level: Level,
    /// The exit button's BCM GPIO number (pull-up); absent = no exit button.
    #[serde(default)]
    pub exit_button_pin: Option<u8>,
    /// The line level that means the button is pressed: `low` (a button to GND) or `high`.
    /// Default `low`.
    #[serde(default = "low")]
    pub exit_pressed_level: Level,
    /// A change counts once the line has held its new level this long, in milliseconds,
    /// 1 to 1000. Default 30.
    #[serde(default = "default_debounce_ms")]
    pub debounce_ms: u64,
}

fn high() -> Level {
    Level::High
}
fn low() -> Level {
    Level::Low
}
fn default_debounce_ms() -> u64 {
    30
}

impl Default for InputsConfig {
    fn default() -> Self {
        InputsConfig {
            backend: InputsBackend::default(),
            door_contact_pin: None,
            door_open_level: Level::High,
            exit_button_pin: None,
            exit_pressed_level: Level::Low,
            debounce_ms: default_debounce_ms(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputsBackend {
    Gpio,
    Sim,
    #[default]
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    High,
    Low,
}

impl Level {
    pub fn is_high(self) -> bool {
        self == Level::High
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Reads, parses and validates a config file, then makes the checks that read what it
    /// names ([`Config::check_files`]): what `acceso run` and `acceso check-config` load, so a
    /// config that cannot run fails at once as a bad config (exit 2), not later in the agent.
    pub fn load_checked(path: &Path) -> Result<Config, ConfigError> {
        let config = Config::load(path)?;
        config.check_files().map_err(|e| in_file(path, e))?;
        Ok(config)
    }

    /// Parses and validates TOML text; `path` only names it in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|e| in_file(path, e))?;
        Ok(config)
    }

    /// The checks that read the files and directories the config names, beyond `validate`
    /// (which reads nothing): the pinned sync keys load (each error names its key,
    /// `sync.public_keys[0]`, and the file), and `state_dir` is a directory or can be made
    /// one (nothing on its path is a file). `acceso doctor` makes these as checks of their
    /// own, after the config's.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        self.sync.trusted_keys()?;
        // The TLS files must be readable by this user: a missing or root-only file is a
        // configuration error (exit 2, not retried), like a missing sync key.
        if self.broker.tls {
            for (key, path) in [
                ("broker.ca_file", &self.broker.ca_file),
                ("broker.cert_file", &self.broker.cert_file),
                ("broker.key_file", &self.broker.key_file),
            ] {
                if let Some(path) = path {
                    std::fs::File::open(path).map_err(|e| {
                        invalid(key, format!("cannot read {}: {e}", path.display()))
                    })?;
                }
            }
        }
        // The nearest part of the path that exists must be a directory: the state directory
        // itself, or where it will be created.
        if let Some((existing, meta)) = self
            .state_dir
            .ancestors()
            .filter(|p| !p.as_os_str().is_empty())
            .find_map(|p| std::fs::metadata(p).ok().map(|m| (p, m)))
        {
            if !meta.is_dir() {
                let what = if existing == self.state_dir {
                    format!("{} is not a directory", existing.display())
                } else {
                    format!(
                        "{} cannot be created: {} is not a directory",
                        self.state_dir.display(),
                        existing.display()
                    )
                };
                return Err(invalid("state_dir", what));
            }
        }
        Ok(())
    }

    /// A complete configuration for simulation: every key at its default, a given state dir.
    pub fn sim_defaults(state_dir: &Path) -> Config {
        Config {
            device_id: "sim-door".into(),
            state_dir: state_dir.to_path_buf(),
            log: "warn".into(),
            door: DoorConfig {
                name: "front".into(),
                unlock_ms: default_unlock_ms(),
                mode: DoorMode::Card,
                fail_safe: false,
                relock_on_close: true,
                held_open_ms: default_held_open_ms(),
                time_zone: None,
                untrusted_clock: UntrustedClock::default(),
                two_factor_ms: default_two_factor_ms(),
            },
            broker: BrokerConfig::default(),
            reader: ReaderConfig {
                backend: ReaderBackend::Sim,
                ..ReaderConfig::default()
            },
            relay: RelayConfig {
                backend: RelayBackend::Sim,
                ..RelayConfig::default()
            },
            inputs: InputsConfig {
                backend: InputsBackend::Sim,
                door_contact_pin: Some(27),
                exit_button_pin: Some(22),
                ..InputsConfig::default()
            },
            camera: CameraConfig {
                backend: CameraBackend::Sim,
                ..CameraConfig::default()
            },
            face: FaceConfig {
                models_dir: crate::face::bundled_models_dir(),
                ..FaceConfig::default()
            },
            outbox: OutboxConfig::default(),
            clock: ClockConfig::default(),
            sync: SyncConfig::default(),
        }
    }

    /// The checks serde cannot make. Called by every constructor that reads outside input.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let id_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 128
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':'))
        };
        if !id_ok(&self.device_id) {
            return Err(invalid(
                "device_id",
                format!(
                    "{:?} must be 1 to 128 letters, digits, '-', '_' or ':'",
                    self.device_id
                ),
            ));
        }
        not_empty("state_dir", &self.state_dir)?;
        not_empty("reader.spi_device", &self.reader.spi_device)?;
        for (key, file) in [
            ("broker.ca_file", &self.broker.ca_file),
            ("broker.cert_file", &self.broker.cert_file),
            ("broker.key_file", &self.broker.key_file),
        ] {
            if let Some(file) = file {
                not_empty(key, file)?;
            }
        }
        if self.door.name.trim().is_empty() || self.door.name.chars().any(char::is_control) {
            return Err(invalid(
                "door.name",
                format!("{:?} is empty or has control characters", self.door.name),
            ));
        }
        if !(200..=60_000).contains(&self.door.unlock_ms) {
            return Err(invalid(
                "door.unlock_ms",
                format!("{} is outside 200..=60000", self.door.unlock_ms),
            ));
        }
        self.camera.validate()?;
        self.face.validate()?;
        self.sync.validate()?;
        match self.door.mode {
            DoorMode::Card => {}
            DoorMode::Face | DoorMode::CardOrFace | DoorMode::CardAndFace
                if !cfg!(feature = "face") =>
            {
                return Err(invalid(
                    "door.mode",
                    "needs face recognition, which this build leaves out (built without the `face` feature); use \"card\"",
                ))
            }
            DoorMode::Face | DoorMode::CardOrFace | DoorMode::CardAndFace
                if self.camera.backend == CameraBackend::None =>
            {
                return Err(invalid(
                    "door.mode",
                    "needs a camera: set camera.backend (\"v4l2\", \"gstreamer\" or \"sim\")",
                ))
            }
            DoorMode::Face | DoorMode::CardOrFace | DoorMode::CardAndFace => {}
        }
        if let Err(e) = self.door.zone() {
            return Err(invalid("door.time_zone", e));
        }
        if !(1000..=60_000).contains(&self.door.two_factor_ms) {
            return Err(invalid(
                "door.two_factor_ms",
                format!("{} is outside 1000..=60000", self.door.two_factor_ms),
            ));
        }
        if self.broker.host.trim().is_empty() {
            return Err(invalid("broker.host", "is empty"));
        }
        if self.broker.port == 0 {
            return Err(invalid("broker.port", "must not be 0"));
        }
        if !(30..=1200).contains(&self.broker.keepalive_s) {
            return Err(invalid(
                "broker.keepalive_s",
                format!(
                    "{} is outside 30..=1200 (AWS IoT Core's range)",
                    self.broker.keepalive_s
                ),
            ));
        }
        let prefix = &self.broker.topic_prefix;
        // MQTT topic levels: no wildcards, no empty levels, and `$` is reserved (AWS: `$aws`).
        let bad_level = prefix
            .split('/')
            .any(|level| level.is_empty() || level.contains(['+', '#']));
        if bad_level || prefix.starts_with('$') || prefix.chars().any(char::is_control) {
            return Err(invalid(
                "broker.topic_prefix",
                format!(
                    "{prefix:?} must be topic levels separated by '/', none empty, without '+', '#' or a leading '$'"
                ),
            ));
        }
        if !(100..=300_000).contains(&self.broker.reconnect_ms) {
            return Err(invalid(
                "broker.reconnect_ms",
                format!("{} is outside 100..=300000", self.broker.reconnect_ms),
            ));
        }
        if self.broker.reconnect_max_ms < self.broker.reconnect_ms
            || self.broker.reconnect_max_ms > 3_600_000
        {
            return Err(invalid(
                "broker.reconnect_max_ms",
                format!(
                    "{} must be between broker.reconnect_ms ({}) and 3600000",
                    self.broker.reconnect_max_ms, self.broker.reconnect_ms
                ),
            ));
        }
        if !(1..=3600).contains(&self.broker.stable_after_s) {
            return Err(invalid(
                "broker.stable_after_s",
                format!("{} is outside 1..=3600", self.broker.stable_after_s),
            ));
        }
        if self.broker.tls {
            for (key, file) in [
                ("broker.ca_file", &self.broker.ca_file),
                ("broker.cert_file", &self.broker.cert_file),
                ("broker.key_file", &self.broker.key_file),
            ] {
                if file.is_none() {
                    return Err(invalid(key, "is required with broker.tls = true"));
                }
            }
        } else if self.broker.alpn {
            return Err(invalid("broker.alpn", "needs broker.tls = true"));
        }
        if !(100..=10_000_000).contains(&self.outbox.max_events) {
            return Err(invalid(
                "outbox.max_events",
                format!("{} is outside 100..=10000000", self.outbox.max_events),
            ));
        }
        if !(5..=1000).contains(&self.reader.poll_ms) {
            return Err(invalid(
                "reader.poll_ms",
                format!("{} is outside 5..=1000", self.reader.poll_ms),
            ));
        }
        if !(10_000..=10_000_000).contains(&self.reader.spi_hz) {
            return Err(invalid(
                "reader.spi_hz",
                format!("{} is outside 10000..=10000000", self.reader.spi_hz),
            ));
        }
        if self.reader.spi_mode > 3 {
            return Err(invalid(
                "reader.spi_mode",
                format!("{} is not an SPI mode (0 to 3)", self.reader.spi_mode),
            ));
        }
        if !(10..=5000).contains(&self.reader.exchange_timeout_ms) {
            return Err(invalid(
                "reader.exchange_timeout_ms",
                format!("{} is outside 10..=5000", self.reader.exchange_timeout_ms),
            ));
        }
        if self.reader.rearm_ms != 0 && self.reader.rearm_ms < 1000 {
            return Err(invalid(
                "reader.rearm_ms",
                format!(
                    "{} must be 0 (never) or at least 1000",
                    self.reader.rearm_ms
                ),
            ));
        }
        if self.door.held_open_ms != 0 && self.door.held_open_ms < 1000 {
            return Err(invalid(
                "door.held_open_ms",
                format!(
                    "{} must be 0 (never) or at least 1000",
                    self.door.held_open_ms
                ),
            ));
        }
        let pins = [
            ("relay.pin", Some(self.relay.pin)),
            ("inputs.door_contact_pin", self.inputs.door_contact_pin),
            ("inputs.exit_button_pin", self.inputs.exit_button_pin),
        ];
        for (i, &(key, pin)) in pins.iter().enumerate() {
            let Some(pin) = pin else { continue };
            if pin > 27 {
                return Err(invalid(
                    key,
                    format!("GPIO {pin} is not on the header (BCM 0 to 27)"),
                ));
            }
            if let Some((other, _)) = pins[..i].iter().find(|(_, p)| *p == Some(pin)) {
                return Err(invalid(key, format!("GPIO {pin} is already {other}")));
            }
        }
        if self.inputs.backend == InputsBackend::Gpio
            && self.inputs.door_contact_pin.is_none()
            && self.inputs.exit_button_pin.is_none()
        {
            return Err(invalid(
                "inputs.backend",
                "\"gpio\" needs inputs.door_contact_pin or inputs.exit_button_pin (or use \"none\")",
            ));
        }
        if !(1..=1000).contains(&self.inputs.debounce_ms) {
            return Err(invalid(
                "inputs.debounce_ms",
                format!("{} is outside 1..=1000", self.inputs.debounce_ms),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            return Err(invalid("log", format!("{:?}: {e}", self.log)));
        }
        // A bare word is a target name to the filter ("warning" would log only a target of
        // that name, which is nothing): only levels stand alone here.
        const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
        for directive in self.log.split(',').map(str::trim) {
            let bare = !directive.contains('=') && !directive.contains('[');
            if bare && !LEVELS.iter().any(|l| directive.eq_ignore_ascii_case(l)) {
                return Err(invalid(
                    "log",
                    format!(
                        "{directive:?} is not a level (trace, debug, info, warn, error, off) nor target=level: it would silence the agent"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The database file inside the state directory.
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("acceso.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, String> {
        Config::from_toml(text, Path::new("test.toml")).map_err(|e| e.to_string())
    }

    const MINIMAL: &str = "device_id = \"door-1\"\n[door]\nname = \"front\"\n";

    #[test]
    fn minimal_config_takes_defaults() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.door.unlock_ms, 3000);
        assert_eq!(c.broker.port, 1883);
        assert_eq!(c.broker.topic_prefix, "acceso");
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/acceso"));
        assert_eq!(c.db_path(), PathBuf::from("/var/lib/acceso/acceso.db"));
        assert!(c.clock.require_sync);
    }

    #[test]
    fn clock_section_is_read_and_checked() {
        let c = load(&format!("{MINIMAL}[clock]\nrequire_sync = false\n")).unwrap();
        assert!(!c.clock.require_sync);
        let err = load(&format!("{MINIMAL}[clock]\nrequire_synch = false\n")).unwrap_err();
        assert!(err.contains("require_synch"), "{err}");
        let err = load(&format!("{MINIMAL}[clock]\nrequire_sync = \"no\"\n")).unwrap_err();
        assert!(err.contains("require_sync"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = load(&format!("{MINIMAL}unlock_time = 3\n")).unwrap_err();
        assert!(err.contains("unlock_time"), "{err}");
        let err = load(&format!("{MINIMAL}[broker]\nhots = \"x\"\n")).unwrap_err();
        assert!(err.contains("hots"), "{err}");
    }

    #[test]
    fn missing_and_wrong_typed_keys_are_named() {
        let err = load("[door]\nname = \"front\"\n").unwrap_err();
        assert!(err.contains("device_id"), "{err}");
        let err =
            load("device_id = \"d\"\n[door]\nname = \"f\"\nunlock_ms = \"3s\"\n").unwrap_err();
        assert!(err.contains("unlock_ms"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        let cases = [
            ("[door]\nname = \"f\"\nunlock_ms = 50\n", "door.unlock_ms"),
            ("[door]\nname = \"f\"\nmode = \"face\"\n", "door.mode"),
            (
                "[door]\nname = \"f\"\nmode = \"card_and_face\"\n",
                "door.mode",
            ),
            (
                "[door]\nname = \"f\"\ntime_zone = \"Mars/Olympus_Mons\"\n",
                "door.time_zone",
            ),
            (
                "[door]\nname = \"f\"\ntwo_factor_ms = 10\n",
                "door.two_factor_ms",
            ),
            (
                "[door]\nname = \"f\"\nuntrusted_clock = \"sometimes\"\n",
                "untrusted_clock",
            ),
            (
                "[door]\nname = \"f\"\n[face]\nthreshold = 0.1\n",
                "face.threshold",
            ),
            (
                "[door]\nname = \"f\"\n[face]\nworking_size = 650\n",
                "face.working_size",
            ),
            ("[door]\nname = \"f\"\n[face]\nframes = 0\n", "face.frames"),
            (
                "[door]\nname = \"f\"\n[camera]\nbackend = \"gstreamer\"\n",
                "camera.pipeline",
            ),
            ("[door]\nname = \"\"\n", "door.name"),
            (
                "[door]\nname = \"f\"\n[broker]\nkeepalive_s = 5\n",
                "broker.keepalive_s",
            ),
            (
                "[door]\nname = \"f\"\n[broker]\ntopic_prefix = \"a/#\"\n",
                "broker.topic_prefix",
            ),
            (
                "[door]\nname = \"f\"\n[broker]\ntopic_prefix = \"a//b\"\n",
                "broker.topic_prefix",
            ),
            (
                "[door]\nname = \"f\"\n[broker]\ntopic_prefix = \"a/\"\n",
                "broker.topic_prefix",
            ),
            (
                "[door]\nname = \"f\"\n[broker]\ntopic_prefix = \"$aws/x\"\n",
                "broker.topic_prefix",
            ),
            ("[door]\nname = \"f\\u0000\"\n", "door.name"),
            (
                "[door]\nname = \"f\"\n[reader]\npoll_ms = 0\n",
                "reader.poll_ms",
            ),
            (
                "[door]\nname = \"f\"\n[reader]\nspi_hz = 20000000\n",
                "reader.spi_hz",
            ),
            (
                "[door]\nname = \"f\"\n[reader]\nspi_mode = 4\n",
                "reader.spi_mode",
            ),
            (
                "[door]\nname = \"f\"\n[reader]\nrearm_ms = 10\n",
                "reader.rearm_ms",
            ),
            (
                "[door]\nname = \"f\"\n[reader]\nexchange_timeout_ms = 0\n",
                "reader.exchange_timeout_ms",
            ),
        ];
        for (tail, key) in cases {
            let err = load(&format!("device_id = \"d\"\n{tail}")).unwrap_err();
            assert!(err.contains(key), "{tail}: {err}");
        }
        let err = load("device_id = \"a/b\"\n[door]\nname = \"f\"\n").unwrap_err();
        assert!(err.contains("device_id"), "{err}");
    }

    #[test]
    fn empty_paths_are_named_by_their_key() {
        for (tail, key) in [
            ("state_dir = \"\"\n[door]\nname = \"f\"\n", "`state_dir`"),
            (
                "[door]\nname = \"f\"\n[reader]\nspi_device = \"\"\n",
                "`reader.spi_device`",
            ),
            (
                "[door]\nname = \"f\"\n[camera]\ndevice = \"\"\n",
                "`camera.device`",
            ),
            (
                "[door]\nname = \"f\"\n[face]\nmodels_dir = \"\"\n",
                "`face.models_dir`",
            ),
            (
                "[door]\nname = \"f\"\n[broker]\ntls = true\nca_file = \"\"\ncert_file = \"c\"\nkey_file = \"k\"\n",
                "`broker.ca_file`",
            ),
        ] {
            let err = load(&format!("device_id = \"d\"\n{tail}")).unwrap_err();
            assert!(err.contains(key) && err.contains("is empty"), "{tail}: {err}");
        }
    }

    #[test]
    fn check_files_loads_the_pinned_keys_and_needs_a_directory_for_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::sim_defaults(&dir.path().join("state"));
        c.check_files().unwrap();
        let good = dir.path().join("good.pem");
        std::fs::write(
            &good,
            acceso_protocol::SigningKey::generate()
                .unwrap()
                .public_key()
                .to_pem(),
        )
        .unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a key").unwrap();
        c.sync.public_keys = vec![good.clone()];
        c.check_files().unwrap();
        c.sync.public_keys = vec![good.clone(), junk.clone()];
        let err = c.check_files().unwrap_err().to_string();
        assert!(
            err.starts_with("config key `sync.public_keys[1]`: ")
                && err.contains(&junk.display().to_string()),
            "{err}"
        );
        c.sync.public_keys = vec![dir.path().join("missing.pem")];
        let err = c.check_files().unwrap_err().to_string();
        assert!(
            err.contains("`sync.public_keys[0]`: cannot read") && err.contains("missing.pem"),
            "{err}"
        );
        c.sync.public_keys = vec![PathBuf::new()];
        let err = c.check_files().unwrap_err().to_string();
        assert!(err.contains("`sync.public_keys[0]`: is empty"), "{err}");
        c.sync.public_keys = vec![];
        // A file where the state directory should be, or on the way to it.
        c.state_dir = good.clone();
        let err = c.check_files().unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "config key `state_dir`: {} is not a directory",
                good.display()
            )
        );
        c.state_dir = good.join("state");
        let err = c.check_files().unwrap_err().to_string();
        assert!(
            err.contains(&format!("{} is not a directory", good.display())),
            "{err}"
        );
        // Not there yet, under a directory: created at start.
        c.state_dir = dir.path().join("a/b/c");
        c.check_files().unwrap();
    }

    #[test]
    fn example_file_documents_the_real_defaults() {
        let example = load(include_str!("../acceso.example.toml")).unwrap();
        let minimal = load("device_id = \"door-01\"\n[door]\nname = \"front\"\n").unwrap();
        assert_eq!(example, minimal);
    }

    #[test]
    fn sim_defaults_are_valid_and_round_trip() {
        let c = Config::sim_defaults(Path::new("/tmp/x"));
        c.validate().unwrap();
        let text = toml::to_string(&c).unwrap();
        assert_eq!(load(&text).unwrap(), c);
    }
}
