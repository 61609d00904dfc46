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

/// Reason given when every target is rate limited and pacing is disabled.
pub const REASON_ALL_LIMITED: &str = "every target is rate limited";
/// Reason given when the pacing queue already holds its capacity.
pub const REASON_QUEUE_FULL: &str = "every target is rate limited and the pacing queue is full";
/// Reason given when the earliest reset is further away than the pacing wait allows
/// (or than the request's [`Deadline`](tower_failover_core::Deadline)).
pub const REASON_TOO_LONG: &str = "every target is rate limited past the pacing wait";
/// Reason given when the shared retry budget refused an overflow hop.
pub const REASON_BUDGET: &str = "retry budget exhausted";

/// A configuration value was refused (the one error type every tower-failover crate
/// uses for configuration).
pub use tower_failover_core::ConfigError;
