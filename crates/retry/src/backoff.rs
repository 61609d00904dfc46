//! Exponential backoff with jitter.

use std::time::Duration;

use serde::Deserialize;
use tower_failover_core::rng::SharedRng;

/// Exponential backoff: `base × multiplier^attempt`, capped at `max`, then jittered by
/// ± `jitter` (a fraction) with a seeded generator.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Backoff {
    /// The first delay. Default: 50 ms.
    #[serde(with = "tower_failover_core::duration_serde")]
    pub base: Duration,
    /// Growth per attempt. Default: 2.
    pub multiplier: f64,
    /// The longest delay. Default: 2 s.
    #[serde(with = "tower_failover_core::duration_serde")]
    pub max: Duration,
    /// Jitter as a fraction of the delay (`0..=1`). Default: 0.5.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(50),
            multiplier: 2.0,
            max: Duration::from_secs(2),
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// Refuses a zero or over-a-minute base, a cap below the base or over ten
    /// minutes, a multiplier below 1 (or not finite) and a jitter outside `0..=1`.
    pub fn validate(&self) -> Result<(), tower_failover_core::ConfigError> {
        use tower_failover_core::ConfigError;
        if self.base.is_zero() || self.base > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "base",
                "must be above zero and at most 1m",
            ));
        }
        if self.max < self.base || self.max > Duration::from_secs(600) {
            return Err(ConfigError::new(
                "max",
                "must be at least `base` and at most 10m",
            ));
        }
        if !(self.multiplier.is_finite() && (1.0..=100.0).contains(&self.multiplier)) {
            return Err(ConfigError::new(
                "multiplier",
                "must be a number from 1 to 100",
            ));
        }
        if !(self.jitter.is_finite() && (0.0..=1.0).contains(&self.jitter)) {
            return Err(ConfigError::new("jitter", "must be a fraction in 0..=1"));
        }
        Ok(())
    }

    /// The delay before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32, rng: &SharedRng) -> Duration {
        let multiplier = if self.multiplier.is_finite() {
            self.multiplier.max(1.0)
        } else {
            1.0
        };
        let exp = multiplier.powi(attempt.min(64) as i32);
        let raw = self.base.as_secs_f64() * exp;
        let capped = if raw.is_finite() {
            raw.min(self.max.as_secs_f64())
        } else {
            self.max.as_secs_f64()
        };
        rng.jitter(Duration::from_secs_f64(capped.max(0.0)), self.jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_jitters() {
        let rng = SharedRng::seeded(1);
        let b = Backoff {
            jitter: 0.0,
            ..Backoff::default()
        };
        assert_eq!(b.delay(0, &rng), Duration::from_millis(50));
        assert_eq!(b.delay(1, &rng), Duration::from_millis(100));
        assert_eq!(b.delay(3, &rng), Duration::from_millis(400));
        assert_eq!(b.delay(10, &rng), Duration::from_secs(2));
        assert_eq!(b.delay(u32::MAX, &rng), Duration::from_secs(2));
        let j = Backoff::default();
        for attempt in 0..5 {
            let d = j.delay(attempt, &rng);
            let nominal = b.delay(attempt, &rng).as_secs_f64();
            assert!(
                d.as_secs_f64() >= nominal * 0.5 - 1e-9 && d.as_secs_f64() <= nominal * 1.5 + 1e-9
            );
        }
        let weird = Backoff {
            multiplier: f64::INFINITY,
            jitter: f64::NAN,
            ..Backoff::default()
        };
        assert_eq!(weird.delay(5, &rng), Duration::from_millis(50));
    }
}
