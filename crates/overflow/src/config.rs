//! Configuration of the quota tracker and of the overflow router.
//!
//! Both are plain structs with defaults and builder methods, deserializable from
//! TOML or JSON (durations as `"30s"`, `"250ms"` or a number of seconds), and
//! checked by `validate()` with an error naming the field.
//!
//! ```
//! use std::time::Duration;
//! use tower_failover_overflow::{OverflowConfig, QuotaConfig};
//!
//! let quota: QuotaConfig = toml::from_str(r#"
//!     requests_per_minute = 500      # our share of a key used by others too
//!     window = "1m"
//!     [limits]
//!     max_wait = "2m"
//! "#).unwrap();
//! quota.validate().unwrap();
//! assert_eq!(quota.requests_per_minute, Some(500));
//!
//! let overflow: OverflowConfig = toml::from_str(r#"
//!     jitter = 0.2
//!     [pacing]
//!     capacity = 64
//!     max_wait = "3s"
//! "#).unwrap();
//! assert_eq!(overflow.pacing.max_wait, Duration::from_secs(3));
//! assert!(OverflowConfig::default().jitter(1.5).validate().is_err());
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tower_failover_core::{HeaderLimits, duration_serde};

use crate::error::ConfigError;

/// What a [`Quota`](crate::Quota) service does while its quota group is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitedMode {
    /// `poll_ready` stays ready and each call fails at once with
    /// [`RateLimited`](tower_failover_core::error::RateLimited), without sending.
    /// For routers and chains that must hear "not now" quickly. The default: it can
    /// never make a caller wait.
    #[default]
    FailFast,
    /// `poll_ready` returns `Pending` until the window ends (a timer wakes the task),
    /// so that a balancer polling readiness never picks this provider meanwhile.
    /// Calls that still arrive (without a fresh `poll_ready`) fail fast.
    GatePollReady,
}

/// How a [`QuotaTracker`](crate::QuotaTracker) models one quota group (one API key
/// or organisation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// A request budget of our own per minute (a local token bucket), on top of what
    /// the provider's headers say. For a key shared with other applications.
    /// Default: none.
    pub requests_per_minute: Option<u64>,
    /// A token budget of our own per minute, counted with estimated tokens (see
    /// [`EstimateTokens`](crate::EstimateTokens)). Default: none.
    pub tokens_per_minute: Option<u64>,
    /// The period of the limits the provider reports in its headers: a limit of
    /// `x-ratelimit-limit-requests: 500` refills at 500 per `window`. OpenAI and
    /// Anthropic report per-minute limits that refill continuously. Default: 60 s.
    #[serde(with = "duration_serde")]
    pub window: Duration,
    /// Mark the quota group limited as soon as the model says the next request would
    /// be refused, before any 429 (predictive overflow). With `false` the tracker
    /// only watches, and only real 429s close the group. Default: `true`.
    pub predictive: bool,
    /// Caps and defaults for the waits providers ask for (`Retry-After` and the
    /// reset headers): longer waits are clamped and logged; a 429 naming none waits
    /// `default_retry_after`.
    pub limits: HeaderLimits,
    /// What the per-provider service does while the group is limited.
    pub mode: LimitedMode,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            requests_per_minute: None,
            tokens_per_minute: None,
            window: Duration::from_secs(60),
            predictive: true,
            limits: HeaderLimits::default(),
            mode: LimitedMode::FailFast,
        }
    }
}

impl QuotaConfig {
    /// Sets a request budget per minute.
    pub fn requests_per_minute(mut self, rpm: u64) -> Self {
        self.requests_per_minute = Some(rpm);
        self
    }

    /// Sets a token budget per minute.
    pub fn tokens_per_minute(mut self, tpm: u64) -> Self {
        self.tokens_per_minute = Some(tpm);
        self
    }

    /// Sets the period of header-reported limits.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Turns predictive overflow on or off.
    pub fn predictive(mut self, yes: bool) -> Self {
        self.predictive = yes;
        self
    }

    /// Sets the caps on provider-requested waits.
    pub fn limits(mut self, limits: HeaderLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets what the service does while limited.
    pub fn mode(mut self, mode: LimitedMode) -> Self {
        self.mode = mode;
        self
    }

    /// Refuses zero budgets, a zero or absurd window, and inconsistent wait caps.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.requests_per_minute == Some(0) {
            return Err(ConfigError::new(
                "requests_per_minute",
                "must be at least 1 (leave it unset for no budget)",
            ));
        }
        if self.tokens_per_minute == Some(0) {
            return Err(ConfigError::new(
                "tokens_per_minute",
                "must be at least 1 (leave it unset for no budget)",
            ));
        }
        if self.window.is_zero() {
            return Err(ConfigError::new("window", "must be longer than zero"));
        }
        if self.window > Duration::from_secs(86_400) {
            return Err(ConfigError::new("window", "must be at most a day"));
        }
        if self.limits.max_wait.is_zero() {
            return Err(ConfigError::new(
                "limits.max_wait",
                "must be longer than zero",
            ));
        }
        if self.limits.default_retry_after > self.limits.max_wait {
            return Err(ConfigError::new(
                "limits.default_retry_after",
                "must not exceed limits.max_wait",
            ));
        }
        Ok(())
    }
}

/// The bounded queue that holds requests when every target is rate limited.
///
/// A waiting request sleeps until the earliest target it has not met yet is
/// expected back (the end of its window, plus this router's take-back jitter), then
/// tries again. With a [`QuotaLayer`](crate::QuotaLayer) in the target's stack,
/// each admission marks the group limited until the next request fits, so waiters
/// leave one at a time at the refill rate, just under the limit; without one,
/// every waiter is released when the window ends. Order among waiters released at
/// the same instant is not guaranteed to be first-in first-out; each is bounded by
/// `max_wait`. Targets that already answered a request 429 are never waited for on
/// its behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PacingConfig {
    /// How many requests may wait at once; more fail at once with
    /// [`REASON_QUEUE_FULL`](crate::error::REASON_QUEUE_FULL). Zero disables pacing:
    /// requests fail as soon as every target is limited. Default: 256.
    pub capacity: usize,
    /// The longest a request may wait (also capped by the request's
    /// [`Deadline`](tower_failover_core::Deadline)). A request whose earliest reset
    /// is further away fails at once with
    /// [`REASON_TOO_LONG`](crate::error::REASON_TOO_LONG). Default: 5 s.
    #[serde(with = "duration_serde")]
    pub max_wait: Duration,
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig {
            capacity: 256,
            max_wait: Duration::from_secs(5),
        }
    }
}

impl PacingConfig {
    /// No pacing: fail as soon as every target is limited.
    pub fn disabled() -> Self {
        PacingConfig {
            capacity: 0,
            max_wait: Duration::ZERO,
        }
    }
}

/// How the [`Overflow`](crate::Overflow) router moves traffic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverflowConfig {
    /// When a target's rate-limit window ends, this router takes it back only after
    /// a random extra delay of up to `jitter × window` (capped by `max_jitter`), so
    /// that a fleet of gateways does not return to the provider in the same
    /// millisecond. In `0..=1`. Default: 0.1.
    pub jitter: f64,
    /// The cap of that extra delay. Default: 2 s.
    #[serde(with = "duration_serde")]
    pub max_jitter: Duration,
    /// The window assumed for a 429 that names no wait, when this router marks the
    /// target's quota group itself (it does so quietly, in case no
    /// [`ObserveLayer`](tower_failover_core::observe::ObserveLayer) below did).
    /// Default: 1 s, like the observe layer's.
    #[serde(with = "duration_serde")]
    pub default_retry_after: Duration,
    /// The pacing queue.
    pub pacing: PacingConfig,
    /// Seed of the jitter (default: drawn from entropy). Set it for reproducible
    /// tests and drills.
    pub seed: Option<u64>,
}

impl Default for OverflowConfig {
    fn default() -> Self {
        OverflowConfig {
            jitter: 0.1,
            max_jitter: Duration::from_secs(2),
            default_retry_after: Duration::from_secs(1),
            pacing: PacingConfig::default(),
            seed: None,
        }
    }
}

impl OverflowConfig {
    /// Sets the take-back jitter as a fraction of the window.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Sets the cap of the take-back jitter.
    pub fn max_jitter(mut self, max: Duration) -> Self {
        self.max_jitter = max;
        self
    }

    /// Sets the window assumed for a 429 that names none.
    pub fn default_retry_after(mut self, wait: Duration) -> Self {
        self.default_retry_after = wait;
        self
    }

    /// Sets the pacing queue.
    pub fn pacing(mut self, pacing: PacingConfig) -> Self {
        self.pacing = pacing;
        self
    }

    /// Seeds the jitter.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Refuses a jitter outside `0..=1` and a pacing queue that cannot wait.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.jitter.is_finite() && (0.0..=1.0).contains(&self.jitter)) {
            return Err(ConfigError::new("jitter", "must be in 0..=1"));
        }
        if self.max_jitter > Duration::from_secs(3600) {
            return Err(ConfigError::new("max_jitter", "must be at most an hour"));
        }
        if self.default_retry_after > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "default_retry_after",
                "must be at most an hour",
            ));
        }
        if self.pacing.capacity > 0 && self.pacing.max_wait.is_zero() {
            return Err(ConfigError::new(
                "pacing.max_wait",
                "must be longer than zero when pacing.capacity is set (capacity 0 disables pacing)",
            ));
        }
        if self.pacing.max_wait > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "pacing.max_wait",
                "must be at most an hour",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        QuotaConfig::default().validate().unwrap();
        OverflowConfig::default().validate().unwrap();
        assert!(QuotaConfig::default().predictive);
        assert_eq!(OverflowConfig::default().pacing.capacity, 256);
    }

    #[test]
    fn refusals_name_the_field() {
        let cases: Vec<(Result<(), ConfigError>, &str)> = vec![
            (
                QuotaConfig::default().requests_per_minute(0).validate(),
                "requests_per_minute",
            ),
            (
                QuotaConfig::default().tokens_per_minute(0).validate(),
                "tokens_per_minute",
            ),
            (
                QuotaConfig::default().window(Duration::ZERO).validate(),
                "window",
            ),
            (
                QuotaConfig::default()
                    .limits(HeaderLimits {
                        max_wait: Duration::from_secs(1),
                        default_retry_after: Duration::from_secs(2),
                    })
                    .validate(),
                "limits.default_retry_after",
            ),
            (OverflowConfig::default().jitter(-0.1).validate(), "jitter"),
            (
                OverflowConfig::default().jitter(f64::NAN).validate(),
                "jitter",
            ),
            (
                OverflowConfig::default()
                    .pacing(PacingConfig {
                        capacity: 3,
                        max_wait: Duration::ZERO,
                    })
                    .validate(),
                "pacing.max_wait",
            ),
        ];
        for (result, field) in cases {
            let err = result.unwrap_err();
            assert_eq!(err.field(), field);
            assert!(err.to_string().contains(field), "{err}");
        }
        OverflowConfig::default()
            .pacing(PacingConfig::disabled())
            .validate()
            .unwrap();
    }

    #[test]
    fn json_accepts_numbers_and_strings_and_refuses_unknown_fields() {
        let c: QuotaConfig =
            serde_json::from_str(r#"{ "window": 30, "mode": "gate_poll_ready" }"#).unwrap();
        assert_eq!(c.window, Duration::from_secs(30));
        assert_eq!(c.mode, LimitedMode::GatePollReady);
        let c: OverflowConfig =
            serde_json::from_str(r#"{ "max_jitter": "500ms", "seed": 7 }"#).unwrap();
        assert_eq!(c.max_jitter, Duration::from_millis(500));
        assert_eq!(c.seed, Some(7));
        assert!(serde_json::from_str::<OverflowConfig>(r#"{ "jiter": 0.1 }"#).is_err());
        let back: OverflowConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
