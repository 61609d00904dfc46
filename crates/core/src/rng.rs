//! Seedable randomness for P2C picks, jitter and ramp sampling.
//!
//! Every random choice the layers make goes through these generators, so a test or a
//! drill given the same seed makes the same choices. The algorithm is wyrand: one
//! 64-bit addition and one 128-bit multiply per number, which is fast enough for the
//! hot path and good enough for load balancing (not for cryptography).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const INCREMENT: u64 = 0xa076_1d64_78bd_642f;
const MIX: u64 = 0xe703_7ed1_a0b4_28db;

#[inline]
fn mix(state: u64) -> u64 {
    let t = u128::from(state) * u128::from(state ^ MIX);
    ((t >> 64) as u64) ^ (t as u64)
}

#[inline]
fn unit_f64(x: u64) -> f64 {
    // 53 random bits into [0, 1).
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[inline]
fn below(x: u64, n: u64) -> u64 {
    // Lemire's multiply-shift: maps a 64-bit number onto 0..n with negligible bias.
    ((u128::from(x) * u128::from(n)) >> 64) as u64
}

fn jitter(d: Duration, fraction: f64, u: f64) -> Duration {
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let factor = 1.0 + fraction * (2.0 * u - 1.0);
    // A long duration times a factor above 1 can pass `Duration::MAX`: saturate.
    Duration::try_from_secs_f64((d.as_secs_f64() * factor).max(0.0)).unwrap_or(Duration::MAX)
}

/// A seed drawn from the process's hasher keys and the clock, for callers that did
/// not configure one.
pub fn entropy_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// A fast seedable generator owned by one user (`&mut self`).
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator that always produces the same sequence for the same seed.
    pub fn seeded(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// A generator seeded from [`entropy_seed`].
    pub fn from_entropy() -> Self {
        Rng::seeded(entropy_seed())
    }

    /// The generator of stream number `stream` of `seed`: independent streams of one
    /// seed (a simulator's requests, say), each replayable on its own.
    pub fn derive(seed: u64, stream: u64) -> Self {
        Rng::seeded(mix(seed ^ mix(stream.wrapping_add(MIX))))
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(INCREMENT);
        mix(self.state)
    }

    /// A number in `[0, 1)`.
    #[inline]
    pub fn f64(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }

    /// A number in `0..n` (0 when `n` is 0).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        below(self.next_u64(), n)
    }

    /// A number in `lo..=hi` (`lo` when `hi <= lo`).
    #[inline]
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.below((hi - lo).saturating_add(1))
        }
    }

    /// `d` scaled by a random factor in `[1 - fraction, 1 + fraction]` (fraction is
    /// clamped to `0..=1`).
    pub fn jitter(&mut self, d: Duration, fraction: f64) -> Duration {
        let u = self.f64();
        jitter(d, fraction, u)
    }

    /// A new independent generator derived from this one (for a clone of a service).
    pub fn fork(&mut self) -> Rng {
        Rng::seeded(self.next_u64())
    }
}

/// A seedable generator shared by many users (`&self`, lock-free).
///
/// The state advances with one atomic addition, so concurrent callers each get a
/// distinct number of the same seeded sequence; a single-threaded test replays it
/// exactly.
#[derive(Debug)]
pub struct SharedRng {
    state: AtomicU64,
}

impl SharedRng {
    /// A shared generator that produces the same sequence for the same seed.
    pub fn seeded(seed: u64) -> Self {
        SharedRng {
            state: AtomicU64::new(seed),
        }
    }

    /// A shared generator seeded from [`entropy_seed`].
    pub fn from_entropy() -> Self {
        SharedRng::seeded(entropy_seed())
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&self) -> u64 {
        let prev = self.state.fetch_add(INCREMENT, Ordering::Relaxed);
        mix(prev.wrapping_add(INCREMENT))
    }

    /// A number in `[0, 1)`.
    #[inline]
    pub fn f64(&self) -> f64 {
        unit_f64(self.next_u64())
    }

    /// A number in `0..n` (0 when `n` is 0).
    #[inline]
    pub fn below(&self, n: u64) -> u64 {
        below(self.next_u64(), n)
    }

    /// `d` scaled by a random factor in `[1 - fraction, 1 + fraction]`.
    pub fn jitter(&self, d: Duration, fraction: f64) -> Duration {
        jitter(d, fraction, self.f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_shared_matches_owned() {
        let mut a = Rng::seeded(42);
        let b = SharedRng::seeded(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::seeded(1).next_u64(), Rng::seeded(2).next_u64());
    }

    #[test]
    fn derived_streams_differ_and_ranges_are_inclusive() {
        assert_eq!(Rng::derive(1, 1).next_u64(), Rng::derive(1, 1).next_u64());
        assert_ne!(Rng::derive(1, 1).next_u64(), Rng::derive(1, 2).next_u64());
        assert_ne!(Rng::derive(1, 1).next_u64(), Rng::derive(2, 1).next_u64());
        let mut r = Rng::seeded(5);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let x = r.range(3, 9);
            assert!((3..=9).contains(&x));
            seen[(x - 3) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s), "every value of 3..=9 comes up");
        assert_eq!(r.range(4, 4), 4);
        assert_eq!(r.range(9, 3), 9);
        let _ = r.range(0, u64::MAX); // the widest range does not overflow
    }

    #[test]
    fn ranges_hold() {
        let mut r = Rng::seeded(7);
        let mut hist = [0u32; 10];
        for _ in 0..100_000 {
            let x = r.f64();
            assert!((0.0..1.0).contains(&x));
            let k = r.below(10);
            hist[k as usize] += 1;
        }
        for h in hist {
            assert!((9_000..11_000).contains(&h), "{hist:?}");
        }
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn jitter_of_a_huge_duration_saturates() {
        // `from_secs_f64(Duration::MAX × 1.5)` used to panic.
        assert_eq!(jitter(Duration::MAX, 1.0, 0.999), Duration::MAX);
        assert!(jitter(Duration::MAX, 1.0, 0.0) <= Duration::MAX);
        let rng = SharedRng::seeded(7);
        for _ in 0..100 {
            let _ = rng.jitter(Duration::MAX, 0.5);
        }
    }

    #[test]
    fn jitter_stays_in_band() {
        let mut r = Rng::seeded(3);
        let d = Duration::from_secs(10);
        for _ in 0..1000 {
            let j = r.jitter(d, 0.2);
            assert!(
                j >= Duration::from_secs(8) && j <= Duration::from_secs(12),
                "{j:?}"
            );
        }
        assert_eq!(r.jitter(d, 0.0), d);
        assert!(r.jitter(d, f64::NAN) == d);
    }
}
