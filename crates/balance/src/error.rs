//! The error returned when a configuration value is refused.

/// A configuration value was refused (the one error type every tower-failover crate
/// uses for configuration).
pub use tower_failover_core::ConfigError;
