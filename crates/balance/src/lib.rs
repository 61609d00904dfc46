//! Choosing a provider per request: latency- and cost-weighted balancing,
//! capability routing, weighted round-robin, and a health-aware ordered fallback
//! chain, each failing over to providers the request has not tried yet.
//!
//! Both routers hold per-provider stacks (a hyper client with its adapter,
//! timeouts, validation, [`ObserveLayer`], circuit breaker, recovery ramp), each
//! paired with its [`Health`] handle, and are themselves `Service<Request<B>>`:
//!
//! - [`Balance`] spreads requests by [`Policy`]: least loaded (power of two choices,
//!   the default), cheapest within a latency slack of the best, or weighted
//!   round-robin.
//! - [`Fallback`] walks an ordered chain by priority.
//!
//! # Example
//!
//! ```
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_failover_balance::{Balance, BalanceConfig, ProviderOptions};
//! use tower_failover_core::{Health, Registry, observe::ObserveLayer, replay::{ReplayBody, ReplayLayer}};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let registry = Registry::new();
//! // Per provider: the client stack, observed into its health handle.
//! let stack = |health: &Health, status: u16| {
//!     ServiceBuilder::new()
//!         .layer(ObserveLayer::new(health.clone()))
//!         .service(service_fn(move |_req: Request<ReplayBody>| async move {
//!             Ok::<_, tower::BoxError>(Response::builder().status(status).body(ReplayBody::from("{}"))?)
//!         }))
//! };
//! let down = registry.provider("openai", "gpt-4o-mini");
//! let up = registry.provider("anthropic", "claude-haiku-4-5");
//! let balance = Balance::builder()
//!     .config(BalanceConfig::default().seed(1))
//!     .provider(down.clone(), stack(&down, 503))
//!     .provider_with(up.clone(), stack(&up, 200), ProviderOptions::default().weight(2.0))
//!     .build()?;
//!
//! // Buffer bodies once so that failover can resend them.
//! let svc = ServiceBuilder::new().layer(ReplayLayer::new(1 << 20)).service(balance);
//! for _ in 0..10 {
//!     let res = svc.clone().oneshot(Request::new(http_body_util::Full::new(bytes::Bytes::from("{}")))).await?;
//!     assert_eq!(res.status(), 200); // a 503 is retried on the other provider
//!     // A 2xx counts as a success once its body has ended: read it.
//!     http_body_util::BodyExt::collect(res.into_body()).await?;
//! }
//! assert_eq!(up.counters().successes, 10);
//! assert!(down.counters().failures <= 10);
//! # Ok(()) }
//! ```
//!
//! # The load metric
//!
//! [`Policy::LeastLoaded`] draws two candidates at random and sends to the one with
//! the lower
//!
//! ```text
//! load = peak-EWMA time to first body byte × (requests in flight + 1) ÷ weight
//! ```
//!
//! The time to first *body* byte is what matters for an LLM call (a stream's
//! headers come before its first token), and a peak-EWMA believes a slowdown at
//! once and a recovery gradually. Requests in flight count until the response body
//! ends, so long streams weigh. Both come from [`ObserveLayer`] in the provider's
//! stack, read with atomic loads. A provider not measured yet counts as
//! [`unmeasured_ttfb`](BalanceConfig::unmeasured_ttfb) (default 500 ms), so it is
//! explored without being flooded. The weight is static or, with
//! [`Weighting::Cost`], divided by the provider's price per million tokens, so a
//! cheap model carries most of the traffic while it is healthy and fast enough and
//! sheds it as its latency or queue grows. With a [latency
//! buffer](BalanceConfig::latency_buffer), two candidates within X % of each other
//! count as equally fast, so traffic does not pile onto an endpoint that is a few
//! milliseconds faster.
//!
//! **Without `ObserveLayer`** in the provider stacks there is no latency signal:
//! the balancer then falls back to the requests in flight it counts itself (from
//! sending until the response headers) over weight, and never sees a provider slow
//! down until it times out. Put `ObserveLayer` below the circuit breaker and the
//! ramp in every stack.
//!
//! Pick cost does not depend on the number of providers: two random draws, a few
//! atomic loads, no clock read unless a circuit is open or a rate-limit window is
//! known, no allocation (about 55–155 ns from 2 to 1000 providers on a busy 2-core
//! machine; `docs/bench-balance.md`). [`Policy::Cheapest`] and
//! [`Policy::RoundRobin`] make one pass over the request's candidates.
//!
//! # Why not tower's `p2c::Balance`
//!
//! tower's balancer has no weights ([tower issue
//! 696](https://github.com/tower-rs/tower/issues/696)): there is no way to say that
//! one provider costs a tenth of another. Its load is measured at the response
//! headers, not the first body byte. It caches the index of the endpoint it picked
//! in `poll_ready` and reuses it after discovery removes endpoints with a swap,
//! which can send a request to a different endpoint than the one chosen ([tower
//! issue 856](https://github.com/tower-rs/tower/issues/856)). And it picks before it
//! sees the request, which rules out capability routing and per-request failover.
//! Here a request routes on its own attributes, keeps the immutable provider table
//! it started with (indices cannot go stale), and holds the request to resend it.
//!
//! # Health and readiness
//!
//! A candidate is skipped without spending any time on it when its [`Health`]
//! says it is unavailable: circuit open (until its cooldown ends), quota group
//! rate limited, recovery ramp at 0 %. A provider that is *suspect*
//! ([`Health::is_suspect`]: requests wait for it and it has said nothing for far
//! longer than its usual time to first byte) is passed over too, before any timeout
//! fires, unless no other candidate is left: suspicion never fails a request, and
//! the requests already waiting on it keep their own timeouts. Otherwise the router clones the provider's
//! service and polls its readiness: a breaker gating `poll_ready` (pending while
//! open) or a concurrency limit makes it pass to another candidate; a `poll_ready`
//! error (a breaker refusing) is recorded and skipped. Only when no candidate is left
//! does it wait for a pending one, for at most
//! [`max_ready_wait`](BalanceConfig::max_ready_wait). With nothing left at all, the
//! request fails at once with [`AllProvidersFailed`] listing every attempt, with a
//! `Retry-After` hint from the earliest [`Health::recovers_in`]. The routers' own
//! `poll_ready` is always ready: they never hold a caller there.
//!
//! # Outcomes and failover
//!
//! Each attempt is classified by a [`Classify`](tower_failover_core::Classify)
//! implementation ([`LlmClassifier`](tower_failover_core::LlmClassifier) by
//! default). A success, or a client error, goes back to the caller. A failure, a
//! rate limit or a rejection is retried on a provider this request has not tried
//! (each provider at most once per request, Envoy's "previous hosts" rule).
//! Typed fallbacks: a context-window overflow goes to
//! [`context_window_fallback`](BalanceConfig::context_window_fallback) and a content
//! policy refusal to [`content_policy_fallback`](BalanceConfig::content_policy_fallback).
//! An attempt shed by a breaker or a ramp ([`CircuitOpen`], [`Shed`]) is "go
//! elsewhere", not a failure: it spends no retry budget and does not count against
//! [`max_attempts`](BalanceConfig::max_attempts). The routers never count outcomes
//! into [`Health`] (the stack's `ObserveLayer` does), with one exception: when
//! their own attempt timeout cuts an attempt short, they record the time waited as
//! a lower bound of its time to first byte, since nothing else will.
//!
//! A shared retry budget ([`SharedBudget`], tower's
//! [`Budget`](tower::retry::budget::Budget) trait) receives one deposit per request
//! and one withdrawal per retry; an attempt timeout and a total deadline bound
//! the time spent ([`Elapsed`] with [`TimeoutKind::Attempt`] or
//! [`TimeoutKind::Total`]). An attempt cut short by the attempt timeout is listed
//! in [`AllProvidersFailed`] as a timeout of its provider; when the total deadline
//! passes, the error is a [`TotalTimeout`] that keeps every attempt. Each attempt's
//! request carries an [`AttemptDeadline`](tower_failover_core::AttemptDeadline)
//! (when an attempt timeout is set), so that the layers of the provider's stack can
//! tell the router's timer ending the attempt (that provider's timeout) from a
//! caller who went away (neutral). The total deadline is also written to the request as a
//! [`Deadline`](tower_failover_core::Deadline) so inner timeouts see the time left,
//! and a `Deadline` set by an outer layer is honoured.
//!
//! # Recovery ramps
//!
//! While a provider's recovery ramp runs ([`Health::ramp_step`] is set), its target
//! is a share of *all* requests, whatever the number of providers: the balancer
//! routes a request to it with probability equal to its share
//! ([`Health::ramp_share`]) and otherwise leaves it out of the pick; the fallback
//! chain keeps it in its place with that probability. Left-out providers remain a
//! last resort when nothing else can serve. Build the ramp's layer with
//! `RampConfig::shed(false)` (crate `tower-failover-ramp`) under these routers, so
//! that requests are not thinned twice; a `Shed` it does return is still "go
//! elsewhere".
//!
//! # Capability routing
//!
//! Before picking, a router reads the request's [`RequestAttrs`] (requested model,
//! tier header, tools present, estimated prompt tokens) with an [`Attributes`]
//! implementation and keeps only the providers whose [`ProviderOptions`] serve
//! them: see the [`attrs`] module. Candidate sets are precomputed per (model, tier,
//! tools) when providers change, and a prompt size selects a suffix of one by binary
//! search, so routing adds no per-provider work to a pick.
//!
//! # Using it
//!
//! Requests need a cloneable body (resent per attempt): put
//! [`ReplayLayer`](tower_failover_core::replay::ReplayLayer) in front. Provider
//! stacks must be `Clone` (cloned per attempt; clones share state, not readiness)
//! and, for the response future to be `Send`, `Sync`: stacks of different types go
//! in a `tower::util::BoxCloneSyncService`. Providers are added and removed at
//! runtime through a [`RouterHandle`]. Everything random comes from a seeded
//! [`Rng`](tower_failover_core::rng::Rng) ([`BalanceConfig::seed`]), so tests and
//! drills replay exactly. In axum, turn the errors into responses with
//! `HandleErrorLayer` and [`error_response`](tower_failover_core::error_response).
//!
//! [`ObserveLayer`]: tower_failover_core::observe::ObserveLayer
//! [`Health`]: tower_failover_core::Health
//! [`Health::recovers_in`]: tower_failover_core::Health::recovers_in
//! [`Health::is_suspect`]: tower_failover_core::Health::is_suspect
//! [`Health::ramp_step`]: tower_failover_core::Health::ramp_step
//! [`Health::ramp_share`]: tower_failover_core::Health::ramp_share
//! [`AllProvidersFailed`]: tower_failover_core::error::AllProvidersFailed
//! [`CircuitOpen`]: tower_failover_core::error::CircuitOpen
//! [`Shed`]: tower_failover_core::error::Shed
//! [`Elapsed`]: tower_failover_core::error::Elapsed
//! [`TimeoutKind::Attempt`]: tower_failover_core::error::TimeoutKind::Attempt
//! [`TimeoutKind::Total`]: tower_failover_core::error::TimeoutKind::Total

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod attrs;
mod balance;
mod config;
mod error;
mod fallback;
pub mod future;
mod pick;
mod provider;
mod routed;
mod router;
mod table;

pub use attrs::{
    Attributes, BodyBytes, DefaultAttributes, JsonBodyAttributes, RequestAttrs, RouteInfo,
};
pub use balance::{Balance, BalanceBuilder};
pub use config::{BalanceConfig, FallbackConfig, Policy, Weighting};
pub use error::{ConfigError, TotalTimeout};
pub use fallback::{Fallback, FallbackBuilder};
pub use provider::ProviderOptions;
pub use routed::{Router, RouterBuilder, RouterConfig};
pub use router::RouterHandle;

/// The old name of [`RouterHandle`] (the facade's `Handle` is another thing: the
/// whole stack's).
#[deprecated(note = "renamed RouterHandle")]
pub type Handle<S> = RouterHandle<S>;
pub use table::SharedBudget;
