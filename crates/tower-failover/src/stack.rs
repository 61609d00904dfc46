//! The [`Stack`] builder: the recommended stack, assembled in the recommended order.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::BoxError;
use tower_failover_balance::{
    Balance, BalanceConfig, DefaultAttributes, Fallback, FallbackConfig, ProviderOptions,
    SharedBudget,
};
use tower_failover_core::observe::ObserveLayer;
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::verdict::FromVerdict;
use tower_failover_core::{Classify, HeaderLimits, Health, Registry};
use tower_layer::Layer;
use tower_service::Service;

use crate::classifier::StackClassifier;
use crate::handle::{Handle, ProviderInfo, Remaining};
use crate::models::{ModelRouter, check_names};
use crate::service::{Failover, ProviderService, boxed};
use crate::slot::{CustomLayer, ObserveConfig, Slot};
use tower_failover_core::ConfigError;

#[cfg(feature = "circuit")]
use tower_failover_circuit::{CircuitBreakerLayer, CircuitConfig};
#[cfg(feature = "overflow")]
use tower_failover_overflow::{Overflow, OverflowConfig, QuotaConfig, QuotaLayer, QuotaTracker};
#[cfg(feature = "ramp")]
use tower_failover_ramp::{ProbeConfig, Prober, RampConfig, RampLayer};
#[cfg(feature = "retry")]
use tower_failover_retry::{
    BudgetConfig, DeadlineLayer, HedgeConfig, HedgeLayer, QueueConfig, RetryBudget, RetryConfig,
    SameProviderRetry, WaitQueueLayer,
};
#[cfg(feature = "validate")]
use tower_failover_validate::ValidateConfig;

/// The classifier of the layers above the observer in a provider's stack.
pub(crate) type AboveClassifier = FromVerdict<StackClassifier>;

/// The configurations of the four positions [`StackBuilder::fused_positions`]
/// builds as one: observer, quota, breaker, ramp.
#[cfg(all(feature = "overflow", feature = "circuit", feature = "ramp"))]
type BuiltinPositions<'a> = (
    &'a ObserveConfig,
    &'a QuotaConfig,
    &'a CircuitConfig,
    &'a RampConfig,
);

/// The default limit of a buffered request body: 32 MiB, Anthropic's own limit of a
/// request (OpenAI takes images of up to 20 MB each). A coding agent's history with a
/// few screenshots passes 4 MiB, the limit before 3 December, and every later turn
/// of that session was a `413`. Bodies are buffered for replay: at most
/// `max_in_flight` (the gateway's, 1024) times this is held at once in the worst
/// case; lower it on a small machine whose callers send no images.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 32 << 20;

/// Entry point of the builder: [`Stack::builder`], or
/// [`Stack::from_config`](Stack::from_config) for a configuration file.
#[derive(Debug, Clone, Copy)]
pub struct Stack;

impl Stack {
    /// A builder with every built-in layer on, in its default configuration, and
    /// the balancer as router.
    pub fn builder() -> StackBuilder {
        StackBuilder::new()
    }
}

/// How requests are spread across the providers.
#[derive(Clone)]
#[non_exhaustive]
pub enum Routing {
    /// [`Balance`]: power of two choices on time to first byte × load ÷ weight (or
    /// the cheapest, or round-robin), failing over to providers not tried yet.
    Balance(BalanceConfig),
    /// [`Fallback`]: an ordered chain by [`priority`](ProviderDef::priority).
    Fallback(FallbackConfig),
    /// [`Overflow`](tower_failover_overflow::Overflow): the first provider that is
    /// not rate limited, in order; on a 429 the next one at once.
    #[cfg(feature = "overflow")]
    Overflow(OverflowConfig),
    /// Your own router.
    Custom(CustomRouter),
}

impl Routing {
    /// `"balance"`, `"fallback"`, `"overflow"` or `"custom"`.
    pub fn name(&self) -> &'static str {
        match self {
            Routing::Balance(_) => "balance",
            Routing::Fallback(_) => "fallback",
            #[cfg(feature = "overflow")]
            Routing::Overflow(_) => "overflow",
            Routing::Custom(_) => "custom",
        }
    }

    /// Whether the router times each attempt itself (its `attempt_timeout`).
    fn times_attempts(&self) -> bool {
        matches!(self, Routing::Balance(_) | Routing::Fallback(_))
    }

    /// The same routing, with the stack's attempt timeout (when set) in place of
    /// the router's own.
    fn with_attempt_timeout(&self, each: Option<Duration>) -> Routing {
        match (self, each) {
            (Routing::Balance(c), Some(_)) => Routing::Balance(BalanceConfig {
                attempt_timeout: each,
                ..c.clone()
            }),
            (Routing::Fallback(c), Some(_)) => Routing::Fallback(FallbackConfig {
                attempt_timeout: each,
                ..c.clone()
            }),
            _ => self.clone(),
        }
    }

    /// Whether the router reads each provider's recovery-ramp share itself (so the
    /// ramp layer must not also shed).
    #[cfg(feature = "ramp")]
    fn reads_ramp_share(&self) -> bool {
        matches!(self, Routing::Balance(_) | Routing::Fallback(_))
    }
}

impl fmt::Debug for Routing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Routing::Balance(c) => f.debug_tuple("Balance").field(c).finish(),
            Routing::Fallback(c) => f.debug_tuple("Fallback").field(c).finish(),
            #[cfg(feature = "overflow")]
            Routing::Overflow(c) => f.debug_tuple("Overflow").field(c).finish(),
            Routing::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// One provider as a router sees it: its health, its whole stack, its options.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RouterEntry {
    /// The provider's health handle.
    pub health: Health,
    /// The provider's stack.
    pub service: ProviderService,
    /// Weight, priority, price and capabilities.
    pub options: ProviderOptions,
}

/// A router of your own: builds one service from every provider's stack and the
/// shared retry budget (if any).
///
/// ```
/// use tower_failover::{CustomRouter, Routing};
///
/// // Always the first provider: a (poor) router of your own.
/// let first = CustomRouter::new(|mut providers, _budget| Ok(providers.remove(0).service));
/// let routing = Routing::Custom(first);
/// # let _ = routing;
/// ```
#[derive(Clone)]
pub struct CustomRouter {
    #[allow(clippy::type_complexity)]
    make: Arc<
        dyn Fn(Vec<RouterEntry>, Option<SharedBudget>) -> Result<ProviderService, BoxError>
            + Send
            + Sync,
    >,
}

impl CustomRouter {
    /// A router made by `make`.
    pub fn new<F>(make: F) -> Self
    where
        F: Fn(Vec<RouterEntry>, Option<SharedBudget>) -> Result<ProviderService, BoxError>
            + Send
            + Sync
            + 'static,
    {
        CustomRouter {
            make: Arc::new(make),
        }
    }
}

impl fmt::Debug for CustomRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomRouter")
    }
}

/// One provider: its identity (provider name and model, the key of its
/// [`Health`]), its client, its routing options, and any per-provider change to the
/// stack's layers.
pub struct ProviderDef {
    provider: String,
    model: String,
    quota_group: Option<String>,
    client: ProviderService,
    options: ProviderOptions,
    observe: Option<Slot<ObserveConfig>>,
    #[cfg(feature = "validate")]
    validate: Option<Slot<ValidateConfig>>,
    #[cfg(feature = "overflow")]
    quota: Option<Slot<QuotaConfig>>,
    #[cfg(feature = "circuit")]
    circuit: Option<Slot<CircuitConfig>>,
    #[cfg(feature = "ramp")]
    ramp: Option<Slot<RampConfig>>,
    /// `Some(None)`: no probes for this provider; `None`: the stack's.
    #[cfg(feature = "ramp")]
    probe: Option<Option<ProbeConfig>>,
    /// `Some(None)`: no same-provider retry for this provider; `None`: the stack's.
    #[cfg(feature = "retry")]
    same_provider_retry: Option<Option<RetryConfig>>,
    extra: Vec<CustomLayer>,
}

impl fmt::Debug for ProviderDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderDef")
            .field("provider", &self.provider)
            .field("model", &self.model)
            .field("quota_group", &self.quota_group)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ProviderDef {
    /// `model` at `provider`, reached through `client`: any service of
    /// [`ReplayBody`] requests whose response body yields [`Bytes`] (a
    /// [`tower_failover_provider`](https://docs.rs/tower-failover-provider) adapter,
    /// a hyper client, a test double).
    pub fn new<S, B>(provider: impl Into<String>, model: impl Into<String>, client: S) -> Self
    where
        S: Service<Request<ReplayBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        ProviderDef::from_service(provider, model, boxed(client))
    }

    /// Like [`new`](ProviderDef::new), with an already type-erased client.
    pub fn from_service(
        provider: impl Into<String>,
        model: impl Into<String>,
        client: ProviderService,
    ) -> Self {
        ProviderDef {
            provider: provider.into(),
            model: model.into(),
            quota_group: None,
            client,
            options: ProviderOptions::default(),
            observe: None,
            #[cfg(feature = "validate")]
            validate: None,
            #[cfg(feature = "overflow")]
            quota: None,
            #[cfg(feature = "circuit")]
            circuit: None,
            #[cfg(feature = "ramp")]
            ramp: None,
            #[cfg(feature = "ramp")]
            probe: None,
            #[cfg(feature = "retry")]
            same_provider_retry: None,
            extra: Vec::new(),
        }
    }

    /// Puts the provider in a named quota group (deployments that share one key or
    /// organisation share one rate limit, and one quota tracker).
    pub fn quota_group(mut self, group: impl Into<String>) -> Self {
        self.quota_group = Some(group.into());
        self
    }

    /// Routing options: weight, price, priority, capabilities.
    pub fn options(mut self, options: ProviderOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the balancer weight.
    pub fn weight(mut self, weight: f64) -> Self {
        self.options.weight = weight;
        self
    }

    /// Sets the position in a fallback chain (lower goes first).
    pub fn priority(mut self, priority: u32) -> Self {
        self.options.priority = Some(priority);
        self
    }

    /// Changes the observer of this provider only.
    pub fn observe(mut self, slot: impl Into<Slot<ObserveConfig>>) -> Self {
        self.observe = Some(slot.into());
        self
    }

    /// Changes output validation for this provider only.
    #[cfg(feature = "validate")]
    pub fn output_validation(mut self, slot: impl Into<Slot<ValidateConfig>>) -> Self {
        self.validate = Some(slot.into());
        self
    }

    /// The old name of [`output_validation`](ProviderDef::output_validation).
    #[cfg(feature = "validate")]
    #[deprecated(
        note = "renamed `output_validation` (it sets a layer; `validate` checks values elsewhere)"
    )]
    pub fn validate(self, slot: impl Into<Slot<ValidateConfig>>) -> Self {
        self.output_validation(slot)
    }

    /// Changes quota tracking for this provider only.
    #[cfg(feature = "overflow")]
    pub fn quota(mut self, slot: impl Into<Slot<QuotaConfig>>) -> Self {
        self.quota = Some(slot.into());
        self
    }

    /// Changes the circuit breaker of this provider only.
    #[cfg(feature = "circuit")]
    pub fn circuit(mut self, slot: impl Into<Slot<CircuitConfig>>) -> Self {
        self.circuit = Some(slot.into());
        self
    }

    /// Changes the recovery ramp of this provider only.
    #[cfg(feature = "ramp")]
    pub fn ramp(mut self, slot: impl Into<Slot<RampConfig>>) -> Self {
        self.ramp = Some(slot.into());
        self
    }

    /// Changes the active probes of this provider only (`None`: no probes for it,
    /// as for a provider that bills each probe).
    #[cfg(feature = "ramp")]
    pub fn probe(mut self, config: Option<ProbeConfig>) -> Self {
        self.probe = Some(config);
        self
    }

    /// Changes the same-provider retry of this provider only (`None`: no retry
    /// on the same provider; the router still fails over).
    #[cfg(feature = "retry")]
    pub fn same_provider_retry(mut self, config: Option<RetryConfig>) -> Self {
        self.same_provider_retry = Some(config);
        self
    }

    /// Adds a layer of your own on top of this provider's stack (above the ramp).
    pub fn layer(mut self, layer: CustomLayer) -> Self {
        self.extra.push(layer);
        self
    }

    /// The provider name.
    pub fn provider_name(&self) -> &str {
        &self.provider
    }

    /// The model.
    pub fn model(&self) -> &str {
        &self.model
    }
}

/// Builds a [`Failover`] service: the recommended stack, every layer optional and
/// replaceable.
///
/// Per provider, innermost first: the client → output validation →
/// [`ObserveLayer`] → quota tracking → circuit breaker → recovery ramp (with the
/// active probes) → your extra layers → same-provider retry of a blip → the
/// attempt timeout (for routers that do not time attempts themselves). Across
/// providers: the router ([`Routing`]) with the shared retry budget, then hedging
/// (off by default), the wait queue (off by default), the total deadline, and the
/// body buffering that makes requests replayable.
///
/// Every position takes the built-in layer's configuration, a [`CustomLayer`] of
/// your own, or [`Slot::Off`]. See the [crate documentation](crate) for examples.
pub struct StackBuilder {
    registry: Option<Registry>,
    providers: Vec<ProviderDef>,
    routing: Routing,
    observe: Slot<ObserveConfig>,
    #[cfg(feature = "validate")]
    validate: Slot<ValidateConfig>,
    #[cfg(feature = "overflow")]
    quota: Slot<QuotaConfig>,
    #[cfg(feature = "circuit")]
    circuit: Slot<CircuitConfig>,
    #[cfg(feature = "ramp")]
    ramp: Slot<RampConfig>,
    extra: Vec<CustomLayer>,
    budget: Budget,
    #[cfg(feature = "retry")]
    deadline: Option<Duration>,
    #[cfg(feature = "retry")]
    wait_queue: Option<QueueConfig>,
    attempt_timeout: Option<Duration>,
    #[cfg(feature = "retry")]
    same_provider_retry: Option<RetryConfig>,
    #[cfg(feature = "retry")]
    hedge: Option<HedgeConfig>,
    #[cfg(feature = "ramp")]
    probe: Option<ProbeConfig>,
    max_request_bytes: usize,
    classifier: StackClassifier,
    // Model routing (see `crate::models`).
    route_by_model: bool,
    default_model: Option<String>,
    model_fallbacks: Vec<(String, Vec<String>)>,
}

#[derive(Clone)]
enum Budget {
    Off,
    #[cfg(feature = "retry")]
    Config(BudgetConfig),
    Shared(SharedBudget),
}

impl fmt::Debug for StackBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackBuilder")
            .field("providers", &self.providers)
            .field("routing", &self.routing)
            .field("max_request_bytes", &self.max_request_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for StackBuilder {
    fn default() -> Self {
        StackBuilder::new()
    }
}

impl StackBuilder {
    /// Every built-in layer on with its defaults, the balancer as router, a retry
    /// budget, one same-provider retry of a 502/503 blip, active probes of open
    /// circuits, no hedging, no deadline, no attempt timeout, no wait queue, a
    /// 32 MiB body limit (the README's table says why each default).
    pub fn new() -> Self {
        StackBuilder {
            registry: None,
            providers: Vec::new(),
            routing: Routing::Balance(BalanceConfig::default()),
            observe: Slot::default(),
            #[cfg(feature = "validate")]
            validate: Slot::default(),
            #[cfg(feature = "overflow")]
            quota: Slot::default(),
            #[cfg(feature = "circuit")]
            circuit: Slot::default(),
            #[cfg(feature = "ramp")]
            ramp: Slot::default(),
            extra: Vec::new(),
            #[cfg(feature = "retry")]
            budget: Budget::Config(BudgetConfig::default()),
            #[cfg(not(feature = "retry"))]
            budget: Budget::Off,
            #[cfg(feature = "retry")]
            deadline: None,
            #[cfg(feature = "retry")]
            wait_queue: None,
            attempt_timeout: None,
            #[cfg(feature = "retry")]
            same_provider_retry: Some(RetryConfig::default()),
            #[cfg(feature = "retry")]
            hedge: None,
            #[cfg(feature = "ramp")]
            probe: Some(ProbeConfig::default()),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            classifier: StackClassifier::default(),
            route_by_model: true,
            default_model: None,
            model_fallbacks: Vec::new(),
        }
    }

    /// The registry that holds the providers' health (default: a new one with the
    /// in-process store). Give one built with
    /// [`Registry::with_store`] to share state across replicas.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Adds a provider.
    pub fn provider(mut self, provider: ProviderDef) -> Self {
        self.providers.push(provider);
        self
    }

    /// How requests are spread across providers.
    pub fn routing(mut self, routing: Routing) -> Self {
        self.routing = routing;
        self
    }

    /// The balancer with this configuration (the default router).
    pub fn balance(self, config: BalanceConfig) -> Self {
        self.routing(Routing::Balance(config))
    }

    /// The ordered fallback chain with this configuration.
    pub fn fallback(self, config: FallbackConfig) -> Self {
        self.routing(Routing::Fallback(config))
    }

    /// The observer of every provider.
    pub fn observe(mut self, slot: impl Into<Slot<ObserveConfig>>) -> Self {
        self.observe = slot.into();
        self
    }

    /// Output validation of every provider.
    #[cfg(feature = "validate")]
    pub fn output_validation(mut self, slot: impl Into<Slot<ValidateConfig>>) -> Self {
        self.validate = slot.into();
        self
    }

    /// The old name of [`output_validation`](StackBuilder::output_validation).
    #[cfg(feature = "validate")]
    #[deprecated(
        note = "renamed `output_validation` (it sets a layer; `Config::validate` checks values)"
    )]
    pub fn validate(self, slot: impl Into<Slot<ValidateConfig>>) -> Self {
        self.output_validation(slot)
    }

    /// Quota tracking of every provider (one tracker per quota group).
    #[cfg(feature = "overflow")]
    pub fn quota(mut self, slot: impl Into<Slot<QuotaConfig>>) -> Self {
        self.quota = slot.into();
        self
    }

    /// The circuit breaker of every provider.
    #[cfg(feature = "circuit")]
    pub fn circuit(mut self, slot: impl Into<Slot<CircuitConfig>>) -> Self {
        self.circuit = slot.into();
        self
    }

    /// The recovery ramp of every provider.
    #[cfg(feature = "ramp")]
    pub fn ramp(mut self, slot: impl Into<Slot<RampConfig>>) -> Self {
        self.ramp = slot.into();
        self
    }

    /// Adds a layer of your own on top of every provider's stack (above the ramp).
    pub fn provider_layer(mut self, layer: CustomLayer) -> Self {
        self.extra.push(layer);
        self
    }

    /// The retry budget shared by every hop, or `None` for no budget.
    #[cfg(feature = "retry")]
    pub fn retry_budget(mut self, config: Option<BudgetConfig>) -> Self {
        self.budget = config.map_or(Budget::Off, Budget::Config);
        self
    }

    /// A retry budget of your own (any tower `Budget`), shared by every hop.
    pub fn shared_budget(mut self, budget: SharedBudget) -> Self {
        self.budget = Budget::Shared(budget);
        self
    }

    /// A total deadline per request, across every attempt and the wait queue.
    #[cfg(feature = "retry")]
    pub fn deadline(mut self, total: Option<Duration>) -> Self {
        self.deadline = total;
        self
    }

    /// When every provider is unavailable, wait in a bounded queue for one to
    /// recover (`None`, the default: fail at once with `AllProvidersFailed`).
    #[cfg(feature = "retry")]
    pub fn wait_queue(mut self, config: Option<QueueConfig>) -> Self {
        self.wait_queue = config;
        self
    }

    /// Time allowed for one attempt at one provider, whatever the router (`None`,
    /// the default: only the provider client's own timeouts and the
    /// [deadline](StackBuilder::deadline)). The balancer and the fallback give up
    /// on the attempt and fail over to the next provider; other routers (overflow,
    /// yours) get a per-provider timer that fails the attempt with
    /// [`Elapsed`](tower_failover_core::error::Elapsed). Either way the attempt
    /// never outlives the request's deadline, and a timed-out attempt counts as
    /// the provider's timeout. Replaces the router configuration's own
    /// `attempt_timeout` when set.
    pub fn attempt_timeout(mut self, each: Option<Duration>) -> Self {
        self.attempt_timeout = each;
        self
    }

    /// Retry a 502/503 blip or a reset before any byte on the same provider, with
    /// backoff, before the router fails over (`None`: never). Default: on, one
    /// retry after about 50 ms, drawn from the shared retry budget. An open
    /// circuit refuses the retry at once, so a sustained outage still fails over
    /// immediately once the breaker knows.
    #[cfg(feature = "retry")]
    pub fn same_provider_retry(mut self, config: Option<RetryConfig>) -> Self {
        self.same_provider_retry = config;
        self
    }

    /// Send a second attempt (normally to another provider) when the first is
    /// slower than a recent latency percentile; the first answer wins (`None`, the
    /// default: no hedging, since every hedge is a request paid for). Hedges are
    /// drawn from the shared retry budget. Needs the balancer (or a router of
    /// yours): the ordered routers would send the hedge to the same provider, so
    /// [`build`](StackBuilder::build) refuses hedging with them.
    #[cfg(feature = "retry")]
    pub fn hedge(mut self, config: Option<HedgeConfig>) -> Self {
        self.hedge = config;
        self
    }

    /// Active probes while a provider's circuit is open (`None`: none). Default:
    /// `GET /v1/models` every 10 s below the circuit breaker while it is open; a
    /// passing probe moves the circuit to half-open, and then tiny
    /// completions go through the breaker as its half-open trials, so that a
    /// recovered provider's circuit closes even with no caller traffic (three
    /// trials by default: a few dozen tokens per recovery). [`ProbeConfig::completion`]
    /// probes with a tiny completion while open too. Probes run in the recovery ramp's task: a
    /// provider whose ramp position is not the built-in ramp is not probed.
    #[cfg(feature = "ramp")]
    pub fn probe(mut self, config: Option<ProbeConfig>) -> Self {
        self.probe = config;
        self
    }

    /// The largest request body buffered for replay; larger ones fail with
    /// [`BodyTooLarge`](tower_failover_core::error::BodyTooLarge) (a 413).
    pub fn max_request_bytes(mut self, limit: usize) -> Self {
        self.max_request_bytes = limit;
        self
    }

    /// How every layer decides an attempt's [`Outcome`](tower_failover_core::Outcome)
    /// (default: [`LlmClassifier`](tower_failover_core::LlmClassifier)).
    ///
    /// The observer at the bottom of each provider's stack classifies each answer
    /// once and leaves the outcome on the response; the circuit breaker, the ramp,
    /// the same-provider retry and the router read it there (see
    /// [`StackClassifier`]). So a classifier of yours runs once per attempt for an
    /// answer (errors, which carry no verdict, are classified by each layer that sees
    /// them). With the observer off or replaced, each layer consults it itself.
    pub fn classifier<C: Classify>(mut self, classifier: C) -> Self {
        self.classifier = StackClassifier::new(classifier);
        self
    }

    /// The classifier of the layers above the observer: the observer's verdict
    /// where there is one, this stack's classifier otherwise.
    /// Rate-limit waits are clamped with the stack's quota limits (with the
    /// observer off there is no verdict, and a router that parks a provider for a
    /// 429 must keep to the same caps as the quota layer).
    fn above(&self) -> AboveClassifier {
        FromVerdict::new(self.classifier.with_limits(self.stack_quota_limits()))
    }

    /// [`above`](Self::above) for one provider's positions: its own quota limits.
    fn above_at(&self, at: &At<'_>) -> AboveClassifier {
        FromVerdict::new(self.classifier.with_limits(self.quota_limits(at)))
    }

    /// The stack's quota limits (a provider may have its own: see `quota_limits`).
    fn stack_quota_limits(&self) -> HeaderLimits {
        #[cfg(feature = "overflow")]
        if let Slot::Builtin(q) = &self.quota {
            return q.limits;
        }
        HeaderLimits::DEFAULT
    }

    /// Whether requests are routed by the model they ask for (default: yes).
    ///
    /// On, each provider answers to its [model](ProviderDef::model) and to the
    /// names in its [`ProviderOptions::models`] (its aliases); the providers that
    /// answer to one name form a group, and a request goes to its model's group,
    /// then to the group's [fallbacks](StackBuilder::model_fallbacks). A model nobody
    /// serves fails with [`ModelNotFound`](crate::ModelNotFound). Requests without a
    /// model go to the [default model](StackBuilder::default_model)'s group, or to
    /// every provider when none is set. The request's tools and prompt size filter
    /// the candidates in every case. See the [`models`](crate::models) module.
    ///
    /// Off, every request may go to every provider whatever its model, as the
    /// router's own capability routing (headers only) allows.
    pub fn route_by_model(mut self, on: bool) -> Self {
        self.route_by_model = on;
        self
    }

    /// The group that serves requests naming no model (`None`, the default: every
    /// provider serves them). Must be a name some provider answers to.
    pub fn default_model(mut self, model: Option<String>) -> Self {
        self.default_model = model;
        self
    }

    /// When every provider of `model`'s group failed or is unavailable, try the
    /// groups of `fallbacks`, in order (for example the same family's cheaper
    /// model). Each name must be one some provider answers to. Replaces any
    /// fallbacks set before for `model`.
    pub fn model_fallbacks<I, M>(mut self, model: impl Into<String>, fallbacks: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        let model = model.into();
        let list = fallbacks.into_iter().map(Into::into).collect();
        self.model_fallbacks.retain(|(m, _)| *m != model);
        self.model_fallbacks.push((model, list));
        self
    }

    /// Validates and assembles the stack. Must be called inside a tokio runtime when
    /// a recovery ramp or a Redis store is used (they own background tasks).
    pub fn build(self) -> Result<Failover, ConfigError> {
        check_stack(&StackSettings {
            providers: self.providers.len(),
            max_request_bytes: self.max_request_bytes,
            attempt_timeout: self.attempt_timeout,
            #[cfg(feature = "retry")]
            deadline: self.deadline,
        })?;
        let registry = self.registry.clone().unwrap_or_default();
        #[cfg_attr(not(feature = "retry"), allow(unused_mut))]
        let mut remaining: Option<Remaining> = None;
        let budget: Option<SharedBudget> = match &self.budget {
            Budget::Off => None,
            #[cfg(feature = "retry")]
            Budget::Config(c) => {
                let b = Arc::new(RetryBudget::new(*c).map_err(|e| e.within("retry_budget"))?);
                let read = b.clone();
                remaining = Some(Arc::new(move || read.remaining()));
                Some(b)
            }
            Budget::Shared(b) => Some(b.clone()),
        };

        let mut entries = Vec::with_capacity(self.providers.len());
        let mut infos = Vec::with_capacity(self.providers.len());
        let mut trackers = Trackers::default();
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        for (i, def) in self.providers.iter().enumerate() {
            let at = format!("providers[{i}]");
            if let Some(j) = seen.insert((def.provider.clone(), def.model.clone()), i) {
                return Err(ConfigError::new(
                    at,
                    format!("{}/{} is already providers[{j}]", def.provider, def.model),
                ));
            }
            let (entry, info) = self.provider_stack(def, &at, &registry, &budget, &mut trackers)?;
            entries.push(entry);
            infos.push(info);
        }

        let routing = self.routing.with_attempt_timeout(self.attempt_timeout);
        let routed = if self.route_by_model {
            self.route_models(&routing, entries, budget.clone())?
        } else {
            route(&routing, entries, budget.clone(), false, self.above())?
        };
        #[cfg(feature = "retry")]
        let routed = match &self.hedge {
            Some(c) => {
                check_hedge(self.routing.name())?;
                let mut layer = HedgeLayer::with_config(*c).map_err(|e| e.within("hedge"))?;
                if let Some(b) = &budget {
                    layer = layer.budget(b.clone());
                }
                boxed(layer.layer(routed))
            }
            None => routed,
        };
        #[cfg(feature = "retry")]
        let (routed, queue) = match &self.wait_queue {
            Some(c) => {
                let layer = WaitQueueLayer::with_config(registry.clone(), *c)
                    .map_err(|e| e.within("wait_queue"))?;
                (boxed(layer.layer(routed)), Some(layer))
            }
            None => (routed, None),
        };
        #[cfg(feature = "retry")]
        let routed = match self.deadline {
            Some(d) => boxed(DeadlineLayer::new(d).layer(routed)),
            None => routed,
        };
        let handle = Handle::new(
            registry,
            infos,
            self.routing.name(),
            remaining,
            #[cfg(feature = "retry")]
            queue,
        );
        Ok(Failover::new(routed, self.max_request_bytes, handle))
    }
}

/// The quota trackers made so far, one per quota group.
#[derive(Default)]
struct Trackers {
    #[cfg(feature = "overflow")]
    by_group: HashMap<String, QuotaTracker>,
}

/// One provider being built: its definition, its health and its path in errors.
struct At<'a> {
    def: &'a ProviderDef,
    health: &'a Health,
    path: &'a str,
}

impl At<'_> {
    /// `providers[i].<layer>` when the provider overrides the layer, else `<layer>`.
    #[cfg_attr(
        not(any(
            feature = "validate",
            feature = "overflow",
            feature = "circuit",
            feature = "ramp"
        )),
        allow(dead_code)
    )]
    fn scope<T>(&self, over: &Option<T>, layer: &str) -> String {
        match over {
            Some(_) => format!("{}.{layer}", self.path),
            None => layer.to_owned(),
        }
    }
}

/// One position of a provider's stack, innermost first: each function puts its
/// layer (the built-in one, yours, or none) on top of `svc`.
impl StackBuilder {
    /// A provider's whole stack, and what the handle keeps of it.
    fn provider_stack(
        &self,
        def: &ProviderDef,
        path: &str,
        registry: &Registry,
        budget: &Option<SharedBudget>,
        #[cfg_attr(not(feature = "overflow"), allow(unused_variables))] trackers: &mut Trackers,
    ) -> Result<(RouterEntry, ProviderInfo), ConfigError> {
        if def.provider.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{path}.name"),
                "must not be empty",
            ));
        }
        if def.model.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{path}.model"),
                "must not be empty",
            ));
        }
        let health = match &def.quota_group {
            Some(g) => registry.provider_in_group(&def.provider, &def.model, g),
            None => registry.provider(&def.provider, &def.model),
        };
        def.options.validate(health.id()).map_err(|e| {
            ConfigError::new(strip_provider(e.field()).to_owned(), e.reason().to_owned())
                .within(path)
        })?;
        let at = At {
            def,
            health: &health,
            path,
        };
        let svc = def.client.clone();
        // Probes of an open circuit go to the bare client: a model list is no chat
        // completion for output validation, and they are not callers' requests for
        // the provider's health counters.
        #[cfg(feature = "ramp")]
        let below_circuit = def.client.clone();
        #[cfg(all(feature = "overflow", feature = "circuit", feature = "ramp"))]
        let (svc, ramp, retried) = match self.builtin_positions(&at) {
            // Built-in validation goes into the one concrete stack too.
            #[cfg(feature = "validate")]
            Some(configs) if let Slot::Builtin(c) = self.validate_slot(&at) => {
                let validated = self.validation_layer(&at, c)?.layer(svc);
                self.fused_positions(&at, configs, below_circuit, validated, trackers, budget)?
            }
            Some(configs) => {
                #[cfg(feature = "validate")]
                let svc = self.output_validation_position(&at, svc)?;
                self.fused_positions(&at, configs, below_circuit, svc, trackers, budget)?
            }
            None => {
                #[cfg(feature = "validate")]
                let svc = self.output_validation_position(&at, svc)?;
                let svc = self.observe_position(&at, svc);
                let svc = self.quota_position(&at, svc, trackers)?;
                let svc = self.circuit_position(&at, svc)?;
                let (svc, ramp) = self.ramp_position(&at, below_circuit, svc)?;
                (svc, ramp, false)
            }
        };
        #[cfg(not(all(feature = "overflow", feature = "circuit", feature = "ramp")))]
        let retried = false;
        #[cfg(all(
            feature = "validate",
            not(all(feature = "overflow", feature = "circuit", feature = "ramp"))
        ))]
        let svc = self.output_validation_position(&at, svc)?;
        #[cfg(not(all(feature = "overflow", feature = "circuit", feature = "ramp")))]
        let svc = self.observe_position(&at, svc);
        #[cfg(all(feature = "overflow", not(all(feature = "circuit", feature = "ramp"))))]
        let svc = self.quota_position(&at, svc, trackers)?;
        #[cfg(all(feature = "circuit", not(all(feature = "overflow", feature = "ramp"))))]
        let svc = self.circuit_position(&at, svc)?;
        #[cfg(all(feature = "ramp", not(all(feature = "overflow", feature = "circuit"))))]
        let (svc, ramp) = self.ramp_position(&at, below_circuit, svc)?;
        let mut svc = svc;
        for layer in self.extra.iter().chain(&def.extra) {
            svc = layer.apply(&health, svc);
        }
        #[cfg(feature = "retry")]
        let svc = if retried {
            svc
        } else {
            self.retry_position(&at, svc, budget)
        };
        #[cfg(not(feature = "retry"))]
        let _ = (budget, retried);
        let svc = self.attempt_timeout_position(svc);
        let info = ProviderInfo {
            health: health.clone(),
            options: def.options.clone(),
            #[cfg(feature = "ramp")]
            ramp,
        };
        let entry = RouterEntry {
            health,
            service: svc,
            options: def.options.clone(),
        };
        Ok((entry, info))
    }

    /// Output validation, right above the client.
    #[cfg(feature = "validate")]
    fn output_validation_position(
        &self,
        at: &At<'_>,
        svc: ProviderService,
    ) -> Result<ProviderService, ConfigError> {
        Ok(match self.validate_slot(at) {
            Slot::Builtin(c) => boxed(self.validation_layer(at, c)?.layer(svc)),
            Slot::Custom(l) => l.apply(at.health, svc),
            Slot::Off => svc,
        })
    }

    #[cfg(feature = "validate")]
    fn validate_slot<'a>(&'a self, at: &At<'a>) -> &'a Slot<ValidateConfig> {
        at.def.validate.as_ref().unwrap_or(&self.validate)
    }

    #[cfg(feature = "validate")]
    fn validation_layer(
        &self,
        at: &At<'_>,
        c: &ValidateConfig,
    ) -> Result<tower_failover_validate::ValidateLayer, ConfigError> {
        Ok(c.build()
            .map_err(|e| e.within(at.scope(&at.def.validate, "validate")))?
            .provider(at.health.id().clone()))
    }

    /// The observer: latency, in-flight requests and outcomes into the health.
    fn observe_position(&self, at: &At<'_>, svc: ProviderService) -> ProviderService {
        match at.def.observe.as_ref().unwrap_or(&self.observe) {
            Slot::Builtin(c) => boxed(self.observe_layer(at, c).layer(svc)),
            Slot::Custom(l) => l.apply(at.health, svc),
            Slot::Off => svc,
        }
    }

    fn observe_layer(&self, at: &At<'_>, c: &ObserveConfig) -> ObserveLayer<StackClassifier> {
        // The observer marks the same rate-limit window as the quota layer (the
        // longer mark wins), so it keeps to the quota's caps: a provider asking for
        // an hour stays out for the configured `max_wait`, not the built-in one.
        let limits = self.quota_limits(at);
        ObserveLayer::new(at.health.clone())
            .classifier(self.classifier.with_limits(limits))
            .default_retry_after(c.default_retry_after.unwrap_or(limits.default_retry_after))
    }

    /// The caps and default of rate-limit waits at this provider: its built-in
    /// quota layer's, else the defaults.
    fn quota_limits(
        &self,
        #[cfg_attr(not(feature = "overflow"), allow(unused_variables))] at: &At<'_>,
    ) -> HeaderLimits {
        #[cfg(feature = "overflow")]
        if let Slot::Builtin(q) = at.def.quota.as_ref().unwrap_or(&self.quota) {
            return q.limits;
        }
        HeaderLimits::DEFAULT
    }

    /// The built-in layers' configurations when the observer, the quota, the
    /// breaker and the ramp are all built in (the default), for
    /// [`fused_positions`](Self::fused_positions).
    #[cfg(all(feature = "overflow", feature = "circuit", feature = "ramp"))]
    fn builtin_positions<'a>(&'a self, at: &At<'a>) -> Option<BuiltinPositions<'a>> {
        let observe = at.def.observe.as_ref().unwrap_or(&self.observe);
        let quota = at.def.quota.as_ref().unwrap_or(&self.quota);
        let circuit = at.def.circuit.as_ref().unwrap_or(&self.circuit);
        let ramp = at.def.ramp.as_ref().unwrap_or(&self.ramp);
        match (observe, quota, circuit, ramp) {
            (Slot::Builtin(o), Slot::Builtin(q), Slot::Builtin(c), Slot::Builtin(r)) => {
                Some((o, q, c, r))
            }
            _ => None,
        }
    }

    /// The four built-in positions (observer, quota, breaker, ramp) as one
    /// concrete stack, type-erased once on top: what each position does alone
    /// (see `observe_position` and the next three), without the box of a future
    /// and of a body that each erased position adds to every request. With no
    /// extra layers to go between them, the same-provider retry goes on top before
    /// the one erasure too (the last value: whether it did).
    #[cfg(all(feature = "overflow", feature = "circuit", feature = "ramp"))]
    #[allow(clippy::too_many_arguments)]
    fn fused_positions<S, B>(
        &self,
        at: &At<'_>,
        (o, q, c, r): BuiltinPositions<'_>,
        below_circuit: ProviderService,
        svc: S,
        trackers: &mut Trackers,
        #[cfg_attr(not(feature = "retry"), allow(unused_variables))] budget: &Option<SharedBudget>,
    ) -> Result<(ProviderService, Option<RampLayer<AboveClassifier>>, bool), ConfigError>
    where
        S: Service<Request<ReplayBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let observed = self.observe_layer(at, o).layer(svc);
        let quota = self.quota_layer(at, q, trackers)?.layer(observed);
        let circuit = self.circuit_layer(at, c)?.layer(quota);
        let layer = self.ramp_layer(at, r, below_circuit, || boxed(circuit.clone()))?;
        let ramped = layer.layer(circuit);
        #[cfg(feature = "retry")]
        if self.extra.is_empty()
            && at.def.extra.is_empty()
            && let Some(policy) = self.same_provider_policy(at, budget)
        {
            let retried = tower::retry::Retry::new(policy, crate::lazy::LazyClone::new(ramped));
            return Ok((boxed(retried), Some(layer), true));
        }
        Ok((boxed(ramped), Some(layer), false))
    }

    /// Quota tracking, one tracker per quota group.
    #[cfg(feature = "overflow")]
    fn quota_position(
        &self,
        at: &At<'_>,
        svc: ProviderService,
        trackers: &mut Trackers,
    ) -> Result<ProviderService, ConfigError> {
        Ok(match at.def.quota.as_ref().unwrap_or(&self.quota) {
            Slot::Builtin(c) => boxed(self.quota_layer(at, c, trackers)?.layer(svc)),
            Slot::Custom(l) => l.apply(at.health, svc),
            Slot::Off => svc,
        })
    }

    #[cfg(feature = "overflow")]
    fn quota_layer(
        &self,
        at: &At<'_>,
        c: &QuotaConfig,
        trackers: &mut Trackers,
    ) -> Result<QuotaLayer, ConfigError> {
        let new_tracker =
            || QuotaTracker::new(*c).map_err(|e| e.within(at.scope(&at.def.quota, "quota")));
        let tracker = match &at.def.quota_group {
            Some(g) => match trackers.by_group.get(g) {
                // One tracker per group, made from its first member's settings:
                // another member's own would be silently ignored (its budget, its
                // mode, its caps, which its observer would still apply).
                Some(t) if t.config() != c => {
                    return Err(ConfigError::new(
                        at.scope(&at.def.quota, "quota"),
                        format!(
                            "the members of quota group \"{g}\" share one quota tracker, \
                             so they need the same quota settings; this provider's differ \
                             from those of the group's first member"
                        ),
                    ));
                }
                Some(t) => t.clone(),
                None => {
                    let t = new_tracker()?;
                    trackers.by_group.insert(g.clone(), t.clone());
                    t
                }
            },
            None => new_tracker()?,
        };
        Ok(QuotaLayer::new(at.health.clone(), tracker))
    }

    /// The circuit breaker.
    #[cfg(feature = "circuit")]
    fn circuit_position(
        &self,
        at: &At<'_>,
        svc: ProviderService,
    ) -> Result<ProviderService, ConfigError> {
        Ok(match at.def.circuit.as_ref().unwrap_or(&self.circuit) {
            Slot::Builtin(c) => boxed(self.circuit_layer(at, c)?.layer(svc)),
            Slot::Custom(l) => l.apply(at.health, svc),
            Slot::Off => svc,
        })
    }

    #[cfg(feature = "circuit")]
    fn circuit_layer(
        &self,
        at: &At<'_>,
        c: &CircuitConfig,
    ) -> Result<CircuitBreakerLayer<AboveClassifier>, ConfigError> {
        Ok(
            CircuitBreakerLayer::with_config(at.health.clone(), c.clone())
                .map_err(|e| e.within(at.scope(&at.def.circuit, "circuit")))?
                .classifier(self.above_at(at)),
        )
    }

    /// The recovery ramp, with the active probes: to the bare client
    /// (`below_circuit`) while the circuit is open, through the breaker (`svc`)
    /// while half-open.
    #[cfg(feature = "ramp")]
    fn ramp_position(
        &self,
        at: &At<'_>,
        below_circuit: ProviderService,
        svc: ProviderService,
    ) -> Result<(ProviderService, Option<RampLayer<AboveClassifier>>), ConfigError> {
        Ok(match at.def.ramp.as_ref().unwrap_or(&self.ramp) {
            Slot::Builtin(c) => {
                let layer = self.ramp_layer(at, c, below_circuit, || svc.clone())?;
                (boxed(layer.layer(svc)), Some(layer))
            }
            Slot::Custom(l) => (l.apply(at.health, svc), None),
            Slot::Off => (svc, None),
        })
    }

    /// The ramp's layer, with its prober when probes are on: to the bare client
    /// (`below_circuit`) while the circuit is open, and through the breaker (the
    /// service `through_breaker` makes) while half-open.
    #[cfg(feature = "ramp")]
    fn ramp_layer(
        &self,
        at: &At<'_>,
        c: &RampConfig,
        below_circuit: ProviderService,
        through_breaker: impl FnOnce() -> ProviderService,
    ) -> Result<RampLayer<AboveClassifier>, ConfigError> {
        let mut c = c.clone();
        if self.routing.reads_ramp_share() {
            // The router routes exactly the ramp's share to the provider; the ramp
            // only drives and checks the steps.
            c = c.shed(false);
        }
        let mut layer = RampLayer::with_config(at.health.clone(), c)
            .map_err(|e| e.within(at.scope(&at.def.ramp, "ramp")))?
            .classifier(self.above_at(at));
        let probe = match &at.def.probe {
            Some(own) => own.as_ref(),
            None => self.probe.as_ref(),
        };
        if let Some(p) = probe {
            // The breaker's half-open trials are real requests: a tiny completion,
            // which passes output validation as callers' do (a model list would
            // not).
            let trial = ProbeConfig {
                completion: true,
                body: String::new(),
                ..p.clone()
            };
            let prober =
                Prober::new(below_circuit, p)?.through_breaker(through_breaker(), &trial)?;
            layer = layer.with_prober(prober);
        }
        Ok(layer)
    }

    /// Same-provider retry of a blip, on top of the provider's stack (so each try
    /// passes the breaker and counts in the provider's health).
    #[cfg(feature = "retry")]
    fn retry_position(
        &self,
        at: &At<'_>,
        svc: ProviderService,
        budget: &Option<SharedBudget>,
    ) -> ProviderService {
        match self.same_provider_policy(at, budget) {
            // The stack below copied only when a retry happens, not into every
            // response future (`Retry` clones itself for each request).
            Some(policy) => boxed(tower::retry::Retry::new(
                policy,
                crate::lazy::LazyClone::new(svc),
            )),
            None => svc,
        }
    }

    /// The same-provider retry's policy, when one is configured.
    #[cfg(feature = "retry")]
    fn same_provider_policy(
        &self,
        at: &At<'_>,
        budget: &Option<SharedBudget>,
    ) -> Option<SameProviderRetry<AboveClassifier>> {
        let config = match &at.def.same_provider_retry {
            Some(own) => own,
            None => &self.same_provider_retry,
        };
        config.as_ref().map(|c| {
            // The routers count each request in the budget; the policy only draws
            // its retries from it.
            let budget = budget.clone().unwrap_or_else(|| Arc::new(Unlimited));
            SameProviderRetry::from_config(budget, c)
                .deposits(false)
                .classifier(self.above_at(at))
        })
    }

    /// The attempt timeout, for routers that do not time attempts themselves.
    fn attempt_timeout_position(&self, svc: ProviderService) -> ProviderService {
        match self.attempt_timeout {
            Some(each) if !self.routing.times_attempts() => {
                boxed(crate::timeout::AttemptTimeout::new(svc, each))
            }
            _ => svc,
        }
    }
}

impl StackBuilder {
    /// The names each provider answers to: its model, then its aliases.
    fn served_names(&self) -> Vec<Vec<&str>> {
        self.providers
            .iter()
            .map(|d| {
                let mut names = vec![d.model.as_str()];
                for m in &d.options.models {
                    if !names.contains(&m.as_str()) {
                        names.push(m);
                    }
                }
                names
            })
            .collect()
    }

    /// One router per model group, one over every provider, and the model router
    /// in front of them.
    fn route_models(
        &self,
        routing: &Routing,
        entries: Vec<RouterEntry>,
        budget: Option<SharedBudget>,
    ) -> Result<ProviderService, ConfigError> {
        let names = self.served_names();
        let served = |m: &str| names.iter().any(|n| n.contains(&m));
        check_names(
            &served,
            self.default_model.as_deref(),
            self.model_fallbacks
                .iter()
                .map(|(m, f)| (m.as_str(), f.as_slice())),
        )?;
        let mut order: Vec<&str> = Vec::new();
        for n in names.iter().flatten() {
            if !order.contains(n) {
                order.push(n);
            }
        }
        // A provider-level fallback for a context window or a content policy names
        // one provider, which only one model group's router holds: with several
        // groups, the model's own fallbacks do that job.
        let targets = match routing {
            Routing::Balance(c) => Some((
                "balance",
                c.context_window_fallback.is_some(),
                c.content_policy_fallback.is_some(),
            )),
            Routing::Fallback(c) => Some((
                "fallback",
                c.context_window_fallback.is_some(),
                c.content_policy_fallback.is_some(),
            )),
            _ => None,
        };
        if order.len() > 1
            && let Some((section, window, policy)) = targets
            && (window || policy)
        {
            let field = if window {
                "context_window_fallback"
            } else {
                "content_policy_fallback"
            };
            return Err(ConfigError::new(
                format!("{section}.{field}"),
                format!(
                    "requests are routed by model ({} model groups), and a group's router holds \
                     only that group's providers: a context window exceeded or a content-policy \
                     refusal moves on to the model's fallbacks instead \
                     ([models.\"<model>\"] fallbacks = [...]); or set route_by_model = false",
                    order.len()
                ),
            ));
        }
        let mut groups = Vec::with_capacity(order.len());
        for name in order {
            let members: Vec<RouterEntry> = entries
                .iter()
                .zip(&names)
                .filter(|(_, n)| n.contains(&name))
                .map(|(e, _)| e.clone())
                .collect();
            let service = route(routing, members, budget.clone(), true, self.above())?;
            let fallbacks = self
                .model_fallbacks
                .iter()
                .find(|(m, _)| m == name)
                .map(|(_, f)| f.clone())
                .unwrap_or_default();
            groups.push((name.to_owned(), service, fallbacks));
        }
        let any = route(routing, entries, budget, true, self.above())?;
        let total_timeout = match routing {
            Routing::Balance(c) => c.total_timeout,
            Routing::Fallback(c) => c.total_timeout,
            _ => None,
        };
        Ok(boxed(ModelRouter::new(
            groups,
            any,
            self.default_model.clone(),
            total_timeout,
        )))
    }
}

/// The stack's own settings (not a layer's), as both [`StackBuilder::build`] and
/// [`Config::validate`](crate::Config::validate) check them.
pub(crate) struct StackSettings {
    pub(crate) providers: usize,
    pub(crate) max_request_bytes: usize,
    pub(crate) attempt_timeout: Option<Duration>,
    #[cfg(feature = "retry")]
    pub(crate) deadline: Option<Duration>,
}

/// Refuses a stack without providers, a zero body limit and zero timeouts.
pub(crate) fn check_stack(s: &StackSettings) -> Result<(), ConfigError> {
    if s.providers == 0 {
        return Err(ConfigError::new(
            "providers",
            "at least one provider is required ([[providers]] in a file, .provider(..) in code)",
        ));
    }
    if s.max_request_bytes == 0 {
        return Err(ConfigError::new(
            "max_request_bytes",
            "must be at least 1 byte",
        ));
    }
    if s.attempt_timeout.is_some_and(|d| d.is_zero()) {
        return Err(ConfigError::new("attempt_timeout", "must be above zero"));
    }
    #[cfg(feature = "retry")]
    if s.deadline.is_some_and(|d| d.is_zero()) {
        return Err(ConfigError::new("deadline", "must be above zero"));
    }
    Ok(())
}

/// Hedging needs a router that sends the second attempt elsewhere: the balancer
/// (it sees the first provider loaded) or one of yours. The ordered routers would
/// send it to the same provider.
#[cfg(feature = "retry")]
pub(crate) fn check_hedge(router: &str) -> Result<(), ConfigError> {
    match router {
        "balance" | "custom" => Ok(()),
        other => Err(ConfigError::new(
            "hedge",
            format!(
                "needs router = \"balance\": the {other} router takes providers in order, \
                 so the second attempt would go to the same provider"
            ),
        )),
    }
}

/// A retry budget that never refuses (`retry_budget = false`).
#[cfg(feature = "retry")]
struct Unlimited;

#[cfg(feature = "retry")]
impl tower::retry::budget::Budget for Unlimited {
    fn deposit(&self) {}

    fn withdraw(&self) -> bool {
        true
    }
}

/// Balance reports `providers[<id>].weight`; the facade names providers by index.
fn strip_provider(field: &str) -> &str {
    match field.strip_prefix("providers[") {
        Some(rest) => rest.split_once("].").map_or(field, |(_, f)| f),
        None => field,
    }
}

/// One router over `entries`. Under the model router (`by_model`), the routers
/// read the attributes it leaves on the request and no model header (the group is
/// already chosen).
fn route(
    routing: &Routing,
    entries: Vec<RouterEntry>,
    budget: Option<SharedBudget>,
    by_model: bool,
    classifier: AboveClassifier,
) -> Result<ProviderService, ConfigError> {
    let attributes = if by_model {
        DefaultAttributes::new().model_header(None)
    } else {
        DefaultAttributes::new()
    };
    let balance_err = |section: &str, e: tower_failover_balance::ConfigError| {
        if e.field().starts_with("providers") {
            e
        } else {
            e.within(section)
        }
    };
    match routing {
        Routing::Balance(c) => {
            let mut b = Balance::builder()
                .config(c.clone())
                .attributes(attributes)
                .classifier(classifier);
            if let Some(budget) = budget {
                b = b.budget(budget);
            }
            for e in entries {
                b = b.provider_with(e.health, e.service, e.options);
            }
            Ok(boxed(b.build().map_err(|e| balance_err("balance", e))?))
        }
        Routing::Fallback(c) => {
            let mut b = Fallback::builder()
                .config(c.clone())
                .attributes(attributes)
                .classifier(classifier);
            if let Some(budget) = budget {
                b = b.budget(budget);
            }
            for e in entries {
                b = b.provider_with(e.health, e.service, e.options);
            }
            Ok(boxed(b.build().map_err(|e| balance_err("fallback", e))?))
        }
        #[cfg(feature = "overflow")]
        Routing::Overflow(c) => {
            let mut entries = entries;
            // Targets go in fallback order: by priority, then as added.
            entries.sort_by_key(|e| e.options.priority.unwrap_or(u32::MAX));
            let mut b = Overflow::builder().config(*c).classifier(classifier);
            if let Some(budget) = budget {
                b = b.retry_budget(budget);
            }
            for e in entries {
                b = b.target(e.health, e.service);
            }
            let router = b.build().map_err(|e| e.within("overflow"))?;
            Ok(boxed(router))
        }
        Routing::Custom(r) => {
            (r.make)(entries, budget).map_err(|e| ConfigError::new("router", e.to_string()))
        }
    }
}

#[cfg(feature = "provider")]
impl Stack {
    /// A builder configured from `config`: the registry (with the Redis store when
    /// configured), each provider's client (API keys read from the environment
    /// variables the configuration names), its layers and the router. Change
    /// anything on the returned builder (replace a layer, add one) before
    /// [`build`](StackBuilder::build).
    pub fn from_config(config: &crate::Config) -> Result<StackBuilder, ConfigError> {
        config.validate()?;
        config.builder()
    }
}
