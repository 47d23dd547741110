//! The face engine's cost per camera frame: detect, embed the largest face, and both, on
//! 640x480 frames made from the test photos, plus the process's resident memory once the
//! models are loaded. Then the same frames through Python's cv2 (`scripts/face-bench-python`,
//! Debian's python3-opencv) for comparison, in the same run.
//!
//! Run: `cargo bench --bench face` (release). Numbers are in BENCHMARKS.md, "Faces".

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use acceso::face::engine::{EngineOptions, FaceEngine, Image};
use acceso::hw::Frame;

const RUNS: usize = 30;
const WARMUP: usize = 3;

fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss() -> String {
    vm_rss_kib().map_or("unknown".into(), |k| {
        format!("{:.1} MiB", k as f64 / 1024.0)
    })
}

/// Median time of `f` in milliseconds, after a few warm-up calls.
fn median_ms(mut f: impl FnMut()) -> f64 {
    for _ in 0..WARMUP {
        f();
    }
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    println!("VmRSS before loading the models: {}", rss());
    let t = Instant::now();
    let mut engine = FaceEngine::load(&root.join("models"), EngineOptions::default())
        .expect("load the shipped models");
    println!(
        "models loaded (hash check included) in {:.0} ms; VmRSS after loading: {}",
        t.elapsed().as_secs_f64() * 1000.0,
        rss()
    );
    let out_dir = std::env::temp_dir().join(format!("acceso-face-bench-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).expect("bench temp dir");
    let mut written: Vec<PathBuf> = Vec::new();
    for photo in ["groups/2008_004176.jpg", "portraits/obama.jpg"] {
        let path = root.join("tests/fixtures/faces").join(photo);
        let bytes = std::fs::read(&path).expect("read photo");
        let img: Image = engine
            .decode(&Frame::Encoded {
                name: photo.into(),
                bytes,
            })
            .and_then(|i| i.fit_into(640, 480))
            .expect("640x480 frame");
        let frame = img.to_frame().expect("raw frame");
        let faces = engine.detect(&img).expect("detect");
        let largest = faces.first().expect("a face").clone();
        let detect = median_ms(|| {
            std::hint::black_box(engine.detect(&img).expect("detect"));
        });
        let embed = median_ms(|| {
            std::hint::black_box(engine.embed(&img, &largest).expect("embed"));
        });
        let both = median_ms(|| {
            let d = engine.detect(&img).expect("detect");
            std::hint::black_box(engine.embed(&img, &d[0]).expect("embed"));
        });
        let all = median_ms(|| {
            std::hint::black_box(engine.faces(&frame).expect("faces"));
        });
        println!(
            "rust {photo} as 640x480: faces={} detect+embed median {both:.1} ms (detect \
             {detect:.1}, embed {embed:.1}); raw frame -> all {} faces embedded {all:.1} ms",
            faces.len(),
            faces.len()
        );
        let file = out_dir.join(format!("{}.png", photo.replace('/', "_")));
        std::fs::write(&file, img.encode(".png").expect("png")).expect("write frame");
        written.push(file);
    }
    println!("VmRSS after the runs: {}", rss());
    let script = root.join("scripts/face-bench-python");
    for file in &written {
        match Command::new(&script)
            .arg(file)
            .arg(RUNS.to_string())
            .status()
        {
            Ok(s) if s.success() => {}
            Ok(s) => println!("python bench on {} failed: {s}", file.display()),
            Err(e) => println!("python bench not run ({}): {e}", script.display()),
        }
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}
