//! 1:N face matching: one probe embedding against 1,000, 10,000 and 100,000 enrolled
//! embeddings (`FaceIndex::best`: every dot product, the closest user and the closest other
//! user), on one core. Pure Rust, no OpenCV: runs in card-only builds too.
//!
//! `cargo bench --bench face_match`; results in BENCHMARKS.md. Embeddings are random unit
//! vectors from a seeded generator, two per user, so every run measures the same data.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use acceso::face::index::FaceIndex;
use acceso::face::{normalised, EMBEDDING_LEN, MODEL_ID};
use acceso_protocol::{FaceEmbedding, User};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SEED: u64 = 0x00FA_CE50_2026;
const PER_USER: usize = 2;

/// splitmix64, as in the decision bench.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn unit(&mut self) -> Vec<f32> {
        let v: Vec<f32> = (0..EMBEDDING_LEN).map(|_| self.next_f32()).collect();
        normalised(&v).expect("a random vector is not zero")
    }
}

fn users(embeddings: usize, rng: &mut Rng) -> Vec<Arc<User>> {
    (0..embeddings / PER_USER)
        .map(|i| {
            Arc::new(User {
                id: format!("u{i:06}"),
                name: format!("User {i}"),
                enabled: true,
                cards: vec![],
                faces: (0..PER_USER)
                    .map(|_| FaceEmbedding {
                        model: MODEL_ID.into(),
                        vector: rng.unit(),
                    })
                    .collect(),
                valid_from: None,
                valid_until: None,
                doors: None,
                schedule: vec![],
                two_factor: false,
            })
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("face_match");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for n in [1_000usize, 10_000, 100_000] {
        let mut rng = Rng(SEED);
        let users = users(n, &mut rng);
        let index = FaceIndex::build(&users);
        assert_eq!(index.len(), n);
        let probe = rng.unit();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("best", n), &n, |b, _| {
            b.iter(|| black_box(&index).best(black_box(&probe)).map(|m| m.score))
        });
    }
    group.finish();

    // Building the index after an update (off the decision path, swapped in whole).
    let mut rng = Rng(SEED);
    let users = users(100_000, &mut rng);
    let mut build = c.benchmark_group("face_index");
    build.sample_size(10);
    build.bench_function("build_100k", |b| {
        b.iter(|| FaceIndex::build(black_box(&users)).len())
    });
    build.finish();
}

criterion_group!(face_match, benches);
criterion_main!(face_match);
