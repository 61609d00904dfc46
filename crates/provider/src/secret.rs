//! A redacting wrapper for API keys.

use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::error::ConfigError;

/// An API key or other credential.
///
/// Its `Debug` and `Display` print `[redacted]`, so a key never ends up in logs,
/// error messages or a `{:?}` of a configuration. The only way to read it is
/// [`expose`](Secret::expose), which the adapters call once, when they build the
/// authentication header (itself marked sensitive, so HTTP/2 never indexes it).
///
/// ```
/// use tower_failover_provider::Secret;
///
/// let key = Secret::new("sk-live-1234");
/// assert_eq!(format!("{key:?}"), "Secret([redacted])");
/// assert_eq!(key.to_string(), "[redacted]");
/// assert_eq!(key.expose(), "sk-live-1234");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Reads a credential from the environment variable `var`.
    ///
    /// Fails with a [`ConfigError`] naming the variable (never its value) when it is
    /// unset, empty or not Unicode.
    pub fn from_env(var: &str) -> Result<Self, ConfigError> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_string())),
            Ok(_) => Err(ConfigError::new(
                "api_key_env",
                format!("names {var}, which is empty"),
            )),
            Err(std::env::VarError::NotPresent) => Err(ConfigError::new(
                "api_key_env",
                format!("names {var}, which is not set"),
            )),
            Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::new(
                "api_key_env",
                format!("names {var}, which is not valid Unicode"),
            )),
        }
    }

    /// The credential itself. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the credential is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_string())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("sk-abc");
        assert!(!format!("{s:?} {s} {:?}", Some(&s)).contains("sk-abc"));
    }

    #[test]
    fn from_env_names_the_variable_only() {
        let err = Secret::from_env("TOWER_FAILOVER_PROVIDER_TEST_UNSET_VAR").unwrap_err();
        assert!(
            err.to_string()
                .contains("TOWER_FAILOVER_PROVIDER_TEST_UNSET_VAR")
        );
        assert_eq!(err.field(), "api_key_env");
    }

    #[test]
    fn deserializes_from_a_string() {
        let s: Secret = serde_json::from_str("\"sk-x\"").unwrap();
        assert_eq!(s.expose(), "sk-x");
    }
}
