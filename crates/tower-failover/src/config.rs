//! The stack as a configuration file (TOML, or anything serde reads).
//!
//! ```toml
//! router = "balance"          # or "fallback" (ordered by priority), "overflow"
//! # deadline = "10m"          # total per request, across attempts (default none:
//! #                           # a long stream is not cut; set what callers wait)
//! # attempt_timeout = "120s"  # one attempt until its headers (default none)
//! max_request_bytes = 33554432
//! hedge = false               # or [hedge] percentile = 0.9: a second attempt when the first is slow
//! default_model = "gpt-4o-mini"  # requests naming no model (unset: any provider)
//!
//! [balance]                   # tower_failover::balance::BalanceConfig; only with router = "balance"
//! error_penalty = 20          # the health score: load × (1 + 20 × recent error rate)
//!
//! [retry]                     # same-provider retry of a 502/503 blip (`retry = false` turns it off)
//! max_retries = 1
//! backoff = { base = "50ms" }
//!
//! [probe]                     # active probes of open circuits (`probe = false` turns them off)
//! interval = "10s"            # GET /v1/models; `completion = true` sends a tiny completion
//!
//! [circuit]                   # tower_failover::circuit::CircuitConfig; `circuit = false` turns it off
//! consecutive_failures = 5
//! cooldown = "30s"
//! account = { cooldown = "5m", max_cooldown = "30m" }  # a rejected key or bill opens it at once, this long
//!
//! [ramp]                      # tower_failover::ramp::RampConfig
//! min_requests = 20
//!
//! [health]                    # tower_failover::core::HealthConfig
//! suspect_factor = 4.0        # a provider silent for 4 × its usual time to first byte
//! suspect_floor = "500ms"     # (and at least this) with requests waiting is passed over
//!
//! [models."gpt-4o-mini"]      # when every gpt-4o-mini provider is down or busy,
//! fallbacks = ["claude-haiku-4-5"]  # these model groups, in order
//!
//! [[providers]]
//! name = "openai"             # provider name and model: the key of its health
//! model = "gpt-4o-mini"       # the name callers ask for (with `aliases`)
//! kind = "openai"             # the rest is tower_failover::provider::ProviderConfig
//! api_key_env = "OPENAI_API_KEY"
//! weight = 2.0
//! price = { input_per_million = 0.15, output_per_million = 0.60 }
//!
//! [[providers]]
//! name = "anthropic"
//! model = "claude-haiku-4-5"
//! kind = "anthropic"
//! api_key_env = "ANTHROPIC_API_KEY"
//! circuit = { consecutive_failures = 3 }   # this provider only
//! probe = false               # also per provider: validate, quota, ramp, retry
//! ```
//!
//! Every section is optional and takes the layer crate's own configuration struct
//! (each refuses unknown keys, and validates itself once, whichever router is
//! chosen); `validate = false`, `quota = false`, `circuit = false`, `ramp = false`,
//! `observe = false`, `retry_budget = false`, `retry = false`, `probe = false`
//! turn a layer off, and `wait_queue = true` or `hedge = true` (or a table) turn
//! the wait queue or hedging on. Nothing is ignored: a router section
//! (`[balance]`, `[fallback]`, `[overflow]`) for a router other than the chosen
//! one is refused with an error naming it. The top-level `attempt_timeout`
//! applies to every router (the balancer and the fallback fail over when it
//! fires; under overflow the attempt fails); a router section may set its own
//! instead, not both. A `[[providers]]` entry may set `validate`, `quota`,
//! `circuit`, `ramp`, `probe` and `retry` (same-provider retry) for itself: `false`
//! turns that layer off for it alone, a table replaces the stack's settings for it.
//! Durations read `"30s"`, `"250ms"`, `"5m"` or a number of seconds.
//!
//! **Model routing.** A request goes to the providers that serve the model it asks
//! for: each entry answers to its `model` and its `aliases`, and the entries that
//! answer to one name form a group (the same model at several providers or keys).
//! The router picks and fails over inside the group, then along the group's
//! `[models."<name>"] fallbacks`, each a whole group. A model nobody serves fails
//! with [`ModelNotFound`](crate::ModelNotFound) (a gateway's `404
//! model_not_found`). A request naming no model goes to `default_model`'s group, or
//! to every provider when it is unset. A request with tools skips entries with
//! `tools = false`; a prompt estimated (at 4 bytes a token) above an entry's
//! `context_window` skips it (not under `router = "overflow"`, which never skips
//! and so refuses `tools = false`, `context_window` and `tiers`). `route_by_model = false` sends every request to every
//! provider, whatever its model. See [`crate::models`]. Two entries of one group at
//! the same provider (two keys) need distinct names (`name = "openai-2"`): the name
//! and model are the key of each entry's health.
//! [`Config::validate`] refuses invalid values with a [`ConfigError`] naming the
//! field (`providers[1].base_url: not a valid URL ...`).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tower_failover_balance::{BalanceConfig, FallbackConfig, ProviderOptions};
use tower_failover_core::duration_serde;
use tower_failover_core::{HealthConfig, ProviderId};

use crate::slot::{ObserveConfig, Toggle};
use crate::stack::DEFAULT_MAX_REQUEST_BYTES;
use tower_failover_core::ConfigError;

#[cfg(feature = "circuit")]
use tower_failover_circuit::CircuitConfig;
#[cfg(feature = "overflow")]
use tower_failover_overflow::{OverflowConfig, QuotaConfig};
#[cfg(feature = "ramp")]
use tower_failover_ramp::{ProbeConfig, RampConfig};
#[cfg(feature = "redis")]
use tower_failover_redis::RedisConfig;
#[cfg(feature = "retry")]
use tower_failover_retry::{BudgetConfig, HedgeConfig, QueueConfig, RetryConfig};
#[cfg(feature = "validate")]
use tower_failover_validate::ValidateConfig;

/// Which router spreads requests across the providers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouterKind {
    /// The balancer (`[balance]` configures it). The default.
    #[default]
    Balance,
    /// The ordered fallback chain, by `priority` (`[fallback]`).
    Fallback,
    /// Overflow on 429, in priority order (`[overflow]`).
    #[cfg(feature = "overflow")]
    Overflow,
}

impl RouterKind {
    /// The name a configuration file uses: `balance`, `fallback`, `overflow`.
    pub fn name(self) -> &'static str {
        match self {
            RouterKind::Balance => "balance",
            RouterKind::Fallback => "fallback",
            #[cfg(feature = "overflow")]
            RouterKind::Overflow => "overflow",
        }
    }
}

/// The whole stack, as read from a file. See the [module documentation](self).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The router. Default: `balance`.
    pub router: RouterKind,
    /// The balancer's settings: only with `router = "balance"` (a section for
    /// another router is refused, never ignored).
    pub balance: Option<BalanceConfig>,
    /// The fallback chain's settings: only with `router = "fallback"`.
    pub fallback: Option<FallbackConfig>,
    /// The overflow router's settings: only with `router = "overflow"`.
    #[cfg(feature = "overflow")]
    pub overflow: Option<OverflowConfig>,
    /// Time allowed for one attempt at one provider, whatever the router.
    /// Default: none (the provider client's own timeouts). See
    /// [`StackBuilder::attempt_timeout`](crate::StackBuilder::attempt_timeout).
    #[serde(with = "duration_serde::option")]
    pub attempt_timeout: Option<Duration>,
    /// Same-provider retry of a 502/503 blip, with backoff, before failing over.
    /// Default: on (one retry after about 50 ms).
    #[cfg(feature = "retry")]
    pub retry: Toggle<RetryConfig>,
    /// Hedging: a second attempt when the first is slow. Default: off.
    #[cfg(feature = "retry")]
    pub hedge: Toggle<HedgeConfig>,
    /// Active probes of providers whose circuit is open. Default: on
    /// (`GET /v1/models` every 10 s); needs the recovery ramp.
    #[cfg(feature = "ramp")]
    pub probe: Option<Toggle<ProbeConfig>>,
    /// Output validation of every provider. Default: on.
    #[cfg(feature = "validate")]
    pub validate: Toggle<ValidateConfig>,
    /// The observer of every provider. Default: on.
    pub observe: Toggle<ObserveConfig>,
    /// Quota tracking of every provider. Default: on.
    #[cfg(feature = "overflow")]
    pub quota: Toggle<QuotaConfig>,
    /// The circuit breaker of every provider. Default: on.
    #[cfg(feature = "circuit")]
    pub circuit: Toggle<CircuitConfig>,
    /// The recovery ramp of every provider. Default: on.
    #[cfg(feature = "ramp")]
    pub ramp: Toggle<RampConfig>,
    /// The retry budget shared by every hop. Default: on.
    #[cfg(feature = "retry")]
    pub retry_budget: Toggle<BudgetConfig>,
    /// Total time per request, across attempts. Default: none.
    #[cfg(feature = "retry")]
    #[serde(with = "duration_serde::option")]
    pub deadline: Option<Duration>,
    /// Wait for a provider to recover when all are down. Default: off.
    #[cfg(feature = "retry")]
    pub wait_queue: Toggle<QueueConfig>,
    /// The largest request body buffered for replay. Default: 32 MiB
    /// ([`DEFAULT_MAX_REQUEST_BYTES`]).
    pub max_request_bytes: usize,
    /// Share health across gateway replicas through Redis, and count the retry
    /// budget for the whole fleet there. Default: none.
    #[cfg(feature = "redis")]
    pub redis: Option<RedisConfig>,
    /// Health tracking shared by every provider: the latency averages and hang
    /// detection (when a silent provider becomes suspect and is passed over).
    pub health: HealthConfig,
    // --- Model routing (see `crate::models`) ---
    /// Route each request to the providers serving its model. Default: true.
    pub route_by_model: bool,
    /// The model group serving requests that name no model. Default: none (any
    /// provider serves them).
    pub default_model: Option<String>,
    /// Per public model name: its group's fallbacks (`[models."gpt-4o-mini"]`).
    pub models: std::collections::BTreeMap<String, ModelGroup>,
    // --- end of model routing ---
    /// The providers.
    pub providers: Vec<ProviderEntry>,
}

/// One model group's settings (`[models."<name>"]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ModelGroup {
    /// The model groups tried, in order, when every provider of this one failed or
    /// is unavailable (not transitively). Each must be a name some provider serves.
    pub fallbacks: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            router: RouterKind::Balance,
            balance: None,
            fallback: None,
            #[cfg(feature = "overflow")]
            overflow: None,
            attempt_timeout: None,
            #[cfg(feature = "retry")]
            retry: Toggle::default(),
            #[cfg(feature = "retry")]
            hedge: Toggle::Off,
            #[cfg(feature = "ramp")]
            probe: None,
            #[cfg(feature = "validate")]
            validate: Toggle::default(),
            observe: Toggle::default(),
            #[cfg(feature = "overflow")]
            quota: Toggle::default(),
            #[cfg(feature = "circuit")]
            circuit: Toggle::default(),
            #[cfg(feature = "ramp")]
            ramp: Toggle::default(),
            #[cfg(feature = "retry")]
            retry_budget: Toggle::default(),
            #[cfg(feature = "retry")]
            deadline: None,
            #[cfg(feature = "retry")]
            wait_queue: Toggle::Off,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            #[cfg(feature = "redis")]
            redis: None,
            health: HealthConfig::default(),
            route_by_model: true,
            default_model: None,
            models: std::collections::BTreeMap::new(),
            providers: Vec::new(),
        }
    }
}

/// A price per million tokens, input and output: the provider adapters' own
/// `Price` (`tower_failover_core::Price`), so one type serves both.
pub use tower_failover_core::Price;

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

/// One provider (one model at one provider) in a [`Config`].
///
/// The keys below are the facade's; every other key of the entry (`kind`,
/// `base_url`, `api_key_env`, `timeouts`, `headers`, …) is the provider client's
/// configuration (`tower_failover::provider::ProviderConfig`). The client is pinned
/// to `model` unless its own `models` map says otherwise, so whatever model name
/// a caller asks for, this deployment answers with its own model.
#[derive(Clone, Deserialize)]
#[non_exhaustive]
pub struct ProviderEntry {
    /// The provider name, for health, logs and snapshots (`openai`, `groq`, …).
    pub name: String,
    /// The provider's model (`gpt-4o-mini`).
    pub model: String,
    /// A quota group shared with other entries on the same key or organisation:
    /// one rate-limit window and one quota tracker for the group, so its members
    /// need the same quota settings (a member's own `quota` table that differs from
    /// the group's first member's is refused when the stack is built).
    #[serde(default)]
    pub quota_group: Option<String>,
    /// Balancer weight. Default 1.
    #[serde(default = "one")]
    pub weight: f64,
    /// Position in a fallback chain, lower first.
    #[serde(default)]
    pub priority: Option<u32>,
    /// The model's price: recorded as usage cost, and (blended) used by
    /// `weighting = "cost"` and `policy = "cheapest"`.
    #[serde(default)]
    pub price: Option<Price>,
    /// The blended price per million tokens, if not the one derived from `price`.
    #[serde(default)]
    pub price_per_million: Option<f64>,
    /// More model names callers may ask for that this entry serves, besides
    /// `model` (see the [module documentation](self) on model routing).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Tiers this entry belongs to, selected by a request header.
    #[serde(default)]
    pub tiers: Vec<String>,
    /// The model's context window in tokens.
    #[serde(default)]
    pub context_window: Option<u64>,
    /// Whether the model accepts tool definitions. Default true.
    #[serde(default = "yes")]
    pub tools: bool,
    /// The model is an embeddings model: the entry serves OpenAI's
    /// `POST /v1/embeddings`, not chat. Default false. A front door that serves
    /// both builds one stack from the chat entries and one from these (the
    /// gateway example does), so each request only reaches entries that can
    /// answer it.
    #[serde(default)]
    pub embeddings: bool,
    /// This provider's own output validation.
    #[cfg(feature = "validate")]
    #[serde(default)]
    pub validate: Option<Toggle<ValidateConfig>>,
    /// This provider's own quota tracking.
    #[cfg(feature = "overflow")]
    #[serde(default)]
    pub quota: Option<Toggle<QuotaConfig>>,
    /// This provider's own circuit breaker.
    #[cfg(feature = "circuit")]
    #[serde(default)]
    pub circuit: Option<Toggle<CircuitConfig>>,
    /// This provider's own recovery ramp.
    #[cfg(feature = "ramp")]
    #[serde(default)]
    pub ramp: Option<Toggle<RampConfig>>,
    /// This provider's own active probes (`probe = false`: none for it, as for a
    /// provider that bills every probe; a table: its own interval, path or body).
    #[cfg(feature = "ramp")]
    #[serde(default)]
    pub probe: Option<Toggle<ProbeConfig>>,
    /// This provider's own same-provider retry of a blip (`retry = false`: none,
    /// as for a provider whose rate limits leave no room for a second try).
    #[cfg(feature = "retry")]
    #[serde(default)]
    pub retry: Option<Toggle<RetryConfig>>,
    /// The rest: the provider client's configuration.
    #[serde(flatten)]
    pub client: toml::Table,
}

impl fmt::Debug for ProviderEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client table may hold an inline `api_key`: keys only.
        f.debug_struct("ProviderEntry")
            .field("name", &self.name)
            .field("model", &self.model)
            .field("quota_group", &self.quota_group)
            .field("weight", &self.weight)
            .field("priority", &self.priority)
            .field("aliases", &self.aliases)
            .field("client", &self.client.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ProviderEntry {
    /// A provider entry with defaults and an empty client configuration.
    pub fn new(name: impl Into<String>, model: impl Into<String>) -> Self {
        ProviderEntry {
            name: name.into(),
            model: model.into(),
            quota_group: None,
            weight: 1.0,
            priority: None,
            price: None,
            price_per_million: None,
            aliases: Vec::new(),
            tiers: Vec::new(),
            context_window: None,
            tools: true,
            embeddings: false,
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
            retry: None,
            client: toml::Table::new(),
        }
    }

    /// Sets a key of the client configuration (`kind`, `base_url`, `api_key_env`…).
    pub fn client(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        self.client.insert(key.to_owned(), value.into());
        self
    }

    /// The routing options this entry gives the router.
    pub fn options(&self) -> ProviderOptions {
        let mut o = ProviderOptions::default()
            .weight(self.weight)
            .tools(self.tools);
        o.priority = self.priority;
        o.price_per_million = self
            .price_per_million
            .or_else(|| self.price.map(|p| p.blended()));
        if !self.aliases.is_empty() {
            o = o
                .models(self.aliases.iter().cloned())
                .model(self.model.clone());
        }
        o.tiers = self.tiers.clone();
        o.context_window = self.context_window;
        o
    }

    /// The provider client's configuration: the client keys of the entry, with
    /// the name set and the model pinned.
    #[cfg(feature = "provider")]
    pub fn provider_config(&self) -> Result<tower_failover_provider::ProviderConfig, ConfigError> {
        let mut config: tower_failover_provider::ProviderConfig =
            toml::Value::Table(self.client.clone())
                .try_into()
                .map_err(|e: toml::de::Error| {
                    let mut reason = e.message().trim().to_owned();
                    if reason.starts_with("unknown field") {
                        reason.push_str(
                            "; or one of the entry's own: `name`, `model`, `quota_group`, \
                             `weight`, `priority`, `price`, `price_per_million`, `aliases`, \
                             `tiers`, `context_window`, `tools`, `embeddings`, `validate`, `quota`, \
                             `circuit`, `ramp`, `probe`, `retry`",
                        );
                    }
                    ConfigError::new("", reason)
                })?;
        config.name = Some(self.name.clone());
        if config.models.is_empty() {
            config.models.insert("*".to_owned(), self.model.clone());
        }
        if let Some(p) = self.price {
            config.prices.entry(self.model.clone()).or_insert(p);
        }
        Ok(config)
    }
}

#[cfg(feature = "provider")]
impl ProviderEntry {
    /// This entry as the stack builder takes it: its client (built from the client
    /// keys, recording usage in its health in `registry`), routing options, quota
    /// group and its own layer settings.
    fn def(
        &self,
        registry: &tower_failover_core::Registry,
        max_request_bytes: usize,
    ) -> Result<crate::ProviderDef, ConfigError> {
        #[cfg(any(
            feature = "validate",
            feature = "overflow",
            feature = "circuit",
            feature = "ramp"
        ))]
        use crate::slot::Slot;
        let health = match &self.quota_group {
            Some(g) => registry.provider_in_group(&self.name, &self.model, g),
            None => registry.provider(&self.name, &self.model),
        };
        let mut config = self.provider_config()?;
        if !self.client.contains_key("max_request_bytes") {
            // The stack's limit, unless the entry sets its own: a stack raised
            // above the client's default would still be refused by the client.
            config.max_request_bytes = max_request_bytes;
        }
        let client = tower_failover_provider::Provider::from_config(config)
            .health(health)
            .build()?;
        let mut def =
            crate::ProviderDef::new(&self.name, &self.model, client).options(self.options());
        if let Some(g) = &self.quota_group {
            def = def.quota_group(g);
        }
        #[cfg(feature = "validate")]
        if let Some(t) = &self.validate {
            def = def.output_validation(Slot::from(t.clone()));
        }
        #[cfg(feature = "overflow")]
        if let Some(t) = &self.quota {
            def = def.quota(Slot::from(t.clone()));
        }
        #[cfg(feature = "circuit")]
        if let Some(t) = &self.circuit {
            def = def.circuit(Slot::from(t.clone()));
        }
        #[cfg(feature = "ramp")]
        if let Some(t) = &self.ramp {
            def = def.ramp(Slot::from(t.clone()));
        }
        #[cfg(feature = "ramp")]
        if let Some(t) = &self.probe {
            def = def.probe(t.get().cloned());
        }
        #[cfg(feature = "retry")]
        if let Some(t) = &self.retry {
            def = def.same_provider_retry(t.get().copied());
        }
        Ok(def)
    }
}

impl Config {
    /// Reads and validates a TOML configuration.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| parse_error(&e, text))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates a TOML file. Errors start with the file's path.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        Config::from_toml_str(&text).map_err(|e| e.in_file(path))
    }

    /// Refuses invalid values, naming the field. Does not read the environment
    /// (API keys are read when the stack is built).
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::stack::check_stack(&crate::stack::StackSettings {
            providers: self.providers.len(),
            max_request_bytes: self.max_request_bytes,
            attempt_timeout: self.attempt_timeout,
            #[cfg(feature = "retry")]
            deadline: self.deadline,
        })?;
        self.health.validate().map_err(|e| e.within("health"))?;
        self.check_routers()?;
        #[cfg(feature = "retry")]
        {
            if let Toggle::On(c) = &self.retry {
                c.validate().map_err(|e| core_error(e, "retry"))?;
            }
            if let Toggle::On(c) = &self.hedge {
                crate::stack::check_hedge(self.router.name())?;
                c.validate().map_err(|e| core_error(e, "hedge"))?;
            }
        }
        #[cfg(feature = "ramp")]
        if let Some(Toggle::On(p)) = &self.probe {
            if self.ramp.is_off() {
                return Err(ConfigError::new(
                    "probe",
                    "probes run in the recovery ramp's task: turn `ramp` on, or set `probe = false`",
                ));
            }
            // The probe's own errors are named `probe.<field>` already.
            p.validate()?;
        }
        #[cfg(feature = "validate")]
        if let Toggle::On(c) = &self.validate {
            check_validate(c, "validate")?;
        }
        #[cfg(feature = "overflow")]
        if let Toggle::On(c) = &self.quota {
            check_quota(c, "quota")?;
        }
        #[cfg(feature = "circuit")]
        if let Toggle::On(c) = &self.circuit {
            check_circuit(c, "circuit")?;
        }
        #[cfg(feature = "ramp")]
        if let Toggle::On(c) = &self.ramp {
            check_ramp(c, "ramp")?;
        }
        #[cfg(feature = "retry")]
        {
            if let Toggle::On(c) = &self.retry_budget {
                c.validate().map_err(|e| e.within("retry_budget"))?;
            }
            if let Toggle::On(q) = &self.wait_queue {
                q.validate().map_err(|e| core_error(e, "wait_queue"))?;
            }
        }
        #[cfg(feature = "redis")]
        if let Some(r) = &self.redis {
            r.validate().map_err(|e| e.within("redis"))?;
        }
        for (i, p) in self.providers.iter().enumerate() {
            let at = format!("providers[{i}]");
            self.check_provider(i, p).map_err(|e| e.within(&at))?;
        }
        // Model routing: every name given must be one a provider serves.
        #[cfg(feature = "balance")]
        {
            let served = |m: &str| {
                self.providers
                    .iter()
                    .any(|p| p.model == m || p.aliases.iter().any(|a| a == m))
            };
            crate::models::check_names(
                &served,
                self.default_model.as_deref(),
                self.models
                    .iter()
                    .map(|(m, g)| (m.as_str(), g.fallbacks.as_slice())),
            )?;
        }
        Ok(())
    }

    /// Each router section present is validated, and one for a router other than
    /// the chosen one is refused (it would be ignored). An attempt timeout set both
    /// at the top level and in the router's section is refused (which one wins
    /// would be a guess).
    fn check_routers(&self) -> Result<(), ConfigError> {
        let chosen = self.router.name();
        let misplaced = |section: &str| {
            ConfigError::new(
                section.to_owned(),
                format!(
                    "this section configures router = \"{section}\", but the router is \"{chosen}\": \
                     remove the section, or set router = \"{section}\""
                ),
            )
        };
        let timeouts = |section: &str, attempt: Option<Duration>| {
            if attempt.is_some() && self.attempt_timeout.is_some() {
                return Err(ConfigError::new(
                    format!("{section}.attempt_timeout"),
                    "set once: the top-level `attempt_timeout` (every router) or this one",
                ));
            }
            Ok(())
        };
        let balance_err =
            |section: &str, e: tower_failover_core::ConfigError| core_error(e, section);
        if let Some(c) = &self.balance {
            if self.router != RouterKind::Balance {
                return Err(misplaced("balance"));
            }
            c.validate().map_err(|e| balance_err("balance", e))?;
            timeouts("balance", c.attempt_timeout)?;
        }
        if let Some(c) = &self.fallback {
            if self.router != RouterKind::Fallback {
                return Err(misplaced("fallback"));
            }
            c.validate().map_err(|e| balance_err("fallback", e))?;
            timeouts("fallback", c.attempt_timeout)?;
        }
        #[cfg(feature = "overflow")]
        if let Some(c) = &self.overflow {
            if self.router != RouterKind::Overflow {
                return Err(misplaced("overflow"));
            }
            c.validate().map_err(|e| core_error(e, "overflow"))?;
        }
        Ok(())
    }

    fn check_provider(&self, i: usize, p: &ProviderEntry) -> Result<(), ConfigError> {
        if p.name.trim().is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        if p.model.trim().is_empty() {
            return Err(ConfigError::new("model", "must not be empty"));
        }
        if let Some(j) = self.providers[..i]
            .iter()
            .position(|q| q.name == p.name && q.model == p.model)
        {
            return Err(ConfigError::new(
                "",
                format!("{}/{} is already providers[{j}]", p.name, p.model),
            ));
        }
        if p.quota_group
            .as_deref()
            .is_some_and(|g| g.trim().is_empty())
        {
            return Err(ConfigError::new("quota_group", "must not be empty"));
        }
        // The overflow router moves on only after a 429 and never filters its
        // targets: these would be silently ignored under it.
        #[cfg(feature = "overflow")]
        if self.router == RouterKind::Overflow {
            let filter = if !p.tools {
                Some("tools")
            } else if p.context_window.is_some() {
                Some("context_window")
            } else if !p.tiers.is_empty() {
                Some("tiers")
            } else {
                None
            };
            if let Some(field) = filter {
                return Err(ConfigError::new(
                    field,
                    "the overflow router does not skip providers by tools, context window or \
                     tier (it moves on only after a 429): use router = \"balance\" or \
                     \"fallback\", or remove it",
                ));
            }
        }
        if let Some(price) = p.price {
            for (field, v) in [
                ("price.input_per_million", price.input_per_million),
                ("price.output_per_million", price.output_per_million),
                (
                    "price.cache_read_per_million",
                    price.cache_read_per_million.unwrap_or(0.0),
                ),
                (
                    "price.cache_write_per_million",
                    price.cache_write_per_million.unwrap_or(0.0),
                ),
            ] {
                if !(v.is_finite() && (0.0..=1e9).contains(&v)) {
                    return Err(ConfigError::new(
                        field,
                        format!("{v} is not a price in [0, 1e9]"),
                    ));
                }
            }
        }
        let id = ProviderId::new(&p.name, &p.model);
        p.options().validate(&id).map_err(|e| {
            let field = e.field();
            let field = field.split_once("].").map_or(field, |(_, f)| f).to_owned();
            ConfigError::new(field, e.reason().to_owned())
        })?;
        match p.client.get("base_url") {
            None => {}
            Some(toml::Value::String(url)) => check_url(url)?,
            Some(other) => {
                return Err(ConfigError::new(
                    "base_url",
                    format!(
                        "not a valid URL: expected a string, found {}",
                        other.type_str()
                    ),
                ));
            }
        }
        #[cfg(feature = "provider")]
        p.provider_config()?;
        #[cfg(feature = "validate")]
        if let Some(Toggle::On(c)) = &p.validate {
            check_validate(c, "validate")?;
        }
        #[cfg(feature = "overflow")]
        if let Some(Toggle::On(c)) = &p.quota {
            check_quota(c, "quota")?;
        }
        #[cfg(feature = "circuit")]
        if let Some(Toggle::On(c)) = &p.circuit {
            check_circuit(c, "circuit")?;
        }
        #[cfg(feature = "ramp")]
        if let Some(Toggle::On(c)) = &p.ramp {
            check_ramp(c, "ramp")?;
        }
        #[cfg(feature = "ramp")]
        if let Some(Toggle::On(probe)) = &p.probe {
            let ramp_off = match &p.ramp {
                Some(r) => r.is_off(),
                None => self.ramp.is_off(),
            };
            if ramp_off {
                return Err(ConfigError::new(
                    "probe",
                    "probes run in the recovery ramp's task: turn this provider's `ramp` on, or set `probe = false`",
                ));
            }
            probe.validate()?;
        }
        #[cfg(feature = "retry")]
        if let Some(Toggle::On(c)) = &p.retry {
            c.validate().map_err(|e| core_error(e, "retry"))?;
        }
        Ok(())
    }

    /// The registry this configuration asks for: in-process, or on Redis (which
    /// starts its background tasks: call it inside a tokio runtime).
    pub fn registry(&self) -> Result<tower_failover_core::Registry, ConfigError> {
        #[cfg(feature = "redis")]
        if let Some(r) = &self.redis {
            let store = tower_failover_redis::RedisStore::start(r.clone())
                .map_err(|e| e.within("redis"))?;
            return Ok(tower_failover_core::Registry::with_store(
                store,
                self.health,
            ));
        }
        Ok(tower_failover_core::Registry::with_store(
            std::sync::Arc::new(tower_failover_core::LocalStore),
            self.health,
        ))
    }

    /// The stack builder this configuration describes (see
    /// [`Stack::from_config`](crate::Stack::from_config), which validates first).
    #[cfg(feature = "provider")]
    pub(crate) fn builder(&self) -> Result<crate::StackBuilder, ConfigError> {
        use crate::slot::Slot;
        use crate::stack::Routing;

        let registry = self.registry()?;
        let routing = match self.router {
            RouterKind::Balance => Routing::Balance(self.balance.clone().unwrap_or_default()),
            RouterKind::Fallback => Routing::Fallback(self.fallback.clone().unwrap_or_default()),
            #[cfg(feature = "overflow")]
            RouterKind::Overflow => Routing::Overflow(self.overflow.unwrap_or_default()),
        };
        let mut b = crate::Stack::builder()
            .registry(registry.clone())
            .routing(routing)
            .observe(Slot::from(self.observe.clone()))
            .max_request_bytes(self.max_request_bytes)
            .attempt_timeout(self.attempt_timeout)
            .route_by_model(self.route_by_model)
            .default_model(self.default_model.clone());
        for (model, group) in &self.models {
            b = b.model_fallbacks(model, group.fallbacks.iter().cloned());
        }
        #[cfg(feature = "validate")]
        {
            b = b.output_validation(Slot::from(self.validate.clone()));
        }
        #[cfg(feature = "overflow")]
        {
            b = b.quota(Slot::from(self.quota.clone()));
        }
        #[cfg(feature = "circuit")]
        {
            b = b.circuit(Slot::from(self.circuit.clone()));
        }
        #[cfg(feature = "ramp")]
        {
            b = b
                .ramp(Slot::from(self.ramp.clone()))
                .probe(match &self.probe {
                    None => (!self.ramp.is_off()).then(ProbeConfig::default),
                    Some(t) => t.get().cloned(),
                });
        }
        #[cfg(feature = "retry")]
        {
            b = b
                .retry_budget(self.retry_budget.get().copied())
                .deadline(self.deadline)
                .wait_queue(self.wait_queue.get().copied())
                .same_provider_retry(self.retry.get().copied())
                .hedge(self.hedge.get().copied());
        }
        // With `[redis]`, the retry budget is the fleet's, counted in Redis.
        #[cfg(all(feature = "redis", feature = "retry"))]
        if let (Some(r), Toggle::On(c)) = (&self.redis, &self.retry_budget) {
            let local =
                tower_failover_retry::RetryBudget::new(*c).map_err(|e| e.within("retry_budget"))?;
            let fleet = tower_failover_redis::FleetRetryBudget::start(
                r,
                "retry",
                c.window,
                c.min_per_second,
                c.ratio,
                std::sync::Arc::new(local),
            )
            .map_err(|e| e.within("redis"))?;
            b = b.shared_budget(std::sync::Arc::new(fleet));
        }
        for (i, p) in self.providers.iter().enumerate() {
            let at = format!("providers[{i}]");
            #[allow(unused_mut)]
            let mut def = p
                .def(&registry, self.max_request_bytes)
                .map_err(|e| e.within(&at))?;
            // Probes default to on wherever a ramp runs: a provider that turns its
            // own ramp on under a stack whose ramp is off (and so has no probes,
            // and may not set `[probe]`) gets the default probes unless it says
            // otherwise.
            #[cfg(feature = "ramp")]
            if self.probe.is_none()
                && self.ramp.is_off()
                && p.probe.is_none()
                && p.ramp.as_ref().is_some_and(|r| !r.is_off())
            {
                def = def.probe(Some(ProbeConfig::default()));
            }
            b = b.provider(def);
        }
        Ok(b)
    }
}

/// A layer crate's error, under its section's name.
fn core_error(e: tower_failover_core::ConfigError, section: &str) -> ConfigError {
    e.within(section)
}

fn parse_error(e: &toml::de::Error, input: &str) -> ConfigError {
    // toml's message names the key ("unknown field `bsae_url`, expected one of …");
    // add the line, which its message leaves to its long form.
    let message = e.message().trim().to_owned();
    ConfigError::new("", format!("invalid TOML: {message}{}", line_of(e, input)))
}

fn line_of(e: &toml::de::Error, input: &str) -> String {
    match e.span() {
        Some(span) => {
            let line = input[..span.start.min(input.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

fn check_url(url: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| ConfigError::new("base_url", format!("not a valid URL ({why}): {url:?}"));
    if !url.contains("://") {
        return Err(bad("expected http://host or https://host"));
    }
    let uri: http::Uri = url.parse().map_err(|_| bad("unparsable"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(_) => return Err(bad("the scheme must be http or https")),
        None => return Err(bad("expected http://host or https://host")),
    }
    let Some(authority) = uri.authority() else {
        return Err(bad("no host"));
    };
    if authority.as_str().contains('@') {
        return Err(ConfigError::new(
            "base_url",
            "must not contain credentials (use api_key_env)",
        ));
    }
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    Ok(())
}

#[cfg(feature = "validate")]
fn check_validate(c: &ValidateConfig, at: &str) -> Result<(), ConfigError> {
    c.validate().map_err(|e| e.within(at))?;
    c.checks.build().map(drop).map_err(|e| e.within(at))
}

#[cfg(feature = "overflow")]
fn check_quota(c: &QuotaConfig, at: &str) -> Result<(), ConfigError> {
    c.validate().map_err(|e| e.within(at))
}

#[cfg(feature = "circuit")]
fn check_circuit(c: &CircuitConfig, at: &str) -> Result<(), ConfigError> {
    c.validate().map_err(|e| e.within(at))
}

#[cfg(feature = "ramp")]
fn check_ramp(c: &RampConfig, at: &str) -> Result<(), ConfigError> {
    c.validate().map_err(|e| e.within(at))
}
