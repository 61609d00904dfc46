//! Overflow on 429: rate-limit aware routing for LLM providers.
//!
//! Rate limits are the most common cause of failed LLM requests, and the usual
//! gateway answers are wrong in one of three ways: they retry the same provider
//! (collecting more 429s), they ignore `Retry-After`, or they black out a route for a
//! minute on a single 429. This crate does what a person would do with a quota in
//! hand: use the primary until it is used up, send the rest elsewhere without
//! waiting, come back exactly when it refills, and never bang on a door that is
//! known to be shut.
//!
//! Two pieces, usable together or alone:
//!
//! - [`QuotaLayer`], per provider: reads the rate-limit headers of **every**
//!   response (OpenAI's `x-ratelimit-*`, Anthropic's `anthropic-ratelimit-*`, both
//!   `Retry-After` forms, as parsed by the core's
//!   [`RateLimitInfo`](tower_failover_core::RateLimitInfo)), keeps a model of the
//!   provider's token buckets in a [`QuotaTracker`] (plus optional budgets of your
//!   own: requests and estimated tokens per minute, see [`EstimateTokens`]), and
//!   marks the provider's quota group limited **before** the 429 happens. While the
//!   group is limited it refuses at once with
//!   [`RateLimited`](tower_failover_core::error::RateLimited), without sending: the
//!   same request is never sent to a rate-limited target. It can also hold
//!   `poll_ready` until the window ends ([`LimitedMode::GatePollReady`]), so that a
//!   balancer never picks the provider meanwhile.
//! - [`Overflow`], across providers: an ordered list of targets, primary first.
//!   Each request goes to the first target that is not limited; on a 429 (or a
//!   refusal made before sending, or an answer refusing the operator's account:
//!   a rejected key, a billing failure such as OpenAI's 429 `insufficient_quota`)
//!   the same request goes on to the next target at once. When a window ends, the router takes the primary back after a small
//!   seeded random delay (`jitter`), so that a fleet of gateways does not return in
//!   the same millisecond. When *every* target is limited, requests wait in a
//!   bounded **pacing** queue and are released one by one as the quota refills,
//!   just under the known limit, instead of collecting 429s; past the queue's
//!   capacity or wait they fail with
//!   [`AllProvidersFailed`](tower_failover_core::error::AllProvidersFailed), whose
//!   `retry_after` is the earliest reset.
//!
//! # Where they go
//!
//! ```text
//!  caller ─▶ Overflow ─┬─▶ QuotaLayer ─▶ ObserveLayer ─▶ … ─▶ client   (primary)
//!                      └─▶ QuotaLayer ─▶ ObserveLayer ─▶ … ─▶ client   (overflow)
//! ```
//!
//! The [`ObserveLayer`](tower_failover_core::observe::ObserveLayer) below counts
//! outcomes and publishes each real 429 window (events, shared store); the quota
//! layer above it keeps refused requests out of those counts. The router reads each
//! target's [`Health`](tower_failover_core::Health) (atomic loads, no locks) and
//! never records outcomes itself. A 429 is classified
//! [`RateLimited`](tower_failover_core::Outcome::RateLimited), never a failure, so a
//! circuit breaker in the same stack ignores it.
//!
//! A target that is *suspect*
//! ([`Health::is_suspect`](tower_failover_core::Health::is_suspect): requests wait
//! for it and it has said nothing for far longer than its usual time to first byte)
//! is passed over like a limited one, before any timeout fires, but only while
//! another target is available: suspicion never fails a request, and the requests
//! already waiting on it keep their own timeouts.
//!
//! # Example
//!
//! The primary's headers say its quota runs out after two requests: the third goes
//! to the backup *without* a 429 ever happening.
//!
//! ```
//! use http::{Request, Response};
//! use tower::util::BoxCloneSyncService;
//! use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
//! use tower_failover_core::observe::{Observe, ObserveLayer};
//! use tower_failover_core::replay::ReplayBody;
//! use tower_failover_core::{Health, Registry};
//! use tower_failover_overflow::{Overflow, OverflowConfig, Quota, QuotaConfig, QuotaLayer, QuotaTracker};
//!
//! type Client = BoxCloneSyncService<Request<ReplayBody>, Response<ReplayBody>, BoxError>;
//!
//! /// A stand-in for a provider client that reports a quota of `limit` per minute.
//! fn fake(name: &'static str, limit: Option<u64>) -> Client {
//!     let used = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
//!     BoxCloneSyncService::new(service_fn(move |_req: Request<ReplayBody>| {
//!         let n = used.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
//!         async move {
//!             let mut res = Response::builder().header("x-served-by", name);
//!             if let Some(limit) = limit {
//!                 res = res
//!                     .header("x-ratelimit-limit-requests", limit)
//!                     .header("x-ratelimit-remaining-requests", limit.saturating_sub(n));
//!             }
//!             Ok::<_, BoxError>(res.body(ReplayBody::empty())?)
//!         }
//!     }))
//! }
//!
//! /// One provider's stack: quota tracking, then observation, then the client.
//! fn stack(health: &Health, client: Client) -> Result<Quota<Observe<Client>>, BoxError> {
//!     let tracker = QuotaTracker::new(QuotaConfig::default())?; // one per API key
//!     Ok(ServiceBuilder::new()
//!         .layer(QuotaLayer::new(health.clone(), tracker))
//!         .layer(ObserveLayer::new(health.clone()))
//!         .service(client))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let registry = Registry::new();
//! let primary = registry.provider("openai", "gpt-4o-mini");
//! let backup = registry.provider("anthropic", "claude-haiku-4-5");
//! let mut router = Overflow::builder()
//!     .target(primary.clone(), stack(&primary, fake("openai", Some(2)))?)
//!     .target(backup.clone(), stack(&backup, fake("anthropic", None))?)
//!     .config(OverflowConfig::default().seed(7))
//!     .build()?;
//!
//! let mut served = Vec::new();
//! for _ in 0..4 {
//!     let req = Request::post("/v1/chat/completions").body(ReplayBody::from("{}"))?;
//!     let res = router.ready().await?.call(req).await?;
//!     served.push(res.headers()["x-served-by"].to_str()?.to_owned());
//! }
//! assert_eq!(served, ["openai", "openai", "anthropic", "anthropic"]);
//! assert_eq!(primary.counters().rate_limited, 0); // overflowed before any 429
//! assert!(primary.is_rate_limited(tokio::time::Instant::now()));
//! # Ok(())
//! # }
//! ```
//!
//! Targets must be one service type: put differing provider stacks behind
//! `tower::util::BoxCloneSyncService` (as above) or `tower::util::Either`. The
//! router is generic over `http::Request<B>` with `B: Clone` (use the core's
//! [`ReplayBody`](tower_failover_core::replay::ReplayBody), buffered once by its
//! `ReplayLayer`): each attempt gets a copy.
//!
//! # What the headers are trusted for
//!
//! | signal | effect |
//! | --- | --- |
//! | `Retry-After: 7`, `Retry-After: <HTTP-date>`, `retry-after-ms: 1500` on a 429 | the group is limited that long |
//! | a 429 with no wait | the tracker's own estimate of the next refill, else [`HeaderLimits::default_retry_after`](tower_failover_core::HeaderLimits) |
//! | a wait past [`HeaderLimits::max_wait`](tower_failover_core::HeaderLimits) (a provider bug, a date in 2099) | clamped to it, and logged |
//! | a shorter 429 while a window is known | ignored: a deadline never moves earlier |
//! | `x-ratelimit-{limit,remaining}-{requests,tokens}`, `anthropic-ratelimit-…` on any response | the tracker's buckets; the group is marked limited when the next request would not fit |
//!
//! The buckets refill continuously at `limit / window` (60 s by default), as
//! OpenAI and Anthropic document. The level is corrected by every response
//! (accounting for requests sent after the one answered), keeping fractions: the
//! scenario tests in this crate use ≥ 99 % of a simulated provider's quota at twice
//! its RPM with no 429 at all. A provider with fixed windows is predicted
//! optimistically; its 429 then closes the group as usual.
//!
//! # Quota groups and several API keys
//!
//! Targets that share one key or organisation share one limit: create their
//! handles with [`Registry::provider_in_group`](tower_failover_core::Registry::provider_in_group)
//! and give their quota layers one [`QuotaTracker`]; a 429 from any of them then
//! closes all of them, and the router skips the lot.
//!
//! Conversely, several API keys for one provider (one per team or application) are
//! separate groups, so that one workload's batch job cannot starve another's
//! chatbot: register each key as its own provider name (`"openai#batch"`,
//! `"openai#chat"`) in its own group, with its own tracker (and optionally a
//! `requests_per_minute` budget), and give each workload a router whose primary is
//! its own key.
//!
//! # Retry budget
//!
//! [`OverflowBuilder::retry_budget`] shares a `tower::retry::budget::Budget` with
//! the other routers of a stack: every hop that re-sends a request a provider has
//! already answered withdraws from it; when it is spent the request fails with
//! reason [`error::REASON_BUDGET`]. Hops past refusals made before sending cost
//! nothing (the provider never saw the request).
//!
//! # Errors, and axum
//!
//! Failures are the core's error types, boxed: [`RateLimited`](tower_failover_core::error::RateLimited)
//! from a quota layer, [`AllProvidersFailed`](tower_failover_core::error::AllProvidersFailed)
//! from the router (with `retry_after` and a [reason](error)). In axum, wrap the
//! router in `HandleErrorLayer` and answer with
//! [`tower_failover_core::error_response`], which turns them into 429/503 with a
//! `Retry-After` header.
//!
//! # Cost
//!
//! The router's happy path is two passes over the primary's health (atomic loads),
//! the inner call and a named future: no allocation of its own (the copy of the
//! request kept for a possible hop allocates its header map, if it has headers).
//! See `docs/bench-overflow.md` for measured figures.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod config;
pub mod error;
pub mod estimate;
pub mod quota;
pub mod router;
pub mod tracker;

pub use config::{LimitedMode, OverflowConfig, PacingConfig, QuotaConfig};
pub use error::ConfigError;
pub use estimate::{BodyEstimator, EstimateTokens};
pub use quota::{Quota, QuotaLayer};
pub use router::{MAX_TARGETS, Overflow, OverflowBuilder, SharedBudget};
pub use tracker::{QuotaEstimate, QuotaTracker, Ticket};
