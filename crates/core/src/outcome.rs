//! What one attempt against one provider amounted to.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The outcome of one attempt against one provider.
///
/// Every layer reads the same five classes, so a circuit breaker, a balancer and an
/// overflow router agree on what happened without knowing each other:
///
/// | outcome | counts against health | retried elsewhere |
/// | --- | --- | --- |
/// | [`Success`](Outcome::Success) | no (it heals) | no |
/// | [`Failure`](Outcome::Failure) | yes | yes |
/// | [`RateLimited`](Outcome::RateLimited) | no | yes, without waiting |
/// | [`Rejected`](Outcome::Rejected) | no, by default | yes |
/// | [`ClientError`](Outcome::ClientError) | no | only by a typed fallback |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum Outcome {
    /// The provider answered usefully.
    Success,
    /// The provider is unhealthy: a 5xx, a connect error, a reset, a timeout.
    Failure {
        /// What kind of failure, so policies can weigh kinds differently.
        kind: FailureKind,
    },
    /// The provider is rate limiting this caller (429).
    RateLimited {
        /// How long the provider asked us to stay away, if it said.
        #[serde(with = "crate::duration_serde::option", default)]
        retry_after: Option<Duration>,
    },
    /// The attempt was refused or its output failed validation. The provider is not
    /// necessarily unhealthy, but another provider may do better.
    Rejected {
        /// Why the attempt was rejected.
        kind: RejectKind,
    },
    /// The caller's own request is at fault (a 4xx other than 408 and 429).
    ClientError {
        /// What kind of client error, so typed fallbacks can act on it.
        kind: ClientErrorKind,
    },
}

impl Outcome {
    /// A failure of the given kind.
    pub const fn failure(kind: FailureKind) -> Self {
        Outcome::Failure { kind }
    }

    /// A rejection of the given kind.
    pub const fn rejected(kind: RejectKind) -> Self {
        Outcome::Rejected { kind }
    }

    /// Whether this outcome is a success.
    pub const fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }

    /// Whether this outcome is a [`Failure`](Outcome::Failure).
    pub const fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failure { .. })
    }

    /// Whether another provider should be tried after this outcome.
    ///
    /// True for failures, rate limits and rejections; false for successes and client
    /// errors (the request itself is wrong: another provider would refuse it too).
    pub const fn is_retryable_elsewhere(&self) -> bool {
        matches!(
            self,
            Outcome::Failure { .. } | Outcome::RateLimited { .. } | Outcome::Rejected { .. }
        )
    }

    /// A short stable name for logs and metrics: `success`, `failure`,
    /// `rate_limited`, `rejected`, `client_error`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure { .. } => "failure",
            Outcome::RateLimited { .. } => "rate_limited",
            Outcome::Rejected { .. } => "rejected",
            Outcome::ClientError { .. } => "client_error",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Success => f.write_str("success"),
            Outcome::Failure { kind } => write!(f, "failure ({kind})"),
            Outcome::RateLimited {
                retry_after: Some(d),
            } => write!(f, "rate limited (retry after {} ms)", d.as_millis()),
            Outcome::RateLimited { retry_after: None } => f.write_str("rate limited"),
            Outcome::Rejected { kind } => write!(f, "rejected ({kind})"),
            Outcome::ClientError { kind } => write!(f, "client error ({kind})"),
        }
    }
}

/// Why an attempt counted as a failure of the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The connection could not be made (refused, DNS, TLS handshake).
    Connect,
    /// The connection broke after it was made (reset, closed early).
    Reset,
    /// A deadline passed: connect, time to first byte, or total.
    Timeout,
    /// The provider answered with a status that means it is unhealthy (5xx, 408, 529).
    Status(u16),
    /// The provider said it is overloaded (Anthropic's 529, or an overload error body).
    Overloaded,
    /// Any other transport or protocol error.
    Other,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Connect => f.write_str("connect"),
            FailureKind::Reset => f.write_str("reset"),
            FailureKind::Timeout => f.write_str("timeout"),
            FailureKind::Status(s) => write!(f, "status {s}"),
            FailureKind::Overloaded => f.write_str("overloaded"),
            FailureKind::Other => f.write_str("other"),
        }
    }
}

/// Why an attempt was rejected (refused by a layer, or its output failed validation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectKind {
    /// The body was not valid JSON.
    InvalidJson,
    /// The body was JSON, but not of the expected shape for its wire format.
    Shape,
    /// The provider answered 200 with an error object.
    ErrorObject,
    /// The output was empty.
    Empty,
    /// The output was cut short (`finish_reason: length`, `stop_reason: max_tokens`).
    Truncated,
    /// The model refused to answer.
    Refusal,
    /// Structured output did not match its JSON Schema.
    Schema,
    /// A custom validator said no.
    Custom,
    /// A layer shed the attempt before it reached the provider (ramp, overflow).
    Shed,
}

impl fmt::Display for RejectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RejectKind::InvalidJson => "invalid json",
            RejectKind::Shape => "unexpected shape",
            RejectKind::ErrorObject => "error object in a success response",
            RejectKind::Empty => "empty output",
            RejectKind::Truncated => "truncated output",
            RejectKind::Refusal => "refusal",
            RejectKind::Schema => "schema mismatch",
            RejectKind::Custom => "custom check failed",
            RejectKind::Shed => "shed",
        })
    }
}

/// What kind of client error an attempt met, for typed fallbacks.
///
/// The status code alone cannot tell a context-window overflow from any other 400;
/// provider adapters that read the error body attach an [`ErrorHint`] extension to the
/// response, which the default classifier turns into the precise kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientErrorKind {
    /// The prompt does not fit the model's context window: a larger-context model may
    /// take it.
    ContextWindowExceeded,
    /// The provider's content policy refused the request: another provider may not.
    ContentPolicy,
    /// Authentication or permission failed (401, 403).
    Auth,
    /// Any other client error, with its status.
    Status(u16),
}

impl fmt::Display for ClientErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientErrorKind::ContextWindowExceeded => f.write_str("context window exceeded"),
            ClientErrorKind::ContentPolicy => f.write_str("content policy"),
            ClientErrorKind::Auth => f.write_str("authentication"),
            ClientErrorKind::Status(s) => write!(f, "status {s}"),
        }
    }
}

/// A response extension set by provider adapters that have read an error body and
/// know more than its status says.
///
/// The default classifier gives it precedence over the status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorHint {
    /// The error body said the context window was exceeded.
    ContextWindowExceeded,
    /// The error body said the content policy refused the request.
    ContentPolicy,
    /// The error body said the provider is overloaded.
    Overloaded,
}
