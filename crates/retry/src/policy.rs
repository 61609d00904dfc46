//! Retrying on the same provider, only where it helps.
//!
//! Most failures are not worth retrying on the same provider: an outage lasts longer
//! than any backoff, a timeout retried is a timeout stacked, a 429 retried is exactly
//! what the provider asked us not to do. Two cases are worth it: a connection reset
//! before any byte came back (a pooled connection the provider had already closed), and
//! a brief 502/503 blip. [`SameProviderRetry`] is a [`tower::retry::Policy`] that
//! retries those — once by default, after a jittered backoff, only while the shared
//! [`RetryBudget`](crate::RetryBudget) allows — and leaves everything else to the
//! router, which moves on to another provider.
//!
//! ```
//! use std::sync::Arc;
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn, retry::RetryLayer};
//! use tower_failover_core::replay::ReplayBody;
//! use tower_failover_retry::{BudgetConfig, RetryBudget, SameProviderRetry};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let budget = Arc::new(RetryBudget::new(BudgetConfig::default())?);
//! let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let provider = service_fn({
//!     let calls = calls.clone();
//!     move |_req: Request<ReplayBody>| {
//!         let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!         async move {
//!             let status = if n == 0 { 503 } else { 200 }; // one blip
//!             Ok::<_, tower::BoxError>(Response::builder().status(status).body(ReplayBody::empty())?)
//!         }
//!     }
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(RetryLayer::new(SameProviderRetry::new(budget)))
//!     .service(provider);
//! let res = svc.oneshot(Request::new(ReplayBody::from("{}"))).await?;
//! assert_eq!(res.status(), 200);
//! assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use http::{Request, Response};
use tokio::time::Sleep;
use tower::BoxError;
use tower::retry::Policy;
use tower::retry::budget::Budget;
use tower_failover_core::metrics;
use tower_failover_core::replay::clone_request;
use tower_failover_core::rng::SharedRng;
use tower_failover_core::{Classify, FailureKind, LlmClassifier, Outcome};

use crate::backoff::Backoff;
use serde::Deserialize;
use tower_failover_core::ConfigError;

/// Settings of [`SameProviderRetry`], as a configuration file gives them.
///
/// ```
/// use std::time::Duration;
/// use tower_failover_retry::RetryConfig;
///
/// let c: RetryConfig =
///     serde_json::from_str(r#"{"max_retries": 2, "backoff": {"base": "100ms"}}"#).unwrap();
/// assert_eq!(c.backoff.base, Duration::from_millis(100));
/// c.validate().unwrap();
/// assert_eq!(RetryConfig { max_retries: 11, ..c }.validate().unwrap_err().field(), "max_retries");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Most retries on the same provider per attempt. Default 1: a blip is
    /// retried once; a second failure is an outage, for the router to fail over.
    pub max_retries: u32,
    /// The wait before a retry. Default: 50 ms, doubling, capped at 2 s, ± 50 %
    /// jitter (brief: a 502 blip is usually gone within a few tens of ms).
    pub backoff: Backoff,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 1,
            backoff: Backoff::default(),
        }
    }
}

impl RetryConfig {
    /// Refuses more than 10 retries and a backoff that cannot be meant.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_retries > 10 {
            return Err(ConfigError::new(
                "max_retries",
                "must be at most 10 (the router fails over after that)",
            ));
        }
        self.backoff.validate().map_err(|e| e.within("backoff"))
    }
}

/// A retry policy for one provider: retries resets-before-first-byte and 502/503 blips,
/// with backoff, within a shared budget.
pub struct SameProviderRetry<C = LlmClassifier> {
    budget: Arc<dyn Budget + Send + Sync>,
    backoff: Backoff,
    max_retries: u32,
    attempt: u32,
    classifier: C,
    rng: Arc<SharedRng>,
    retry_statuses: &'static [u16],
    deposits: bool,
}

impl SameProviderRetry {
    /// From a [`RetryConfig`], drawing from `budget`.
    pub fn from_config(budget: Arc<dyn Budget + Send + Sync>, config: &RetryConfig) -> Self {
        SameProviderRetry::new(budget)
            .max_retries(config.max_retries)
            .backoff(config.backoff)
    }

    /// At most one retry per request, default backoff, drawing from `budget`.
    pub fn new(budget: Arc<dyn Budget + Send + Sync>) -> Self {
        SameProviderRetry {
            budget,
            backoff: Backoff::default(),
            max_retries: 1,
            attempt: 0,
            classifier: LlmClassifier::default(),
            rng: Arc::new(SharedRng::from_entropy()),
            retry_statuses: &[502, 503],
            deposits: true,
        }
    }
}

impl<C> SameProviderRetry<C> {
    /// The most retries per request (0 disables retrying).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// The backoff between tries.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Seeds the jitter, for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = Arc::new(SharedRng::seeded(seed));
        self
    }

    /// Which statuses count as a blip worth one more try (default 502 and 503).
    pub fn retry_statuses(mut self, statuses: &'static [u16]) -> Self {
        self.retry_statuses = statuses;
        self
    }

    /// Whether each request counts as one in the budget here (default: yes). Turn
    /// it off when a router above already counts it (the balancer, the fallback
    /// and overflow do), so that a request is not counted twice.
    pub fn deposits(mut self, yes: bool) -> Self {
        self.deposits = yes;
        self
    }

    /// Uses another classifier.
    pub fn classifier<C2: Classify>(self, classifier: C2) -> SameProviderRetry<C2> {
        SameProviderRetry {
            budget: self.budget,
            backoff: self.backoff,
            max_retries: self.max_retries,
            attempt: self.attempt,
            classifier,
            rng: self.rng,
            retry_statuses: self.retry_statuses,
            deposits: self.deposits,
        }
    }

    fn worth_retrying(&self, outcome: &Outcome) -> bool {
        match outcome {
            Outcome::Failure {
                kind: FailureKind::Reset,
            } => true,
            Outcome::Failure {
                kind: FailureKind::Status(code),
            } => self.retry_statuses.contains(code),
            _ => false,
        }
    }
}

impl<C: Clone> Clone for SameProviderRetry<C> {
    fn clone(&self) -> Self {
        SameProviderRetry {
            budget: self.budget.clone(),
            backoff: self.backoff,
            max_retries: self.max_retries,
            attempt: self.attempt,
            classifier: self.classifier.clone(),
            rng: self.rng.clone(),
            retry_statuses: self.retry_statuses,
            deposits: self.deposits,
        }
    }
}

impl<C> fmt::Debug for SameProviderRetry<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SameProviderRetry")
            .field("max_retries", &self.max_retries)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl<B, RB, C> Policy<Request<B>, Response<RB>, BoxError> for SameProviderRetry<C>
where
    B: Clone,
    C: Classify,
{
    type Future = Sleep;

    fn retry(
        &mut self,
        _req: &mut Request<B>,
        result: &mut Result<Response<RB>, BoxError>,
    ) -> Option<Sleep> {
        if self.attempt == 0 && self.deposits {
            // The first time the policy sees this request: it counts as a request.
            self.budget.deposit();
        }
        let outcome = match result {
            Ok(res) => self.classifier.classify_response(res),
            Err(e) => self.classifier.classify_error(&**e),
        };
        if self.attempt >= self.max_retries || !self.worth_retrying(&outcome) {
            return None;
        }
        if !self.budget.withdraw() {
            tracing::debug!(%outcome, "same-provider retry skipped: retry budget exhausted");
            metrics::count(metrics::names::BUDGET_EXHAUSTED);
            return None;
        }
        let delay = self.backoff.delay(self.attempt, &self.rng);
        self.attempt += 1;
        metrics::count(metrics::names::RETRIES);
        tracing::debug!(%outcome, attempt = self.attempt, delay_ms = delay.as_millis() as u64, "retrying on the same provider");
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        Some(clone_request(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{BudgetConfig, RetryBudget};
    use std::sync::atomic::{AtomicU32, Ordering};
    use tower::{ServiceExt, retry::Retry, service_fn};
    use tower_failover_core::error::TransportError;

    fn budget(min: u32) -> Arc<RetryBudget> {
        Arc::new(
            RetryBudget::new(BudgetConfig {
                min_per_second: min,
                ratio: 0.0,
                ..BudgetConfig::default()
            })
            .unwrap(),
        )
    }

    async fn run(
        statuses: Vec<Result<u16, FailureKind>>,
        policy: SameProviderRetry,
    ) -> (Result<u16, String>, u32) {
        let calls = Arc::new(AtomicU32::new(0));
        let statuses = Arc::new(statuses);
        let svc = service_fn({
            let calls = calls.clone();
            move |_req: Request<String>| {
                let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
                let r = statuses[n.min(statuses.len() - 1)];
                async move {
                    match r {
                        Ok(s) => Ok(Response::builder().status(s).body(()).unwrap()),
                        Err(kind) => {
                            Err::<Response<()>, BoxError>(TransportError::new(kind, "x").into())
                        }
                    }
                }
            }
        });
        let res = Retry::new(policy, svc)
            .oneshot(Request::new("body".to_owned()))
            .await;
        (
            res.map(|r| r.status().as_u16()).map_err(|e| e.to_string()),
            calls.load(Ordering::SeqCst),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn retries_blips_and_resets_once() {
        let (r, n) = run(
            vec![Ok(503), Ok(200)],
            SameProviderRetry::new(budget(1)).seed(1),
        )
        .await;
        assert_eq!((r, n), (Ok(200), 2));
        let (r, n) = run(
            vec![Err(FailureKind::Reset), Ok(200)],
            SameProviderRetry::new(budget(1)),
        )
        .await;
        assert_eq!((r, n), (Ok(200), 2));
        let (r, n) = run(
            vec![Ok(503), Ok(503), Ok(200)],
            SameProviderRetry::new(budget(1)),
        )
        .await;
        assert_eq!((r, n), (Ok(503), 2), "one retry by default");
    }

    #[tokio::test(start_paused = true)]
    async fn leaves_other_outcomes_to_the_router() {
        for first in [
            Ok(500),
            Ok(429),
            Ok(400),
            Ok(529),
            Err(FailureKind::Timeout),
            Err(FailureKind::Connect),
        ] {
            let (_, n) = run(vec![first, Ok(200)], SameProviderRetry::new(budget(1))).await;
            assert_eq!(n, 1, "{first:?} must not be retried on the same provider");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn respects_the_budget() {
        let b = budget(0);
        let (r, n) = run(vec![Ok(503), Ok(200)], SameProviderRetry::new(b)).await;
        assert_eq!((r, n), (Ok(503), 1), "no budget, no retry");
    }
}
