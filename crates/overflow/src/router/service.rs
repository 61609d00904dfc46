//! [`Overflow`]: the router over a primary and its overflow targets, and its builder.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower::BoxError;
use tower_failover_core::replay::clone_request;
use tower_failover_core::{Classify, Health, LlmClassifier, Outcome, RejectKind};
use tower_service::Service;

use crate::config::OverflowConfig;
use crate::error::ConfigError;
use crate::router::future::ResponseFuture;
use crate::router::shared::{Shared, SharedBudget, bit};

/// The most targets one router holds (they are tracked in 64-bit masks).
pub const MAX_TARGETS: usize = 64;

/// Whether an error means the request was not sent (refused in front of the
/// provider), so that trying it elsewhere, or later, costs the provider nothing.
pub(crate) fn not_sent(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::RateLimited { .. }
            | Outcome::Rejected {
                kind: RejectKind::Shed
            }
    )
}

/// Every target index twice: first with `false` (look at the targets that are not
/// suspect), then with `true` (the suspect ones).
fn passes(n: usize) -> impl Iterator<Item = (bool, usize)> {
    [false, true]
        .into_iter()
        .flat_map(move |pass| (0..n).map(move |i| (pass, i)))
}

/// Routes each request to the first target, in order, that is not rate limited,
/// and on a 429 sends it on to the next one without waiting. See the
/// [crate documentation](crate) for the whole story.
///
/// Readiness: `poll_ready` reserves the first available target that is ready (a
/// target under backpressure overflows too), and is ready at once when every target
/// is limited, so that the call can wait in the pacing queue or fail with
/// [`AllProvidersFailed`](tower_failover_core::error::AllProvidersFailed). Clones share
/// the targets' state, not readiness.
pub struct Overflow<S, C = LlmClassifier> {
    shared: Arc<Shared<S, C>>,
    services: Vec<S>,
    /// Bit `i`: `services[i]` answered ready and has not been called since.
    ready: u64,
    /// The instant of the last `poll_ready`, reused by `call` (a stale instant only
    /// errs towards "still limited").
    now: Option<Instant>,
    /// Whether a copy of each request is kept for another attempt.
    keep: bool,
}

impl<S> Overflow<S> {
    /// A builder, with the default [`OverflowConfig`] and [`LlmClassifier`].
    pub fn builder() -> OverflowBuilder<S> {
        OverflowBuilder {
            targets: Vec::new(),
            config: OverflowConfig::default(),
            classifier: LlmClassifier::default(),
            budget: None,
            deposit: false,
        }
    }

    /// A router over `targets` (primary first) with the default configuration.
    pub fn new(targets: impl IntoIterator<Item = (Health, S)>) -> Result<Self, ConfigError>
    where
        S: Clone,
    {
        Overflow::builder().providers(targets).build()
    }
}

impl<S, C> Overflow<S, C> {
    /// The targets' health handles, in order.
    pub fn targets(&self) -> impl ExactSizeIterator<Item = &Health> {
        self.shared.targets.iter().map(|t| &t.health)
    }

    /// This clone's services, in order.
    pub fn services(&self) -> &[S] {
        &self.services
    }

    /// Requests now waiting in the pacing queue (across every clone).
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
    }

    /// The configuration.
    pub fn config(&self) -> &OverflowConfig {
        &self.shared.config
    }
}

impl<S: Clone, C> Clone for Overflow<S, C> {
    fn clone(&self) -> Self {
        Overflow {
            shared: Arc::clone(&self.shared),
            services: self.services.clone(),
            ready: 0,
            now: None,
            keep: self.keep,
        }
    }
}

impl<S, C> fmt::Debug for Overflow<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overflow")
            .field(
                "targets",
                &self
                    .shared
                    .targets
                    .iter()
                    .map(|t| t.health.id())
                    .collect::<Vec<_>>(),
            )
            .field("config", &self.shared.config)
            .field("waiting", &self.waiting())
            .finish_non_exhaustive()
    }
}

impl<S, C, B, RB> Service<Request<B>> for Overflow<S, C>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    C: Classify,
    B: Clone,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let now = Instant::now();
        self.now = Some(now);
        let mut pending = false;
        // Targets that are not suspect first, in order; then suspect ones (a last
        // resort: suspicion never fails a request).
        for (pass, i) in passes(self.services.len()) {
            if !self.shared.available(i, now) || self.shared.suspect(i, now) != pass {
                continue;
            }
            if self.ready & bit(i) != 0 {
                return Poll::Ready(Ok(()));
            }
            match self.services[i].poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    self.ready |= bit(i);
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => pending = true,
                Poll::Ready(Err(e)) => {
                    let e = e.into();
                    if !not_sent(&self.shared.classifier.classify_error(&*e)) {
                        return Poll::Ready(Err(e));
                    }
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            // Nothing available: the call will wait in the pacing queue or fail.
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let now = self.now.take().unwrap_or_else(Instant::now);
        if let Some(budget) = self.shared.budget.as_ref().filter(|_| self.shared.deposit) {
            budget.deposit();
        }
        let mut first = None;
        for (pass, i) in passes(self.services.len()) {
            if !self.shared.available(i, now) || self.shared.suspect(i, now) != pass {
                continue;
            }
            if self.ready & bit(i) != 0 {
                self.ready &= !bit(i);
                let (send, keep) = if self.keep {
                    (clone_request(&req), Some(req))
                } else {
                    (req, None)
                };
                let span = tower_failover_core::trace::attempt_span(
                    self.shared.targets[i].health.id(),
                    1,
                    send.headers(),
                );
                let fut = {
                    let _in = span.enter();
                    self.services[i].call(send)
                };
                return ResponseFuture::calling(Arc::clone(&self.shared), keep, i, fut, now);
            }
            if first.is_none() {
                first = Some(i);
            }
        }
        let shared = Arc::clone(&self.shared);
        match first {
            // Available but not reserved (no poll_ready, or it went to another
            // target): make a fresh service ready from the future.
            Some(i) => ResponseFuture::start(shared, req, i, now),
            None => ResponseFuture::wait_or_fail(shared, req, now),
        }
    }
}

/// Builds an [`Overflow`] router. From [`Overflow::builder`].
pub struct OverflowBuilder<S, C = LlmClassifier> {
    targets: Vec<(Health, S)>,
    config: OverflowConfig,
    classifier: C,
    budget: Option<SharedBudget>,
    deposit: bool,
}

impl<S, C> fmt::Debug for OverflowBuilder<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OverflowBuilder")
            .field(
                "targets",
                &self.targets.iter().map(|(h, _)| h.id()).collect::<Vec<_>>(),
            )
            .field("config", &self.config)
            .field("budget", &self.budget.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, C> OverflowBuilder<S, C> {
    /// Adds a provider: its health handle (whose quota group says when it is
    /// limited) and its per-provider service stack. The first is the primary; the
    /// others take the overflow, in order. The same word as the balancer's and the
    /// fallback chain's builders.
    pub fn provider(mut self, health: Health, service: S) -> Self {
        self.targets.push((health, service));
        self
    }

    /// Adds several providers, in order.
    pub fn providers(mut self, providers: impl IntoIterator<Item = (Health, S)>) -> Self {
        self.targets.extend(providers);
        self
    }

    /// The same as [`provider`](Self::provider) (its older name).
    pub fn target(self, health: Health, service: S) -> Self {
        self.provider(health, service)
    }

    /// The same as [`providers`](Self::providers) (its older name).
    pub fn targets(self, targets: impl IntoIterator<Item = (Health, S)>) -> Self {
        self.providers(targets)
    }

    /// Sets the configuration.
    pub fn config(mut self, config: OverflowConfig) -> Self {
        self.config = config;
        self
    }

    /// Uses another classifier to recognise rate-limited answers.
    pub fn classifier<C2: Classify>(self, classifier: C2) -> OverflowBuilder<S, C2> {
        OverflowBuilder {
            targets: self.targets,
            config: self.config,
            classifier,
            budget: self.budget,
            deposit: self.deposit,
        }
    }

    /// Shares a retry budget with other routers: every overflow hop that re-sends a
    /// request a provider already answered (a 429) withdraws from it, and when it is
    /// spent the request fails with
    /// [`AllProvidersFailed`](tower_failover_core::error::AllProvidersFailed) and
    /// reason [`REASON_BUDGET`](crate::error::REASON_BUDGET). Hops past a refusal
    /// made *before* sending (a predicted limit, an open circuit) cost nothing.
    ///
    /// The router does not deposit: the layer that first sees each request (the
    /// retry layer) does. Alone, call [`deposit_requests`](Self::deposit_requests).
    /// The same word as the balancer's and the fallback chain's builders.
    pub fn budget(mut self, budget: SharedBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The same as [`budget`](Self::budget) (its older name).
    pub fn retry_budget(self, budget: SharedBudget) -> Self {
        self.budget(budget)
    }

    /// Deposits every request into the retry budget (when this router is the first
    /// to see requests). Default: off.
    pub fn deposit_requests(mut self, yes: bool) -> Self {
        self.deposit = yes;
        self
    }

    /// Validates and builds. Refuses no target, more than [`MAX_TARGETS`], and an
    /// invalid configuration.
    pub fn build(self) -> Result<Overflow<S, C>, ConfigError>
    where
        S: Clone,
    {
        self.config.validate()?;
        if self.targets.is_empty() {
            return Err(ConfigError::new("targets", "needs at least one target"));
        }
        if self.targets.len() > MAX_TARGETS {
            return Err(ConfigError::new("targets", "holds at most 64 targets"));
        }
        let services: Vec<S> = self.targets.iter().map(|(_, s)| s.clone()).collect();
        let keep = services.len() > 1 || self.config.pacing.capacity > 0;
        let shared = Shared::new(
            self.targets,
            self.classifier,
            self.config,
            self.budget,
            self.deposit,
        );
        Ok(Overflow {
            shared: Arc::new(shared),
            services,
            ready: 0,
            now: None,
            keep,
        })
    }
}
