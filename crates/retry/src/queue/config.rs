use std::time::Duration;

use serde::Deserialize;

#[cfg(doc)]
use tower_failover_core::{Deadline, error::AllProvidersFailed};

/// Settings of the wait queue.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// The most requests waiting at once; past it, requests fail at once with
    /// [`AllProvidersFailed`] (reason "wait queue full"). Default: 256.
    pub capacity: usize,
    /// The longest a request waits, when its own [`Deadline`] is not sooner.
    /// Default: 30 s.
    #[serde(with = "tower_failover_core::duration_serde")]
    pub max_wait: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 256,
            max_wait: Duration::from_secs(30),
        }
    }
}

impl QueueConfig {
    /// Refuses a capacity of zero (turn the queue off instead) and a zero or
    /// over-an-hour wait.
    pub fn validate(&self) -> Result<(), tower_failover_core::ConfigError> {
        use tower_failover_core::ConfigError;
        if self.capacity == 0 {
            return Err(ConfigError::new(
                "capacity",
                "must be at least 1 (or turn the wait queue off)",
            ));
        }
        if self.max_wait.is_zero() || self.max_wait > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "max_wait",
                "must be above zero and at most 1h",
            ));
        }
        Ok(())
    }
}
