//! The spans of a request and of its attempts, with the OpenTelemetry
//! semantic-convention names for generative AI where one exists.
//!
//! A request through the stack gets one `request` span (made by the facade's
//! `Failover` service), and each attempt at a provider one `attempt` span inside it
//! (made by the router that picks the provider, or by the
//! [`ObserveLayer`](crate::observe::ObserveLayer) when no router made one). Both are
//! at `INFO` under the target `tower_failover`, so
//! `RUST_LOG=tower_failover=info` (or an OpenTelemetry layer) sees them, and every
//! log line written while the attempt runs (its body included) carries them.
//!
//! | span | field | what it holds |
//! | --- | --- | --- |
//! | `request` | `request_id` | the caller's `x-request-id` header (a gateway sets one with tower-http's request-id layers) |
//! | `attempt` | `request_id` | the same |
//! | `attempt` | `gen_ai.system` | the provider's name |
//! | `attempt` | `gen_ai.request.model` | the model asked of it |
//! | `attempt` | `failover.attempt` | 1 for the first provider tried, 2 for the next… |
//! | `attempt` | `failover.outcome` | `success`, `failure`, `rate_limited`, `rejected`, `client_error` (recorded when the verdict is made, at the end of a streamed body) |
//! | `attempt` | `error.type` | the failure, rejection or client-error kind (`timeout`, `status`, `invalid_json`…) |
//! | `attempt` | `failover.ttfb_ms` | time to the first body byte |
//! | `attempt` | `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens` | the usage the provider reported |
//! | `attempt` | `failover.cost_micros` | its price, in millionths of the currency unit |

use http::HeaderMap;
use tracing::Span;
use tracing::field::Empty;

use crate::health::ProviderId;
use crate::outcome::{FailureKind, Outcome};

/// The target of every span made here.
pub const TARGET: &str = "tower_failover";

/// The header a request id is read from.
pub const REQUEST_ID: &str = "x-request-id";

fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(REQUEST_ID).and_then(|v| v.to_str().ok())
}

/// The span of one request through the stack (see the [module documentation](self)).
pub fn request_span(headers: &HeaderMap) -> Span {
    let span = tracing::info_span!(target: TARGET, "request", request_id = Empty);
    if !span.is_disabled()
        && let Some(id) = request_id(headers)
    {
        span.record("request_id", id);
    }
    span
}

/// The span of attempt number `attempt` (from 1; 0 when unknown) at `id`.
pub fn attempt_span(id: &ProviderId, attempt: u32, headers: &HeaderMap) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "attempt",
        request_id = Empty,
        "gen_ai.system" = id.provider(),
        "gen_ai.request.model" = id.model(),
        "failover.attempt" = Empty,
        "failover.outcome" = Empty,
        "error.type" = Empty,
        "failover.ttfb_ms" = Empty,
        "gen_ai.usage.input_tokens" = Empty,
        "gen_ai.usage.output_tokens" = Empty,
        "failover.cost_micros" = Empty,
    );
    if !span.is_disabled() {
        if attempt > 0 {
            span.record("failover.attempt", attempt);
        }
        if let Some(rid) = request_id(headers) {
            span.record("request_id", rid);
        }
    }
    span
}

/// The attempt span the caller is in (a router made it around the call), or a new
/// one for `id` when there is none.
pub fn current_attempt(id: &ProviderId, headers: &HeaderMap) -> Span {
    if !tracing::dispatcher::has_been_set() {
        // No subscriber was ever installed: there is no span to adopt, and one
        // opened now would be disabled. One relaxed load instead of looking both up
        // (about 100 instructions on every request of a service that does not trace).
        return Span::none();
    }
    let current = Span::current();
    let adopted = current
        .metadata()
        .is_some_and(|m| m.name() == "attempt" && m.target() == TARGET);
    if adopted {
        current
    } else {
        attempt_span(id, 0, headers)
    }
}

/// Records an attempt's outcome in its span.
pub fn record_outcome(span: &Span, outcome: &Outcome) {
    if span.is_disabled() {
        return;
    }
    span.record("failover.outcome", outcome.as_str());
    match outcome {
        Outcome::Success => {}
        // As OpenTelemetry names an HTTP error: its status code.
        Outcome::Failure {
            kind: FailureKind::Status(code),
        } => {
            span.record("error.type", tracing::field::display(code));
        }
        Outcome::Failure { kind } => {
            span.record("error.type", kind.as_str());
        }
        Outcome::Rejected { kind } => {
            span.record("error.type", reject_name(kind));
        }
        Outcome::ClientError { .. } | Outcome::RateLimited { .. } => {
            span.record("error.type", outcome.as_str());
        }
    }
}

fn reject_name(kind: &crate::outcome::RejectKind) -> &'static str {
    kind.as_str()
}

/// Records the time to first byte, in milliseconds, in an attempt's span.
pub fn record_ttfb(span: &Span, ttfb: std::time::Duration) {
    if !span.is_disabled() {
        span.record("failover.ttfb_ms", ttfb.as_secs_f64() * 1e3);
    }
}

/// Records the usage a provider reported in an attempt's span.
pub fn record_usage(
    span: &Span,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_micros: Option<u64>,
) {
    if span.is_disabled() {
        return;
    }
    span.record("gen_ai.usage.input_tokens", prompt_tokens);
    span.record("gen_ai.usage.output_tokens", completion_tokens);
    if let Some(c) = cost_micros {
        span.record("failover.cost_micros", c);
    }
}
