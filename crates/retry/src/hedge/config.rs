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
