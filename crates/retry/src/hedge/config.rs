use std::time::Duration;

use serde::Deserialize;

/// Settings of hedging.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HedgeConfig {
    /// Hedge when the first attempt is slower than this percentile of recent
    /// latencies (`0 < percentile < 1`). Default: 0.9.
    pub percentile: f64,
    /// Never hedge sooner than this. Default: 50 ms.
    #[serde(with = "tower_failover_core::duration_serde")]
    pub min_delay: Duration,
    /// The delay used until enough latencies are known. Default: 2 s.
    #[serde(with = "tower_failover_core::duration_serde")]
    pub initial_delay: Duration,
    /// How many recent latencies the percentile is computed over. Default: 512.
    pub window: usize,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            percentile: 0.9,
            min_delay: Duration::from_millis(50),
            initial_delay: Duration::from_secs(2),
            window: 512,
        }
    }
}

impl HedgeConfig {
    /// Refuses a percentile outside `(0, 1)`, a zero initial delay and a window
    /// outside `8..=65536`.
    pub fn validate(&self) -> Result<(), tower_failover_core::ConfigError> {
        use tower_failover_core::ConfigError;
        if !(self.percentile.is_finite() && self.percentile > 0.0 && self.percentile < 1.0) {
            return Err(ConfigError::new(
                "percentile",
                "must be a fraction in (0, 1)",
            ));
        }
        if self.initial_delay.is_zero() || self.initial_delay > Duration::from_secs(600) {
            return Err(ConfigError::new(
                "initial_delay",
                "must be above zero and at most 10m",
            ));
        }
        if self.min_delay > Duration::from_secs(600) {
            return Err(ConfigError::new("min_delay", "must be at most 10m"));
        }
        if !(8..=65_536).contains(&self.window) {
            return Err(ConfigError::new("window", "must be in 8..=65536"));
        }
        Ok(())
    }
}
