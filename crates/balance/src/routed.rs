//! The one router type behind [`Balance`](crate::Balance) and
//! [`Fallback`](crate::Fallback): its constructors, builder, handle, `Debug` and
//! `Service` impl are written once here; the two differ only in their configuration
//! ([`BalanceConfig`](crate::BalanceConfig) or [`FallbackConfig`](crate::FallbackConfig)),
//! which decides how the next provider is chosen.

use std::fmt;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::BoxError;
use tower_failover_core::{Classify, Health, LlmClassifier, ProviderId};
use tower_service::Service;

use crate::attrs::{Attributes, DefaultAttributes, RequestAttrs};
use crate::config::Settings;
use crate::error::ConfigError;
use crate::future::ResponseFuture;
use crate::provider::ProviderOptions;
use crate::router::{RouterCore, RouterHandle, Shared};
use crate::table::{Entry, SharedBudget, Spec};

mod sealed {
    pub trait Sealed {}
}

/// The configuration of a router, which is also its policy: [`BalanceConfig`]
/// (power of two choices by load, cost or turn) or [`FallbackConfig`] (an ordered
/// chain). Sealed: the two routers of this crate are its only implementations.
///
/// [`BalanceConfig`]: crate::BalanceConfig
/// [`FallbackConfig`]: crate::FallbackConfig
pub trait RouterConfig: sealed::Sealed + Default + fmt::Debug {
    /// The router's name in `Debug` output: `"Balance"` or `"Fallback"`.
    #[doc(hidden)]
    const NAME: &'static str;
    /// Its builder's name in `Debug` output.
    #[doc(hidden)]
    const BUILDER: &'static str;
    /// What the router reads per request.
    #[doc(hidden)]
    #[allow(private_interfaces)]
    fn settings(&self) -> Settings;
    /// Refuses invalid values, naming the field.
    #[doc(hidden)]
    fn check(&self) -> Result<(), ConfigError>;
    /// The typed fallbacks: `(context window exceeded, content policy)`.
    #[doc(hidden)]
    fn typed_fallbacks(&self) -> (Option<ProviderId>, Option<ProviderId>);
    /// The seed of the router's random choices.
    #[doc(hidden)]
    fn rng_seed(&self) -> Option<u64>;
}

pub(crate) use sealed::Sealed;

/// Implements [`RouterConfig`] for a configuration type with the fields every router
/// configuration has (`context_window_fallback`, `content_policy_fallback`, `seed`)
/// and a `validate` method: its name, its builder's name and how it becomes
/// [`Settings`] are all that differ.
macro_rules! router_config {
    ($config:ty, $name:literal, $builder:literal, $settings:path) => {
        impl $crate::routed::Sealed for $config {}

        impl $crate::routed::RouterConfig for $config {
            const NAME: &'static str = $name;
            const BUILDER: &'static str = $builder;

            #[allow(private_interfaces)]
            fn settings(&self) -> $crate::config::Settings {
                $settings(self)
            }

            fn check(&self) -> Result<(), $crate::error::ConfigError> {
                self.validate()
            }

            fn typed_fallbacks(
                &self,
            ) -> (
                Option<tower_failover_core::ProviderId>,
                Option<tower_failover_core::ProviderId>,
            ) {
                (
                    self.context_window_fallback.clone(),
                    self.content_policy_fallback.clone(),
                )
            }

            fn rng_seed(&self) -> Option<u64> {
                self.seed
            }
        }
    };
}
pub(crate) use router_config;

/// A router over per-provider stacks, configured by `K` ([`BalanceConfig`] or
/// [`FallbackConfig`]). Use it by its two names, [`Balance`] and [`Fallback`].
///
/// Clones share the providers and their handle, each with its own random generator
/// (derived from the seed).
///
/// [`BalanceConfig`]: crate::BalanceConfig
/// [`FallbackConfig`]: crate::FallbackConfig
/// [`Balance`]: crate::Balance
/// [`Fallback`]: crate::Fallback
pub struct Router<K, S, C = LlmClassifier, A = DefaultAttributes> {
    router: RouterCore<S, C, A>,
    kind: PhantomData<fn() -> K>,
}

impl<K: RouterConfig, S: Clone> Router<K, S> {
    /// A router over `providers` with the default configuration (the LLM
    /// classifier, attributes from the default headers). A later provider with the
    /// same id replaces an earlier one.
    pub fn new<I>(providers: I) -> Self
    where
        I: IntoIterator<Item = (Health, S)>,
    {
        let mut spec = Spec {
            entries: Vec::new(),
            settings: K::default().settings(),
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
        Router {
            router: RouterCore::new(
                Shared::new(spec, None),
                LlmClassifier::default(),
                DefaultAttributes::default(),
            ),
            kind: PhantomData,
        }
    }
}

impl<K: RouterConfig, S> Router<K, S> {
    /// A builder, for configuration, provider options (priorities, capabilities,
    /// prices), a classifier, an attributes reader or a retry budget.
    pub fn builder() -> RouterBuilder<K, S> {
        RouterBuilder {
            config: K::default(),
            entries: Vec::new(),
            classifier: LlmClassifier::default(),
            attributes: DefaultAttributes::default(),
            budget: None,
        }
    }
}

impl<K, S, C, A> Router<K, S, C, A> {
    /// A handle to add and remove providers at runtime.
    pub fn handle(&self) -> RouterHandle<S>
    where
        S: Clone,
    {
        RouterHandle::new(self.router.shared().clone())
    }

    /// The providers, in the order they were added.
    pub fn providers(&self) -> Vec<ProviderId> {
        self.router.ids()
    }

    /// The provider a request with these attributes would try first now, by the
    /// same rules as a real request but without checking readiness, reserving or
    /// sending anything (a dry run, for debugging routes and for benchmarks). `None`
    /// when no candidate is available.
    pub fn pick(&mut self, attrs: &RequestAttrs<'_>) -> Option<&Health> {
        self.router.pick(attrs)
    }
}

impl<K, S, C: Clone, A: Clone> Clone for Router<K, S, C, A> {
    fn clone(&self) -> Self {
        Router {
            router: self.router.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: RouterConfig, S, C, A> fmt::Debug for Router<K, S, C, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple(K::NAME).field(&self.router).finish()
    }
}

impl<K, S, C, A, B, RB> Service<Request<B>> for Router<K, S, C, A>
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

/// Builds a router: [`BalanceBuilder`](crate::BalanceBuilder) from
/// [`Balance::builder`](crate::Balance::builder),
/// [`FallbackBuilder`](crate::FallbackBuilder) from
/// [`Fallback::builder`](crate::Fallback::builder).
pub struct RouterBuilder<K, S, C = LlmClassifier, A = DefaultAttributes> {
    pub(crate) config: K,
    entries: Vec<Entry<S>>,
    classifier: C,
    attributes: A,
    budget: Option<SharedBudget>,
}

impl<K: RouterConfig, S, C, A> fmt::Debug for RouterBuilder<K, S, C, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(K::BUILDER)
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

impl<K: RouterConfig, S, C, A> RouterBuilder<K, S, C, A> {
    /// Uses this configuration (replacing any set before).
    pub fn config(mut self, config: K) -> Self {
        self.config = config;
        self
    }

    /// Adds a provider with default options (for a fallback chain: at its end).
    pub fn provider(self, health: Health, service: S) -> Self {
        self.provider_with(health, service, ProviderOptions::default())
    }

    /// Adds a provider with options (price, priority, capabilities). A later
    /// provider with the same id replaces an earlier one.
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
    pub fn classifier<C2: Classify>(self, classifier: C2) -> RouterBuilder<K, S, C2, A> {
        RouterBuilder {
            config: self.config,
            entries: self.entries,
            classifier,
            attributes: self.attributes,
            budget: self.budget,
        }
    }

    /// Uses another reader of request attributes (for example
    /// [`JsonBodyAttributes`](crate::JsonBodyAttributes)).
    pub fn attributes<A2>(self, attributes: A2) -> RouterBuilder<K, S, C, A2> {
        RouterBuilder {
            config: self.config,
            entries: self.entries,
            classifier: self.classifier,
            attributes,
            budget: self.budget,
        }
    }

    /// Validates everything and builds the router.
    pub fn build(self) -> Result<Router<K, S, C, A>, ConfigError>
    where
        S: Clone,
    {
        self.config.check()?;
        let (context_fallback, policy_fallback) = self.config.typed_fallbacks();
        let mut spec = Spec {
            entries: Vec::new(),
            settings: self.config.settings(),
            context_fallback,
            policy_fallback,
            budget: self.budget,
        };
        for entry in self.entries {
            spec.insert(entry)?;
        }
        spec.check_targets()?;
        Ok(Router {
            router: RouterCore::new(
                Shared::new(spec, self.config.rng_seed()),
                self.classifier,
                self.attributes,
            ),
            kind: PhantomData,
        })
    }
}
