//! Retry with backoff, one retry budget for every hop, deadlines, and graceful
//! degradation when every provider is down.
//!
//! Retrying is how failover works, and also how an incident gets worse: when every
//! provider fails at once, retries at every hop multiply the load on providers that are
//! already struggling, and stacked timeouts make callers wait for nothing. This crate
//! keeps retries useful and bounded:
//!
//! | piece | what it does |
//! | --- | --- |
//! | [`RetryBudget`] | one budget shared by every hop (same-provider retry, overflow, fallback, hedging): retries ≤ ratio × requests + a floor per second |
//! | [`SameProviderRetry`] | a [`tower::retry::Policy`] that retries on the same provider only where it helps (reset before any byte, a 502/503 blip), with [`Backoff`] |
//! | [`DeadlineLayer`] | a total deadline per request; routers give each attempt only the time left ([`Deadline`](tower_failover_core::Deadline)) |
//! | [`WaitQueueLayer`] | when all providers are down, a bounded queue released by health events as soon as one recovers |
//! | [`Deferred`] | accept now (HTTP 202 and a job id), run when a provider recovers, fetch the result later |
//! | [`HedgeLayer`] | a second attempt after a latency percentile; the first answer wins, the loser is cancelled |
//!
//! # The recommended order
//!
//! ```text
//! DeadlineLayer → WaitQueueLayer → HedgeLayer (optional) → router (balance / fallback / overflow, sharing the budget)
//!     → per provider: RetryLayer(SameProviderRetry) → provider stack
//! ```
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn, retry::RetryLayer};
//! use tower_failover_core::{Registry, replay::ReplayBody};
//! use tower_failover_retry::{BudgetConfig, DeadlineLayer, RetryBudget, SameProviderRetry, WaitQueueLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let registry = Registry::new();
//! let budget = Arc::new(RetryBudget::new(BudgetConfig::default())?);
//! // Stands in for a router over per-provider stacks.
//! let router = service_fn(|_req: Request<ReplayBody>| async {
//!     Ok::<_, tower::BoxError>(Response::new(ReplayBody::from("{\"choices\":[]}")))
//! });
//! let stack = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(60)))
//!     .layer(WaitQueueLayer::new(registry.clone()))
//!     .layer(RetryLayer::new(SameProviderRetry::new(budget.clone())))
//!     .service(router);
//! let res = stack.oneshot(Request::new(ReplayBody::from("{}"))).await?;
//! assert_eq!(res.status(), 200);
//! # Ok(())
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod budget;
pub mod deadline;
pub mod deferred;
pub mod hedge;
mod policy;
pub mod queue;

pub use backoff::Backoff;
pub use budget::{BudgetConfig, RetryBudget};
pub use deadline::{DeadlineLayer, DeadlineService};
pub use deferred::{Deferred, DeferredConfig, DeferredFull, JobId, JobStatus};
pub use hedge::{Hedge, HedgeConfig, HedgeLayer, Hedged};
pub use policy::{RetryConfig, SameProviderRetry};
pub use queue::{QueueConfig, WaitQueue, WaitQueueLayer};
pub use tower_failover_core::ConfigError;

/// Named futures of the services in this crate (each also at
/// `<middleware>::future::ResponseFuture`, as in tower).
pub mod future {
    pub use crate::deadline::future::ResponseFuture as DeadlineFuture;
    pub use crate::hedge::future::ResponseFuture as HedgeFuture;
    pub use crate::queue::future::ResponseFuture as WaitQueueFuture;
}
