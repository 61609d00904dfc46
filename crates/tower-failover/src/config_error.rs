//! The one configuration error of the facade: which field, and why.

use std::error::Error;
use std::fmt;

/// A configuration was refused. [`field`](ConfigError::field) is a path into the
/// configuration (`providers[1].base_url`, `circuit.cooldown`,
/// `balance.latency_buffer`); the message never contains a credential.
///
/// ```
/// let err = tower_failover::Config::from_toml_str(r#"
///     [[providers]]
///     name = "openai"
///     model = "gpt-4o-mini"
///     base_url = "not a url"
/// "#).unwrap_err();
/// assert_eq!(err.field(), "providers[0].base_url");
/// assert!(err.to_string().starts_with("providers[0].base_url: not a valid URL"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: String,
    reason: String,
}

impl ConfigError {
    /// A refusal of `field` for `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The path of the field at fault.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Why it was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The same error, with `prefix` put before its field (`providers[1]` +
    /// `base_url` → `providers[1].base_url`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_owned()
        } else if self.field.starts_with('[') {
            format!("{prefix}{}", self.field)
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }

    /// From a layer crate's error, whose `Display` reads
    /// ``invalid … config: `field` reason``.
    #[cfg_attr(
        not(any(feature = "retry", feature = "validate", feature = "redis")),
        allow(dead_code)
    )]
    pub(crate) fn from_display(prefix: &str, err: &dyn fmt::Display) -> Self {
        let text = err.to_string();
        let parsed = text.split_once('`').and_then(|(_, rest)| {
            let (field, reason) = rest.split_once('`')?;
            Some((field.to_owned(), reason.trim().to_owned()))
        });
        match parsed {
            Some((field, reason)) => ConfigError::new(field, reason).within(prefix),
            None => ConfigError::new(prefix, text),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

impl Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_parses() {
        let e = ConfigError::new("base_url", "missing scheme").within("providers[1]");
        assert_eq!(e.to_string(), "providers[1].base_url: missing scheme");
        let e = ConfigError::from_display(
            "circuit",
            &"invalid circuit breaker config: `half_open_permits` must be in 1..=65535",
        );
        assert_eq!(e.field(), "circuit.half_open_permits");
        assert_eq!(e.reason(), "must be in 1..=65535");
        let e = ConfigError::from_display("retry_budget", &"something odd");
        assert_eq!(e.to_string(), "retry_budget: something odd");
    }
}
