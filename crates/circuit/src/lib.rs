//! A circuit breaker for tower services in front of LLM providers.
//!
//! When a provider fails, the breaker stops sending it requests *before* the next
//! request waits on it, lets a few probes test its recovery once a cooldown has
//! passed, and closes again when they succeed:
//!
//! ```text
//!            trip policy says so                   cooldown over
//!   Closed ───────────────────────▶ Open ───────────────────────▶ HalfOpen
//!     ▲                              ▲                               │
//!     │                              └──────── a probe fails ────────┤
//!     └──────────── `success_threshold` probes in a row succeed ─────┘
//! ```
//!
//! # Where the state lives
//!
//! The circuit state is kept in the provider's
//! [`Health`](tower_failover_core::Health) handle (keyed by provider and model), not
//! in the breaker: balancers, recovery ramps and `/health` snapshots read it there,
//! every transition is published as a
//! [`HealthEvent`](tower_failover_core::HealthEvent) and on
//! [`Health::watch_circuit`](tower_failover_core::Health::watch_circuit), a fleet
//! store shares it with other gateway replicas, and an operator can
//! [`force`](tower_failover_core::Health::force) the circuit open or closed. The
//! breaker reads the state on every `poll_ready` and keeps only its counting windows
//! and probe permits to itself.
//!
//! # Trip policies
//!
//! Any combination of these; the circuit opens when any one says so
//! ([`CircuitConfig`]):
//!
//! - **consecutive failures** (default 5);
//! - **failures within a time window**, for example 5 in 60 s;
//! - **failure rate** over the last N calls or the last period, with a minimum
//!   number of calls (10 % of the last 50 calls; 50 % over 60 s with at least 10);
//! - **slow-call rate**: calls slower than a threshold, as a share of a window.
//!
//! Failure kinds can weigh differently ([`FailureWeights`]): refused connections and
//! 5xx can trip fast while sporadic timeouts need more evidence. What counts as a
//! failure is decided by a [`Classify`](tower_failover_core::Classify)
//! implementation, by default
//! [`LlmClassifier`](tower_failover_core::LlmClassifier). A 429
//! ([`RateLimited`](tower_failover_core::Outcome::RateLimited)) does not count by
//! default. A failed validation
//! ([`Rejected`](tower_failover_core::Outcome::Rejected)) counts when the answer was
//! malformed ([`RejectKind::is_malformed`](tower_failover_core::RejectKind::is_malformed):
//! not JSON, the wrong envelope, an error object with a 200), which is the
//! provider's fault whatever the prompt, and does not when only its content failed
//! a check (empty, truncated, a refusal, a schema mismatch); all three are
//! configurable. An attempt shed by another layer never counts; a client error
//! (4xx) counts as a success, since the provider answered.
//!
//! # When a verdict is made
//!
//! - An error from the inner service, or an answer that is not 2xx, is counted when
//!   the response future finishes (at the headers).
//! - A 2xx answer is a success only once its body **ends cleanly**: the response
//!   comes back with a [`CircuitBody`](future::CircuitBody) that carries the
//!   request's ticket (and its half-open probe permit) until then. A stream that
//!   answers 200, sends a chunk and then breaks or stalls counts as that provider's
//!   failure, classified from the body's error (a truncation is a `Reset`, an idle
//!   timeout a `Timeout`), so a provider whose streams die mid-way trips its circuit.
//! - A future or body dropped unfinished **at or after** the attempt's
//!   [`AttemptDeadline`](tower_failover_core::AttemptDeadline) (set by a router's
//!   attempt timeout, or the request's
//!   [`Deadline`](tower_failover_core::Deadline)) was ended by that timer: it counts
//!   as a `Timeout`, so a hung provider trips its circuit whichever layer's timer
//!   fires. Dropped before it, the caller went away: nothing is counted, and a probe
//!   permit goes back.
//!
//! The cooldown starts at 30 s and doubles with each trip in a row, up to 5 min,
//! shortened by a seeded random jitter so that replicas do not probe in lockstep;
//! every healthy period spent closed forgives one trip, so the cooldown shrinks back.
//!
//! # Rejected keys and billing: one answer is enough
//!
//! A provider that rejects the operator's API key (401, 403, `invalid_api_key`) or
//! refuses the account for billing (402, `insufficient_quota`, Anthropic's "credit
//! balance is too low") will not recover by itself: a person must rotate the key or
//! pay. By default the first such failure opens the circuit at once, whatever the
//! trip policies, for a long cooldown (5 min, doubling up to 30 min), and emits a
//! [`CredentialsRejected`](tower_failover_core::HealthEventKind::CredentialsRejected)
//! or [`BillingFailed`](tower_failover_core::HealthEventKind::BillingFailed) health
//! event, once per trip, so operators can tell "key revoked" from "provider down".
//! See [`AccountFailures`].
//!
//! # Open: fail fast or gate `poll_ready`
//!
//! [`OpenMode::FailFast`] (the default) keeps `poll_ready` ready and fails each call
//! at once with [`CircuitOpen`](tower_failover_core::error::CircuitOpen), which
//! carries the provider and the time left: right for a chain of fallbacks or a retry
//! layer, and it can never make a caller wait.
//!
//! [`OpenMode::GatePollReady`] makes `poll_ready` return `Pending` while the circuit
//! is open, and wakes the task when a probe becomes due or the state changes
//! (through the health watch channel: another replica, an operator, another clone).
//! Under a balancer (tower's `p2c::Balance`, or tower-failover's own balancer, which
//! also selects on `poll_ready`) an open provider then simply is never picked. Do not
//! put a gated breaker alone in front of a caller without a timeout: it waits.
//!
//! # Half-open
//!
//! `poll_ready` reserves one of `half_open_permits` probe permits atomically; `call`
//! consumes it. A permit comes back when the probe finishes, and also when its future,
//! or a service that reserved it and never called, is dropped: a cancelled request
//! never leaves the breaker stuck. `success_threshold` successful probes in a row
//! close the circuit (default 3); one failed probe opens it again with a longer
//! cooldown. While every permit is taken, other callers are refused (fail fast) or
//! wait (gated). Cloning a [`CircuitBreaker`] shares its state, not a reserved
//! permit.
//!
//! # Where it goes in a stack
//!
//! Per provider, innermost first: the provider client → timeouts → output
//! validation → [`ObserveLayer`](tower_failover_core::observe::ObserveLayer) (which
//! counts admitted attempts into the health handle) → **the circuit breaker** →
//! recovery ramp. Put timeouts below the breaker, so that a hanging provider turns
//! into `Timeout` failures it can count; put it below the balancer or fallback list
//! that chooses among providers. The breaker counts only the calls it refuses (as
//! shed, see [`CircuitConfig::record_rejections`]); it leaves the counting of
//! admitted attempts to `ObserveLayer`, so nothing is counted twice.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_failover_circuit::{CircuitBreakerLayer, CircuitConfig};
//! use tower_failover_core::{CircuitState, Health, error::{CircuitOpen, find}};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let health = Health::standalone("openai", "gpt-4o-mini");
//! let sent = Arc::new(AtomicUsize::new(0));
//!
//! // A provider in the middle of an outage.
//! let provider = service_fn({
//!     let sent = sent.clone();
//!     move |_req: Request<String>| {
//!         sent.fetch_add(1, Ordering::Relaxed);
//!         async { Ok::<_, Infallible>(Response::builder().status(503).body(String::new()).unwrap()) }
//!     }
//! });
//!
//! let config = CircuitConfig::default().consecutive_failures(3);
//! let svc = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::with_config(health.clone(), config)?)
//!     .service(provider);
//!
//! for _ in 0..10 {
//!     let result = svc.clone().oneshot(Request::new("{}".to_owned())).await;
//!     if let Err(err) = result {
//!         // Refused without being sent, with the time left until a probe.
//!         let open = find::<CircuitOpen>(&*err).expect("circuit open");
//!         assert!(open.retry_in().as_secs() <= 30);
//!     }
//! }
//! assert_eq!(sent.load(Ordering::Relaxed), 3, "only the first three reached it");
//! assert_eq!(health.circuit(), CircuitState::Open);
//! assert_eq!(health.counters().shed, 7);
//! # Ok(())
//! # }
//! ```
//!
//! # With axum
//!
//! The breaker fails with a [`BoxError`](tower_failover_core::BoxError); axum wants
//! infallible services, so turn errors into responses with `HandleErrorLayer`.
//! [`error_response`](tower_failover_core::error_response) answers a
//! [`CircuitOpen`](tower_failover_core::error::CircuitOpen) with a 503 and a
//! `Retry-After`:
//!
//! ```no_run
//! use axum::{Router, body::Body, error_handling::HandleErrorLayer};
//! use http::{Request, Response};
//! use tower::{BoxError, ServiceBuilder, service_fn};
//! use tower_failover_circuit::CircuitBreakerLayer;
//! use tower_failover_core::{Health, error_response};
//!
//! // Your provider client (a hyper client with auth and base URL, in real life).
//! let provider = service_fn(|_req: Request<Body>| async {
//!     Ok::<_, BoxError>(Response::new(Body::empty()))
//! });
//! let health = Health::standalone("openai", "gpt-4o-mini");
//!
//! let app: Router = Router::new().route_service(
//!     "/v1/chat/completions",
//!     ServiceBuilder::new()
//!         .layer(HandleErrorLayer::new(|err: BoxError| async move { error_response(&*err) }))
//!         .layer(CircuitBreakerLayer::new(health))
//!         .service(provider),
//! );
//! # drop(app);
//! ```
//!
//! # Cost
//!
//! While closed, a request costs two atomic loads in `poll_ready`, one `Arc` clone
//! in `call`, and a classification plus one or two atomic operations when it
//! finishes; no heap allocation and no lock (windowed policies add one uncontended
//! mutex). See `docs/bench-circuit.md` for figures.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod breaker;
mod config;
pub mod future;
mod layer;
mod service;
mod window;

pub use config::{
    AccountFailures, CircuitConfig, ConfigError, FailureCount, FailureRate, FailureWeights,
    MAX_DURATION, MAX_PROBES, MAX_THRESHOLD, MAX_WEIGHT, MAX_WINDOW_CALLS, OpenMode, SlowCalls,
    Window,
};
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreaker;
