use std::time::Duration;

use serde::Deserialize;

/// Settings of the deferred job store.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeferredConfig {
    /// The most jobs held (waiting or finished). Default: 1024.
    pub capacity: usize,
    /// How long a job may wait and run before it fails. Default: 10 min.
    #[serde(with = "tower_failover_core::duration_serde")]
    pub max_wait: Duration,
    /// How long a finished job's answer is kept. Default: 15 min.
    #[serde(with = "tower_failover_core::duration_serde")]
    pub keep_results: Duration,
    /// The largest answer body stored. Default: 8 MiB.
    pub max_body_bytes: usize,
}

impl Default for DeferredConfig {
    fn default() -> Self {
        DeferredConfig {
            capacity: 1024,
            max_wait: Duration::from_secs(600),
            keep_results: Duration::from_secs(900),
            max_body_bytes: 8 * 1024 * 1024,
        }
    }
}
