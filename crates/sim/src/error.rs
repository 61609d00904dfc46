//! The simulator's error type.

use std::fmt;
use std::io;

/// Why a simulator could not be configured or started.
#[derive(Debug)]
#[non_exhaustive]
pub enum SimError {
    /// A configuration value is invalid.
    Config {
        /// The offending field (e.g. `"fraction"`, `"jitter"`).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A script file could not be read or parsed.
    Script(String),
    /// Binding or serving failed.
    Io(io::Error),
    /// TLS setup failed.
    Tls(String),
}

impl SimError {
    pub(crate) fn config(field: &'static str, message: impl Into<String>) -> Self {
        SimError::Config {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::Config { field, message } => {
                write!(f, "invalid sim config `{field}`: {message}")
            }
            SimError::Script(m) => write!(f, "invalid sim script: {m}"),
            SimError::Io(e) => write!(f, "sim i/o error: {e}"),
            SimError::Tls(m) => write!(f, "sim tls error: {m}"),
        }
    }
}

impl std::error::Error for SimError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SimError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for SimError {
    fn from(e: io::Error) -> Self {
        SimError::Io(e)
    }
}
