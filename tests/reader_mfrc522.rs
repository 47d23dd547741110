//! The card reader as it runs at the door: the real `mfrc522` driver behind our seam, against
//! the register-level chip simulator, for every case and fault, and a soak.

use std::time::{Duration, Instant};

use acceso::hw::mfrc522::Mfrc522Reader;
use acceso::hw::{CardReader, Seen};
use acceso::reader::Presence;
use acceso::sim::mfrc522::{FrameFault, SimChip, SimSpi, VirtualCard};

const EXCHANGE: Duration = Duration::from_millis(100);

fn reader(chip: &SimChip) -> Mfrc522Reader<SimSpi> {
    Mfrc522Reader::new(chip.spi(), EXCHANGE)
}

fn card(uid: &str) -> Seen {
    Seen::Card(uid.parse().unwrap())
}

/// Polls until `want` holds or `polls` run out; returns every result seen.
fn poll_until(r: &mut impl CardReader, polls: usize, want: impl Fn(&Seen) -> bool) -> Vec<Seen> {
    let mut seen = Vec::new();
    for _ in 0..polls {
        match r.poll() {
            Ok(s) => {
                let done = want(&s);
                seen.push(s);
                if done {
                    break;
                }
            }
            Err(e) => seen.push(Seen::Unreadable(format!("ERR {e}"))),
        }
    }
    seen
}

#[test]
fn empty_field_reads_empty_and_uids_of_every_size_read_whole() {
    let chip = SimChip::new();
    let mut r = reader(&chip);
    assert_eq!(r.poll().unwrap(), Seen::Empty);
    for uid in ["DEADBEEF", "04112233445566", "0A0B0C0D0E0F10111213"] {
        chip.place(VirtualCard::new(&hex(uid)));
        assert_eq!(r.poll().unwrap(), card(uid), "{uid}");
        // Held still: read again at every poll (the reader halts and wakes it each time).
        assert_eq!(r.poll().unwrap(), card(uid), "{uid} held");
        chip.clear_field();
        assert_eq!(r.poll().unwrap(), Seen::Empty);
    }
}

#[test]
fn a_uid_starting_with_the_cascade_tag_byte_never_loses_or_gains_it() {
    // 0x88 inside a 7-byte UID (after the cascade tag) is data and must stay.
    let chip = SimChip::new();
    let mut r = reader(&chip);
    chip.place(VirtualCard::new(&hex("04881122334455")));
    assert_eq!(r.poll().unwrap(), card("04881122334455"));
}

#[test]
fn two_cards_in_the_field_give_one_of_them_not_a_mix() {
    let chip = SimChip::new();
    let mut r = reader(&chip);
    chip.place(VirtualCard::new(&hex("11223344")));
    chip.place(VirtualCard::new(&hex("11FF3344")));
    let got = r.poll().unwrap();
    assert!(
        got == card("11223344") || got == card("11FF3344"),
        "collision read as {got:?}"
    );
    // Both cards stay: the same one keeps winning, so one presentation, not a flip-flop.
    for _ in 0..5 {
        assert_eq!(r.poll().unwrap(), got);
    }
}

#[test]
fn crc_and_bcc_errors_are_unreadable_then_the_card_reads() {
    for fault in [FrameFault::CrcError, FrameFault::BccError] {
        let chip = SimChip::new();
        let mut r = reader(&chip);
        chip.inject(fault);
        chip.place(VirtualCard::new(&hex("04112233445566")));
        let first = r.poll().unwrap();
        let Seen::Unreadable(why) = &first else {
            panic!("{fault:?} read as {first:?}")
        };
        let expect = if fault == FrameFault::CrcError {
            "CRC"
        } else {
            "BCC"
        };
        assert!(why.contains(expect), "{fault:?}: {why}");
        // A card interrupted mid-select falls back to IDLE and ignores the next wake-up
        // (ISO 14443-3), so one empty poll may come before it reads: never two, never a
        // wrong UID.
        let rest = poll_until(&mut r, 2, |s| matches!(s, Seen::Card(_)));
        assert_eq!(
            rest.last(),
            Some(&card("04112233445566")),
            "{fault:?}: {rest:?}"
        );
        assert!(
            rest[..rest.len() - 1].iter().all(|s| *s == Seen::Empty),
            "{rest:?}"
        );
    }
}

#[test]
fn a_card_leaving_mid_read_is_never_a_credential() {
    let chip = SimChip::new();
    let mut r = reader(&chip);
    chip.inject(FrameFault::LeaveMidExchange);
    chip.place(VirtualCard::new(&hex("04112233445566")));
    let first = r.poll().unwrap();
    assert!(matches!(first, Seen::Unreadable(_)), "{first:?}");
    assert_eq!(r.poll().unwrap(), Seen::Empty);
}

#[test]
fn a_silent_chip_is_an_error_within_the_deadline_and_recovers() {
    for stuck in [0x00, 0xFF] {
        let chip = SimChip::new();
        let mut r = reader(&chip);
        chip.place(VirtualCard::new(&hex("DEADBEEF")));
        assert_eq!(r.poll().unwrap(), card("DEADBEEF"));
        chip.set_silent(Some(stuck));
        let started = Instant::now();
        let err = r.poll().expect_err("a silent chip read fine");
        assert!(
            started.elapsed() < EXCHANGE * 3,
            "took {:?}",
            started.elapsed()
        );
        assert!(err.to_string().contains("stopped answering"), "{err}");
        // While silent, every poll fails (re-initialisation included), and returns promptly.
        for _ in 0..3 {
            let t = Instant::now();
            let err = r.poll().expect_err("silent chip");
            assert!(
                t.elapsed() < EXCHANGE * 3,
                "{stuck:#04X}: {err} after {:?}",
                t.elapsed()
            );
        }
        chip.set_silent(None);
        let seen = poll_until(&mut r, 5, |s| matches!(s, Seen::Card(_)));
        assert_eq!(
            seen.last(),
            Some(&card("DEADBEEF")),
            "{stuck:#04X}: {seen:?}"
        );
    }
}

#[test]
fn a_chip_that_resets_itself_is_reported_and_re_initialised() {
    let chip = SimChip::new();
    let mut r = reader(&chip);
    chip.place(VirtualCard::new(&hex("DEADBEEF")));
    assert_eq!(r.poll().unwrap(), card("DEADBEEF"));
    chip.brown_out();
    let err = r.poll().expect_err("a reset went unnoticed");
    assert!(err.to_string().contains("reset itself"), "{err}");
    assert_eq!(r.poll().unwrap(), card("DEADBEEF"));
}

#[test]
fn a_missing_chip_says_so_at_start() {
    let chip = SimChip::new();
    chip.set_silent(Some(0x00));
    let err = reader(&chip).poll().expect_err("no chip, no error");
    assert!(err.to_string().contains("0x00"), "{err}");
}

/// A tiny deterministic generator, so the soak is the same every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uid(&mut self) -> Vec<u8> {
        let len = [4, 7, 7, 7, 10][(self.next() % 5) as usize];
        loop {
            let mut uid: Vec<u8> = (0..len).map(|_| self.next() as u8).collect();
            if len == 4 && uid[0] == 0x88 {
                uid[0] = 0x08;
            }
            if uid.iter().any(|b| *b != 0) {
                return uid;
            }
        }
    }
}

#[test]
fn soak_100k_presentations_none_missed_none_duplicated() {
    const N: usize = 100_000;
    let chip = SimChip::new();
    // The soak counts presentations; the exchange deadline has its own tests. On a loaded
    // 2-core machine a descheduled thread can take longer than the 100 ms a real chip gets.
    let mut r = Mfrc522Reader::new(chip.spi(), Duration::from_secs(2));
    let mut presence = Presence::new(None);
    let mut rng = SplitMix(7);
    let t0 = Instant::now();
    let mut now = t0;
    let tick = Duration::from_millis(20);
    let (mut presented, mut unreadable, mut faults) = (0usize, 0usize, 0usize);
    for i in 0..N {
        let uid = rng.uid();
        // One card in fifty arrives with a transmission fault.
        if rng.next().is_multiple_of(50) {
            faults += 1;
            chip.inject(if rng.next().is_multiple_of(2) {
                FrameFault::CrcError
            } else {
                FrameFault::BccError
            });
        }
        chip.place(VirtualCard::new(&uid));
        let held_polls = 1 + (rng.next() % 3) as usize;
        let mut got = Vec::new();
        let mut polls = 0;
        // Hold the card until it has been read, then for a few more polls.
        while got.is_empty() || polls < held_polls {
            polls += 1;
            assert!(polls < 20, "card {i} {uid:02X?} never read");
            now += tick;
            let seen = r
                .poll()
                .unwrap_or_else(|e| panic!("card {i}: reader failed: {e}"));
            if matches!(seen, Seen::Unreadable(_)) {
                unreadable += 1;
            }
            if let Some(p) = presence.observe(&seen, now) {
                got.push(p);
            }
        }
        assert_eq!(got.len(), 1, "card {i}: {got:?}");
        assert_eq!(got[0].as_bytes(), &uid[..], "card {i}");
        presented += 1;
        chip.clear_field();
        for _ in 0..2 {
            now += tick;
            let seen = r.poll().unwrap_or_else(|e| panic!("after card {i}: {e}"));
            assert_eq!(seen, Seen::Empty);
            assert!(presence.observe(&seen, now).is_none());
        }
    }
    assert_eq!(presented, N);
    // Every injected fault cost exactly one unreadable poll, and nothing else did.
    assert_eq!(unreadable, faults);
    eprintln!(
        "soak: {N} presentations, {faults} with a fault, {} SPI transactions, {:?}",
        chip.transfers(),
        t0.elapsed()
    );
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

mod reader_thread {
    use super::*;
    use acceso::observe::{Component, HealthState, Observation, Reporter};
    use acceso::reader::ReaderLoop;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    fn health(rx: &mut mpsc::UnboundedReceiver<Observation>) -> (HealthState, String) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < until, "no reader health report");
            match rx.try_recv() {
                Ok(Observation::Health {
                    component: Component::Reader,
                    state,
                    detail,
                }) => return (state, detail),
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    fn presentation(rx: &mut mpsc::Receiver<acceso::reader::Presentation>) -> Option<String> {
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if let Ok(p) = rx.try_recv() {
                return Some(p.uid.to_string());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    #[test]
    fn the_reader_thread_reports_a_dead_chip_recovers_and_stops_promptly() {
        let chip = SimChip::new();
        let (reporter, mut obs) = Reporter::channel();
        let (tx, mut presentations) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let thread = ReaderLoop {
            every: Duration::from_millis(10),
            rearm: None,
            max_backoff: Duration::from_millis(200),
        }
        .spawn(Box::new(reader(&chip)), tx, reporter, cancel.clone())
        .unwrap();

        chip.place(VirtualCard::new(&hex("DEADBEEF")));
        assert_eq!(
            presentation(&mut presentations).as_deref(),
            Some("DEADBEEF")
        );
        // Held still: no second presentation.
        assert_eq!(presentation(&mut presentations), None);

        chip.set_silent(Some(0xFF));
        let (state, detail) = health(&mut obs);
        assert_eq!(state, HealthState::Failed, "{detail}");
        chip.set_silent(None);
        assert_eq!(health(&mut obs).0, HealthState::Ok);
        // The card never left, so recovery is not a new tap.
        assert_eq!(presentation(&mut presentations), None);
        chip.clear_field();
        std::thread::sleep(Duration::from_millis(50));
        chip.place(VirtualCard::new(&hex("DEADBEEF")));
        assert_eq!(
            presentation(&mut presentations).as_deref(),
            Some("DEADBEEF")
        );

        // A dead chip during stop must not hold the stop up.
        chip.set_silent(Some(0x00));
        std::thread::sleep(Duration::from_millis(300));
        let stopping = Instant::now();
        cancel.cancel();
        thread.join().unwrap();
        assert!(
            stopping.elapsed() < Duration::from_millis(500),
            "{:?}",
            stopping.elapsed()
        );
    }

    #[test]
    fn a_card_left_on_the_reader_re_arms_after_the_configured_time() {
        let chip = SimChip::new();
        let (tx, mut presentations) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let thread = ReaderLoop {
            every: Duration::from_millis(10),
            rearm: Some(Duration::from_millis(300)),
            max_backoff: Duration::from_millis(200),
        }
        .spawn(
            Box::new(reader(&chip)),
            tx,
            Reporter::log_only(),
            cancel.clone(),
        )
        .unwrap();
        chip.place(VirtualCard::new(&hex("DEADBEEF")));
        let t0 = Instant::now();
        assert_eq!(
            presentation(&mut presentations).as_deref(),
            Some("DEADBEEF")
        );
        assert_eq!(
            presentation(&mut presentations).as_deref(),
            Some("DEADBEEF")
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t0.elapsed()
        );
        cancel.cancel();
        thread.join().unwrap();
    }
}

#[test]
fn an_all_zero_uid_is_a_read_error_never_a_credential() {
    let chip = SimChip::new();
    let mut r = reader(&chip);
    chip.place(VirtualCard::new(&[0, 0, 0, 0]));
    let seen = r.poll().unwrap();
    let Seen::Unreadable(why) = &seen else {
        panic!("all-zero UID read as {seen:?}")
    };
    assert!(why.contains("all zero"), "{why}");
}
