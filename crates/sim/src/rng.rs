//! A tiny seeded random number generator (SplitMix64).
//!
//! The simulator needs reproducible randomness (reply text, ids, jitter, fault
//! fractions) and nothing cryptographic, so it carries its own 20-line generator
//! instead of a dependency.

/// SplitMix64: a fast 64-bit generator with a one-word state.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator seeded from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator for stream number `n` of seed `seed` (independent streams).
    pub(crate) fn derive(seed: u64, n: u64) -> Self {
        Rng(mix(seed ^ mix(n.wrapping_add(0x632b_e59b_d9b4_e019))))
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// A uniform float in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `[0, n)` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: unbiased enough for a simulator, and branch-free.
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// A uniform integer in `[lo, hi]`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.below(hi - lo + 1)
        }
    }
}

/// The SplitMix64 finaliser: a good 64-bit hash.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform float in `[0, 1)` from a hash of its inputs (no state).
pub(crate) fn unit(seed: u64, a: u64, b: u64) -> f64 {
    let h = mix(mix(seed ^ 0x5851_f42d_4c95_7f2d) ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ mix(b));
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            let x = a.next_f64();
            assert_eq!(x, b.next_f64());
            assert!((0.0..1.0).contains(&x));
            let r = a.range(3, 9);
            b.range(3, 9);
            assert!((3..=9).contains(&r));
        }
        assert_ne!(Rng::derive(1, 1).next_u64(), Rng::derive(1, 2).next_u64());
        let u = unit(1, 2, 3);
        assert!((0.0..1.0).contains(&u));
        assert_eq!(u, unit(1, 2, 3));
    }
}
