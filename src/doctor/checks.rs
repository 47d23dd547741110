//! The hardware, clock, model and database checks of `acceso doctor`.

use std::path::Path;
use std::time::{Duration, Instant};

use embedded_hal::spi::{Operation, SpiDevice};

use super::Check;
use crate::clock::{judge, known_good, Distrust, OsTime, TimeSource};
use crate::config::{CameraBackend, Config, DoorMode, InputsBackend, ReaderBackend, RelayBackend};
use crate::hw::mfrc522::{KNOWN_VERSIONS, VERSION};

/// The cloud's pinned signing keys: without one, unsigned user updates would be accepted.
pub fn sync_keys(config: &Config) -> Check {
    let fix = "get the cloud's public signing key (`aws kms get-public-key --key-id ... --query PublicKey --output text | base64 -d > key.der`, then `openssl ec -pubin -inform DER -in key.der -out /etc/acceso/certs/sync-signing-key.pem`) and list it in sync.public_keys";
    let paths = &config.sync.public_keys;
    if paths.is_empty() {
        return Check::failed(
            "sync keys",
            "sync.public_keys is empty: unsigned or forged user updates would be accepted",
            fix,
        );
    }
    match config.sync.trusted_keys() {
        Ok(_) => Check::ok(
            "sync keys",
            format!(
                "{} pinned ECDSA P-256 key(s): {}",
                paths.len(),
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Err(e) => Check::failed("sync keys", e.to_string(), fix),
    }
}

/// The clock, judged as the agent judges it (`src/clock.rs`).
pub fn clock(config: &Config) -> Check {
    let os = OsTime::default();
    let file = known_good::path_in(&config.state_dir);
    let (known, note) = match known_good::read(&file) {
        Ok(k) => (k, String::new()),
        Err(e) => (None, format!(" ({e})")),
    };
    let now = os.wall();
    let synced = os.synchronised();
    match judge(now, synced, config.clock.require_sync, known) {
        Ok(()) => Check::ok(
            "clock",
            format!(
                "{now} trusted ({}){note}",
                if synced {
                    "synchronised"
                } else {
                    "clock.require_sync = false"
                }
            ),
        ),
        Err(why) => {
            let fix = match why {
                Distrust::NotSynchronised => "enable network time (`timedatectl set-ntp true`; check `timedatectl timesync-status` and that UDP port 123 is open), or set clock.require_sync = false at a site with no network time".to_string(),
                Distrust::BehindKnownGood { .. } => format!(
                    "set the clock (`timedatectl set-time` or NTP); if {} itself is wrong (written by a clock that was ahead), remove it",
                    file.display()
                ),
                Distrust::BeforeRelease { .. } => "set the clock: enable network time (`timedatectl set-ntp true`) or fit an RTC".into(),
            };
            Check::failed(
                "clock",
                format!("{why}: users with a schedule or validity window are denied"),
                fix,
            )
        }
    }
}

/// The version register of an MFRC522 on `spi`: `Ok` with a known version, or why not.
pub fn mfrc522_version<S: SpiDevice>(spi: &mut S) -> Result<u8, String> {
    let mut buf = [0x80 | (VERSION << 1), 0];
    spi.transaction(&mut [Operation::TransferInPlace(&mut buf)])
        .map_err(|e| format!("SPI transfer failed: {e:?}"))?;
    let v = buf[1];
    if KNOWN_VERSIONS.contains(&v) {
        Ok(v)
    } else {
        Err(match v {
            0x00 | 0xFF => format!("version register reads 0x{v:02X}: no chip answers"),
            _ => format!(
                "version register reads 0x{v:02X}: not an MFRC522 (expected 0x91, 0x92 or 0x88)"
            ),
        })
    }
}

fn version_check(result: Result<u8, String>, what: &str) -> Check {
    match result {
        Ok(v) => Check::ok("mfrc522", format!("{what}: version 0x{v:02X}")),
        Err(e) => Check::failed(
            "mfrc522",
            format!("{what}: {e}"),
            "check the wiring (SDA->GPIO8 pin 24, SCK->GPIO11 pin 23, MOSI->GPIO10 pin 19, MISO->GPIO9 pin 21, RST high, 3.3 V not 5 V, GND) and reader.spi_device (CE0 = spidev0.0, CE1 = spidev0.1)",
        ),
    }
}

/// The SPI device, and the MFRC522's version register on it.
pub fn reader(config: &Config) -> Vec<Check> {
    let r = &config.reader;
    match r.backend {
        ReaderBackend::None => vec![
            Check::skipped("spi device", "reader.backend = \"none\": no card reader"),
            Check::skipped("mfrc522", "reader.backend = \"none\": no card reader"),
        ],
        ReaderBackend::Sim => {
            let chip = crate::sim::mfrc522::SimChip::new();
            vec![
                Check::skipped("spi device", "reader.backend = \"sim\": no SPI device used"),
                version_check(mfrc522_version(&mut chip.spi()), "simulated MFRC522"),
            ]
        }
        ReaderBackend::Mfrc522 => {
            let path = r.spi_device.display().to_string();
            match crate::hw::spidev::open(&r.spi_device, r.spi_mode, r.spi_hz) {
                Ok(mut spi) => vec![
                    Check::ok(
                        "spi device",
                        format!("{path} opened (mode {}, {} Hz)", r.spi_mode, r.spi_hz),
                    ),
                    version_check(mfrc522_version(&mut spi), &path),
                ],
                Err(e) => vec![
                    Check::failed(
                        "spi device",
                        e.to_string(),
                        format!(
                            "enable SPI (`raspi-config nonint do_spi 0`, or dtparam=spi=on in /boot/firmware/config.txt, then reboot); check that {path} exists and is group spi, and that user acceso is in group spi (`id acceso`)"
                        ),
                    ),
                    Check::skipped("mfrc522", "not checked: the SPI device must open first"),
                ],
            }
        }
    }
}

/// The GPIO controller and the configured pins, without touching any line.
pub fn gpio(config: &Config) -> Check {
    let mut pins = Vec::new();
    if config.relay.backend == RelayBackend::Gpio {
        pins.push(config.relay.pin);
    }
    if config.inputs.backend == InputsBackend::Gpio {
        pins.extend(config.inputs.door_contact_pin);
        pins.extend(config.inputs.exit_button_pin);
    }
    if pins.is_empty() {
        return Check::skipped(
            "gpio",
            "relay and inputs are simulated or absent: no GPIO used",
        );
    }
    let list = pins
        .iter()
        .map(|p| format!("BCM {p}"))
        .collect::<Vec<_>>()
        .join(", ");
    match crate::hw::gpio::probe(&pins) {
        Ok(model) => Check::ok("gpio", format!("{model}: {list} available (not driven)")),
        Err(e) => Check::failed(
            "gpio",
            e,
            "run on a Raspberry Pi; check that /dev/gpiomem (or /dev/gpiomem0 on a Pi 5) and /dev/gpiochip* are group gpio and user acceso is in group gpio (`id acceso`); BCM numbers are 0..=27",
        ),
    }
}

/// The camera opens and gives a frame within `limit`.
pub fn camera(config: &Config, limit: Duration) -> Check {
    if config.door.mode == DoorMode::Card {
        return Check::skipped("camera", "door.mode = \"card\": no camera needed");
    }
    let c = &config.camera;
    let what = match c.backend {
        CameraBackend::None => {
            return Check::failed(
                "camera",
                "camera.backend = \"none\", but this door's mode needs faces",
                "set camera.backend (\"v4l2\" for a USB camera, \"gstreamer\" with camera.pipeline for a Pi camera) or door.mode = \"card\"",
            )
        }
        CameraBackend::Sim => {
            return Check::skipped("camera", "camera.backend = \"sim\": no camera used")
        }
        CameraBackend::V4l2 => format!("V4L2 device {}", c.device.display()),
        CameraBackend::Gstreamer => format!(
            "GStreamer pipeline \"{}\"",
            c.pipeline.as_deref().unwrap_or("")
        ),
    };
    let fix = match c.backend {
        CameraBackend::V4l2 => format!(
            "check the cable and `v4l2-ctl --list-devices`; {} must exist, be group video, and user acceso be in group video; a running acceso holds the camera (`systemctl stop acceso` before this check)",
            c.device.display()
        ),
        _ => "check the camera cable and `libcamera-hello --list-cameras` (or `rpicam-hello`); test the pipeline with `gst-launch-1.0 ... ! fakesink`; it must end in appsink".into(),
    };
    if c.backend == CameraBackend::V4l2 && !c.device.exists() {
        return Check::failed("camera", format!("{what}: no such device"), fix);
    }
    let config = c.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    // A thread of its own: an OpenCV read can block with no timeout of its own.
    let spawned = std::thread::Builder::new()
        .name("doctor-camera".into())
        .spawn(move || {
            let mut camera = crate::face::open_camera(&config);
            let until = Instant::now() + limit;
            let mut last = String::from("no frame");
            while Instant::now() < until {
                match camera.next_frame() {
                    Ok(Some(frame)) => {
                        let _ = tx.send(Ok(frame));
                        return;
                    }
                    Ok(None) => {}
                    Err(e) => last = e.to_string(),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = tx.send(Err(last));
        });
    if let Err(e) = spawned {
        return Check::failed("camera", format!("cannot start a thread: {e}"), fix);
    }
    match rx.recv_timeout(limit + Duration::from_secs(5)) {
        Ok(Ok(frame)) => {
            let size = match &frame {
                crate::hw::Frame::Bgr { width, height, .. } => format!("{width}x{height}"),
                crate::hw::Frame::Encoded { bytes, .. } => format!("{} bytes encoded", bytes.len()),
            };
            Check::ok("camera", format!("{what}: a frame of {size}"))
        }
        Ok(Err(e)) => Check::failed(
            "camera",
            format!("{what}: no frame within {} s: {e}", limit.as_secs()),
            fix,
        ),
        Err(_) => Check::failed(
            "camera",
            format!(
                "{what}: a read did not return within {} s",
                limit.as_secs() + 5
            ),
            fix,
        ),
    }
}

/// The face models' SHA-256.
pub fn models(config: &Config) -> Check {
    if config.door.mode == DoorMode::Card {
        return Check::skipped("face models", "door.mode = \"card\": no face models needed");
    }
    models_in(&config.face.models_dir)
}

#[cfg(feature = "face")]
fn models_in(dir: &Path) -> Check {
    match crate::face::engine::models::ModelFiles::in_dir(dir).verify() {
        Ok(()) => Check::ok(
            "face models",
            format!("{}: YuNet and SFace match their SHA-256", dir.display()),
        ),
        Err(e) => Check::failed(
            "face models",
            e.to_string(),
            format!(
                "reinstall the package (`apt-get install --reinstall acceso`) or copy the files of the repository's models/ into {} (face.models_dir)",
                dir.display()
            ),
        ),
    }
}

#[cfg(not(feature = "face"))]
fn models_in(_: &Path) -> Check {
    Check::failed(
        "face models",
        "this build has no face recognition (built without the `face` feature)",
        "install the package built with faces, or set door.mode = \"card\"",
    )
}

/// Whether this process may write `path` (for a directory: create files in it), as the
/// kernel decides it for this user: the agent's database, its WAL and lock files.
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path; access(2) only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// The agent's database: its directory and file writable by this user, and
/// `PRAGMA integrity_check` on the file, opened read-only.
pub fn database(config: &Config) -> Check {
    let path = config.db_path();
    let dir = &config.state_dir;
    let owner_fix = format!(
        "make it writable by the user the agent runs as: `chown -R acceso:acceso {}` (the package's service user)",
        dir.display()
    );
    if !dir.exists() {
        return Check::ok(
            "database",
            format!(
                "state directory {} does not exist yet: the agent creates it at the first start (under systemd, StateDirectory= does)",
                dir.display()
            ),
        );
    }
    if !dir.is_dir() {
        return Check::failed(
            "database",
            format!("state_dir {} is not a directory", dir.display()),
            "set state_dir to a directory (the package's is /var/lib/acceso)",
        );
    }
    if !writable(dir) {
        return Check::failed(
            "database",
            format!(
                "state directory {}: this user cannot create files in it (the database, its journal, the lock)",
                dir.display()
            ),
            owner_fix,
        );
    }
    if !path.exists() {
        return Check::ok(
            "database",
            format!(
                "{} does not exist yet: created at the first start",
                path.display()
            ),
        );
    }
    if !writable(&path) {
        return Check::failed(
            "database",
            format!(
                "{}: read-only for this user: the agent would refuse to start (it could not keep a single event)",
                path.display()
            ),
            owner_fix,
        );
    }
    let fix = format!(
        "stop acceso (`systemctl stop acceso`), move {} aside (keep it for a look), start acceso: it starts with an empty database and users return with the next update or sync; queued events in the old file are lost",
        path.display()
    );
    match integrity(&path) {
        Ok((version, users, queued)) => Check::ok(
            "database",
            format!(
                "{}: writable, integrity ok, schema {version}, {users} users, {queued} events queued",
                path.display()
            ),
        ),
        Err(e) => Check::failed("database", format!("{}: {e}", path.display()), fix),
    }
}

fn integrity(path: &Path) -> Result<(i64, i64, i64), String> {
    use rusqlite::{Connection, OpenFlags};
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let mut stmt = conn
        .prepare("PRAGMA integrity_check")
        .map_err(|e| e.to_string())?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| e.to_string())?;
    if rows != ["ok"] {
        let mut text = rows.into_iter().take(3).collect::<Vec<_>>().join("; ");
        text.insert_str(0, "integrity check: ");
        return Err(text);
    }
    let count = |sql: &str| -> Result<i64, String> {
        conn.query_row(sql, [], |r| r.get(0))
            .map_err(|e| e.to_string())
    };
    let version = count("PRAGMA user_version")?;
    let users = count("SELECT count(*) FROM users").unwrap_or(0);
    let queued = count("SELECT count(*) FROM outbox").unwrap_or(0);
    Ok((version, users, queued))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Outcome;

    #[test]
    fn the_version_register_of_a_live_chip_passes_and_of_a_silent_one_fails() {
        let chip = crate::sim::mfrc522::SimChip::new();
        assert_eq!(mfrc522_version(&mut chip.spi()), Ok(0x92));
        chip.set_silent(Some(0x00));
        let check = version_check(mfrc522_version(&mut chip.spi()), "/dev/spidev0.0");
        assert_eq!(check.outcome, Outcome::Failed);
        assert!(
            check.detail.contains("reads 0x00: no chip answers"),
            "{check:?}"
        );
        assert!(check.fix.unwrap().contains("wiring"));
        chip.set_silent(Some(0x5A));
        let e = mfrc522_version(&mut chip.spi()).unwrap_err();
        assert!(e.contains("not an MFRC522"), "{e}");
    }
}
