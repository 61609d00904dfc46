//! [`Fallback`]: an ordered chain of providers by priority that skips open ones
//! instantly and moves down the chain on a retryable outcome.

use std::fmt;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::BoxError;
use tower_failover_core::{Classify, Health, LlmClassifier, ProviderId};
use tower_service::Service;

use crate::attrs::{Attributes, DefaultAttributes, RequestAttrs};
use crate::config::{FallbackConfig, Settings};
use crate::error::ConfigError;
use crate::future::ResponseFuture;
use crate::provider::ProviderOptions;
use crate::router::{Handle, Router, Shared};
use crate::table::{Entry, SharedBudget, Spec};

/// Sends each request to the first provider of a chain that is available, and on a
/// retryable outcome to the next one it has not tried.
///
/// The order is by [`priority`](ProviderOptions::priority) (lower first), then the
/// order providers were added. A provider whose health says it is unavailable
/// (circuit open, rate limited, ramp at 0 %) is skipped without spending any time on
/// it; one whose `poll_ready` is pending is passed over and waited on (up to
/// [`max_ready_wait`](FallbackConfig::max_ready_wait)) only when nothing further down
/// the chain can take the request. Capability routing applies as in
/// [`Balance`](crate::Balance): a request only walks the providers that can serve it.
///
/// ```
/// use http::{Request, Response};
/// use tower::{ServiceExt, service_fn};
/// use tower_failover_balance::Fallback;
/// use tower_failover_core::{CircuitState, Health, replay::ReplayBody};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// let provider = |name: &'static str| service_fn(move |_req: Request<ReplayBody>| async move {
///     Ok::<_, tower::BoxError>(Response::builder().header("x-from", name).body(ReplayBody::empty())?)
/// });
/// let primary = Health::standalone("openai", "gpt-4o-mini");
/// let chain = Fallback::new([
///     (primary.clone(), provider("primary")),
///     (Health::standalone("anthropic", "claude-haiku-4-5"), provider("secondary")),
/// ]);
/// // The primary's circuit is open: it is skipped at once.
/// primary.force(Some(CircuitState::Open));
/// let res = chain.oneshot(Request::new(ReplayBody::from("{}"))).await?;
/// assert_eq!(res.headers()["x-from"], "secondary");
/// # Ok(()) }
/// ```
pub struct Fallback<S, C = LlmClassifier, A = DefaultAttributes> {
    router: Router<S, C, A>,
}

impl<S: Clone> Fallback<S> {
    /// A chain of `providers` in the given order, with the default configuration. A
    /// later provider with the same id replaces an earlier one.
    pub fn new<I>(providers: I) -> Self
    where
        I: IntoIterator<Item = (Health, S)>,
    {
        let mut spec = Spec {
            entries: Vec::new(),
            settings: Settings::fallback(&FallbackConfig::default()),
            context_fallback: None,
            policy_fallback: None,
            budget: None,
        };
        for (health, service) in providers {
            let entry = Entry::new(health, service, ProviderOptions::default());
            spec.entries.retain(|e| e.health.id() != entry.health.id());
            spec.entries.push(entry);
        }
        Fallback {
            router: Router::new(
                Shared::new(spec, None),
                LlmClassifier::default(),
                DefaultAttributes::default(),
            ),
        }
    }
}

impl<S> Fallback<S> {
    /// A builder, for configuration, priorities, capabilities, a classifier, an
    /// attributes reader or a retry budget.
    pub fn builder() -> FallbackBuilder<S> {
        FallbackBuilder {
            config: FallbackConfig::default(),
            entries: Vec::new(),
            classifier: LlmClassifier::default(),
            attributes: DefaultAttributes::default(),
            budget: None,
        }
    }
}

impl<S, C, A> Fallback<S, C, A> {
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

    /// The provider a request with these attributes would try first now: the first
    /// available one of its chain (a dry run; nothing is sent or reserved).
    pub fn pick(&mut self, attrs: &RequestAttrs<'_>) -> Option<&Health> {
        self.router.pick(attrs)
    }
}

impl<S, C: Clone, A: Clone> Clone for Fallback<S, C, A> {
    fn clone(&self) -> Self {
        Fallback {
            router: self.router.clone(),
        }
    }
}

impl<S, C, A> fmt::Debug for Fallback<S, C, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Fallback").field(&self.router).finish()
    }
}

impl<S, C, A, B, RB> Service<Request<B>> for Fallback<S, C, A>
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

    /// Always ready: readiness is checked per provider when a request walks the
    /// chain, and a request that finds no provider fails fast instead of waiting.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.router.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.router.call(req)
    }
}

/// Builds a [`Fallback`]. From [`Fallback::builder`].
pub struct FallbackBuilder<S, C = LlmClassifier, A = DefaultAttributes> {
    config: FallbackConfig,
    entries: Vec<Entry<S>>,
    classifier: C,
    attributes: A,
    budget: Option<SharedBudget>,
}

impl<S, C, A> fmt::Debug for FallbackBuilder<S, C, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackBuilder")
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

impl<S, C, A> FallbackBuilder<S, C, A> {
    /// Uses this configuration (replacing any set before).
    pub fn config(mut self, config: FallbackConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds a provider at the end of the chain (unless a priority says otherwise).
    pub fn provider(self, health: Health, service: S) -> Self {
        self.provider_with(health, service, ProviderOptions::default())
    }

    /// Adds a provider with options (priority, capabilities). A later provider with
    /// the same id replaces an earlier one.
    pub fn provider_with(mut self, health: Health, service: S, options: ProviderOptions) -> Self {
        self.entries.push(Entry::new(health, service, options));
        self
    }

    /// Adds providers in order, with default options.
    pub fn providers<I>(mut self, providers: I) -> Self
    where
        I: IntoIterator<Item = (Health, S)>,
    {
        for (health, service) in providers {
            self = self.provider(health, service);
        }
        self
    }

    /// Shares a retry budget: one deposit per request, one withdrawal per move down
    /// the chain after a retryable outcome (not after an attempt shed by a breaker or
    /// ramp). When it is spent, the request fails with
    /// [`AllProvidersFailed`](tower_failover_core::error::AllProvidersFailed) and the
    /// reason `"retry budget exhausted"`.
    pub fn budget(mut self, budget: SharedBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Uses another classifier to decide each attempt's outcome.
    pub fn classifier<C2: Classify>(self, classifier: C2) -> FallbackBuilder<S, C2, A> {
        FallbackBuilder {
            config: self.config,
            entries: self.entries,
            classifier,
            attributes: self.attributes,
            budget: self.budget,
        }
    }

    /// Uses another reader of request attributes.
    pub fn attributes<A2>(self, attributes: A2) -> FallbackBuilder<S, C, A2> {
        FallbackBuilder {
            config: self.config,
            entries: self.entries,
            classifier: self.classifier,
            attributes,
            budget: self.budget,
        }
    }

    /// Validates everything and builds the chain.
    pub fn build(self) -> Result<Fallback<S, C, A>, ConfigError>
    where
        S: Clone,
    {
        self.config.validate()?;
        let mut spec = Spec {
            entries: Vec::new(),
            settings: Settings::fallback(&self.config),
            context_fallback: self.config.context_window_fallback.clone(),
            policy_fallback: self.config.content_policy_fallback.clone(),
            budget: self.budget,
        };
        for entry in self.entries {
            spec.insert(entry)?;
        }
        spec.check_targets()?;
        Ok(Fallback {
            router: Router::new(
                Shared::new(spec, self.config.seed),
                self.classifier,
                self.attributes,
            ),
        })
    }
}
