//! [`Balance`]: latency- and cost-weighted power of two choices over per-provider
//! stacks, with capability routing, recovery-ramp shares and failover to untried
//! providers.

use std::fmt;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::BoxError;
use tower_failover_core::{Classify, Health, LlmClassifier, ProviderId};
use tower_service::Service;

use crate::attrs::{Attributes, DefaultAttributes, RequestAttrs};
use crate::config::{BalanceConfig, Policy, Settings, Weighting};
use crate::error::ConfigError;
use crate::future::ResponseFuture;
use crate::provider::ProviderOptions;
use crate::router::{Handle, Router, Shared};
use crate::table::{Entry, SharedBudget, Spec};

/// Balances requests over per-provider stacks. See the [crate documentation](crate)
/// for how it chooses.
///
/// Built from `(Health, S)` pairs (each provider's stack and its health handle)
/// with [`Balance::new`] or [`Balance::builder`]. Clones share the providers and
/// their handle, each with its own random generator (derived from the seed).
///
/// ```
/// use http::{Request, Response};
/// use tower::{ServiceExt, service_fn};
/// use tower_failover_balance::{Balance, BalanceConfig, Policy, ProviderOptions, Weighting};
/// use tower_failover_core::{Health, replay::ReplayBody};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// let provider = |name: &'static str| service_fn(move |_req: Request<ReplayBody>| async move {
///     Ok::<_, tower::BoxError>(Response::new(ReplayBody::from(name)))
/// });
/// let balance = Balance::builder()
///     .config(BalanceConfig::default().weighting(Weighting::Cost).seed(7))
///     .provider_with(
///         Health::standalone("cheap", "mini"),
///         provider("cheap"),
///         ProviderOptions::default().price_per_million(0.2),
///     )
///     .provider_with(
///         Health::standalone("strong", "large"),
///         provider("strong"),
///         ProviderOptions::default().price_per_million(5.0),
///     )
///     .build()?;
/// let res = balance.oneshot(Request::new(ReplayBody::from("{}"))).await?;
/// assert_eq!(res.status(), 200);
/// # Ok(()) }
/// ```
pub struct Balance<S, C = LlmClassifier, A = DefaultAttributes> {
    router: Router<S, C, A>,
}

impl<S: Clone> Balance<S> {
    /// A balancer over `providers` with the default configuration (least loaded,
    /// static weights of 1, the LLM classifier, attributes from the default
    /// headers). A later provider with the same id replaces an earlier one.
    pub fn new<I>(providers: I) -> Self
    where
        I: IntoIterator<Item = (Health, S)>,
    {
        let mut spec = Spec {
            entries: Vec::new(),
            settings: Settings::balance(&BalanceConfig::default()),
            context_fallback: None,
            policy_fallback: None,
            budget: None,
        };
        for (health, service) in providers {
            let entry = Entry::new(health, service, ProviderOptions::default());
            // Default options are always valid; replace duplicates by hand.
            spec.entries.retain(|e| e.health.id() != entry.health.id());
            spec.entries.push(entry);
        }
        Balance {
            router: Router::new(
                Shared::new(spec, None),
                LlmClassifier::default(),
                DefaultAttributes::default(),
            ),
        }
    }
}

impl<S> Balance<S> {
    /// A builder, for configuration, provider options, a classifier, an attributes
    /// reader or a retry budget.
    pub fn builder() -> BalanceBuilder<S> {
        BalanceBuilder {
            config: BalanceConfig::default(),
            entries: Vec::new(),
            classifier: LlmClassifier::default(),
            attributes: DefaultAttributes::default(),
            budget: None,
        }
    }
}

impl<S, C, A> Balance<S, C, A> {
    /// A handle to add and remove providers at runtime.
    pub fn handle(&self) -> Handle<S>
    where
        S: Clone,
    {
        Handle::new(self.router.shared().clone())
    }

    /// The providers, in the order they were added.
    pub fn providers(&self) -> Vec<ProviderId> {
        self.router.ids()
    }

    /// The provider a request with these attributes would try first now, by the
    /// same rules as a real request but without checking readiness or sending
    /// anything (a dry run, for debugging routes and for benchmarks). `None` when
    /// no candidate is available.
    pub fn pick(&mut self, attrs: &RequestAttrs<'_>) -> Option<&Health> {
        self.router.pick(attrs)
    }
}

impl<S, C: Clone, A: Clone> Clone for Balance<S, C, A> {
    fn clone(&self) -> Self {
        Balance {
            router: self.router.clone(),
        }
    }
}

impl<S, C, A> fmt::Debug for Balance<S, C, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Balance").field(&self.router).finish()
    }
}

impl<S, C, A, B, RB> Service<Request<B>> for Balance<S, C, A>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    B: Clone,
    C: Classify,
    A: Attributes<B>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, C>;

    /// Always ready: readiness is checked per provider when a request is routed,
    /// and a request that finds no provider fails fast instead of waiting here.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.router.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.router.call(req)
    }
}

/// Builds a [`Balance`]. From [`Balance::builder`].
pub struct BalanceBuilder<S, C = LlmClassifier, A = DefaultAttributes> {
    config: BalanceConfig,
    entries: Vec<Entry<S>>,
    classifier: C,
    attributes: A,
    budget: Option<SharedBudget>,
}

impl<S, C, A> fmt::Debug for BalanceBuilder<S, C, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalanceBuilder")
            .field("config", &self.config)
            .field(
                "providers",
                &self
                    .entries
                    .iter()
                    .map(|e| e.health.id())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<S, C, A> BalanceBuilder<S, C, A> {
    /// Uses this configuration (replacing any set before).
    pub fn config(mut self, config: BalanceConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the [`policy`](BalanceConfig::policy).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.config.policy = policy;
        self
    }

    /// Sets the [`weighting`](BalanceConfig::weighting).
    pub fn weighting(mut self, weighting: Weighting) -> Self {
        self.config.weighting = weighting;
        self
    }

    /// Sets the [`seed`](BalanceConfig::seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Adds a provider with default options.
    pub fn provider(self, health: Health, service: S) -> Self {
        self.provider_with(health, service, ProviderOptions::default())
    }

    /// Adds a provider with options. A later provider with the same id replaces an
    /// earlier one.
    pub fn provider_with(mut self, health: Health, service: S, options: ProviderOptions) -> Self {
        self.entries.push(Entry::new(health, service, options));
        self
    }

    /// Adds providers with default options.
    pub fn providers<I>(mut self, providers: I) -> Self
    where
        I: IntoIterator<Item = (Health, S)>,
    {
        for (health, service) in providers {
            self = self.provider(health, service);
        }
        self
    }

    /// Shares a retry budget: one deposit per request, one withdrawal per retry on
    /// another provider (not for attempts shed by a breaker or ramp). When it is
    /// spent, the request fails with
    /// [`AllProvidersFailed`](tower_failover_core::error::AllProvidersFailed) and the
    /// reason `"retry budget exhausted"`.
    pub fn budget(mut self, budget: SharedBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Uses another classifier to decide each attempt's outcome.
    pub fn classifier<C2: Classify>(self, classifier: C2) -> BalanceBuilder<S, C2, A> {
        BalanceBuilder {
            config: self.config,
            entries: self.entries,
            classifier,
            attributes: self.attributes,
            budget: self.budget,
        }
    }

    /// Uses another reader of request attributes (for example
    /// [`JsonBodyAttributes`](crate::JsonBodyAttributes)).
    pub fn attributes<A2>(self, attributes: A2) -> BalanceBuilder<S, C, A2> {
        BalanceBuilder {
            config: self.config,
            entries: self.entries,
            classifier: self.classifier,
            attributes,
            budget: self.budget,
        }
    }

    /// Validates everything and builds the balancer.
    pub fn build(self) -> Result<Balance<S, C, A>, ConfigError>
    where
        S: Clone,
    {
        self.config.validate()?;
        let mut spec = Spec {
            entries: Vec::new(),
            settings: Settings::balance(&self.config),
            context_fallback: self.config.context_window_fallback.clone(),
            policy_fallback: self.config.content_policy_fallback.clone(),
            budget: self.budget,
        };
        for entry in self.entries {
            spec.insert(entry)?;
        }
        spec.check_targets()?;
        Ok(Balance {
            router: Router::new(
                Shared::new(spec, self.config.seed),
                self.classifier,
                self.attributes,
            ),
        })
    }
}
