//! A register-level MFRC522 simulator behind embedded-hal 1.0's `SpiDevice<u8>`, so the real
//! `mfrc522` driver crate runs unchanged against it in tests and in `acceso sim`.
//!
//! This module owns the SPI byte stream and the handle tests hold ([`SimChip`]); `registers`
//! is the register map and power-on values; `chip` owns the register file, FIFO, CRC
//! coprocessor, commands and transceiver; `card` owns the virtual cards (ISO/IEC 14443-3
//! type A state machine) and the injected faults.
//!
//! Behaviour worth knowing when writing a reader against it:
//! - After a power-on or soft reset the timer is not in TAuto mode, so a Transceive nobody
//!   answers never completes: driver 0.8 then spins forever on ComIrqReg. Only `init()` sets
//!   TAuto. The same holds while MISO is stuck at 0x00 ([`SimChip::set_silent`]); stuck at
//!   0xFF, `init()` spins instead, waiting for CommandReg PowerDown to read 0.
//! - A card left in ACTIVE (selected, not halted) drops back to IDLE on the next REQA without
//!   answering, so polling with REQA and no HLTA sees a held card every other time.
//! - ATQAs of different UID sizes collide: REQA/WUPA then fail with `Error::Collision`, and
//!   the cards, now READY, drop back to IDLE on the next REQA/WUPA (`Error::Timeout`).
//! - Driver 0.8 never checks the card's BCC: it computes its own for the SELECT.
//! - CollReg CollPos counts from the first UID bit of the cascade level, as the driver reads
//!   it; the MFRC522 datasheet does not say what the real chip counts once RxAlign is used.

mod card;
mod chip;
mod registers;

use std::sync::{Arc, Mutex, MutexGuard};

use embedded_hal::spi::{ErrorKind, ErrorType, Operation, SpiDevice};

pub use card::VirtualCard;
use chip::Chip;

/// One-shot faults, each applied to the next card answer it matches, then forgotten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameFault {
    /// The next answer that carries a CRC_A (the SAK of a SELECT) has a corrupt CRC.
    CrcError,
    /// The next anticollision answer (UID CLn + BCC) has a wrong BCC byte.
    BccError,
    /// The card(s) answering the next REQA/WUPA leave the field right after the ATQA.
    LeaveMidExchange,
}

struct Inner {
    chip: Chip,
    /// MISO stuck at this value: the chip hears nothing and says nothing.
    silent: Option<u8>,
    transfers: u64,
    bytes: u64,
}

/// The simulated chip and the field in front of its antenna. Clones share the same chip.
#[derive(Clone)]
pub struct SimChip(Arc<Mutex<Inner>>);

impl Default for SimChip {
    fn default() -> Self {
        SimChip::new()
    }
}

impl SimChip {
    /// Powered on: registers at their power-on values (VersionReg 0x92), no card in the field.
    pub fn new() -> SimChip {
        SimChip(Arc::new(Mutex::new(Inner {
            chip: Chip::new(),
            silent: None,
            transfers: 0,
            bytes: 0,
        })))
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while the lock is held, and the chip state stays consistent between
        // register accesses anyway: a poisoned lock is still a usable chip.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An SPI device wired to this chip. Any number may exist; each transaction is atomic.
    pub fn spi(&self) -> SimSpi {
        SimSpi(self.clone())
    }

    /// A card enters the field, in IDLE. Cards already there stay: several answer at once.
    pub fn place(&self, card: VirtualCard) {
        self.inner().chip.field.place(card);
    }

    /// Every card with this UID leaves the field.
    pub fn remove(&self, uid: &[u8]) {
        self.inner().chip.field.remove(uid);
    }

    /// Every card leaves the field.
    pub fn clear_field(&self) {
        self.inner().chip.field.clear();
    }

    /// `Some(v)`: every byte read is `v` and writes are lost (dead chip, MISO stuck).
    /// `None`: answering again, in the state it was left in.
    pub fn set_silent(&self, silent: Option<u8>) {
        self.inner().silent = silent;
    }

    /// The chip resets itself (supply dip, ESD): every register back to its power-on value,
    /// antenna off (so cards in the field go back to IDLE), timer out of TAuto, FIFO empty,
    /// command Idle.
    pub fn brown_out(&self) {
        self.inner().chip.power_on_reset();
    }

    /// Queues a one-shot fault for the next card answer it matches.
    pub fn inject(&self, fault: FrameFault) {
        self.inner().chip.field.inject(fault);
    }

    /// `SpiDevice::transaction` calls so far (the driver makes one per register access).
    pub fn transfers(&self) -> u64 {
        self.inner().transfers
    }

    /// Bytes clocked over SPI so far.
    pub fn bytes(&self) -> u64 {
        self.inner().bytes
    }
}

/// An SPI device wired to a [`SimChip`].
pub struct SimSpi(SimChip);

/// The error type of [`SimSpi`]; the simulated bus never fails, so it is never returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimSpiError;

impl embedded_hal::spi::Error for SimSpiError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

impl std::fmt::Display for SimSpiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("simulated SPI error")
    }
}

impl std::error::Error for SimSpiError {}

impl ErrorType for SimSpi {
    type Error = SimSpiError;
}

/// Where the chip is within one chip-select period. The first byte is the address byte:
/// bit 7 set for a read, register address in bits 6..1. When writing, every further byte goes
/// to that register. When reading, every further byte shifted in is the next address, and the
/// byte shifted out with it is the value of the previous address; a read happens only when its
/// value is shifted out, so the closing 0x00 of a read reads nothing.
#[derive(Clone, Copy)]
enum Stream {
    Address,
    Writing(u8),
    Reading(u8),
}

fn register_of(address_byte: u8) -> u8 {
    (address_byte >> 1) & 0x3F
}

impl Inner {
    /// One byte each way.
    fn clock(&mut self, stream: &mut Stream, mosi: u8) -> u8 {
        self.bytes += 1;
        if let Some(stuck) = self.silent {
            return stuck;
        }
        match *stream {
            Stream::Address => {
                let register = register_of(mosi);
                *stream = if mosi & 0x80 != 0 {
                    Stream::Reading(register)
                } else {
                    Stream::Writing(register)
                };
                // MISO is undefined while the address goes out.
                0x00
            }
            Stream::Writing(register) => {
                self.chip.write(register, mosi);
                0x00
            }
            Stream::Reading(register) => {
                *stream = Stream::Reading(register_of(mosi));
                self.chip.read(register)
            }
        }
    }
}

impl SpiDevice for SimSpi {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), SimSpiError> {
        // One lock for the whole transaction: chip select stays asserted throughout.
        let mut inner = self.0.inner();
        inner.transfers += 1;
        let mut stream = Stream::Address;
        for op in operations.iter_mut() {
            match op {
                Operation::Read(buf) => {
                    for b in buf.iter_mut() {
                        *b = inner.clock(&mut stream, 0x00);
                    }
                }
                Operation::Write(buf) => {
                    for &b in buf.iter() {
                        inner.clock(&mut stream, b);
                    }
                }
                Operation::Transfer(read, write) => {
                    // As long as the longer of the two; MOSI sends 0x00 past the write data.
                    for i in 0..read.len().max(write.len()) {
                        let miso = inner.clock(&mut stream, write.get(i).copied().unwrap_or(0));
                        if let Some(r) = read.get_mut(i) {
                            *r = miso;
                        }
                    }
                }
                Operation::TransferInPlace(buf) => {
                    for b in buf.iter_mut() {
                        *b = inner.clock(&mut stream, *b);
                    }
                }
                // Commands complete instantly here, so there is nothing to wait for.
                Operation::DelayNs(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
