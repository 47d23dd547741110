//! The MFRC522 card reader: the `mfrc522` driver crate over any embedded-hal `SpiDevice` (the
//! Pi's spidev at the door, the register-level simulator in tests and `acceso sim`).
//!
//! The driver has no host-side timeout: a chip that stops answering makes it spin forever on
//! an interrupt register. Every SPI transfer therefore goes through a seam that enforces a
//! deadline per exchange, counts transfers, and verifies the BCC of anticollision answers
//! (driver 0.8 computes its own BCC and ignores the card's). The reader re-initialises the
//! chip after a deadline, a reset (brown-out, ESD) or a wrong version register.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use acceso_protocol::CardUid;
use embedded_hal::spi::{ErrorKind, ErrorType, Operation, SpiDevice};
use mfrc522::comm::blocking::spi::{DummyDelay, SpiInterface};
use mfrc522::{Initialized, Mfrc522};

use super::{CardReader, HwError, Seen};

/// SPI address bytes: `(register << 1)`, with bit 7 set for reads.
const FIFO_WRITE: u8 = 0x09 << 1;
const FIFO_READ: u8 = 0x80 | (0x09 << 1);
const ERROR_READ: u8 = 0x80 | (0x06 << 1);
const TX_CONTROL: u8 = 0x14;
/// VersionReg.
pub const VERSION: u8 = 0x37;
/// ErrorReg CollErr.
const COLL_ERR: u8 = 0x08;
/// Version register values of MFRC522 v1.0 and v2.0, and of the FM17522 clone on many boards.
pub const KNOWN_VERSIONS: [u8; 3] = [0x91, 0x92, 0x88];
/// How often the version register is checked while running.
const VERSION_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Why an SPI exchange through the seam failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeamError {
    /// The exchange did not finish within its deadline: the chip is not answering sensibly.
    Deadline,
    /// An anticollision answer whose BCC does not match its four UID bytes.
    Bcc { got: u8, want: u8 },
    /// The SPI bus itself failed.
    Bus(String),
}

impl embedded_hal::spi::Error for SeamError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

struct SeamState<S> {
    spi: S,
    deadline: Option<Instant>,
    transfers: u64,
    /// The last frame written to the FIFO was a full anticollision request (NVB 0x20), and no
    /// collision was reported since: the next 5-byte FIFO read is CLn + BCC.
    anticollision: bool,
}

/// The SPI device as the driver sees it. Cloned: the reader keeps a handle for its own
/// register checks while the driver owns another.
pub struct Seam<S>(Arc<Mutex<SeamState<S>>>);

impl<S> Clone for Seam<S> {
    fn clone(&self) -> Self {
        Seam(self.0.clone())
    }
}

impl<S: SpiDevice> Seam<S> {
    pub fn new(spi: S) -> Seam<S> {
        Seam(Arc::new(Mutex::new(SeamState {
            spi,
            deadline: None,
            transfers: 0,
            anticollision: false,
        })))
    }

    fn state(&self) -> MutexGuard<'_, SeamState<S>> {
        // Only the reader thread uses the seam; a poisoned lock still holds a usable device.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every transfer from now until `within` has passed succeeds; later ones fail.
    fn arm(&self, within: Duration) {
        self.state().deadline = Some(Instant::now() + within);
    }

    /// SPI transactions so far.
    pub fn transfers(&self) -> u64 {
        self.state().transfers
    }

    /// Reads one register directly (for health checks the driver does not offer).
    fn read_register(&mut self, reg: u8) -> Result<u8, SeamError> {
        let mut buf = [0x80 | (reg << 1), 0];
        self.transaction(&mut [Operation::TransferInPlace(&mut buf)])?;
        Ok(buf[1])
    }
}

impl<S: SpiDevice> ErrorType for Seam<S> {
    type Error = SeamError;
}

impl<S: SpiDevice> SpiDevice for Seam<S> {
    fn transaction(&mut self, ops: &mut [Operation<'_, u8>]) -> Result<(), SeamError> {
        let mut state = self.state();
        if state.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(SeamError::Deadline);
        }
        state.transfers += 1;
        let sent = outgoing(ops);
        state
            .spi
            .transaction(ops)
            .map_err(|e| SeamError::Bus(format!("{e:?}")))?;
        let Some((&address, data)) = sent.split_first() else {
            return Ok(());
        };
        match address {
            FIFO_WRITE => {
                state.anticollision = data.len() == 2 && matches!(data, [0x93 | 0x95 | 0x97, 0x20]);
            }
            ERROR_READ if incoming(ops).get(1).is_some_and(|e| e & COLL_ERR != 0) => {
                state.anticollision = false;
            }
            FIFO_READ if state.anticollision => {
                state.anticollision = false;
                let got = incoming(ops);
                // read_many clocks the address first, then one byte per FIFO entry.
                let answer = &got[got.len().saturating_sub(5)..];
                if got.len() >= 6 {
                    let want = answer[..4].iter().fold(0, |a, b| a ^ b);
                    if answer[4] != want {
                        return Err(SeamError::Bcc {
                            got: answer[4],
                            want,
                        });
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The bytes clocked out, in order, across the operations of one transaction.
fn outgoing(ops: &[Operation<'_, u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Operation::Write(w) | Operation::Transfer(_, w) => out.extend_from_slice(w),
            Operation::TransferInPlace(b) => out.extend_from_slice(b),
            Operation::Read(r) => out.extend(std::iter::repeat_n(0, r.len())),
            Operation::DelayNs(_) => {}
        }
    }
    out
}

/// The bytes clocked in, in order, across the operations of one transaction.
fn incoming(ops: &[Operation<'_, u8>]) -> Vec<u8> {
    let mut got = Vec::new();
    for op in ops {
        match op {
            Operation::Write(w) => got.extend(std::iter::repeat_n(0, w.len())),
            Operation::Transfer(r, _) | Operation::Read(r) => got.extend_from_slice(r),
            Operation::TransferInPlace(b) => got.extend_from_slice(b),
            Operation::DelayNs(_) => {}
        }
    }
    got
}

type Driver<S> = Mfrc522<SpiInterface<Seam<S>, DummyDelay>, Initialized>;

/// An MFRC522 behind the seam: initialised on first use and again after any chip trouble.
pub struct Mfrc522Reader<S: SpiDevice> {
    seam: Seam<S>,
    driver: Option<Driver<S>>,
    exchange: Duration,
    version_checked: Option<Instant>,
}

impl<S: SpiDevice + Send + 'static> Mfrc522Reader<S> {
    /// A reader on `spi`; every exchange with the chip must finish within `exchange`.
    pub fn new(spi: S, exchange: Duration) -> Mfrc522Reader<S> {
        Mfrc522Reader {
            seam: Seam::new(spi),
            driver: None,
            exchange,
            version_checked: None,
        }
    }

    /// The seam, for counting transfers.
    pub fn seam(&self) -> Seam<S> {
        self.seam.clone()
    }

    fn down(&mut self, why: String) -> HwError {
        self.driver = None;
        self.version_checked = None;
        HwError::Reader(why)
    }

    fn check_version(&mut self) -> Result<(), HwError> {
        let version = self.seam.read_register(VERSION).map_err(|e| {
            self.down(format!(
                "cannot read the version register: {}",
                seam_text(&e)
            ))
        })?;
        if !KNOWN_VERSIONS.contains(&version) {
            let hint = match version {
                0x00 | 0xFF => {
                    "no chip answers: check wiring, power (3.3 V) and that SPI is enabled"
                }
                _ => "not an MFRC522",
            };
            return Err(self.down(format!("version register reads 0x{version:02X}: {hint}")));
        }
        self.version_checked = Some(Instant::now());
        Ok(())
    }

    fn ensure_up(&mut self) -> Result<(), HwError> {
        if self.driver.is_some() {
            return Ok(());
        }
        self.seam.arm(self.exchange);
        let driver = Mfrc522::new(SpiInterface::new(self.seam.clone()))
            .init()
            .map_err(|e| {
                self.down(format!(
                    "cannot initialise the MFRC522: {}",
                    driver_text(&e)
                ))
            })?;
        self.driver = Some(driver);
        self.check_version()
    }

    /// After a brown-out the chip is back at power-on values: antenna off, and no card will
    /// ever answer. A bus that reads all zeros or all ones means nothing answers at all.
    fn check_alive(&mut self) -> Result<(), HwError> {
        let tx = self
            .seam
            .read_register(TX_CONTROL)
            .map_err(|e| self.down(format!("cannot read the chip: {}", seam_text(&e))))?;
        match tx {
            0x00 | 0xFF => Err(self.down(format!(
                "the MFRC522 stopped answering (reads 0x{tx:02X}); re-initialising"
            ))),
            t if t & 0x03 != 0x03 => Err(self.down(
                "the MFRC522 reset itself (antenna off, registers at power-on values); re-initialising"
                    .into(),
            )),
            _ => Ok(()),
        }
    }
}

impl<S: SpiDevice + Send + 'static> CardReader for Mfrc522Reader<S> {
    fn poll(&mut self) -> Result<Seen, HwError> {
        self.ensure_up()?;
        self.seam.arm(self.exchange);
        self.check_alive()?;
        if self
            .version_checked
            .is_none_or(|t| t.elapsed() >= VERSION_CHECK_EVERY)
        {
            self.check_version()?;
        }
        let Some(driver) = self.driver.as_mut() else {
            return Err(HwError::Reader("reader not initialised".into()));
        };
        // WUPA, not REQA: it also wakes the card we halted at the last poll, which is how a
        // card held still is seen as still present.
        let atqa = match driver.wupa() {
            Ok(atqa) => atqa,
            Err(mfrc522::Error::Timeout) => return Ok(Seen::Empty),
            Err(e) => return self.failed(e),
        };
        let uid = match driver.select(&atqa) {
            Ok(uid) => uid,
            Err(e) => return self.failed(e),
        };
        // Halt it so the next poll's WUPA is its own fresh exchange.
        if let Err(e @ mfrc522::Error::Comm(_)) = driver.hlta() {
            return self.failed(e);
        }
        let bytes = uid.as_bytes();
        if bytes.len() == 4 && bytes[0] == 0x88 {
            return Ok(Seen::Unreadable(format!(
                "UID {bytes:02X?} starts with the cascade tag 0x88"
            )));
        }
        match CardUid::from_bytes(bytes) {
            Ok(uid) => Ok(Seen::Card(uid)),
            Err(e) => Ok(Seen::Unreadable(e.to_string())),
        }
    }
}

impl<S: SpiDevice + Send + 'static> Mfrc522Reader<S> {
    /// A failed card exchange: chip trouble is an error, card trouble is an unreadable card.
    fn failed(&mut self, e: mfrc522::Error<SeamError>) -> Result<Seen, HwError> {
        match e {
            mfrc522::Error::Comm(SeamError::Deadline) => Err(self.down(format!(
                "the MFRC522 did not complete an exchange within {} ms; re-initialising",
                self.exchange.as_millis()
            ))),
            mfrc522::Error::Comm(SeamError::Bus(b)) => {
                Err(self.down(format!("SPI bus error: {b}; re-initialising")))
            }
            other => Ok(Seen::Unreadable(driver_text(&other))),
        }
    }
}

fn seam_text(e: &SeamError) -> String {
    match e {
        SeamError::Deadline => "no answer within the deadline".into(),
        SeamError::Bcc { got, want } => {
            format!("BCC mismatch (card sent 0x{got:02X}, UID gives 0x{want:02X})")
        }
        SeamError::Bus(b) => format!("SPI bus error: {b}"),
    }
}

fn driver_text(e: &mfrc522::Error<SeamError>) -> String {
    use mfrc522::Error as E;
    match e {
        E::Comm(s) => seam_text(s),
        E::Timeout => "no card answered (it may have left mid-exchange)".into(),
        E::Crc => "CRC error in the card's answer".into(),
        E::Collision => "two cards in the field collided and could not be told apart".into(),
        E::Bcc => "BCC error in the card's answer".into(),
        E::Parity => "parity error in the card's answer".into(),
        E::Protocol => "protocol error".into(),
        E::IncompleteFrame => "incomplete frame from the card".into(),
        E::Proprietary => "card uses proprietary anticollision".into(),
        other => format!("{other:?}"),
    }
}
