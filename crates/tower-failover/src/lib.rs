//! Tower middleware that keeps your LLM calls working when providers go down, slow
//! down, rate-limit or return bad output.
//!
//! This is the facade of the tower-failover crates. It re-exports each of them
//! behind a cargo feature of the same name, and assembles the recommended stack
//! with [`Stack`]: from code, or from a configuration file ([`Config`]).
//!
//! | feature | module | what it is |
//! | --- | --- | --- |
//! | (always) | the crate root | the shared vocabulary (`tower-failover-core`): [`Outcome`], [`Classify`], [`Health`], [`Registry`], [`error`], [`replay`], [`observe`], [`error_response`], … |
//! | `circuit` (default) | `circuit` | the circuit breaker |
//! | `balance` (default) | `balance` | the balancer and the ordered fallback; also [`Stack`], [`Config`], [`Handle`] |
//! | `overflow` (default) | `overflow` | overflow on 429, quota tracking |
//! | `ramp` (default) | `ramp` | recovery probes and the shift-back ramp |
//! | `validate` (default) | `validate` | output validation with a streaming commit point |
//! | `retry` (default) | `retry` | the shared retry budget, deadlines, the wait queue, hedging |
//! | `provider` (default) | `provider` | OpenAI-compatible and Anthropic hyper clients |
//! | `redis` | `redis` | shared state across gateway replicas |
//! | `sim` | `sim` | simulated providers for drills and tests |
//! | `metrics` | [`metrics`] (always present; records only with the feature) | metrics through the `metrics` facade in every layer included: install a recorder, then build the stack; spans ([`trace`]) need no feature |
//! | `full` | | all of the above |
//!
//! # The stack
//!
//! Per provider, innermost first:
//!
//! ```text
//! provider client → output validation → ObserveLayer → quota tracking → circuit breaker
//!     → recovery ramp (and active probes) → same-provider retry of a blip
//! ```
//!
//! Across providers: a router (the balancer, the ordered fallback or overflow on
//! 429) with one retry budget shared by every hop and one attempt timeout, then
//! optionally hedging and a wait queue for when every provider is down, a total
//! deadline, and the body buffering that makes requests replayable. The README's
//! "When a provider misbehaves" table gives every default and why. The result is a [`Failover`] service, and a [`Handle`] on it:
//! a JSON snapshot of every provider, a stream of health events, and manual
//! overrides.
//!
//! ```
//! use http::{Request, Response};
//! use http_body_util::BodyExt;
//! use tower::{ServiceExt, service_fn};
//! use tower_failover::balance::FallbackConfig;
//! use tower_failover::circuit::CircuitConfig;
//! use tower_failover::replay::ReplayBody;
//! use tower_failover::{CircuitState, ProviderDef, Stack};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! // Two providers: one in the middle of an outage, one healthy. In real life these
//! // are `tower_failover::provider` clients (see `Stack::from_config`).
//! let down = service_fn(|_req: Request<ReplayBody>| async {
//!     Ok::<_, tower::BoxError>(Response::builder().status(503).body(ReplayBody::empty())?)
//! });
//! let up = service_fn(|_req: Request<ReplayBody>| async {
//!     let answer = r#"{"choices":[{"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}]}"#;
//!     Ok::<_, tower::BoxError>(Response::new(ReplayBody::from(answer)))
//! });
//!
//! let stack = Stack::builder()
//!     .provider(ProviderDef::new("openai", "gpt-4o-mini", down).priority(0))
//!     .provider(ProviderDef::new("anthropic", "claude-haiku-4-5", up).priority(1))
//!     .fallback(FallbackConfig::default())
//!     .circuit(CircuitConfig::default().consecutive_failures(3))
//!     .build()?;
//!
//! for _ in 0..10 {
//!     let req = Request::post("/v1/chat/completions").body(String::from("{}"))?;
//!     let res = stack.clone().oneshot(req).await?;
//!     assert_eq!(res.status(), 200); // every 503 was retried on the other provider
//!     // A 2xx counts as a success once its body has ended (a stream can still
//!     // break after its headers): read it, as a caller does.
//!     res.into_body().collect().await?;
//! }
//!
//! // The first provider's circuit opened after three failures; nothing more was sent
//! // to it. The snapshot is what a gateway's `GET /health` shows.
//! let snapshot = stack.handle().snapshot();
//! assert_eq!(snapshot.providers[0].health.circuit, CircuitState::Open);
//! assert_eq!(snapshot.providers[0].health.counters.failures, 3);
//! assert_eq!(snapshot.providers[1].health.counters.successes, 10);
//! let json = serde_json::to_string(&snapshot)?;
//! assert!(json.contains(r#""circuit":"open""#));
//!
//! // An operator can force it closed again (or open), by hand.
//! stack.handle().force("openai", "gpt-4o-mini", Some(CircuitState::Closed))?;
//! assert_eq!(stack.handle().snapshot().providers[0].health.circuit, CircuitState::Closed);
//! # Ok(()) }
//! ```
//!
//! The [`guide`] shows how to put the stack into an existing axum service, how to
//! swap one layer for your own, how to use one layer alone, and how to load the
//! stack from a file.
//!
//! # Cost
//!
//! The layer crates avoid boxing on their hot paths. The facade trades a little of
//! that for flexibility: it type-erases the service between positions (so any of
//! them can be yours), which costs one small allocation per layer per attempt.
//! Compose the crates directly (as in [`guide`]'s last example) where that matters.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use tower_failover_core::*;

#[cfg(feature = "balance")]
#[cfg_attr(docsrs, doc(cfg(feature = "balance")))]
#[doc(inline)]
pub use tower_failover_balance as balance;
#[cfg(feature = "circuit")]
#[cfg_attr(docsrs, doc(cfg(feature = "circuit")))]
#[doc(inline)]
pub use tower_failover_circuit as circuit;
#[cfg(feature = "overflow")]
#[cfg_attr(docsrs, doc(cfg(feature = "overflow")))]
#[doc(inline)]
pub use tower_failover_overflow as overflow;
#[cfg(feature = "provider")]
#[cfg_attr(docsrs, doc(cfg(feature = "provider")))]
#[doc(inline)]
pub use tower_failover_provider as provider;
#[cfg(feature = "ramp")]
#[cfg_attr(docsrs, doc(cfg(feature = "ramp")))]
#[doc(inline)]
pub use tower_failover_ramp as ramp;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[doc(inline)]
pub use tower_failover_redis as redis;
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
#[doc(inline)]
pub use tower_failover_retry as retry;
#[cfg(feature = "sim")]
#[cfg_attr(docsrs, doc(cfg(feature = "sim")))]
#[doc(inline)]
pub use tower_failover_sim as sim;
#[cfg(feature = "validate")]
#[cfg_attr(docsrs, doc(cfg(feature = "validate")))]
#[doc(inline)]
pub use tower_failover_validate as validate;

#[cfg(feature = "balance")]
mod classifier;
#[cfg(feature = "balance")]
#[cfg_attr(docsrs, doc(cfg(feature = "balance")))]
pub mod config;
#[cfg(feature = "balance")]
#[cfg_attr(docsrs, doc(cfg(feature = "balance")))]
pub mod guide;
#[cfg(feature = "balance")]
mod handle;
#[cfg(all(feature = "balance", feature = "retry"))]
mod lazy;
#[cfg(feature = "balance")]
#[cfg_attr(docsrs, doc(cfg(feature = "balance")))]
pub mod models;
#[cfg(feature = "balance")]
mod service;
#[cfg(feature = "balance")]
mod slot;
#[cfg(feature = "balance")]
mod stack;
#[cfg(feature = "balance")]
mod timeout;

#[cfg(feature = "balance")]
#[cfg_attr(docsrs, doc(cfg(feature = "balance")))]
pub use classifier::StackClassifier;
#[cfg(feature = "balance")]
#[cfg_attr(docsrs, doc(cfg(feature = "balance")))]
pub use config::{Config, ModelGroup, Price, ProviderEntry, RouterKind};
#[cfg(feature = "balance")]
#[cfg_attr(docsrs, doc(cfg(feature = "balance")))]
pub use handle::{Handle, ProviderStatus, StackSnapshot, UnknownProvider};
#[cfg(feature = "balance")]
#[cfg_attr(docsrs, doc(cfg(feature = "balance")))]
pub use models::{ModelNotFound, error_response};
#[cfg(feature = "balance")]
#[cfg_attr(docsrs, doc(cfg(feature = "balance")))]
pub use service::{BoxBody, Failover, FailoverFuture, ProviderService, REJECTED_HEADER, boxed};
#[cfg(feature = "balance")]
#[cfg_attr(docsrs, doc(cfg(feature = "balance")))]
pub use slot::{CustomLayer, ObserveConfig, Slot, Toggle};
#[cfg(feature = "balance")]
#[cfg_attr(docsrs, doc(cfg(feature = "balance")))]
pub use stack::{
    CustomRouter, DEFAULT_MAX_REQUEST_BYTES, ProviderDef, RouterEntry, Routing, Stack, StackBuilder,
};
