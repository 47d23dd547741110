//! The cards in front of the antenna: ISO/IEC 14443-3 type A PICCs with their state machine
//! (IDLE, READY per cascade level, ACTIVE, HALT), what they answer to REQA/WUPA, anticollision,
//! SELECT and HLTA, and the one-shot faults that corrupt or cut short those answers.
//!
//! Bits go over the air least significant bit first, as type A sends them; answers are handed
//! back to the chip as bit strings so that its receiver can detect collisions bit by bit.

use super::FrameFault;

const REQA: u8 = 0x26;
const WUPA: u8 = 0x52;
const HLTA: u8 = 0x50;
/// SEL of cascade levels 1, 2 and 3.
const SEL: [u8; 3] = [0x93, 0x95, 0x97];
/// NVB of a SELECT: seven whole bytes (SEL, NVB, CLn, BCC) before the CRC.
const NVB_SELECT: u8 = 0x70;
/// First byte of CLn at every level but the last of a 7- or 10-byte UID.
const CASCADE_TAG: u8 = 0x88;
/// SAK with the cascade bit: the UID continues at the next level.
const SAK_CASCADE: u8 = 0x04;
/// SAK of a MIFARE Classic 1K, given at the last level.
const SAK_CLASSIC_1K: u8 = 0x08;
/// Bits in the anticollision answer region: four bytes of CLn and the BCC.
const REGION_BITS: usize = 40;

/// CRC_A (ISO/IEC 14443-3 annex B): x^16 + x^12 + x^5 + 1, reflected, preset 0x6363.
pub(super) const CRC_A_PRESET: u16 = 0x6363;

/// One byte into a running CRC_A (or any CRC with this polynomial and another preset).
pub(super) fn crc_update(crc: u16, byte: u8) -> u16 {
    let mut ch = byte ^ (crc & 0xFF) as u8;
    ch ^= ch << 4;
    let ch = u16::from(ch);
    (crc >> 8) ^ (ch << 8) ^ (ch << 3) ^ (ch >> 4)
}

/// CRC_A of `data` in the order it goes on the air: low byte first.
pub(super) fn crc_a(data: &[u8]) -> [u8; 2] {
    data.iter()
        .fold(CRC_A_PRESET, |crc, &b| crc_update(crc, b))
        .to_le_bytes()
}

/// A card that can be put in the field: its UID decides its ATQA, its cascade levels and SAKs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualCard {
    uid: Vec<u8>,
}

impl VirtualCard {
    /// A MIFARE Classic 1K style card with this UID.
    ///
    /// # Panics
    /// If the UID is not 4, 7 or 10 bytes long: this is a test helper, and ISO/IEC 14443-3
    /// has no other sizes.
    pub fn new(uid: &[u8]) -> VirtualCard {
        assert!(
            matches!(uid.len(), 4 | 7 | 10),
            "a type A UID has 4, 7 or 10 bytes, not {}",
            uid.len()
        );
        VirtualCard { uid: uid.to_vec() }
    }

    pub fn uid(&self) -> &[u8] {
        &self.uid
    }

    fn levels(&self) -> usize {
        match self.uid.len() {
            4 => 1,
            7 => 2,
            _ => 3,
        }
    }

    /// ATQA low byte first: bits 7..6 give the UID size, bit 2 bit-frame anticollision.
    fn atqa(&self) -> [u8; 2] {
        let size = match self.levels() {
            1 => 0x00,
            2 => 0x40,
            _ => 0x80,
        };
        [size | 0x04, 0x00]
    }

    /// CLn and its BCC at cascade `level` (0-based): 0x88 and three UID bytes before the last
    /// level, the last four UID bytes at it.
    fn cln(&self, level: usize) -> [u8; 5] {
        let at = 3 * level;
        let mut region = [0u8; 5];
        if level + 1 == self.levels() {
            region[..4].copy_from_slice(&self.uid[at..at + 4]);
        } else {
            region[0] = CASCADE_TAG;
            region[1..4].copy_from_slice(&self.uid[at..at + 3]);
        }
        region[4] = region[..4].iter().fold(0, |a, b| a ^ b);
        region
    }
}

/// A frame on the air: whole bytes, the last one possibly partial (bit-oriented frames).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Frame {
    bytes: Vec<u8>,
    bits: usize,
}

impl Frame {
    /// `last_bits` valid bits in the last byte, 0 meaning all eight (BitFramingReg TxLastBits).
    pub(super) fn new(mut bytes: Vec<u8>, last_bits: u8) -> Frame {
        let last_bits = usize::from(last_bits & 0x07);
        let bits = match (bytes.len(), last_bits) {
            (0, _) => 0,
            (n, 0) => 8 * n,
            (n, l) => 8 * (n - 1) + l,
        };
        // Bits above TxLastBits never leave the chip.
        if let (Some(last), true) = (bytes.last_mut(), last_bits != 0) {
            *last &= (1u8 << last_bits) - 1;
        }
        Frame { bytes, bits }
    }

    pub(super) fn bits(&self) -> usize {
        self.bits
    }

    fn bit(&self, i: usize) -> bool {
        self.bytes[i / 8] >> (i % 8) & 1 == 1
    }

    /// The bytes, if the frame has no partial byte.
    fn whole(&self) -> Option<&[u8]> {
        self.bits.is_multiple_of(8).then_some(&self.bytes[..])
    }

    /// Bits of UID CLn the PCD sent in a bit-oriented anticollision frame (SEL, NVB, known
    /// bits); `None` for every other frame.
    pub(super) fn anticollision_known_bits(&self) -> Option<usize> {
        match self.bytes[..] {
            [sel, nvb, ..] if SEL.contains(&sel) && nvb != NVB_SELECT && self.bits >= 16 => {
                Some(self.bits - 16)
            }
            _ => None,
        }
    }

    /// Whole bytes whose last two are a correct CRC_A of the rest.
    fn with_valid_crc(&self) -> Option<&[u8]> {
        let bytes = self.whole()?;
        let (body, crc) = bytes.split_at(bytes.len().checked_sub(2)?);
        (crc == crc_a(body)).then_some(body)
    }
}

fn bit_of(bytes: &[u8], i: usize) -> bool {
    bytes[i / 8] >> (i % 8) & 1 == 1
}

/// What one card sends back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Atqa([u8; 2]),
    /// The bits of CLn + BCC from `from` on: the rest of an anticollision answer.
    Uid {
        region: [u8; 5],
        from: usize,
    },
    /// SAK and its CRC_A.
    Sak([u8; 3]),
}

impl Answer {
    fn bits(&self) -> Vec<bool> {
        match self {
            Answer::Atqa(b) => (0..16).map(|i| bit_of(b, i)).collect(),
            Answer::Uid { region, from } => {
                (*from..REGION_BITS).map(|i| bit_of(region, i)).collect()
            }
            Answer::Sak(b) => (0..24).map(|i| bit_of(b, i)).collect(),
        }
    }
}

/// ISO/IEC 14443-3 PICC states. `woken` marks READY*/ACTIVE*: reached from HALT by WUPA, so
/// an error sends the card back to HALT rather than IDLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Ready { level: usize, woken: bool },
    Active { woken: bool },
    Halt,
}

#[derive(Debug, Clone)]
struct Picc {
    card: VirtualCard,
    state: State,
}

impl Picc {
    /// Where an unexpected or corrupt frame sends a card that was in READY or ACTIVE.
    fn fall_back(woken: bool) -> State {
        if woken {
            State::Halt
        } else {
            State::Idle
        }
    }

    fn receive(&mut self, frame: &Frame) -> Option<Answer> {
        let woken = match self.state {
            State::Ready { woken, .. } | State::Active { woken } => Some(woken),
            State::Idle | State::Halt => None,
        };
        if frame.bits == 7 {
            let cmd = frame.bytes[0];
            let wakes = match self.state {
                State::Idle => cmd == REQA || cmd == WUPA,
                State::Halt => cmd == WUPA,
                // REQA/WUPA are not commands of READY or ACTIVE: the card drops back, silent.
                // (This is why a card left on the reader without HLTA answers every other REQA.)
                State::Ready { .. } | State::Active { .. } => false,
            };
            if wakes {
                let from_halt = self.state == State::Halt;
                self.state = State::Ready {
                    level: 0,
                    woken: from_halt,
                };
                return Some(Answer::Atqa(self.card.atqa()));
            }
            if let Some(w) = woken {
                self.state = Self::fall_back(w);
            }
            return None;
        }
        match self.state {
            // Only a short frame reaches a card in IDLE or HALT.
            State::Idle | State::Halt => None,
            State::Ready { level, woken } => self.ready(frame, level, woken),
            State::Active { woken } => {
                self.state = match frame.with_valid_crc() {
                    Some([HLTA, 0x00]) => State::Halt,
                    _ => Self::fall_back(woken),
                };
                None
            }
        }
    }

    /// Anticollision and SELECT at the card's current cascade level.
    fn ready(&mut self, frame: &Frame, level: usize, woken: bool) -> Option<Answer> {
        // Only ANTICOLLISION/SELECT of the card's own cascade level are commands here; anything
        // else (REQA, WUPA, HLTA, another level's SEL) is an error that sends the card back.
        let nvb = match frame.bytes[..] {
            [sel, nvb, ..] if frame.bits >= 16 && sel == SEL[level] => nvb,
            _ => {
                self.state = Self::fall_back(woken);
                return None;
            }
        };
        let region = self.card.cln(level);
        if nvb == NVB_SELECT {
            let Some(body) = frame.with_valid_crc().filter(|b| b.len() == 7) else {
                self.state = Self::fall_back(woken);
                return None;
            };
            if body[2..] != region {
                // Another card is being selected; this one waits in READY.
                return None;
            }
            let sak = if level + 1 == self.card.levels() {
                self.state = State::Active { woken };
                SAK_CLASSIC_1K
            } else {
                self.state = State::Ready {
                    level: level + 1,
                    woken,
                };
                SAK_CASCADE
            };
            let crc = crc_a(&[sak]);
            return Some(Answer::Sak([sak, crc[0], crc[1]]));
        }
        let (bytes, bits) = (usize::from(nvb >> 4), usize::from(nvb & 0x0F));
        let known = (8 * bytes + bits).checked_sub(16);
        let Some(known) = known.filter(|&k| bits < 8 && k < REGION_BITS && frame.bits == 16 + k)
        else {
            self.state = Self::fall_back(woken);
            return None;
        };
        // Only cards whose UID starts with the bits the PCD already knows answer.
        let matches = (0..known).all(|i| frame.bit(16 + i) == bit_of(&region, i));
        matches.then_some(Answer::Uid {
            region,
            from: known,
        })
    }
}

/// Everything in front of the antenna: the cards, and the faults waiting for their answer.
#[derive(Debug, Default)]
pub(super) struct Field {
    piccs: Vec<Picc>,
    faults: Vec<FrameFault>,
}

impl Field {
    /// A card enters the field; it starts in IDLE, as after any power-up.
    pub(super) fn place(&mut self, card: VirtualCard) {
        self.piccs.push(Picc {
            card,
            state: State::Idle,
        });
    }

    pub(super) fn remove(&mut self, uid: &[u8]) {
        self.piccs.retain(|p| p.card.uid() != uid);
    }

    pub(super) fn clear(&mut self) {
        self.piccs.clear();
    }

    pub(super) fn inject(&mut self, fault: FrameFault) {
        self.faults.push(fault);
    }

    /// The RF field went away: every card loses power and starts over in IDLE (HALT included).
    pub(super) fn power_off(&mut self) {
        for p in &mut self.piccs {
            p.state = State::Idle;
        }
    }

    /// A card has been selected (ACTIVE), which MIFARE authentication needs.
    pub(super) fn has_active_card(&self) -> bool {
        self.piccs
            .iter()
            .any(|p| matches!(p.state, State::Active { .. }))
    }

    /// Every card hears `frame`; returns the answer bits of each card that answered.
    pub(super) fn exchange(&mut self, frame: &Frame) -> Vec<Vec<bool>> {
        let mut answered = Vec::new();
        let mut answers = Vec::new();
        for (i, picc) in self.piccs.iter_mut().enumerate() {
            if let Some(answer) = picc.receive(frame) {
                answered.push(i);
                answers.push(answer);
            }
        }
        let mut leave = false;
        for kind in [
            FrameFault::CrcError,
            FrameFault::BccError,
            FrameFault::LeaveMidExchange,
        ] {
            let applies = |a: &Answer| match kind {
                FrameFault::CrcError => matches!(a, Answer::Sak(_)),
                FrameFault::BccError => matches!(a, Answer::Uid { .. }),
                FrameFault::LeaveMidExchange => matches!(a, Answer::Atqa(_)),
            };
            let Some(at) = self.faults.iter().position(|f| *f == kind) else {
                continue;
            };
            if !answers.iter().any(applies) {
                continue;
            }
            self.faults.remove(at);
            for answer in answers.iter_mut().filter(|a| applies(a)) {
                match answer {
                    Answer::Sak(b) => b[1] ^= 0xFF,
                    Answer::Uid { region, .. } => region[4] ^= 0xFF,
                    Answer::Atqa(_) => leave = true,
                }
            }
        }
        let bits = answers.iter().map(Answer::bits).collect();
        if leave {
            // Answered, then gone: removed from the back so the indices stay valid.
            for &i in answered.iter().rev() {
                self.piccs.remove(i);
            }
        }
        bits
    }
}
