//! Configuration errors, and how transport errors are tagged for the classifiers.

use std::error::Error;
use std::fmt;
use std::io;

use tower_failover_core::BoxError;
use tower_failover_core::FailureKind;
use tower_failover_core::error::{Elapsed, TransportError, find};

/// A provider configuration was refused: core's shared error, naming the field.
pub use tower_failover_core::ConfigError;

/// The caller's request could not be translated for the provider (not JSON, an
/// unsupported message shape, …).
///
/// The adapters answer such requests themselves with a `400` in OpenAI's error shape
/// (`invalid_request_error`), which the classifiers read as a client error: it is not
/// the provider's fault. A request that is well formed but uses a feature this
/// provider's API lacks ([`is_unsupported`](Self::is_unsupported): several choices,
/// an audio or other part Anthropic has no block for, a file by id, tool-call
/// arguments that are not JSON) carries [`ErrorHint::Unsupported`] on that `400`, so
/// the routers try a provider of another kind before answering it.
///
/// [`ErrorHint::Unsupported`]: tower_failover_core::ErrorHint::Unsupported
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateError {
    message: String,
    unsupported: bool,
}

impl TranslateError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > 300 {
            let mut cut = 300;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        TranslateError {
            message,
            unsupported: false,
        }
    }

    /// A well-formed request this provider cannot serve (another kind may).
    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        TranslateError {
            unsupported: true,
            ..TranslateError::new(message)
        }
    }

    /// Whether the request is well formed but uses a feature this provider lacks.
    pub fn is_unsupported(&self) -> bool {
        self.unsupported
    }

    /// What was wrong with the request.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot translate request: {}", self.message)
    }
}

impl Error for TranslateError {}

/// Tags an error of the hyper client with the [`FailureKind`] the classifiers need.
///
/// A connect timeout from our connector comes back as the [`Elapsed`] it is.
pub(crate) fn client_error(err: hyper_util::client::legacy::Error) -> BoxError {
    if let Some(elapsed) = find::<Elapsed>(&err) {
        return elapsed.clone().into();
    }
    let kind = if err.is_connect() {
        FailureKind::Connect
    } else {
        transport_kind(&err)
    };
    TransportError::new(kind, err).into()
}

/// Tags an error met while reading a response body.
pub(crate) fn body_error(err: hyper::Error) -> BoxError {
    let kind = transport_kind(&err);
    TransportError::new(kind, err).into()
}

/// Anything that breaks an established exchange counts as a reset, except an I/O
/// timeout.
fn transport_kind(err: &(dyn Error + 'static)) -> FailureKind {
    if find::<io::Error>(err).is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
        || find::<hyper::Error>(err).is_some_and(hyper::Error::is_timeout)
    {
        return FailureKind::Timeout;
    }
    FailureKind::Reset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translate_error_is_bounded() {
        let e = TranslateError::new("é".repeat(400));
        assert!(e.message().len() <= 300);
    }

    #[test]
    fn io_timeout_is_a_timeout() {
        let e = io::Error::new(io::ErrorKind::TimedOut, "t");
        assert_eq!(transport_kind(&e), FailureKind::Timeout);
        let e = io::Error::new(io::ErrorKind::ConnectionReset, "r");
        assert_eq!(transport_kind(&e), FailureKind::Reset);
    }
}
