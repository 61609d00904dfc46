//! Recovery: active health probes and the gradual shift-back ramp with rollback.
//!
//! A provider that has just come back from an outage is fragile: put it back at
//! full weight and the stampede of queued traffic often knocks it over again. This
//! crate gives it its traffic back gradually, checks it at every step, and rolls
//! back at the first sign of trouble.
//!
//! # The ramp
//!
//! [`RampLayer`] sits in a provider's stack just above the circuit breaker. It
//! watches the provider's circuit (in its [`Health`](tower_failover_core::Health));
//! when the circuit closes after having been open, the ramp starts: by default the
//! provider gets 5 %, then 25 %, then 50 %, then 100 % of the requests, five
//! minutes each ([`RampConfig::schedule`]: any steps, or a [`Curve`]). The share
//! is a share of *requests*, not a raw weight, so it means the same whatever the
//! number of providers. Requests beyond the share fail at once with
//! [`Shed`](tower_failover_core::error::Shed), which is not a failure: routers send
//! them to another provider.
//!
//! The current step and share are published in the provider's `Health`
//! ([`ramp_step`](tower_failover_core::Health::ramp_step),
//! [`ramp_share`](tower_failover_core::Health::ramp_share), the snapshot, the
//! store), with a [`RampStep`](tower_failover_core::HealthEventKind::RampStep)
//! event per step and [`RampCompleted`](tower_failover_core::HealthEventKind::RampCompleted)
//! at the end. A share-aware router can read that share and route exactly that
//! fraction of *all* requests to the provider; it should then build the layer with
//! [`RampConfig::shed`]`(false)`, so that requests are not thinned twice.
//!
//! # Checks and rollback
//!
//! A step advances only after its hold time **and** [`RampConfig::min_requests`]
//! admitted requests (a quiet provider is not jumped to 100 % unverified), or, at
//! traffic too low to bring them, once it has also waited
//! [`RampConfig::quiet_wait`] with no failure among the requests it saw. Each
//! admitted request's outcome is classified ([`Classify`](tower_failover_core::Classify),
//! by default [`LlmClassifier`](tower_failover_core::LlmClassifier)); rate limits
//! and rejections are not counted. Once a step has [`RampConfig::min_sample`]
//! outcomes, if its error rate exceeds the provider's baseline (measured while it
//! was healthy) times [`RampConfig::error_rate_factor`], bounded by
//! [`RampConfig::min_error_rate`] and [`RampConfig::max_error_rate`], the ramp
//! rolls back: a [`RampRolledBack`](tower_failover_core::HealthEventKind::RampRolledBack)
//! event, and the circuit re-opens with a longer cooldown (the breaker's rule,
//! base × 2^(trips − 1) capped at [`RampConfig::max_cooldown`], with one more trip
//! counted and never fewer than the rollbacks in a row plus one). When the circuit
//! closes again the ramp starts over from the first step. A flapping provider thus
//! waits longer each time, and a passing probe does not shorten that wait.
//!
//! # Probes (opt-in)
//!
//! With a [`Prober`] (a service that reaches the provider below its circuit
//! breaker, and a [`ProbeConfig`]), one task per provider sends a cheap request
//! (`GET /v1/models` by default) every interval while the circuit is open, or
//! after the provider has been idle for [`ProbeConfig::idle_after`]. It takes the
//! store's `"probe"` lease first, so only one gateway replica probes. A passing
//! probe moves the circuit from open to half-open early. With
//! [`Prober::through_breaker`], probes go on while the circuit is half-open,
//! through the breaker, as its half-open trials: a recovered provider's circuit
//! then closes even when no caller is sending (the facade's `Stack` does this by
//! default, with tiny completions as the trials).
//!
//! # A fleet of replicas
//!
//! With a shared store ([`StateStore`](tower_failover_core::StateStore) on Redis),
//! there is one ramp for the fleet: each replica's driver asks the store for the
//! provider's `"ramp"` lease at every step and check; the holder drives the schedule
//! and publishes the share, and the others follow it (through
//! [`Health::apply_remote`](tower_failover_core::Health::apply_remote)) until the ramp
//! ends or the circuit trips. Only the leader's traffic counts toward a step's error
//! rate. The in-process store always grants the lease, so a single process is
//! unchanged.
//!
//! # Limits
//!
//! - Make **one** `RampLayer` per provider and clone it: two layers on the same
//!   `Health` would both drive its ramp.
//! - A 2xx answer counts when its body ends ([`RampBody`]): a stream that breaks or
//!   stalls after its headers counts against the step as the provider's failure;
//!   any other answer counts at its headers. An attempt dropped by a timer above at
//!   its [`AttemptDeadline`](tower_failover_core::AttemptDeadline) counts as a
//!   timeout; one dropped earlier by its caller counts nothing.
//! - Requests that span two steps are counted in neither.
//! - In a fleet, the lease decides the leader within one store round trip: until
//!   then several replicas may publish the first step's share (the same value).
//!
//! # Example
//!
//! The whole default ramp, in paused time (a real stack has the circuit breaker
//! between the ramp and the provider; here the test plays the breaker):
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response};
//! use http_body_util::BodyExt;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_failover_core::error::{Shed, find};
//! use tower_failover_core::{CircuitState, Health};
//! use tower_failover_ramp::{RampConfig, RampLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let health = Health::standalone("openai", "gpt-4o-mini");
//! let provider = service_fn(|_req: Request<String>| async {
//!     Ok::<_, tower::BoxError>(Response::new("hello".to_owned()))
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(RampLayer::with_config(health.clone(), RampConfig::default().seed(7))?)
//!     // .layer(CircuitBreakerLayer::new(health.clone(), ..)) goes here
//!     .service(provider);
//!
//! // An outage: the breaker opens the circuit, and later closes it again.
//! health.set_trips(1);
//! health.transition(CircuitState::Closed, CircuitState::Open, None);
//! tokio::time::sleep(Duration::from_secs(30)).await;
//! health.transition(CircuitState::Open, CircuitState::HalfOpen, None);
//! health.transition(CircuitState::HalfOpen, CircuitState::Closed, None);
//! tokio::time::sleep(Duration::from_millis(1)).await;
//!
//! for (step, share) in [(0, 0.05), (1, 0.25), (2, 0.50), (3, 1.0)] {
//!     assert_eq!(health.ramp_step(), Some(step));
//!     let mut admitted = 0;
//!     for _ in 0..1000 {
//!         match svc.clone().oneshot(Request::new(String::new())).await {
//!             Ok(res) => {
//!                 // A 2xx counts toward the step once its body has been read.
//!                 res.into_body().collect().await?;
//!                 admitted += 1;
//!             }
//!             // Not admitted: a router would send it to another provider.
//!             Err(e) if find::<Shed>(&*e).is_some() => {}
//!             Err(e) => return Err(e),
//!         }
//!     }
//!     assert!((admitted as f64 / 1000.0 - share).abs() < 0.01);
//!     tokio::time::sleep(Duration::from_secs(300)).await;
//! }
//! assert_eq!(health.ramp_step(), None); // completed: full share
//! assert_eq!(health.ramp_share(), 1.0);
//! # Ok(())
//! # }
//! ```
//!
//! For axum, map [`Shed`](tower_failover_core::error::Shed) and the other errors to
//! responses with `HandleErrorLayer` and
//! [`error_response`](tower_failover_core::error_response); in practice the ramp
//! sits behind a router that never lets a `Shed` reach the caller.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod driver;
mod future;
mod layer;
mod probe;
mod probe_config;
mod schedule;
mod service;
mod state;
mod status;

pub use config::{ConfigError, RampConfig};
pub use future::{RampBody, ResponseFuture};
pub use layer::RampLayer;
pub use probe::Prober;
pub use probe_config::ProbeConfig;
pub use schedule::{Curve, CurveShape, Schedule, Step};
pub use service::Ramp;
pub use status::RampStatus;
