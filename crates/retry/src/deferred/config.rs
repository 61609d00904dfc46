use std::time::Duration;

use serde::Deserialize;
use tower_failover_core::ConfigError;

/// Settings of the deferred job store.
///
/// Every bound is a hard one: past `capacity` jobs or `max_total_bytes` bytes held,
/// [`Deferred::submit`](super::Deferred::submit) refuses the job
/// ([`DeferredFull`](super::DeferredFull)) rather than letting the store grow.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeferredConfig {
    /// The most jobs held (waiting or finished). Default: 1024.
    pub capacity: usize,
    /// How long a job may wait for a provider and run before it fails (its
    /// maximum age; at most 1 h, as a [`QueueConfig`](crate::QueueConfig)'s
    /// `max_wait`, since jobs wait in one). Default: 30 min.
    #[serde(with = "tower_failover_core::duration_serde")]
    pub max_wait: Duration,
    /// How long a finished job's answer is kept; after that its id is reported
    /// expired for as long again, then forgotten. Default: 15 min.
    #[serde(with = "tower_failover_core::duration_serde")]
    pub keep_results: Duration,
    /// The largest answer body stored; a larger answer fails the job. Default: 8 MiB.
    pub max_body_bytes: usize,
    /// The most bytes held across all jobs: the requests waiting and the answers
    /// kept. A job that would pass it is refused; an answer that would pass it
    /// expires the oldest answers first. Default: 64 MiB.
    pub max_total_bytes: usize,
}

impl Default for DeferredConfig {
    fn default() -> Self {
        DeferredConfig {
            capacity: 1024,
            max_wait: Duration::from_secs(30 * 60),
            keep_results: Duration::from_secs(15 * 60),
            max_body_bytes: 8 * 1024 * 1024,
            max_total_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The longest `max_wait` accepted (a wait queue's bound).
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// The longest `keep_results` accepted.
const MAX_KEEP: Duration = Duration::from_secs(24 * 3600);

impl DeferredConfig {
    /// Refuses a zero capacity or byte bound, a byte budget smaller than one answer,
    /// a zero or over-an-hour `max_wait` and a zero or over-a-day `keep_results`,
    /// naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.capacity == 0 {
            return Err(ConfigError::new(
                "capacity",
                "must be at least 1 (or turn deferred jobs off)",
            ));
        }
        for (field, d, max, most) in [
            ("max_wait", self.max_wait, MAX_WAIT, "1h"),
            ("keep_results", self.keep_results, MAX_KEEP, "24h"),
        ] {
            if d.is_zero() || d > max {
                return Err(ConfigError::new(
                    field,
                    format!("must be above zero and at most {most}"),
                ));
            }
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::new("max_body_bytes", "must be at least 1"));
        }
        if self.max_total_bytes < self.max_body_bytes {
            return Err(ConfigError::new(
                "max_total_bytes",
                format!(
                    "must be at least max_body_bytes ({}): one answer must fit",
                    self.max_body_bytes
                ),
            ));
        }
        Ok(())
    }
}
