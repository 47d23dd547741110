//! Reconnect backoff: exponential with jitter, up to a cap. It resets only after a connection
//! has stayed up for a while, so one that dies right after CONNACK (a second device with our
//! client id, a policy that rejects us) cannot become a tight loop.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    stable_after: Duration,
    attempt: u32,
    connected_at: Option<Instant>,
    rng: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration, stable_after: Duration, seed: u64) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            stable_after,
            attempt: 0,
            connected_at: None,
            rng: seed | 1,
        }
    }

    pub fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// The connection failed (or could not be made) at `now`: how long to wait.
    pub fn failed(&mut self, now: Instant) -> Duration {
        if let Some(up) = self.connected_at.take() {
            if now.duration_since(up) >= self.stable_after {
                self.attempt = 0;
            }
        }
        let exp = self.min.saturating_mul(1u32 << self.attempt.min(20));
        let base = exp.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // Full jitter in the upper half: spreads a fleet that lost its broker at once.
        let half = base / 2;
        half + half.mul_f64(self.unit())
    }

    fn unit(&mut self) -> f64 {
        // xorshift64: jitter needs spread, not cryptographic quality.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);
    const STABLE: Duration = Duration::from_secs(30);

    #[test]
    fn waits_grow_to_the_cap_with_jitter() {
        let t = Instant::now();
        let mut b = Backoff::new(MIN, MAX, STABLE, 42);
        let waits: Vec<Duration> = (0..10).map(|_| b.failed(t)).collect();
        for (i, w) in waits.iter().enumerate() {
            let base = (MIN * (1 << i)).min(MAX);
            assert!(
                *w >= base / 2 && *w <= base,
                "attempt {i}: {w:?} vs {base:?}"
            );
        }
        assert!(waits[9] >= MAX / 2);
    }

    #[test]
    fn a_connection_that_dies_at_once_does_not_reset_the_backoff() {
        let t = Instant::now();
        let mut b = Backoff::new(MIN, MAX, STABLE, 7);
        for _ in 0..5 {
            b.failed(t);
        }
        // Connected, kicked off a second later (a twin with our client id), many times.
        for i in 0..5 {
            b.connected(t);
            let w = b.failed(t + Duration::from_secs(1));
            assert!(w >= Duration::from_secs(16), "round {i}: {w:?}");
        }
    }

    #[test]
    fn a_connection_that_stayed_up_resets_it() {
        let t = Instant::now();
        let mut b = Backoff::new(MIN, MAX, STABLE, 9);
        for _ in 0..8 {
            b.failed(t);
        }
        b.connected(t);
        let w = b.failed(t + STABLE);
        assert!(w <= MIN, "{w:?}");
    }

    #[test]
    fn seeds_spread_the_fleet() {
        let t = Instant::now();
        let waits: Vec<Duration> = (1..20u64)
            .map(|seed| {
                let mut b = Backoff::new(MIN, MAX, STABLE, seed * 7919);
                for _ in 0..6 {
                    b.failed(t);
                }
                b.failed(t)
            })
            .collect();
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 15, "{waits:?}");
    }
}
