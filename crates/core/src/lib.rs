//! The shared vocabulary of tower-failover.
//!
//! Every tower-failover layer speaks this small language, so that a circuit
//! breaker, a balancer, an overflow router and a recovery ramp compose without knowing
//! each other, and so that you can replace any of them with your own:
//!
//! - [`Outcome`]: what one attempt amounted to (success, failure, rate limited,
//!   rejected, client error), decided by a [`Classify`] implementation;
//!   [`LlmClassifier`] is the default for LLM provider APIs.
//! - [`RateLimitInfo`]: every rate-limit header providers send (`Retry-After` in both
//!   forms, `retry-after-ms`, OpenAI's `x-ratelimit-*`, Anthropic's
//!   `anthropic-ratelimit-*`), read defensively and clamped.
//! - [`error`]: small concrete error types ([`CircuitOpen`](error::CircuitOpen),
//!   [`RateLimited`](error::RateLimited), [`Shed`](error::Shed),
//!   [`Invalid`](error::Invalid), [`AllProvidersFailed`](error::AllProvidersFailed),
//!   [`Elapsed`](error::Elapsed), [`BodyTooLarge`](error::BodyTooLarge), …) carried as
//!   [`tower::BoxError`], found anywhere in a chain with [`error::find`], and turned
//!   into HTTP responses by [`error_response`].
//! - [`replay`]: buffer a request body once and clone the request per attempt.
//! - [`request`]: what a request asks for (model, stream, tools, completion limit,
//!   size), read once from the buffered body and shared by every layer.
//! - [`observe`]: the per-provider layer that records outcomes, load, time to first
//!   byte and rate-limit windows into the provider's [`Health`].
//! - [`Health`] and [`Registry`]: the per-(provider, model) health handle that layers
//!   write and balancers, ramps and snapshots read, with its [`HealthEvent`]s, quota
//!   groups, serializable [`Snapshot`] and pluggable [`StateStore`].
//! - [`rng`]: seedable randomness, so tests and drills replay exactly.
//! - [`sse`]: the one incremental server-sent events parser that the provider
//!   adapters, the stream translators, validation and the gateway read streams with
//!   (spec-following, fuzzed, zero-copy for the usual one-line events, bounded).
//! - [`json`]: a strict pull reader for the few fields a layer needs from a
//!   buffered JSON answer (usage, validation's facts), which leaves anything it
//!   cannot vouch for to `serde_json`.
//!
//! All time comes from `tokio::time`, so tests can run twenty-minute scenarios in
//! milliseconds with `#[tokio::test(start_paused = true)]`.
//!
//! # Example
//!
//! A gateway's error handler, classifying what a provider said and answering the
//! caller:
//!
//! ```
//! use http::Response;
//! use tower::BoxError;
//! use tower_failover_core::{Classify, LlmClassifier, Outcome, Registry, error_response};
//! use tower_failover_core::error::AllProvidersFailed;
//!
//! let registry = Registry::new();
//! let openai = registry.provider("openai", "gpt-4o-mini");
//!
//! // A provider answered 429 with a Retry-After.
//! let res = Response::builder().status(429).header("retry-after", "12").body(()).unwrap();
//! let outcome = LlmClassifier::default().classify_response(&res);
//! if let Outcome::RateLimited { retry_after: Some(wait) } = outcome {
//!     openai.mark_rate_limited(wait);
//! }
//! openai.record(&outcome);
//!
//! // Nothing else was available: answer 503 with the earliest recovery as Retry-After.
//! let err: BoxError = AllProvidersFailed::new(vec![])
//!     .with_retry_after(registry.earliest_recovery())
//!     .into();
//! let answer = error_response(&*err);
//! assert_eq!(answer.status(), 503);
//! assert_eq!(answer.headers()["retry-after"], "12");
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod budget;
mod classify;
mod config;
pub mod deadline;
mod duration;
pub mod error;
mod event;
pub mod health;
pub mod json;
pub mod metrics;
pub mod observe;
mod outcome;
pub mod price;
mod ratelimit;
mod registry;
pub mod replay;
pub mod request;
mod response;
pub mod rng;
mod snapshot;
pub mod sse;
pub mod store;
pub mod time;
pub mod tokens;
pub mod trace;
pub mod verdict;
pub mod wire;

pub use budget::SharedBudget;
pub use classify::{Classify, LlmClassifier, classify_error_chain};
pub use config::ConfigError;
pub use deadline::{AttemptDeadline, Deadline};
pub use duration::{ParseDurationError, duration_serde, format_duration, parse_duration};
pub use event::{HealthEvent, HealthEventKind};
pub use health::{CircuitState, Health, HealthConfig, InFlight, ProviderId, QuotaGroup};
pub use observe::LateVerdict;
pub use outcome::{ClientErrorKind, ErrorHint, FailureKind, Outcome, RejectKind};
pub use price::{Cost, Price};
pub use ratelimit::{
    HeaderLimits, RATE_LIMIT_HEADERS, RateLimitInfo, parse_reset, parse_retry_after,
    parse_retry_after_ms, parse_rfc3339, parse_rfc3339_wait,
};
pub use registry::Registry;
#[allow(deprecated)]
pub use response::classify_error;
pub use response::{ErrorClass, UNKNOWN_RECOVERY, error_class, error_response};
#[allow(deprecated)]
pub use snapshot::Usage;
pub use snapshot::{Counters, ProviderSnapshot, Snapshot, UsageTotals};
pub use store::{LocalStore, SharedStore, SharedUpdate, StateStore, StoreStatus};
pub use verdict::{FromVerdict, Verdict};
pub use wire::Wire;

/// The boxed error type every layer uses (re-exported from tower).
pub use tower::BoxError;
