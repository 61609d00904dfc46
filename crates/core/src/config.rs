//! The one configuration error every crate uses.

use std::fmt;

/// A configuration value was refused. Names the field (with its path, such as
/// `providers[1].base_url`, where the configuration is nested) and the reason; it
/// reads `<field>: <reason>` (just the reason when no field applies, as for a file
/// that is not TOML). The message never contains a credential.
///
/// Every crate of the workspace, the facade's `Config` and `Stack` included,
/// refuses configuration with this one type: a layer's error is put under its
/// section's name with [`within`](ConfigError::within).
///
/// ```
/// use tower_failover_core::ConfigError;
///
/// let err = ConfigError::new("cooldown", "must be at least 1ms").within("circuit");
/// assert_eq!(err.to_string(), "circuit.cooldown: must be at least 1ms");
/// assert_eq!(err.field(), "circuit.cooldown");
/// let err = ConfigError::new("base_url", "missing scheme").within("providers[1]");
/// assert_eq!(err.to_string(), "providers[1].base_url: missing scheme");
/// assert_eq!(ConfigError::new("", "invalid TOML").to_string(), "invalid TOML");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: String,
    reason: String,
}

impl ConfigError {
    /// `field` is refused because of `reason` (a phrase such as `"must be positive"`).
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Prefixes the field with the path of the section it sits in.
    /// An index (`[1]`) attaches without a dot: `providers` + `[1].base_url` →
    /// `providers[1].base_url`.
    pub fn within(self, section: impl fmt::Display) -> Self {
        let field = if self.field.is_empty() {
            section.to_string()
        } else if self.field.starts_with('[') {
            format!("{section}{}", self.field)
        } else {
            format!("{section}.{}", self.field)
        };
        ConfigError {
            field,
            reason: self.reason,
        }
    }

    /// The same error read from the file at `path`: `path: field: reason`, or
    /// `path: reason` for an error of the file as a whole (a TOML mistake names no
    /// field).
    ///
    /// ```
    /// use tower_failover_core::ConfigError;
    ///
    /// let typo = ConfigError::new("", "invalid TOML: unknown field `routr`");
    /// assert_eq!(typo.in_file("gw.toml").to_string(), "gw.toml: invalid TOML: unknown field `routr`");
    /// let bad = ConfigError::new("circuit.cooldown", "must be positive");
    /// assert_eq!(bad.in_file("gw.toml").to_string(), "gw.toml: circuit.cooldown: must be positive");
    /// ```
    pub fn in_file(self, path: impl AsRef<std::path::Path>) -> Self {
        let path = path.as_ref().display();
        let field = if self.field.is_empty() {
            path.to_string()
        } else {
            format!("{path}: {}", self.field)
        };
        ConfigError {
            field,
            reason: self.reason,
        }
    }

    /// The field at fault, with its path.
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
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}
