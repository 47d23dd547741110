//! The Pi's SPI bus through the kernel's spidev driver (linux-embedded-hal's `SpidevDevice`).
//!
//! Not rppal's SPI device: its embedded-hal implementation sends zeros for in-place transfers,
//! which breaks every register read of the MFRC522 driver.
//!
//! Wiring (MFRC522 on SPI0, CE0): SDA/NSS -> GPIO8 (pin 24), SCK -> GPIO11 (23),
//! MOSI -> GPIO10 (19), MISO -> GPIO9 (21), RST -> 3V3 or a GPIO held high, GND, 3V3 (not 5 V).
//! Enable the bus with `dtparam=spi=on` in /boot/firmware/config.txt; the device is then
//! /dev/spidev0.0, and the agent's user needs to be in group `spi`.

use std::path::Path;

use linux_embedded_hal::spidev::{SpiModeFlags, SpidevOptions};
use linux_embedded_hal::SpidevDevice;

use super::HwError;

/// Opens and configures an SPI device: mode 0..=3, clock in Hz, 8-bit words.
pub fn open(path: &Path, mode: u8, hz: u32) -> Result<SpidevDevice, HwError> {
    let mut dev = SpidevDevice::open(path).map_err(|e| {
        HwError::Reader(format!(
            "cannot open {}: {e}; is SPI enabled (dtparam=spi=on) and the user in group spi?",
            path.display()
        ))
    })?;
    let flags = match mode {
        0 => SpiModeFlags::SPI_MODE_0,
        1 => SpiModeFlags::SPI_MODE_1,
        2 => SpiModeFlags::SPI_MODE_2,
        _ => SpiModeFlags::SPI_MODE_3,
    };
    let options = SpidevOptions::new()
        .bits_per_word(8)
        .max_speed_hz(hz)
        .mode(flags)
        .build();
    dev.configure(&options).map_err(|e| {
        HwError::Reader(format!(
            "cannot configure {} (mode {mode}, {hz} Hz): {e}",
            path.display()
        ))
    })?;
    Ok(dev)
}

/// An MFRC522 on a spidev device that is opened on first use and again after it fails to
/// open, so a reader that is missing at boot (overlay not loaded, loose ribbon) shows up as
/// a reader fault and recovers by itself, while the rest of the door works.
pub struct SpidevMfrc522 {
    path: std::path::PathBuf,
    mode: u8,
    hz: u32,
    exchange: std::time::Duration,
    reader: Option<super::mfrc522::Mfrc522Reader<SpidevDevice>>,
}

impl SpidevMfrc522 {
    pub fn new(path: &Path, mode: u8, hz: u32, exchange: std::time::Duration) -> SpidevMfrc522 {
        SpidevMfrc522 {
            path: path.to_path_buf(),
            mode,
            hz,
            exchange,
            reader: None,
        }
    }
}

impl super::CardReader for SpidevMfrc522 {
    fn poll(&mut self) -> Result<super::Seen, HwError> {
        let reader = match &mut self.reader {
            Some(r) => r,
            None => {
                let spi = open(&self.path, self.mode, self.hz)?;
                self.reader
                    .insert(super::mfrc522::Mfrc522Reader::new(spi, self.exchange))
            }
        };
        reader.poll()
    }
}
