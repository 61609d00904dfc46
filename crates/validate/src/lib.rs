//! Output validation for LLM responses, streaming included.
//!
//! A provider that answers `200 OK` with output the caller cannot use — broken JSON,
//! an error object, an empty message, a refusal, an answer cut at `max_tokens`,
//! structured output that does not match its schema — has failed just as surely as
//! one that answered 503. [`ValidateLayer`] turns such answers into an
//! [`Invalid`](tower_failover_core::error::Invalid) error, which the core classifier
//! reads as [`Outcome::Rejected`](tower_failover_core::Outcome): a router then tries
//! another provider, and by default the provider's health is not charged for it.
//! A well-formed buffered answer rejected for its content keeps its body in the
//! error ([`Invalid::answer`](tower_failover_core::error::Invalid::answer)): when
//! every provider's answer is rejected so (a refusal every model gives), the
//! assembled stack gives the caller the last of them rather than an error
//! ([`AllProvidersFailed::answer`](tower_failover_core::error::AllProvidersFailed::answer)).
//!
//! # Where it sits
//!
//! Per provider, between the timeouts and the circuit breaker:
//!
//! ```text
//! hyper client → provider adapter → timeouts → ValidateLayer → circuit → ramp
//! ```
//!
//! It wraps any `Service<http::Request<B>, Response = http::Response<ResB>>` whose
//! body yields [`Bytes`](bytes::Bytes); the response body becomes a
//! [`ValidatedBody`]. Only success (2xx) responses are checked: error statuses pass
//! through untouched for the classifier to read.
//!
//! # Buffered bodies
//!
//! A non-streaming body is read whole (up to [`ValidateConfig::max_body`], 8 MiB by
//! default: a larger body fails with
//! [`BodyTooLarge`](tower_failover_core::error::BodyTooLarge), refused from its
//! `Content-Length` before reading when it declares one, and never held in memory
//! past the limit), parsed once, and shown to the validators as an [`Output`].
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_failover_core::{Classify, LlmClassifier, Outcome, RejectKind};
//! use tower_failover_validate::ValidateLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! // A provider that answers 200 with an empty message.
//! let provider = service_fn(|_req: Request<()>| async {
//!     let body = r#"{"choices":[{"message":{"role":"assistant","content":""},"finish_reason":"stop"}]}"#;
//!     Ok::<_, tower::BoxError>(Response::new(Full::new(Bytes::from(body))))
//! });
//! let svc = ServiceBuilder::new().layer(ValidateLayer::llm()).service(provider);
//!
//! let err = svc.oneshot(Request::new(())).await.unwrap_err();
//! // Routers see a rejection, and try another provider.
//! let outcome = LlmClassifier::default().classify_error(&*err);
//! assert_eq!(outcome, Outcome::rejected(RejectKind::Empty));
//! # Ok(()) }
//! ```
//!
//! # Streams and the commit point
//!
//! A `text/event-stream` response is parsed as it arrives by an incremental
//! [SSE parser](tower_failover_core::sse) and held back until the *commit point*: by default
//! ([`StreamHold::FirstContent`]) the first event that carries content (or a refusal,
//! or a tool call) when every validator passes what it has seen; with
//! [`StreamHold::Complete`], the terminal event. Either way, at most
//! [`ValidateConfig::hold_limit`] bytes (64 KiB) are held: past that the stream
//! commits regardless.
//!
//! - **Before the commit point** nothing has reached the caller, so any problem — an
//!   error event, broken JSON, an empty answer, a refusal, the stream ending before
//!   its terminal event — is an [`Invalid`](tower_failover_core::error::Invalid) error
//!   from the service's future, and the router can fail over. A transport error is
//!   returned as is (a failure, not a rejection).
//! - **At the commit point** the future resolves to a response whose body first
//!   replays the held-back events, byte for byte, then continues the upstream stream.
//! - **After the commit point** there is no failover. A stream that breaks or ends
//!   without its terminal event (`data: [DONE]` for OpenAI, `message_stop` for
//!   Anthropic), or sends an event a check finds malformed (which is held back),
//!   ends the caller's body with a
//!   [`TruncatedStream`](tower_failover_core::error::TruncatedStream) error, never a
//!   clean end. Checks that need the whole answer (the finish reason, a JSON Schema)
//!   run once more at the end; a failure there is reported (a warning and
//!   [`StatsSnapshot::late_rejected`]) or, with [`AfterCommit::Error`], ends the body
//!   with the `Invalid` error. Either way the provider's health hears it: the
//!   response carries a [`LateVerdict`](tower_failover_core::LateVerdict) that the
//!   observer, circuit breaker and ramp above read when the body ends, so a provider
//!   whose streams break late trips its circuit like one whose answers break early
//!   (see [`AfterCommit`]). A truncation's error and log line name what happened in
//!   our words (a reset, which timer fired), never the upstream error's text, which
//!   may be the provider's. The caller always has the `finish_reason` in the
//!   stream itself. To fail over on a `length` finish or a schema mismatch in a
//!   stream, use [`StreamHold::Complete`] (at the cost of time to first token).
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_failover_core::error::{TruncatedStream, find};
//! use tower_failover_validate::ValidateLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! // A stream that stops after its first content event, without `data: [DONE]`.
//! let provider = service_fn(|_req: Request<()>| async {
//!     let sse = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n";
//!     let res = Response::builder()
//!         .header("content-type", "text/event-stream")
//!         .body(Full::new(Bytes::from(sse)))?;
//!     Ok::<_, tower::BoxError>(res)
//! });
//! let svc = ServiceBuilder::new().layer(ValidateLayer::llm()).service(provider);
//!
//! // The first content passed the checks: the stream was committed to the caller...
//! let res = svc.oneshot(Request::new(())).await?;
//! // ...so its truncation shows up as an error in the body, not a short answer.
//! let err = res.into_body().collect().await.unwrap_err();
//! assert!(find::<TruncatedStream>(&*err).is_some());
//! # Ok(()) }
//! ```
//!
//! # Validators
//!
//! A [`Validator`] looks at an [`Output`] — the same normalized view for both wire
//! formats ([`Wire`]) and for buffered and streamed bodies — and returns a
//! [`Verdict`]. The built-ins are in [`checks`]; [`from_fn`] makes one from a
//! closure; [`Validators`] composes several in order. [`Validators::llm`] (what
//! [`ValidateLayer::llm`] uses) checks valid JSON, error objects, the wire shape
//! and refusals. Structured output is checked with [`checks::JsonSchema`]. For
//! configuration files, [`ValidateConfig`] (with its [`Checks`]) deserializes and
//! builds the layer.
//!
//! # Truncated answers: opt-in
//!
//! A `finish_reason: "length"` (Anthropic: `stop_reason: "max_tokens"`) is **not**
//! rejected by default. Most such answers were cut at a limit the caller set
//! (`max_tokens`), and every provider cuts them the same way: rejecting them would
//! retry the request on every provider, paying for each, and end in an error for a
//! caller who got exactly what they asked for. Turn the check on with
//! [`checks::FinishReason`] (or `checks.finish_reasons = ["length", "max_tokens"]` in
//! [`ValidateConfig`]) to fail over on cuts nobody asked for, such as a provider's
//! own default limit. Even then, an answer to a request that set `max_tokens`,
//! `max_completion_tokens` or `max_output_tokens` passes
//! ([`Output::request_sets_max_tokens`]; the layer sees that when the request body
//! is a [`ReplayBody`](tower_failover_core::replay::ReplayBody), as in the
//! tower-failover stack).
//!
//! # Rejections and health
//!
//! A rejection is counted on its own ([`ValidateStats`]), not against the provider's
//! health: one bad answer says little about a provider. When a provider keeps
//! answering garbage, [`ValidateLayer::fail_after_rejections`] makes the `n`th
//! rejection in a row (and every one after it, until an answer passes) a failure —
//! the `Invalid` wrapped in a
//! [`TransportError`](tower_failover_core::error::TransportError) of kind `Other`
//! ([`RepeatedRejections`]) — so a circuit breaker using the default classifier
//! counts it and can open. A custom policy can read
//! [`ValidateStats::consecutive_rejections`] instead.
//!
//! # axum
//!
//! The layer's error is a [`BoxError`](tower_failover_core::BoxError); in an axum
//! router, put a `HandleErrorLayer` in front and answer with
//! [`tower_failover_core::error_response`].

#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
pub mod checks;
mod config;
mod error;
pub mod future;
mod layer;
mod output;
mod service;
mod shared;
mod stats;
mod stream;
mod validator;

/// Hooks for the fuzz targets (`fuzz/`), behind the internal `fuzzing` feature:
/// not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use crate::output::{Facts, Wire};

    /// Whether the buffered answer's fast reader, wherever it reads `body` at all,
    /// finds what the `serde_json::Value` reader finds, for each wire hint.
    pub fn fast_path_agrees(body: &[u8]) -> bool {
        [None, Some(Wire::OpenAi), Some(Wire::Anthropic)]
            .into_iter()
            .all(|wire| {
                let value = format!("{:?}", Facts::from_value(body, wire, 64).0);
                let agrees = |fast: Option<Facts>| fast.is_none_or(|f| format!("{f:?}") == value);
                // And through the outline the provider leaves beside the answer.
                let outlined =
                    crate::output::outlined_read(&bytes::Bytes::copy_from_slice(body), wire, 64);
                agrees(crate::output::fast_read(body, wire, 64)) && agrees(outlined)
            })
    }

    /// Whether a streamed event whose data is `data` reads the same with the fast
    /// chunk reader as through serde's derive alone, as a plain event and as one
    /// named `error`.
    pub fn stream_fast_path_agrees(data: &[u8]) -> bool {
        use tower_failover_core::sse::SseEvent;
        ["", "error"].into_iter().all(|name| {
            let ev = SseEvent {
                event: name,
                data,
                ..SseEvent::default()
            };
            let mut fast = Facts::new(None, 64);
            fast.on_event_with(&ev, true);
            let mut slow = Facts::new(None, 64);
            slow.on_event_with(&ev, false);
            format!("{fast:?}") == format!("{slow:?}")
        })
    }
}

pub use body::ValidatedBody;
pub use config::{
    AfterCommit, Checks, ConfigError, DEFAULT_HOLD_LIMIT, DEFAULT_MAX_BODY, DEFAULT_MAX_LINE,
    StreamHold, ValidateConfig,
};
pub use error::RepeatedRejections;
pub use layer::ValidateLayer;
pub use output::{Output, Wire};
pub use service::Validate;
pub use stats::{StatsSnapshot, ValidateStats};
pub use validator::{FnValidator, Validator, Validators, Verdict, check_body, from_fn};
