//! Configuration of the balancer and of the fallback chain.
//!
//! Both are plain structs with defaults, builder methods and `serde` support, so a
//! gateway can load them from TOML or JSON. Durations accept `"30s"`, `"250ms"` or a
//! number of seconds. `validate` refuses bad values with an error naming the field.
//!
//! ```
//! use std::time::Duration;
//! use tower_failover_balance::{BalanceConfig, Policy, Weighting};
//!
//! let config: BalanceConfig = toml::from_str(r#"
//!     policy = "least_loaded"
//!     weighting = "cost"
//!     latency_buffer = 0.1
//!     attempt_timeout = "20s"
//!     total_timeout = "45s"
//!     context_window_fallback = "anthropic/claude-sonnet-4-5"
//! "#).unwrap();
//! assert_eq!(config.weighting, Weighting::Cost);
//! assert_eq!(config.total_timeout, Some(Duration::from_secs(45)));
//! config.validate().unwrap();
//!
//! let bad = BalanceConfig::default().latency_buffer(-1.0);
//! assert_eq!(bad.validate().unwrap_err().field(), "latency_buffer");
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tower_failover_core::{ProviderId, duration_serde};

use crate::error::ConfigError;

/// How [`Balance`](crate::Balance) chooses among the candidates of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Power of two choices: sample two candidates, send to the one with the lower
    /// load, where load = peak-EWMA time to first byte × (requests in flight + 1) ÷
    /// weight. Pick cost does not grow with the number of providers.
    #[default]
    LeastLoaded,
    /// The cheapest available candidate whose time-to-first-byte estimate is within
    /// [`cheapest_within`](BalanceConfig::cheapest_within) of the best candidate's.
    /// Cost grows with the number of candidates (one pass over them).
    Cheapest,
    /// Smooth weighted round-robin (each candidate in turn, in proportion to its
    /// weight; unavailable ones skipped). Cost grows with the number of candidates.
    RoundRobin,
}

/// Where a provider's weight comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// The provider's [`weight`](crate::ProviderOptions::weight) as given.
    #[default]
    Static,
    /// The provider's weight divided by its
    /// [`price_per_million`](crate::ProviderOptions::price_per_million): a provider
    /// ten times cheaper carries ten times the load at equal latency. Every provider
    /// must then have a price above zero.
    Cost,
}

/// Configuration of a [`Balance`](crate::Balance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BalanceConfig {
    /// How to choose. Default: [`Policy::LeastLoaded`].
    pub policy: Policy,
    /// Where weights come from. Default: [`Weighting::Static`].
    pub weighting: Weighting,
    /// Latency buffer: two candidates whose time-to-first-byte estimates are within
    /// this fraction of the faster one count as equally fast, so their in-flight
    /// requests and weights alone decide (traffic does not pile onto one endpoint
    /// that is a few milliseconds faster). Default 0.2 (20 %); 0 disables it.
    pub latency_buffer: f64,
    /// For [`Policy::Cheapest`]: how much slower than the best candidate a cheaper
    /// one may be and still be chosen. Default 250 ms.
    #[serde(with = "duration_serde")]
    pub cheapest_within: Duration,
    /// The time-to-first-byte estimate of a provider not measured yet (no
    /// `ObserveLayer` sample), so a new provider is explored but not flooded.
    /// Default 500 ms.
    #[serde(with = "duration_serde")]
    pub unmeasured_ttfb: Duration,
    /// How often the list of providers under a recovery ramp is refreshed.
    /// Default 100 ms.
    #[serde(with = "duration_serde")]
    pub ramp_refresh: Duration,
    /// The health score: a provider's load is multiplied by 1 + `error_penalty` ×
    /// its recent error rate (failures and rejected answers among its last ten or
    /// so outcomes, as its `ObserveLayer` counted them). Default 20: a provider
    /// failing 30 % of its requests, not enough to open its circuit, counts as
    /// seven times as loaded and keeps only a small share of the traffic, instead
    /// of costing every third caller a failover; one failing 1 % barely moves.
    /// 0 turns it off (latency and load alone).
    pub error_penalty: f64,
    /// How fast a provider's error rate fades when it gets no traffic (the time
    /// constant of an exponential decay), so a provider the balancer avoided is
    /// tried again. Default 30 s.
    #[serde(with = "duration_serde")]
    pub error_decay: Duration,
    /// Time allowed for one attempt (until the response headers). Default: none.
    #[serde(with = "duration_serde::option")]
    pub attempt_timeout: Option<Duration>,
    /// Time allowed for the whole request across attempts. Default: none (a
    /// [`Deadline`](tower_failover_core::Deadline) on the request still applies).
    /// Behind `tower_failover`'s model routing it also spans a model's fallback
    /// groups: a fallback group gets what is left.
    #[serde(with = "duration_serde::option")]
    pub total_timeout: Option<Duration>,
    /// Most attempts per request (attempts shed by a breaker or ramp do not count).
    /// Default: none (each candidate at most once). Behind `tower_failover`'s model
    /// routing it counts per model group: each fallback group may make as many.
    pub max_attempts: Option<u32>,
    /// How long to wait for a provider that is not dead but not ready either (its
    /// `poll_ready` is pending: a concurrency limit, probe permits taken) when no
    /// other candidate is left. Default 1 s; zero fails at once.
    #[serde(with = "duration_serde")]
    pub max_ready_wait: Duration,
    /// Where a request that exceeded a model's context window goes next. Behind
    /// `tower_failover`'s model routing over several model groups it is refused:
    /// the model's own fallbacks do this there.
    pub context_window_fallback: Option<ProviderId>,
    /// Where a request refused by a content policy goes next (refused under model
    /// routing over several groups, as above).
    pub content_policy_fallback: Option<ProviderId>,
    /// Seed of the random choices (default: from entropy).
    pub seed: Option<u64>,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            policy: Policy::LeastLoaded,
            weighting: Weighting::Static,
            latency_buffer: 0.2,
            cheapest_within: Duration::from_millis(250),
            unmeasured_ttfb: Duration::from_millis(500),
            ramp_refresh: Duration::from_millis(100),
            error_penalty: 20.0,
            error_decay: Duration::from_secs(30),
            attempt_timeout: None,
            total_timeout: None,
            max_attempts: None,
            max_ready_wait: Duration::from_secs(1),
            context_window_fallback: None,
            content_policy_fallback: None,
            seed: None,
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: Option<$ty:ty>) => {
        $(#[$doc])*
        pub fn $name(mut self, $name: $ty) -> Self {
            self.$name = Some($name);
            self
        }
    };
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, $name: $ty) -> Self {
            self.$name = $name;
            self
        }
    };
}

impl BalanceConfig {
    setter!(
        /// Sets [`policy`](BalanceConfig::policy).
        policy: Policy
    );
    setter!(
        /// Sets [`weighting`](BalanceConfig::weighting).
        weighting: Weighting
    );
    setter!(
        /// Sets [`latency_buffer`](BalanceConfig::latency_buffer).
        latency_buffer: f64
    );
    setter!(
        /// Sets [`cheapest_within`](BalanceConfig::cheapest_within).
        cheapest_within: Duration
    );
    setter!(
        /// Sets [`unmeasured_ttfb`](BalanceConfig::unmeasured_ttfb).
        unmeasured_ttfb: Duration
    );
    setter!(
        /// Sets [`ramp_refresh`](BalanceConfig::ramp_refresh).
        ramp_refresh: Duration
    );
    setter!(
        /// Sets [`error_penalty`](BalanceConfig::error_penalty).
        error_penalty: f64
    );
    setter!(
        /// Sets [`error_decay`](BalanceConfig::error_decay).
        error_decay: Duration
    );
    setter!(
        /// Sets [`attempt_timeout`](BalanceConfig::attempt_timeout).
        attempt_timeout: Option<Duration>
    );
    setter!(
        /// Sets [`total_timeout`](BalanceConfig::total_timeout).
        total_timeout: Option<Duration>
    );
    setter!(
        /// Sets [`max_attempts`](BalanceConfig::max_attempts).
        max_attempts: Option<u32>
    );
    setter!(
        /// Sets [`max_ready_wait`](BalanceConfig::max_ready_wait).
        max_ready_wait: Duration
    );
    setter!(
        /// Sets [`context_window_fallback`](BalanceConfig::context_window_fallback).
        context_window_fallback: Option<ProviderId>
    );
    setter!(
        /// Sets [`content_policy_fallback`](BalanceConfig::content_policy_fallback).
        content_policy_fallback: Option<ProviderId>
    );
    setter!(
        /// Sets [`seed`](BalanceConfig::seed).
        seed: Option<u64>
    );

    /// Refuses invalid values, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.latency_buffer.is_finite() && (0.0..=10.0).contains(&self.latency_buffer)) {
            return Err(ConfigError::new(
                "latency_buffer",
                format!("{} is not a fraction in [0, 10]", self.latency_buffer),
            ));
        }
        if self.cheapest_within > Duration::from_secs(3600) {
            return Err(ConfigError::new("cheapest_within", "longer than an hour"));
        }
        if self.unmeasured_ttfb.is_zero() || self.unmeasured_ttfb > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "unmeasured_ttfb",
                "must be above zero and at most an hour",
            ));
        }
        if !(self.error_penalty.is_finite() && (0.0..=1000.0).contains(&self.error_penalty)) {
            return Err(ConfigError::new(
                "error_penalty",
                format!("{} is not a number in [0, 1000]", self.error_penalty),
            ));
        }
        if self.error_decay.is_zero() || self.error_decay > Duration::from_secs(86_400) {
            return Err(ConfigError::new(
                "error_decay",
                "must be above zero and at most a day",
            ));
        }
        self.failover().validate()
    }

    pub(crate) fn failover(&self) -> Failover {
        Failover {
            attempt_timeout: self.attempt_timeout,
            total_timeout: self.total_timeout,
            max_attempts: self.max_attempts,
            max_ready_wait: self.max_ready_wait,
            ramp_refresh: self.ramp_refresh,
        }
    }
}

/// Configuration of a [`Fallback`](crate::Fallback) chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FallbackConfig {
    /// Time allowed for one attempt (until the response headers). Default: none.
    #[serde(with = "duration_serde::option")]
    pub attempt_timeout: Option<Duration>,
    /// Time allowed for the whole request across attempts. Default: none (a
    /// [`Deadline`](tower_failover_core::Deadline) on the request still applies).
    /// Behind `tower_failover`'s model routing it also spans a model's fallback
    /// groups: a fallback group gets what is left.
    #[serde(with = "duration_serde::option")]
    pub total_timeout: Option<Duration>,
    /// Most attempts per request (attempts shed by a breaker or ramp do not count).
    /// Default: none (each provider of the chain at most once). Behind
    /// `tower_failover`'s model routing it counts per model group: each fallback
    /// group may make as many.
    pub max_attempts: Option<u32>,
    /// How long to wait for a provider that is not dead but not ready either, when
    /// no other provider is left. Default 1 s; zero fails at once.
    #[serde(with = "duration_serde")]
    pub max_ready_wait: Duration,
    /// How often the list of providers under a recovery ramp is refreshed.
    /// Default 100 ms.
    #[serde(with = "duration_serde")]
    pub ramp_refresh: Duration,
    /// Where a request that exceeded a model's context window goes next. Behind
    /// `tower_failover`'s model routing over several model groups it is refused:
    /// the model's own fallbacks do this there.
    pub context_window_fallback: Option<ProviderId>,
    /// Where a request refused by a content policy goes next (refused under model
    /// routing over several groups, as above).
    pub content_policy_fallback: Option<ProviderId>,
    /// Seed of the random choices (recovery-ramp sampling; default: from entropy).
    pub seed: Option<u64>,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            attempt_timeout: None,
            total_timeout: None,
            max_attempts: None,
            max_ready_wait: Duration::from_secs(1),
            ramp_refresh: Duration::from_millis(100),
            context_window_fallback: None,
            content_policy_fallback: None,
            seed: None,
        }
    }
}

impl FallbackConfig {
    setter!(
        /// Sets [`attempt_timeout`](FallbackConfig::attempt_timeout).
        attempt_timeout: Option<Duration>
    );
    setter!(
        /// Sets [`total_timeout`](FallbackConfig::total_timeout).
        total_timeout: Option<Duration>
    );
    setter!(
        /// Sets [`max_attempts`](FallbackConfig::max_attempts).
        max_attempts: Option<u32>
    );
    setter!(
        /// Sets [`max_ready_wait`](FallbackConfig::max_ready_wait).
        max_ready_wait: Duration
    );
    setter!(
        /// Sets [`ramp_refresh`](FallbackConfig::ramp_refresh).
        ramp_refresh: Duration
    );
    setter!(
        /// Sets [`context_window_fallback`](FallbackConfig::context_window_fallback).
        context_window_fallback: Option<ProviderId>
    );
    setter!(
        /// Sets [`content_policy_fallback`](FallbackConfig::content_policy_fallback).
        content_policy_fallback: Option<ProviderId>
    );
    setter!(
        /// Sets [`seed`](FallbackConfig::seed).
        seed: Option<u64>
    );

    /// Refuses invalid values, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.failover().validate()
    }

    pub(crate) fn failover(&self) -> Failover {
        Failover {
            attempt_timeout: self.attempt_timeout,
            total_timeout: self.total_timeout,
            max_attempts: self.max_attempts,
            max_ready_wait: self.max_ready_wait,
            ramp_refresh: self.ramp_refresh,
        }
    }
}

/// The settings both routers share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Failover {
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) total_timeout: Option<Duration>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) max_ready_wait: Duration,
    pub(crate) ramp_refresh: Duration,
}

impl Failover {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.attempt_timeout.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new("attempt_timeout", "must be above zero"));
        }
        if self.total_timeout.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new("total_timeout", "must be above zero"));
        }
        if self.max_attempts == Some(0) {
            return Err(ConfigError::new("max_attempts", "must be at least 1"));
        }
        if self.max_ready_wait > Duration::from_secs(3600) {
            return Err(ConfigError::new("max_ready_wait", "longer than an hour"));
        }
        if self.ramp_refresh > Duration::from_secs(60) {
            return Err(ConfigError::new("ramp_refresh", "longer than a minute"));
        }
        Ok(())
    }
}

/// How the internal router chooses (the balancer's policy, or the ordered chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    LeastLoaded,
    Cheapest,
    RoundRobin,
    Ordered,
}

/// Everything the router reads per request, resolved once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Settings {
    pub(crate) strategy: Strategy,
    pub(crate) weighting: Weighting,
    pub(crate) latency_buffer: f64,
    pub(crate) cheapest_within_ns: f64,
    pub(crate) unmeasured_ns: f64,
    /// The health score's weight of the error rate (0: off).
    pub(crate) error_penalty: f64,
    /// How fast the error rate fades, in nanoseconds.
    pub(crate) error_decay_ns: f64,
    pub(crate) failover: Failover,
}

impl Settings {
    pub(crate) fn balance(c: &BalanceConfig) -> Settings {
        Settings {
            strategy: match c.policy {
                Policy::LeastLoaded => Strategy::LeastLoaded,
                Policy::Cheapest => Strategy::Cheapest,
                Policy::RoundRobin => Strategy::RoundRobin,
            },
            weighting: c.weighting,
            latency_buffer: c.latency_buffer,
            cheapest_within_ns: c.cheapest_within.as_nanos() as f64,
            unmeasured_ns: c.unmeasured_ttfb.as_nanos() as f64,
            error_penalty: c.error_penalty,
            error_decay_ns: c.error_decay.as_nanos() as f64,
            failover: c.failover(),
        }
    }

    pub(crate) fn fallback(c: &FallbackConfig) -> Settings {
        Settings {
            strategy: Strategy::Ordered,
            weighting: Weighting::Static,
            latency_buffer: 0.0,
            cheapest_within_ns: 0.0,
            unmeasured_ns: 5e8,
            error_penalty: 0.0,
            error_decay_ns: 0.0,
            failover: c.failover(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip() {
        BalanceConfig::default().validate().unwrap();
        FallbackConfig::default().validate().unwrap();
        let c = BalanceConfig::default()
            .policy(Policy::Cheapest)
            .attempt_timeout(Duration::from_secs(3))
            .seed(9);
        let json = serde_json::to_string(&c).unwrap();
        let back: BalanceConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let f: FallbackConfig =
            serde_json::from_str(r#"{"total_timeout": 2.5, "max_attempts": 2}"#).unwrap();
        assert_eq!(f.total_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(f.max_attempts, Some(2));
    }

    #[test]
    fn invalid_values_name_their_field() {
        let cases: Vec<(BalanceConfig, &str)> = vec![
            (
                BalanceConfig::default().latency_buffer(f64::NAN),
                "latency_buffer",
            ),
            (
                BalanceConfig::default().unmeasured_ttfb(Duration::ZERO),
                "unmeasured_ttfb",
            ),
            (
                BalanceConfig::default().attempt_timeout(Duration::ZERO),
                "attempt_timeout",
            ),
            (
                BalanceConfig::default().total_timeout(Duration::ZERO),
                "total_timeout",
            ),
            (BalanceConfig::default().max_attempts(0), "max_attempts"),
            (
                BalanceConfig::default().cheapest_within(Duration::from_secs(7200)),
                "cheapest_within",
            ),
        ];
        for (c, field) in cases {
            assert_eq!(c.validate().unwrap_err().field(), field);
        }
        let err = serde_json::from_str::<BalanceConfig>(r#"{"polcy": "cheapest"}"#).unwrap_err();
        assert!(err.to_string().contains("polcy"), "{err}");
        assert!(serde_json::from_str::<BalanceConfig>(r#"{"policy": "fastest"}"#).is_err());
    }
}
