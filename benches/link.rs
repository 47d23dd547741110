//! The reliability runs of `tests/link_reliability.rs` in a release build, with their figures:
//! events delivered, repeats, delivery time and rate, resident memory. Needs Debian's mosquitto.
//!
//! `cargo bench --bench link` prints a Markdown table for BENCHMARKS.md.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use support::reliability::{broker_restart_with_queued, crash_mid_burst, long_outage, Run};

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runs: Vec<Run> = rt.block_on(async {
        vec![
            broker_restart_with_queued(1_000).await,
            crash_mid_burst(2_000).await,
            long_outage(20_000).await,
        ]
    });
    println!("| run | events | lost | repeats | delivery | events/s | resident memory (KiB) |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for run in &runs {
        let rss: Vec<String> = run
            .rss_kib
            .iter()
            .map(|(at, kib)| format!("{at}: {kib}"))
            .collect();
        println!(
            "| {} | {} | {} | {} | {:.2} s | {:.0} | {} |",
            run.name,
            run.events,
            run.events - run.received,
            run.repeats,
            run.delivery.as_secs_f64(),
            run.per_second(),
            rss.join(", ")
        );
    }
}
