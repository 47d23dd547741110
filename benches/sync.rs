//! User sync on a real store: one update applied, and a snapshot of 10,000 users (two cards
//! and one SFace embedding each) verified, assembled and swapped in.
//!
//! `cargo bench --bench sync`; results in BENCHMARKS.md. The database is a real file in the
//! target directory (WAL, `synchronous=FULL`, as the agent opens it), so every commit waits for
//! an fsync: that is most of what one update costs, and it is measured, not avoided. Users are
//! generated from a seeded PRNG, so every run measures the same data.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use acceso::face::{normalised, EMBEDDING_LEN, MODEL_ID};
use acceso::store::{ApplyOutcome, Store};
use acceso_protocol::sync::{self, Assembly};
use acceso_protocol::{
    CardUid, FaceEmbedding, SigningKey, SyncResponse, TrustedKeys, Update, UpdateOp, User,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const SEED: u64 = 0x51C0_2026;
const SNAPSHOT_USERS: usize = 10_000;

/// splitmix64, as in the other benches.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// User `i`: cards 2i+1 and 2i+2 (7-byte UIDs), one unit SFace embedding.
fn user(i: usize, rng: &mut Rng) -> User {
    let card = |n: usize| {
        let mut b = [0x04, 0, 0, 0, 0, 0, 0];
        b[3..].copy_from_slice(&(n as u32).to_be_bytes());
        CardUid::from_bytes(&b).expect("a 7-byte non-zero UID")
    };
    let v: Vec<f32> = (0..EMBEDDING_LEN).map(|_| rng.next_f32()).collect();
    User {
        id: format!("u{i:06}"),
        name: format!("User {i}"),
        enabled: true,
        cards: vec![card(2 * i + 1), card(2 * i + 2)],
        faces: vec![FaceEmbedding {
            model: MODEL_ID.into(),
            vector: normalised(&v).expect("a random vector is not zero"),
        }],
        valid_from: None,
        valid_until: None,
        doors: None,
        schedule: vec![],
        two_factor: false,
    }
}

fn users(n: usize) -> Vec<User> {
    let mut rng = Rng(SEED);
    (0..n).map(|i| user(i, &mut rng)).collect()
}

fn store_in(dir: &Path) -> Store {
    let (store, moved) = Store::open(&dir.join("acceso.db")).expect("the store opens");
    assert!(moved.is_none());
    store
}

/// Verifies, parses and validates every page, and assembles them.
fn open_and_assemble(pages: &[Vec<u8>], keys: &TrustedKeys) -> Vec<User> {
    let mut assembly: Option<Assembly> = None;
    for p in pages {
        let SyncResponse::Page(page) =
            SyncResponse::open(p, Some(keys)).expect("a signed page opens")
        else {
            panic!("not a page");
        };
        let a = assembly.get_or_insert_with(|| Assembly::new(&page));
        if let Some(users) = a.add(page).expect("the snapshot is consistent") {
            return users;
        }
    }
    panic!("the snapshot is incomplete");
}

fn apply_one(c: &mut Criterion, tmp: &Path) {
    let mut group = c.benchmark_group("sync_apply_update");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for n in [1_000usize, 10_000] {
        let dir = tempfile::tempdir_in(tmp).expect("a temporary directory");
        let mut store = store_in(dir.path());
        let stored = users(n);
        assert_eq!(
            store.replace_users(1, &stored).expect("replace_users"),
            ApplyOutcome::Applied
        );
        let mut rng = Rng(SEED ^ 1);
        // Each iteration upserts one user (new body, two new cards) at the next version.
        let mut version = 1u64;
        group.bench_with_input(BenchmarkId::new("users_stored", n), &n, |b, _| {
            b.iter(|| {
                version += 1;
                // Users past the stored ones, so their cards are free; a repeat replaces
                // its own cards.
                let u = user(n + (version as usize % 1000), &mut rng);
                let update = Update {
                    version,
                    op: UpdateOp::UpsertUser(u),
                };
                let outcome = store.apply_update(black_box(&update)).expect("apply");
                assert_eq!(outcome, ApplyOutcome::Applied);
            })
        });
    }
    group.finish();
}

fn snapshot(c: &mut Criterion, tmp: &Path) {
    let key = SigningKey::generate().expect("a P-256 key");
    let keys = TrustedKeys::new(vec![key.public_key()]);
    let all = users(SNAPSHOT_USERS);
    let pages = sync::seal_snapshot("door-1", "r1", 2, &all, Some(&key)).expect("pages");
    let bytes: usize = pages.iter().map(Vec::len).sum();
    println!(
        "snapshot of {SNAPSHOT_USERS} users: {} signed pages, {bytes} bytes",
        pages.len()
    );
    assert_eq!(open_and_assemble(&pages, &keys), all);

    let dir = tempfile::tempdir_in(tmp).expect("a temporary directory");
    let mut store = store_in(dir.path());
    // The store starts with the same 10,000 users, as a door that resyncs would have.
    store.replace_users(1, &all).expect("replace_users");
    let mut version = 1u64;

    let mut group = c.benchmark_group("sync_snapshot_10k");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    group.bench_function("open_verify_assemble", |b| {
        b.iter(|| open_and_assemble(black_box(&pages), &keys))
    });
    group.bench_function("replace_users", |b| {
        b.iter(|| {
            version += 1;
            let outcome = store
                .replace_users(version, black_box(&all))
                .expect("replace");
            assert_eq!(outcome, ApplyOutcome::Applied);
        })
    });
    group.bench_function("total", |b| {
        b.iter(|| {
            version += 1;
            let users = open_and_assemble(black_box(&pages), &keys);
            let outcome = store.replace_users(version, &users).expect("replace");
            assert_eq!(outcome, ApplyOutcome::Applied);
        })
    });
    group.finish();

    // Once more by the wall clock, each part timed on its own, for the record.
    let t = Instant::now();
    let users = open_and_assemble(&pages, &keys);
    let opened = t.elapsed();
    version += 1;
    let t = Instant::now();
    store.replace_users(version, &users).expect("replace");
    let replaced = t.elapsed();
    println!(
        "one pass: open+verify+assemble {:.1} ms, replace_users {:.1} ms, total {:.1} ms",
        opened.as_secs_f64() * 1e3,
        replaced.as_secs_f64() * 1e3,
        (opened + replaced).as_secs_f64() * 1e3
    );
}

fn benches(c: &mut Criterion) {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    apply_one(c, tmp);
    snapshot(c, tmp);
}

criterion_group!(sync_benches, benches);
criterion_main!(sync_benches);
