use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings shared by the handles of a registry.
///
/// Deserializable (every key optional; durations as `"500ms"`, `"5s"` or seconds):
///
/// ```
/// use std::time::Duration;
/// use tower_failover_core::HealthConfig;
///
/// let c: HealthConfig = serde_json::from_str(r#"{"suspect_floor": "1s"}"#).unwrap();
/// assert_eq!(c.suspect_floor, Duration::from_secs(1));
/// assert_eq!(c.suspect_factor, 4.0);
/// assert!(c.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Decay constant of the latency and time-to-first-byte averages. Default: 5 s.
    #[serde(with = "crate::duration_serde")]
    pub ewma_decay: Duration,
    /// Whether silent providers become suspect (see the [module
    /// documentation](super)). Default: on.
    pub detect_hangs: bool,
    /// A provider whose waiting requests have heard nothing for this many times its
    /// time-to-first-byte EWMA is suspect. Default: 4. At least 1.
    pub suspect_factor: f64,
    /// ... and for at least this long, whatever its EWMA. Default: 500 ms: at
    /// 100 requests per second, about 50 requests reach a provider that has just
    /// gone silent before the others go elsewhere; an LLM's time to first token is
    /// rarely below it, and a fast local model should not be suspected for the
    /// length of one garbage-collection pause.
    #[serde(with = "crate::duration_serde")]
    pub suspect_floor: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            ewma_decay: Duration::from_secs(5),
            detect_hangs: true,
            suspect_factor: 4.0,
            suspect_floor: Duration::from_millis(500),
        }
    }
}

impl HealthConfig {
    /// Refuses a zero decay, a factor below 1 (or not finite) and a floor of zero or
    /// above an hour, naming the field.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        use crate::ConfigError;
        if self.ewma_decay.is_zero() {
            return Err(ConfigError::new("ewma_decay", "must be above zero"));
        }
        if !(self.suspect_factor.is_finite() && (1.0..=1000.0).contains(&self.suspect_factor)) {
            return Err(ConfigError::new(
                "suspect_factor",
                "must be a number from 1 to 1000",
            ));
        }
        if self.suspect_floor.is_zero() || self.suspect_floor > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "suspect_floor",
                "must be above zero and at most 1h",
            ));
        }
        Ok(())
    }
}
