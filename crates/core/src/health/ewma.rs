use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A peak-sensitive exponentially weighted moving average of a duration, lock-free.
///
/// A sample above the current estimate replaces it at once (a slowdown shows up on
/// the first slow response); a sample below pulls it down with a weight that depends
/// on the time since the last sample and the decay constant (recovery is believed
/// gradually). Concurrent updates may overwrite each other, which only costs one
/// sample of precision.
#[derive(Debug)]
pub struct PeakEwma {
    base: Instant,
    /// One over the decay constant in nanoseconds: a sample multiplies by it (a
    /// division takes several times a multiplication's cycles, twice a request).
    per_decay_ns: f64,
    /// f64 bits of the estimate in nanoseconds.
    value: AtomicU64,
    /// Nanoseconds after `base` of the last sample.
    stamp: AtomicU64,
}

impl PeakEwma {
    /// An estimate with no samples (reads as zero) and the given decay constant.
    pub fn new(decay: Duration) -> Self {
        PeakEwma::with_base(decay, Instant::now())
    }

    /// The same, timing its samples from `base` (a provider's record gives its
    /// estimates and its progress stamp one base, so that one clock reading serves
    /// them all).
    pub(crate) fn with_base(decay: Duration, base: Instant) -> Self {
        PeakEwma {
            base,
            per_decay_ns: 1.0 / (decay.as_nanos() as f64).max(1.0),
            value: AtomicU64::new(0f64.to_bits()),
            stamp: AtomicU64::new(0),
        }
    }

    /// Adds a sample observed at `now`.
    pub fn observe(&self, sample: Duration, now: Instant) {
        self.observe_nanos(
            nanos(sample),
            nanos(now.saturating_duration_since(self.base)),
        );
    }

    /// [`observe`](Self::observe) with both in nanoseconds: the sample, and `now`
    /// after the base this estimate was made with.
    #[inline]
    pub(crate) fn observe_nanos(&self, sample_ns: u64, now_ns: u64) {
        let sample_ns = sample_ns as f64;
        let prev = f64::from_bits(self.value.load(Ordering::Relaxed));
        // A load and a store, not a swap: a read-modify-write costs more on the hot
        // path than the sample a racing update may lose (see the type's docs).
        let last = self.stamp.load(Ordering::Relaxed);
        self.stamp.store(now_ns, Ordering::Relaxed);
        let next = if sample_ns >= prev || prev == 0.0 {
            sample_ns
        } else {
            let elapsed = now_ns.saturating_sub(last) as f64;
            let keep = decay(elapsed * self.per_decay_ns);
            prev * keep + sample_ns * (1.0 - keep)
        };
        self.value.store(next.to_bits(), Ordering::Relaxed);
    }

    /// The current estimate (zero before any sample).
    #[inline]
    pub fn get(&self) -> Duration {
        Duration::from_nanos(f64::from_bits(self.value.load(Ordering::Relaxed)) as u64)
    }

    /// The current estimate in nanoseconds, as a float (for load arithmetic).
    #[inline]
    pub fn get_ns(&self) -> f64 {
        f64::from_bits(self.value.load(Ordering::Relaxed))
    }

    /// When the last sample was taken, if any.
    pub fn last_sample(&self) -> Option<Instant> {
        let s = self.stamp.load(Ordering::Relaxed);
        (s != 0).then(|| self.base + Duration::from_nanos(s))
    }
}

/// A duration in nanoseconds, saturating at `u64::MAX` (through u64, not the
/// u128 of `as_nanos`: 584 years of nanoseconds fit).
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(u64::from(d.subsec_nanos())))
        .unwrap_or(u64::MAX)
}

/// `e^-x` for `x >= 0`. Samples usually come far apart less than the decay
/// constant (microseconds against seconds), where three terms of the series are
/// exact to 1e-10 and much cheaper than `exp`.
#[inline]
fn decay(x: f64) -> f64 {
    if x < 1e-3 {
        1.0 - x + x * x * 0.5
    } else {
        (-x).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cheap_decay_matches_exp() {
        for x in [0.0_f64, 1e-9, 1e-6, 5e-4, 9.99e-4, 1e-3, 0.5, 3.0, 1e3] {
            let (cheap, exact) = (decay(x), (-x).exp());
            assert!((cheap - exact).abs() < 1e-9, "{x}: {cheap} vs {exact}");
        }
        assert_eq!(nanos(Duration::MAX), u64::MAX);
        assert_eq!(nanos(Duration::from_micros(3)), 3_000);
    }
}
