//! The card reader's costs, measured in the simulator: one poll through the real `mfrc522`
//! driver and our seam (CPU time and SPI transactions/bytes, which set the time on a real bus),
//! and the time from a card entering the field to its presentation reaching the decision core.
//!
//! Run: `cargo bench --bench reader`. Numbers are in BENCHMARKS.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use acceso::hw::mfrc522::Mfrc522Reader;
use acceso::hw::{CardReader, Seen};
use acceso::observe::Reporter;
use acceso::reader::ReaderLoop;
use acceso::sim::mfrc522::{SimChip, VirtualCard};
use criterion::Criterion;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const UIDS: [(&str, &[u8]); 3] = [
    ("4-byte", &[0xDE, 0xAD, 0xBE, 0xEF]),
    ("7-byte", &[0x04, 0x6B, 0x2F, 0x91, 0xC4, 0x5A, 0x80]),
    ("10-byte", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
];

fn reader(chip: &SimChip) -> Mfrc522Reader<acceso::sim::mfrc522::SimSpi> {
    Mfrc522Reader::new(chip.spi(), Duration::from_millis(100))
}

/// SPI transactions and bytes of one poll in a given situation.
fn cost(chip: &SimChip, r: &mut Mfrc522Reader<acceso::sim::mfrc522::SimSpi>) -> (u64, u64, Seen) {
    let (t0, b0) = (chip.transfers(), chip.bytes());
    let seen = r.poll().expect("reader works");
    (chip.transfers() - t0, chip.bytes() - b0, seen)
}

fn print_costs() {
    println!("\nSPI cost of one poll (transactions, bytes, bus time of the bytes at 1 MHz):");
    let chip = SimChip::new();
    let mut r = reader(&chip);
    r.poll().expect("init");
    let (t, b, seen) = cost(&chip, &mut r);
    assert_eq!(seen, Seen::Empty);
    println!("  empty field: {t} transactions, {b} bytes, {} us", b * 8);
    for (name, uid) in UIDS {
        chip.place(VirtualCard::new(uid));
        let (t, b, seen) = cost(&chip, &mut r);
        assert!(matches!(seen, Seen::Card(_)));
        println!("  {name} card: {t} transactions, {b} bytes, {} us", b * 8);
        chip.clear_field();
        r.poll().expect("empty");
    }
}

/// Card enters the field at a random moment; time until the presentation arrives.
fn print_latency(poll: Duration, samples: usize) {
    let chip = SimChip::new();
    let (tx, mut rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let thread = ReaderLoop {
        every: poll,
        rearm: None,
        max_backoff: Duration::from_secs(1),
    }
    .spawn(
        Box::new(reader(&chip)),
        tx,
        Reporter::log_only(),
        cancel.clone(),
    )
    .expect("reader thread");
    let mut lat = Vec::with_capacity(samples);
    let mut seed = 12345u64;
    for _ in 0..samples {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_micros(
            (seed >> 33) % poll.as_micros() as u64,
        ));
        chip.place(VirtualCard::new(UIDS[1].1));
        let t0 = Instant::now();
        loop {
            if rx.try_recv().is_ok() {
                break;
            }
            std::thread::yield_now();
        }
        lat.push(t0.elapsed());
        chip.clear_field();
        std::thread::sleep(poll * 3);
    }
    cancel.cancel();
    thread.join().expect("reader thread ends");
    lat.sort();
    let pct = |p: f64| lat[((p * lat.len() as f64) as usize).min(lat.len() - 1)];
    println!(
        "\ncard in field -> presentation, poll {} ms, {samples} samples: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        poll.as_millis(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        lat[lat.len() - 1]
    );
}

fn main() {
    print_costs();
    print_latency(Duration::from_millis(20), 200);

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = c.benchmark_group("poll");
    let chip = SimChip::new();
    let mut r = reader(&chip);
    r.poll().expect("init");
    group.bench_function("empty_field", |b| {
        b.iter(|| black_box(r.poll().expect("poll")))
    });
    for (name, uid) in UIDS {
        chip.clear_field();
        chip.place(VirtualCard::new(uid));
        group.bench_function(format!("card_{name}"), |b| {
            b.iter(|| black_box(r.poll().expect("poll")))
        });
    }
    group.finish();
    c.final_summary();
}
