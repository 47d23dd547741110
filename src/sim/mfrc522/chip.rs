//! The MFRC522 itself: register file with power-on values, the 64-byte FIFO, the CRC
//! coprocessor, the commands, the timer and the transceiver that puts frames on the air and
//! decodes what comes back (bit framing, RxAlign, collisions).
//!
//! Every command completes at once: what takes microseconds on the chip has finished by the
//! next register access, so there is no clock and the simulation is deterministic. The timer
//! is the one thing modelled by its effect only: when it would have run down, TimerIRq is set.

use std::collections::VecDeque;

use super::card::{crc_update, Field, Frame, CRC_A_PRESET};
use super::registers::*;

const FIFO_SIZE: usize = 64;
const MEM_SIZE: usize = 25;

pub(super) struct Chip {
    regs: [u8; 64],
    fifo: VecDeque<u8>,
    /// The internal buffer of the Mem command: kept across a soft reset, lost with power.
    mem: [u8; MEM_SIZE],
    /// State of the deterministic generator behind GenerateRandomID.
    random: u32,
    pub(super) field: Field,
}

impl Chip {
    pub(super) fn new() -> Chip {
        Chip {
            regs: POWER_ON,
            fifo: VecDeque::with_capacity(FIFO_SIZE),
            mem: [0; MEM_SIZE],
            random: 0x2545_F491,
            field: Field::default(),
        }
    }

    /// Six address bits: there is no register outside 0x00..=0x3F.
    fn r(&self, addr: u8) -> u8 {
        self.regs[usize::from(addr & 0x3F)]
    }

    fn r_mut(&mut self, addr: u8) -> &mut u8 {
        &mut self.regs[usize::from(addr & 0x3F)]
    }

    /// Supply dip: everything back to power-on values, the Mem buffer lost too.
    pub(super) fn power_on_reset(&mut self) {
        self.mem = [0; MEM_SIZE];
        self.soft_reset();
    }

    /// SoftReset: registers to power-on values, FIFO emptied, antenna off. The antenna going
    /// off takes the cards' power away, so they start over in IDLE.
    fn soft_reset(&mut self) {
        self.regs = POWER_ON;
        self.fifo.clear();
        self.field.power_off();
    }

    fn antenna_on(&self) -> bool {
        self.r(reg::TX_CONTROL) & ANTENNA != 0
    }

    fn command(&self) -> u8 {
        self.r(reg::COMMAND) & COMMAND_BITS
    }

    fn irq(&mut self, bits: u8) {
        *self.r_mut(reg::COM_IRQ) |= bits;
    }

    /// A command that ends by itself: back to Idle, IdleIRq.
    fn finish(&mut self) {
        *self.r_mut(reg::COMMAND) &= !COMMAND_BITS;
        self.irq(IDLE_IRQ);
    }

    /// The timer has run down (instantly: no time passes here).
    fn timer_expired(&mut self) {
        self.irq(TIMER_IRQ);
    }

    pub(super) fn read(&mut self, addr: u8) -> u8 {
        match addr {
            reg::FIFO_DATA => {
                // Reading an empty FIFO gives nothing useful on the chip either.
                let v = self.fifo.pop_front().unwrap_or(0);
                self.fifo_changed();
                v
            }
            reg::FIFO_LEVEL => self.fifo.len() as u8,
            reg::STATUS1 => self.status1(),
            _ => self.r(addr),
        }
    }

    pub(super) fn write(&mut self, addr: u8, val: u8) {
        match addr {
            reg::COMMAND => self.write_command(val),
            reg::COM_IRQ => set_or_clear(self.r_mut(reg::COM_IRQ), val, 0x7F),
            reg::DIV_IRQ => set_or_clear(self.r_mut(reg::DIV_IRQ), val, DIV_IRQ_BITS),
            // Read-only: status, results, counters, version, test read-backs.
            reg::ERROR
            | reg::STATUS1
            | reg::CRC_RESULT_HIGH
            | reg::CRC_RESULT_LOW
            | reg::T_COUNTER_HIGH
            | reg::T_COUNTER_LOW
            | reg::TEST_BUS
            | reg::VERSION
            | reg::TEST_ADC => {}
            reg::STATUS2 => {
                // MFCrypto1On can be cleared by the host but only MFAuthent sets it.
                let crypto = self.r(reg::STATUS2) & val & MF_CRYPTO1_ON;
                *self.r_mut(reg::STATUS2) = (val & STATUS2_RW) | crypto;
            }
            reg::FIFO_DATA => self.fifo_write(val),
            reg::FIFO_LEVEL => {
                // FlushBuffer; the level itself is read-only.
                if val & 0x80 != 0 {
                    self.fifo.clear();
                    *self.r_mut(reg::ERROR) &= !BUFFER_OVFL;
                    self.fifo_changed();
                }
            }
            reg::CONTROL => {
                // TStartNow with nothing to wait for runs down at once; TStopNow has nothing to
                // stop; RxLastBits is read-only.
                if val & T_START_NOW != 0 {
                    self.timer_expired();
                }
            }
            reg::BIT_FRAMING => {
                *self.r_mut(reg::BIT_FRAMING) = val;
                // StartSend starts a transmission only while Transceive is the command.
                if val & START_SEND != 0 && self.command() == cmd::TRANSCEIVE {
                    self.transceive();
                }
            }
            reg::COLL => {
                let keep = self.r(reg::COLL) & !VALUES_AFTER_COLL;
                *self.r_mut(reg::COLL) = keep | (val & VALUES_AFTER_COLL);
            }
            reg::TX_CONTROL => {
                let was_on = self.antenna_on();
                *self.r_mut(reg::TX_CONTROL) = val;
                if was_on && !self.antenna_on() {
                    self.field.power_off();
                }
            }
            // Everything else, reserved and test registers included, stores what is written.
            _ => *self.r_mut(addr) = val,
        }
    }

    fn status1(&self) -> u8 {
        let (lo, hi) = self.alerts();
        let pending = (self.r(reg::COM_IEN) & self.r(reg::COM_IRQ) & 0x7F)
            | (self.r(reg::DIV_IEN) & self.r(reg::DIV_IRQ) & DIV_IRQ_BITS);
        let crc_zero = self.r(reg::CRC_RESULT_HIGH) == 0 && self.r(reg::CRC_RESULT_LOW) == 0;
        // TRunning stays 0: the timer never runs for a measurable time. CRCReady stays 1: the
        // coprocessor is done as soon as it is fed.
        CRC_READY
            | if crc_zero { CRC_OK } else { 0 }
            | if pending != 0 { IRQ } else { 0 }
            | if hi { HI_ALERT } else { 0 }
            | if lo { LO_ALERT } else { 0 }
    }

    /// Status1Reg LoAlert and HiAlert from the FIFO level and WaterLevelReg.
    fn alerts(&self) -> (bool, bool) {
        let water = usize::from(self.r(reg::WATER_LEVEL) & 0x3F);
        let len = self.fifo.len();
        (len <= water, FIFO_SIZE - len <= water)
    }

    fn fifo_changed(&mut self) {
        let (lo, hi) = self.alerts();
        if lo {
            self.irq(LO_ALERT_IRQ);
        }
        if hi {
            self.irq(HI_ALERT_IRQ);
        }
    }

    fn fifo_push(&mut self, byte: u8) {
        if self.fifo.len() < FIFO_SIZE {
            self.fifo.push_back(byte);
        } else {
            *self.r_mut(reg::ERROR) |= BUFFER_OVFL;
            self.irq(ERR_IRQ);
        }
    }

    fn fifo_write(&mut self, byte: u8) {
        if self.command() == cmd::CALC_CRC {
            // The coprocessor takes every byte written while CalcCRC runs.
            self.crc_feed(&[byte]);
        } else {
            self.fifo_push(byte);
        }
        self.fifo_changed();
    }

    fn write_command(&mut self, val: u8) {
        let bits = val & (RCV_OFF | POWER_DOWN);
        let command = val & COMMAND_BITS;
        match command {
            cmd::NO_CMD_CHANGE => {
                *self.r_mut(reg::COMMAND) = bits | self.command();
                return;
            }
            // PowerDown cannot be set together with SoftReset; when the reset is over,
            // PowerDown reads 0, which is what a driver waits for.
            cmd::SOFT_RESET => return self.soft_reset(),
            _ => {}
        }
        // A new command stops the running one. PowerDown is kept as a bit only: soft
        // power-down is not modelled.
        *self.r_mut(reg::COMMAND) = bits | command;
        match command {
            // The host starting Idle does not set IdleIRq.
            cmd::IDLE => {}
            cmd::MEM => {
                self.mem_command();
                self.finish();
            }
            cmd::GENERATE_RANDOM_ID => {
                self.generate_random_id();
                self.finish();
            }
            cmd::CALC_CRC => {
                let preset = match self.r(reg::MODE) & 0x03 {
                    0 => 0x0000,
                    1 => CRC_A_PRESET,
                    2 => 0xA671,
                    _ => 0xFFFF,
                };
                self.store_crc(preset);
                let data: Vec<u8> = self.fifo.drain(..).collect();
                self.crc_feed(&data);
                self.fifo_changed();
            }
            cmd::TRANSMIT => {
                self.send();
                self.finish();
            }
            // Receive and Transceive wait: for a card that never speaks first, or for StartSend.
            cmd::RECEIVE | cmd::TRANSCEIVE => {}
            cmd::MF_AUTHENT => self.mf_authent(),
            // An unknown command is not started: back to Idle with IdleIRq.
            _ => self.finish(),
        }
    }

    fn store_crc(&mut self, crc: u16) {
        let [high, low] = crc.to_be_bytes();
        *self.r_mut(reg::CRC_RESULT_HIGH) = high;
        *self.r_mut(reg::CRC_RESULT_LOW) = low;
    }

    /// CalcCRC over more data; ModeReg MSBFirst (bit-reversed results) is not modelled.
    fn crc_feed(&mut self, data: &[u8]) {
        let crc = u16::from_be_bytes([self.r(reg::CRC_RESULT_HIGH), self.r(reg::CRC_RESULT_LOW)]);
        let crc = data.iter().fold(crc, |c, &b| crc_update(c, b));
        self.store_crc(crc);
        *self.r_mut(reg::DIV_IRQ) |= CRC_IRQ;
    }

    /// Mem: a full FIFO goes into the 25-byte buffer; an empty FIFO gets the buffer back.
    fn mem_command(&mut self) {
        if self.fifo.is_empty() {
            for b in self.mem {
                self.fifo_push(b);
            }
        } else {
            for slot in &mut self.mem {
                *slot = self.fifo.pop_front().unwrap_or(0);
            }
        }
        self.fifo_changed();
    }

    /// GenerateRandomID: ten bytes into the start of the Mem buffer, from a fixed-seed xorshift
    /// so runs stay reproducible.
    fn generate_random_id(&mut self) {
        for slot in &mut self.mem[..10] {
            self.random ^= self.random << 13;
            self.random ^= self.random >> 17;
            self.random ^= self.random << 5;
            *slot = (self.random >> 24) as u8;
        }
    }

    /// Puts the FIFO on the air (TxLastBits, TxCRCEn) and returns the frame and the answer bits
    /// of every card that answered. With the antenna off nothing leaves the chip.
    fn send(&mut self) -> (Frame, Vec<Vec<bool>>) {
        let mut bytes: Vec<u8> = self.fifo.drain(..).collect();
        self.fifo_changed();
        let last_bits = self.r(reg::BIT_FRAMING) & 0x07;
        if self.r(reg::TX_MODE) & TX_CRC_EN != 0 && last_bits == 0 && !bytes.is_empty() {
            // At 106 kBd type A the transmitter's CRC preset is always 0x6363.
            let crc = bytes.iter().fold(CRC_A_PRESET, |c, &b| crc_update(c, b));
            bytes.extend_from_slice(&crc.to_le_bytes());
        }
        let frame = Frame::new(bytes, last_bits);
        self.irq(TX_IRQ);
        if !self.antenna_on() || frame.bits() == 0 {
            return (frame, Vec::new());
        }
        let answers = self.field.exchange(&frame);
        (frame, answers)
    }

    /// The receiver heard nothing. With TModeReg TAuto the timer started at the end of the
    /// transmission runs down: TimerIRq. Without it (the power-on value) nothing ever
    /// happens: the receiver waits forever, as the real chip does.
    fn no_answer(&mut self) {
        if self.r(reg::T_MODE) & T_AUTO != 0 {
            self.timer_expired();
        }
    }

    /// Transceive after StartSend: transmit, then receive what the cards answered.
    fn transceive(&mut self) {
        let (frame, answers) = self.send();
        // Receiver start-up clears the reception errors and the collision position.
        *self.r_mut(reg::ERROR) &= !RX_ERRORS;
        let values_after_coll = self.r(reg::COLL) & VALUES_AFTER_COLL;
        *self.r_mut(reg::COLL) = values_after_coll | COLL_POS_NOT_VALID;
        if answers.is_empty() || self.r(reg::COMMAND) & RCV_OFF != 0 {
            return self.no_answer();
        }
        let len = answers.iter().map(Vec::len).max().unwrap_or(0);
        let mut bits = Vec::with_capacity(len);
        let mut collision = None;
        for i in 0..len {
            let ones = answers.iter().filter(|a| a.get(i) == Some(&true)).count();
            let zeros = answers.iter().filter(|a| a.get(i) == Some(&false)).count();
            if ones > 0 && zeros > 0 && collision.is_none() {
                collision = Some(i);
            }
            bits.push(ones > 0);
        }
        if let (Some(at), 0) = (collision, values_after_coll) {
            // ValuesAfterColl = 0 (what anticollision uses): bits from the collision on read 0.
            bits[at..].fill(false);
        }
        // The first received bit lands at bit RxAlign of the first FIFO byte.
        let align = usize::from((self.r(reg::BIT_FRAMING) >> 4) & 0x07);
        let mut packed = vec![0u8; (align + len).div_ceil(8)];
        for (i, _) in bits.iter().enumerate().filter(|(_, b)| **b) {
            packed[(align + i) / 8] |= 1 << ((align + i) % 8);
        }
        for b in packed {
            self.fifo_push(b);
        }
        self.fifo_changed();
        let control = self.r(reg::CONTROL) & !RX_LAST_BITS;
        *self.r_mut(reg::CONTROL) = control | ((align + len) % 8) as u8;
        self.irq(RX_IRQ);
        if let Some(at) = collision {
            *self.r_mut(reg::ERROR) |= COLL_ERR;
            self.irq(ERR_IRQ);
            // In an anticollision frame CollPos counts from the first bit of UID CLn, the bits
            // the PCD already sent included: that is how mfrc522 0.8 (and the Arduino MFRC522
            // library) use it (`known_bits = coll_pos`). Other frames count from the first
            // received bit. 1 is the first bit, 0 the 32nd; past 32 it is not valid. (The
            // MFRC631 datasheet counts from the first FIFO bit, RxAlign included: the same
            // while fewer than 8 UID bits are known. The MFRC522 datasheet does not say.)
            let position = frame.anticollision_known_bits().unwrap_or(0) + at + 1;
            *self.r_mut(reg::COLL) = values_after_coll
                | if position <= 32 {
                    (position % 32) as u8
                } else {
                    COLL_POS_NOT_VALID
                };
        }
    }

    /// MFAuthent: the FIFO holds the command, block, 6 key bytes and 4 UID bytes. Crypto1 is
    /// not modelled: any key works on a selected (ACTIVE) card.
    fn mf_authent(&mut self) {
        let given = self.fifo.drain(..).count();
        self.fifo_changed();
        *self.r_mut(reg::ERROR) &= !RX_ERRORS;
        if given != 12 {
            *self.r_mut(reg::ERROR) |= PROTOCOL_ERR;
            self.irq(ERR_IRQ);
            return self.finish();
        }
        let heard = self.antenna_on() && self.r(reg::COMMAND) & RCV_OFF == 0;
        if heard && self.field.has_active_card() {
            *self.r_mut(reg::STATUS2) |= MF_CRYPTO1_ON;
            self.finish();
        } else {
            // No selected card answers the authentication request.
            self.irq(TX_IRQ);
            self.no_answer();
        }
    }
}

/// ComIrqReg/DivIrqReg writes: bit 7 says whether the other bits given are set or cleared.
fn set_or_clear(register: &mut u8, val: u8, mask: u8) {
    if val & SET != 0 {
        *register |= val & mask;
    } else {
        *register &= !(val & mask);
    }
}
