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
/// | [`Rejected`](Outcome::Rejected), malformed ([`RejectKind::is_malformed`]) | yes, by default | yes |
/// | [`Rejected`](Outcome::Rejected), any other kind | no, by default | yes |
/// | [`ClientError`](Outcome::ClientError) | no | only by a typed fallback |
///
/// A rejection splits in two. An answer that is not a well-formed answer of its wire
/// format (not JSON, the wrong envelope, an error object sent with a 200) is the
/// provider's fault whatever the prompt was: a proxy's HTML error page or an empty
/// body says the provider is broken as surely as a 502 does, so it counts against
/// the provider's health by default. A well-formed answer whose *content* fails a
/// check (empty, cut short, a refusal, a schema mismatch, a custom check) depends on
/// the prompt, and another prompt may pass: it stays neutral by default. An attempt
/// [`Shed`](RejectKind::Shed) by a layer never reached the provider and never counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum Outcome {
    /// The provider answered usefully.
    Success,
    /// The provider cannot serve: a 5xx, a connect error, a reset, a timeout, or a
    /// refusal of the operator's account (rejected credentials, billing).
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

    /// Whether this is the refusal of a well-formed request the provider cannot
    /// serve ([`ClientErrorKind::Unsupported`]): routers try another provider, and
    /// answer it only when every one they tried refused the same way.
    pub const fn is_unsupported(&self) -> bool {
        matches!(
            self,
            Outcome::ClientError {
                kind: ClientErrorKind::Unsupported
            }
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
///
/// | kind | serialized | what happened | who must act |
/// | --- | --- | --- | --- |
/// | [`Connect`](FailureKind::Connect) | `"connect"` | refused, DNS, TLS handshake | nobody: fail over, probe later |
/// | [`Reset`](FailureKind::Reset) | `"reset"` | the connection or stream broke | nobody |
/// | [`Timeout`](FailureKind::Timeout) | `"timeout"` | a deadline passed | nobody |
/// | [`Status`](FailureKind::Status) | `{"status": 503}` | an unhealthy status (5xx, 408) | nobody |
/// | [`Overloaded`](FailureKind::Overloaded) | `"overloaded"` | 529 or an overload error | nobody |
/// | [`Credentials`](FailureKind::Credentials) | `"credentials"` | 401, 403: the operator's API key was rejected (revoked, rotated, wrong) | the operator ([`is_account`](FailureKind::is_account)) |
/// | [`Billing`](FailureKind::Billing) | `"billing"` | 402, OpenAI's `insufficient_quota`, Anthropic's "credit balance is too low" | the operator ([`is_account`](FailureKind::is_account)) |
/// | [`Other`](FailureKind::Other) | `"other"` | any other transport or protocol error | nobody |
///
/// Credentials and billing failures are the provider's failures, not the caller's:
/// in a failover stack the key and the bill belong to whoever runs the stack, so
/// the request fails over, and the provider's own error text (which may quote a
/// fragment of the key) is never passed on.
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
    /// The provider rejected the operator's credentials (401, 403, or an error body
    /// saying the API key is invalid): a revoked, rotated or mistyped key.
    Credentials,
    /// The provider refused for billing reasons (402, OpenAI's `insufficient_quota`
    /// even on a 429, Anthropic's "credit balance is too low" 400).
    Billing,
    /// Any other transport or protocol error.
    Other,
}

impl FailureKind {
    /// A short stable name for logs and metrics: `connect`, `reset`, `timeout`,
    /// `status`, `overloaded`, `credentials`, `billing`, `other` (the status code of
    /// [`Status`](FailureKind::Status) is left out: log it as a field of its own).
    pub const fn as_str(&self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Reset => "reset",
            FailureKind::Timeout => "timeout",
            FailureKind::Status(_) => "status",
            FailureKind::Overloaded => "overloaded",
            FailureKind::Credentials => "credentials",
            FailureKind::Billing => "billing",
            FailureKind::Other => "other",
        }
    }

    /// Whether the provider refused the operator's account ([`Credentials`] or
    /// [`Billing`]): a failure that does not heal by itself, because a person must
    /// rotate a key or pay. The circuit breaker opens at once on one of them, with a
    /// long cooldown, and announces it with its own health event.
    ///
    /// [`Credentials`]: FailureKind::Credentials
    /// [`Billing`]: FailureKind::Billing
    pub const fn is_account(&self) -> bool {
        matches!(self, FailureKind::Credentials | FailureKind::Billing)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Status(s) => write!(f, "status {s}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Why an attempt was rejected (refused by a layer, or its output failed validation).
///
/// | kind | serialized | [`is_malformed`](RejectKind::is_malformed) | counts against health by default |
/// | --- | --- | --- | --- |
/// | [`InvalidJson`](RejectKind::InvalidJson) | `"invalid_json"` | yes | yes |
/// | [`Shape`](RejectKind::Shape) | `"shape"` | yes | yes |
/// | [`ErrorObject`](RejectKind::ErrorObject) | `"error_object"` | yes | yes |
/// | [`Empty`](RejectKind::Empty) | `"empty"` | no | no |
/// | [`Truncated`](RejectKind::Truncated) | `"truncated"` | no | no |
/// | [`Refusal`](RejectKind::Refusal) | `"refusal"` | no | no |
/// | [`Schema`](RejectKind::Schema) | `"schema"` | no | no |
/// | [`Custom`](RejectKind::Custom) | `"custom"` | no | no |
/// | [`Shed`](RejectKind::Shed) | `"shed"` | no | never (it did not reach the provider) |
///
/// "By default" is the circuit breaker's `malformed_is_failure` (on) and
/// `rejected_is_failure` (off); the ramp's rollback counts malformed answers as
/// failures too.
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

impl RejectKind {
    /// Whether the answer was not a well-formed answer of its wire format:
    /// [`InvalidJson`](RejectKind::InvalidJson), [`Shape`](RejectKind::Shape) or
    /// [`ErrorObject`](RejectKind::ErrorObject).
    ///
    /// Such an answer is evidence against the provider whatever the prompt (an HTML
    /// error page from a proxy, an empty body, an error object sent with a 200), so
    /// health-keeping layers count it as a failure by default. The other kinds judge
    /// the content of a well-formed answer, which depends on the prompt.
    ///
    /// ```
    /// use tower_failover_core::RejectKind;
    ///
    /// assert!(RejectKind::InvalidJson.is_malformed());
    /// assert!(RejectKind::ErrorObject.is_malformed());
    /// assert!(!RejectKind::Truncated.is_malformed());
    /// assert!(!RejectKind::Shed.is_malformed());
    /// ```
    pub const fn is_malformed(&self) -> bool {
        matches!(
            self,
            RejectKind::InvalidJson | RejectKind::Shape | RejectKind::ErrorObject
        )
    }

    /// A short stable name for logs, traces and headers: `invalid_json`, `shape`,
    /// `error_object`, `empty`, `truncated`, `refusal`, `schema`, `custom`, `shed`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            RejectKind::InvalidJson => "invalid_json",
            RejectKind::Shape => "shape",
            RejectKind::ErrorObject => "error_object",
            RejectKind::Empty => "empty",
            RejectKind::Truncated => "truncated",
            RejectKind::Refusal => "refusal",
            RejectKind::Schema => "schema",
            RejectKind::Custom => "custom",
            RejectKind::Shed => "shed",
        }
    }
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
    /// The caller's own authentication or permission failed.
    ///
    /// [`LlmClassifier`](crate::LlmClassifier) never gives it: in a failover stack
    /// the provider's key is the operator's, so a 401 or 403 is
    /// [`FailureKind::Credentials`]. A custom classifier for a stack that forwards
    /// each caller's own key can map those statuses here instead.
    Auth,
    /// This provider cannot serve a feature the request uses (several choices,
    /// log probabilities, audio, a file by id, …), though the request is well
    /// formed: a provider of another kind may serve it. Routers try the next
    /// provider, and answer this error only when every provider refused the same
    /// way. Not the provider's fault: its health is not touched.
    Unsupported,
    /// Any other client error, with its status.
    Status(u16),
}

impl fmt::Display for ClientErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientErrorKind::ContextWindowExceeded => f.write_str("context window exceeded"),
            ClientErrorKind::ContentPolicy => f.write_str("content policy"),
            ClientErrorKind::Auth => f.write_str("authentication"),
            ClientErrorKind::Unsupported => f.write_str("unsupported by the provider"),
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
    /// The error body said the API key was rejected (`invalid_api_key`,
    /// `authentication_error`, `permission_error`, "invalid x-api-key").
    Credentials,
    /// The error body said the account cannot pay (`insufficient_quota`,
    /// `billing_hard_limit_reached`, "credit balance is too low", "insufficient
    /// balance"), whatever its status: an OpenAI 429 that says `insufficient_quota`
    /// is a billing failure, not a rate limit.
    Billing,
    /// The adapter could not send the request to this provider: it uses a
    /// feature the provider's API lacks ([`ClientErrorKind::Unsupported`]).
    Unsupported,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kinds_have_stable_names() {
        let cases = [
            (FailureKind::Connect, "connect", "\"connect\"", false),
            (FailureKind::Reset, "reset", "\"reset\"", false),
            (FailureKind::Timeout, "timeout", "\"timeout\"", false),
            (
                FailureKind::Status(503),
                "status 503",
                r#"{"status":503}"#,
                false,
            ),
            (
                FailureKind::Overloaded,
                "overloaded",
                "\"overloaded\"",
                false,
            ),
            (
                FailureKind::Credentials,
                "credentials",
                "\"credentials\"",
                true,
            ),
            (FailureKind::Billing, "billing", "\"billing\"", true),
            (FailureKind::Other, "other", "\"other\"", false),
        ];
        for (kind, display, json, account) in cases {
            assert_eq!(kind.to_string(), display);
            assert_eq!(serde_json::to_string(&kind).unwrap(), json);
            assert_eq!(serde_json::from_str::<FailureKind>(json).unwrap(), kind);
            assert_eq!(kind.is_account(), account, "{kind}");
            assert!(display.starts_with(kind.as_str()));
        }
        let outcome = Outcome::failure(FailureKind::Credentials);
        assert_eq!(outcome.to_string(), "failure (credentials)");
        assert!(outcome.is_retryable_elsewhere());
        assert_eq!(
            serde_json::to_string(&outcome).unwrap(),
            r#"{"class":"failure","kind":"credentials"}"#
        );
    }

    #[test]
    fn malformed_kinds_are_the_wire_format_ones() {
        let cases = [
            (RejectKind::InvalidJson, "\"invalid_json\"", true),
            (RejectKind::Shape, "\"shape\"", true),
            (RejectKind::ErrorObject, "\"error_object\"", true),
            (RejectKind::Empty, "\"empty\"", false),
            (RejectKind::Truncated, "\"truncated\"", false),
            (RejectKind::Refusal, "\"refusal\"", false),
            (RejectKind::Schema, "\"schema\"", false),
            (RejectKind::Custom, "\"custom\"", false),
            (RejectKind::Shed, "\"shed\"", false),
        ];
        for (kind, json, malformed) in cases {
            assert_eq!(kind.is_malformed(), malformed, "{kind}");
            assert_eq!(serde_json::to_string(&kind).unwrap(), json);
        }
    }
}
