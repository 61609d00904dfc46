//! Errors of this crate: refused configuration, and the reasons attached to
//! [`AllProvidersFailed`](tower_failover_core::error::AllProvidersFailed) when the
//! router gives up.
//!
//! Runtime failures are the core's small error types, so that a gateway's error
//! handler treats them like every other layer's:
//!
//! | situation | error |
//! | --- | --- |
//! | a [`QuotaLayer`](crate::QuotaLayer) refuses to send (known or predicted limit) | [`RateLimited`](tower_failover_core::error::RateLimited) with the time left |
//! | every target is limited and pacing cannot help | [`AllProvidersFailed`](tower_failover_core::error::AllProvidersFailed) with `retry_after` = the earliest reset and one of the reasons below |
//! | the shared retry budget is spent | `AllProvidersFailed` with reason [`REASON_BUDGET`] |

use std::fmt;

/// Reason given when every target is rate limited and pacing is disabled.
pub const REASON_ALL_LIMITED: &str = "every target is rate limited";
/// Reason given when the pacing queue already holds its capacity.
pub const REASON_QUEUE_FULL: &str = "every target is rate limited and the pacing queue is full";
/// Reason given when the earliest reset is further away than the pacing wait allows
/// (or than the request's [`Deadline`](tower_failover_core::Deadline)).
pub const REASON_TOO_LONG: &str = "every target is rate limited past the pacing wait";
/// Reason given when the shared retry budget refused an overflow hop.
pub const REASON_BUDGET: &str = "retry budget exhausted";

/// A configuration value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: &'static str,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: &'static str) -> Self {
        ConfigError { field, reason }
    }

    /// The offending field, dotted for nested ones (`pacing.max_wait`).
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Why it was refused.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid overflow config: `{}` {}",
            self.field, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}
