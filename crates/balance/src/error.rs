//! The error returned when a configuration value is refused.

use std::error::Error;
use std::fmt;

/// A configuration value was refused, naming the field.
///
/// Returned by [`BalanceConfig::validate`](crate::BalanceConfig::validate),
/// [`FallbackConfig::validate`](crate::FallbackConfig::validate), the builders'
/// `build` and [`Handle::add`](crate::Handle::add).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: String,
    reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The field that was refused, for example `latency_buffer` or
    /// `providers[openai/gpt-4o].weight`.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Why it was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.field, self.reason)
    }
}

impl Error for ConfigError {}
