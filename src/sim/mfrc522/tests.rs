//! Every test drives the chip through the real `mfrc522` 0.8 driver, as the reader does.

use std::time::Instant;

use ::mfrc522::comm::blocking::spi::{DummyDelay, SpiInterface};
use ::mfrc522::{Error, Initialized, Mfrc522};
use embedded_hal::spi::{ErrorKind, ErrorType, Operation, SpiDevice};

use super::card::crc_a;
use super::registers::{reg, MF_CRYPTO1_ON};
use super::*;

type Driver = Mfrc522<SpiInterface<SimSpi, DummyDelay>, Initialized>;

const UID4: [u8; 4] = [0xDE, 0xAD, 0xBE, 0xEF];
const UID7: [u8; 7] = [0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66];
const UID10: [u8; 10] = [0x08, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09];

fn driver(chip: &SimChip) -> Driver {
    Mfrc522::new(SpiInterface::new(chip.spi()))
        .init()
        .expect("init on a powered chip")
}

fn uid_of(d: &mut Driver, atqa: &::mfrc522::AtqA) -> Result<Vec<u8>, Error<SimSpiError>> {
    Ok(d.select(atqa)?.as_bytes().to_vec())
}

fn read_card(d: &mut Driver) -> Result<Vec<u8>, Error<SimSpiError>> {
    let atqa = d.reqa()?;
    uid_of(d, &atqa)
}

fn read_register(chip: &SimChip, register: u8) -> u8 {
    let mut buf = [0x80 | (register << 1), 0];
    chip.spi().transfer_in_place(&mut buf).expect("sim SPI");
    buf[1]
}

fn write_register(chip: &SimChip, register: u8, value: u8) {
    chip.spi().write(&[register << 1, value]).expect("sim SPI");
}

/// Fails every transaction after `left` of them: turns the driver's endless polling of a chip
/// that never completes into an error, the way a reader's deadline would.
struct Budget {
    spi: SimSpi,
    left: u32,
}

#[derive(Debug, PartialEq)]
struct Exhausted;

impl embedded_hal::spi::Error for Exhausted {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

impl ErrorType for Budget {
    type Error = Exhausted;
}

impl SpiDevice for Budget {
    fn transaction(&mut self, ops: &mut [Operation<'_, u8>]) -> Result<(), Exhausted> {
        self.left = self.left.checked_sub(1).ok_or(Exhausted)?;
        self.spi.transaction(ops).map_err(|_| Exhausted)
    }
}

#[test]
fn crc_a_matches_iso_14443_examples() {
    // HLTA as every type A trace shows it, and the annex B example.
    assert_eq!(crc_a(&[0x50, 0x00]), [0x57, 0xCD]);
    assert_eq!(crc_a(&[0x00, 0x00]), [0xA0, 0x1E]);
    assert_eq!(crc_a(&[0x12, 0x34]), [0x26, 0xCF]);
}

#[test]
fn handles_cross_threads() {
    fn send_sync<T: Send + Sync + Clone>() {}
    fn send<T: Send>() {}
    send_sync::<SimChip>();
    send::<SimSpi>();
}

#[test]
fn version_init_and_empty_field() {
    let chip = SimChip::new();
    assert_eq!(read_register(&chip, reg::VERSION), 0x92, "before init");
    let mut d = driver(&chip);
    assert_eq!(d.version(), Ok(0x92));
    assert_eq!(
        read_register(&chip, reg::TX_CONTROL) & 0x03,
        0x03,
        "init turns the antenna on"
    );
    assert!(matches!(d.reqa(), Err(Error::Timeout)));
    assert!(matches!(d.wupa(), Err(Error::Timeout)));
}

#[test]
fn reads_single_double_and_triple_size_uids() {
    for uid in [&UID4[..], &UID7[..], &UID10[..]] {
        let chip = SimChip::new();
        chip.place(VirtualCard::new(uid));
        let mut d = driver(&chip);
        let atqa = d.reqa().expect("ATQA");
        let read = d.select(&atqa).expect("select");
        assert_eq!(read.as_bytes(), uid, "no cascade tag in the UID");
        assert!(matches!(read.get_type(), ::mfrc522::Type::Mifare1k));
    }
}

#[test]
fn held_card_without_halt_answers_every_other_reqa() {
    let chip = SimChip::new();
    chip.place(VirtualCard::new(&UID4));
    let mut d = driver(&chip);
    assert_eq!(read_card(&mut d), Ok(UID4.to_vec()));
    // ACTIVE card: REQA is not one of its commands, it drops to IDLE without answering.
    assert!(matches!(d.reqa(), Err(Error::Timeout)));
    assert_eq!(read_card(&mut d), Ok(UID4.to_vec()));
}

#[test]
fn halted_card_wakes_only_with_wupa() {
    let chip = SimChip::new();
    chip.place(VirtualCard::new(&UID7));
    let mut d = driver(&chip);
    assert_eq!(read_card(&mut d), Ok(UID7.to_vec()));
    assert_eq!(d.hlta(), Ok(()));
    assert!(matches!(d.reqa(), Err(Error::Timeout)));
    let atqa = d.wupa().expect("WUPA wakes a halted card");
    assert_eq!(uid_of(&mut d, &atqa), Ok(UID7.to_vec()));
    // Taken away and brought back: a fresh card in IDLE, REQA works again.
    assert_eq!(d.hlta(), Ok(()));
    chip.remove(&UID7);
    chip.place(VirtualCard::new(&UID7));
    assert_eq!(read_card(&mut d), Ok(UID7.to_vec()));
}

/// Two cards in the field: anticollision resolves one; halted, the next read gets the other.
fn resolve_pair(a: &[u8], b: &[u8]) {
    let chip = SimChip::new();
    chip.place(VirtualCard::new(a));
    chip.place(VirtualCard::new(b));
    let mut d = driver(&chip);
    let first = read_card(&mut d).unwrap_or_else(|e| panic!("{a:02X?} + {b:02X?}: {e:?}"));
    assert!(first == a || first == b, "{first:02X?} is neither card");
    assert_eq!(d.hlta(), Ok(()));
    let second = read_card(&mut d).unwrap_or_else(|e| panic!("{a:02X?} + {b:02X?}: {e:?}"));
    let other = if first == a { b } else { a };
    assert_eq!(second, other);
    assert_eq!(d.hlta(), Ok(()));
    assert!(matches!(d.reqa(), Err(Error::Timeout)), "both halted");
}

#[test]
fn two_cards_resolve_one_then_the_other() {
    // First difference in bit 1, in the third byte, in the last UID bit.
    resolve_pair(&[0x12, 0x34, 0x56, 0x78], &[0x13, 0x34, 0x56, 0x78]);
    resolve_pair(&[0x11, 0x22, 0x33, 0x44], &[0x11, 0x22, 0x35, 0x47]);
    resolve_pair(&[0xAA, 0xBB, 0xCC, 0x00], &[0xAA, 0xBB, 0xCC, 0x80]);
    // 7-byte UIDs alike at cascade level 1: both are selected there, level 2 decides.
    resolve_pair(&UID7, &[0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x67]);
    // ... and different at level 1.
    resolve_pair(&UID7, &[0x04, 0x91, 0x22, 0x33, 0x44, 0x55, 0x66]);
    resolve_pair(
        &UID10,
        &[0x08, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x0A],
    );
    // Many pairs from a fixed-seed generator, every bit position likely covered.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x.to_le_bytes()
    };
    for _ in 0..300 {
        let a = next();
        let mut b = a;
        // Differ in one or more random bits, sometimes all of them.
        b[..4]
            .iter_mut()
            .zip(next())
            .for_each(|(v, m)| *v ^= m & next()[0]);
        if a[..4] == b[..4] {
            b[3] ^= 0x01;
        }
        resolve_pair(&a[..4], &b[..4]);
        let (mut a7, mut b7) = ([0x04; 7], [0x04; 7]);
        a7[1..].copy_from_slice(&a[..6]);
        b7[1..].copy_from_slice(&a[..6]);
        b7[next()[0] as usize % 6 + 1] ^= 1 << (next()[1] % 8);
        resolve_pair(&a7, &b7);
    }
}

#[test]
fn three_cards_are_read_one_by_one() {
    let uids: [&[u8]; 3] = [&[0x10, 0x20, 0x30, 0x40], &[0x10, 0x20, 0x30, 0x41], &UID4];
    let chip = SimChip::new();
    for uid in uids {
        chip.place(VirtualCard::new(uid));
    }
    let mut d = driver(&chip);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(read_card(&mut d).expect("one of the cards"));
        assert_eq!(d.hlta(), Ok(()));
    }
    seen.sort();
    let mut want: Vec<Vec<u8>> = uids.iter().map(|u| u.to_vec()).collect();
    want.sort();
    assert_eq!(seen, want);
}

#[test]
fn two_collisions_in_one_anticollision_loop() {
    // X differs from Y and Z in bit 18 (1-based); Y and Z differ in bit 32, which CollReg
    // reports as CollPos 0. The driver picks 1 each time: Z, then Y, then X.
    let (x, y, z) = (
        [0xAA, 0xBB, 0x01, 0x00],
        [0xAA, 0xBB, 0x03, 0x00],
        [0xAA, 0xBB, 0x03, 0x80],
    );
    let chip = SimChip::new();
    for uid in [x, y, z] {
        chip.place(VirtualCard::new(&uid));
    }
    let mut d = driver(&chip);
    for want in [z, y, x] {
        assert_eq!(read_card(&mut d), Ok(want.to_vec()));
        assert_eq!(d.hlta(), Ok(()));
    }
}

#[test]
fn different_uid_sizes_collide_in_the_atqa() {
    // 0x0004 and 0x0044 differ in one bit: the chip flags the collision and driver 0.8 turns
    // it into an error, with no AtqA to pass to select(). Neither card can be read.
    let chip = SimChip::new();
    chip.place(VirtualCard::new(&UID4));
    chip.place(VirtualCard::new(&UID7));
    let mut d = driver(&chip);
    assert!(matches!(d.reqa(), Err(Error::Collision)));
    // Both cards are READY now, where WUPA is no command: they drop back to IDLE, silent.
    // Polling with WUPA alone therefore alternates between Collision and Timeout.
    assert!(matches!(d.wupa(), Err(Error::Timeout)));
    assert!(matches!(d.wupa(), Err(Error::Collision)));
    chip.remove(&UID7);
    let _ = d.wupa();
    assert_eq!(read_card(&mut d), Ok(UID4.to_vec()));
}

#[test]
fn crc_fault_fails_select_once() {
    let chip = SimChip::new();
    chip.place(VirtualCard::new(&UID4));
    let mut d = driver(&chip);
    chip.inject(FrameFault::CrcError);
    assert!(matches!(read_card(&mut d), Err(Error::Crc)));
    // Card ACTIVE after its SAK: the next REQA knocks it back to IDLE, the one after reads.
    let _ = d.reqa();
    assert_eq!(read_card(&mut d), Ok(UID4.to_vec()));
}

#[test]
fn bcc_fault_is_not_seen_by_the_driver() {
    // Driver 0.8 ignores the card's BCC and sends SELECT with one it computes from the UID
    // bits, which were right, so the card matches and select succeeds. A reader that wants
    // BCC checked has to look at the FIFO bytes itself.
    let chip = SimChip::new();
    chip.place(VirtualCard::new(&UID7));
    let mut d = driver(&chip);
    chip.inject(FrameFault::BccError);
    assert_eq!(read_card(&mut d), Ok(UID7.to_vec()));
}

#[test]
fn bcc_fault_is_visible_in_the_fifo() {
    let chip = SimChip::new();
    chip.place(VirtualCard::new(&UID4));
    let mut d = driver(&chip);
    d.reqa().expect("ATQA");
    chip.inject(FrameFault::BccError);
    let answer = d
        .transceive::<5>(&[0x93, 0x20], 0, 0)
        .expect("anticollision");
    assert_eq!(answer.valid_bytes, 5);
    assert_eq!(answer.buffer[..4], UID4);
    let bcc = UID4.iter().fold(0, |a, b| a ^ b);
    assert_eq!(answer.buffer[4], bcc ^ 0xFF);
}

#[test]
fn card_leaving_mid_exchange_fails_select() {
    let chip = SimChip::new();
    chip.place(VirtualCard::new(&UID4));
    let mut d = driver(&chip);
    chip.inject(FrameFault::LeaveMidExchange);
    let atqa = d.reqa().expect("the ATQA still comes");
    assert!(matches!(d.select(&atqa), Err(Error::Timeout)));
    assert!(matches!(d.reqa(), Err(Error::Timeout)), "the card is gone");
}

#[test]
fn silent_chip_reads_stuck_values_and_recovers() {
    let chip = SimChip::new();
    chip.place(VirtualCard::new(&UID4));
    let mut d = driver(&chip);
    chip.set_silent(Some(0xFF));
    assert_eq!(d.version(), Ok(0xFF));
    // Every IRQ bit reads 1 and so does every error bit: the driver stops with Protocol.
    assert!(matches!(d.reqa(), Err(Error::Protocol)));
    chip.set_silent(Some(0x00));
    // No reqa here: no IRQ bit ever reads 1, and the driver would poll forever.
    assert_eq!(d.version(), Ok(0x00));
    assert_eq!(read_register(&chip, reg::TX_CONTROL), 0x00);
    chip.set_silent(None);
    assert_eq!(d.version(), Ok(0x92));
    assert_eq!(read_card(&mut d), Ok(UID4.to_vec()));
}

#[test]
fn brown_out_needs_init_again() {
    let chip = SimChip::new();
    chip.place(VirtualCard::new(&UID7));
    let mut d = driver(&chip);
    assert_eq!(read_card(&mut d), Ok(UID7.to_vec()));
    chip.brown_out();
    assert_eq!(read_register(&chip, reg::TX_CONTROL), 0x80, "antenna off");
    assert_eq!(
        read_register(&chip, reg::T_MODE),
        0x00,
        "timer not in TAuto"
    );
    assert_eq!(read_register(&chip, reg::COMMAND), 0x20);
    assert_eq!(
        read_register(&chip, reg::VERSION),
        0x92,
        "the version does not tell"
    );
    // Antenna off and no timer: the REQA never completes and the driver polls ComIrqReg
    // until the reader's deadline (here: a transaction budget) stops it.
    let mut bounded = Mfrc522::new(SpiInterface::new(Budget {
        spi: chip.spi(),
        left: 1_000,
    }))
    .init()
    .expect("init");
    chip.brown_out();
    assert!(matches!(bounded.reqa(), Err(Error::Comm(Exhausted))));
    // With the timer configured but the antenna still off, it is a plain timeout.
    let mut d = Mfrc522::new(d.release()).init().expect("re-init");
    write_register(&chip, reg::TX_CONTROL, 0x80);
    assert!(matches!(d.reqa(), Err(Error::Timeout)));
    // init() again: antenna on, cards answer.
    let mut d = Mfrc522::new(d.release()).init().expect("re-init");
    assert_eq!(read_card(&mut d), Ok(UID7.to_vec()));
}

#[test]
fn mifare_authentication_needs_a_selected_card() {
    let chip = SimChip::new();
    chip.place(VirtualCard::new(&UID4));
    let mut d = driver(&chip);
    let atqa = d.reqa().expect("ATQA");
    let uid = d.select(&atqa).expect("select");
    assert_eq!(d.mf_authenticate(&uid, 4, &[0xFF; 6]), Ok(()));
    assert_ne!(read_register(&chip, reg::STATUS2) & MF_CRYPTO1_ON, 0);
    assert_eq!(d.stop_crypto1(), Ok(()));
    assert_eq!(read_register(&chip, reg::STATUS2) & MF_CRYPTO1_ON, 0);
    // Halted, nobody answers the authentication.
    d.hlta().expect("halt");
    assert!(matches!(
        d.mf_authenticate(&uid, 4, &[0xFF; 6]),
        Err(Error::Timeout)
    ));
}

#[test]
fn spi_stream_reads_many_registers_and_fifo_bytes() {
    let chip = SimChip::new();
    let mut spi = chip.spi();
    // One read stream over three registers: each byte shifted out is the previous address.
    let mut buf = [
        0x80 | (reg::VERSION << 1),
        0x80 | (reg::TX_CONTROL << 1),
        0x80 | (reg::MODE << 1),
        0x00,
    ];
    spi.transfer_in_place(&mut buf).expect("sim SPI");
    assert_eq!(buf[1..], [0x92, 0x80, 0x3F]);
    // A multi-byte write goes to one register: the FIFO.
    spi.write(&[reg::FIFO_DATA << 1, 1, 2, 3, 4])
        .expect("sim SPI");
    assert_eq!(read_register(&chip, reg::FIFO_LEVEL), 4);
    // Transfer with a longer read than write, Read after an address, in one transaction.
    let fifo = 0x80 | (reg::FIFO_DATA << 1);
    let (mut head, mut tail) = ([0u8; 3], [0u8; 2]);
    spi.transaction(&mut [
        Operation::Transfer(&mut head, &[fifo, fifo]),
        Operation::DelayNs(100),
        Operation::Read(&mut tail),
    ])
    .expect("sim SPI");
    // Bytes shifted in past the write data are 0x00, i.e. register 0, so only two FIFO pops.
    assert_eq!(head[1..], [1, 2]);
    assert_eq!(tail, [0, 0]);
    assert_eq!(read_register(&chip, reg::FIFO_LEVEL), 2);
    let before = (chip.transfers(), chip.bytes());
    let mut tail = [0u8; 2];
    spi.read(&mut tail).expect("sim SPI");
    assert_eq!(
        (chip.transfers(), chip.bytes()),
        (before.0 + 1, before.1 + 2)
    );
}

#[test]
fn spi_transactions_per_read() {
    for uid in [&UID4[..], &UID7[..]] {
        let chip = SimChip::new();
        chip.place(VirtualCard::new(uid));
        let mut d = driver(&chip);
        let (t0, b0) = (chip.transfers(), chip.bytes());
        assert_eq!(read_card(&mut d), Ok(uid.to_vec()));
        let (t1, b1) = (chip.transfers(), chip.bytes());
        assert_eq!(d.hlta(), Ok(()));
        let (t2, b2) = (chip.transfers(), chip.bytes());
        println!(
            "{}-byte UID: REQA + select = {} SPI transactions, {} bytes; HLTA {} transactions, {} bytes",
            uid.len(),
            t1 - t0,
            b1 - b0,
            t2 - t1,
            b2 - b1
        );
        let want = if uid.len() == 4 { 53 } else { 93 };
        assert_eq!(t1 - t0, want, "driver 0.8 makes a fixed number of accesses");
    }
}

#[test]
fn ten_thousand_reads_of_a_seven_byte_card() {
    let chip = SimChip::new();
    let card = VirtualCard::new(&UID7);
    let mut d = driver(&chip);
    let start = Instant::now();
    for i in 0..10_000 {
        // Each cycle the card is presented anew: in IDLE, so REQA wakes it.
        chip.place(card.clone());
        assert_eq!(read_card(&mut d), Ok(UID7.to_vec()), "cycle {i}");
        assert_eq!(d.hlta(), Ok(()), "cycle {i}");
        chip.remove(card.uid());
    }
    println!(
        "10,000 REQA + select + HLTA cycles, 7-byte UID: {:?} ({} SPI transactions)",
        start.elapsed(),
        chip.transfers()
    );
}
