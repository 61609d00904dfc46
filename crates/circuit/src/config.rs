//! What makes the circuit open, how long it stays open, and how it closes again.

use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use tower_failover_core::ConfigError;
use tower_failover_core::{FailureKind, duration_serde};

/// What an open circuit does to callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenMode {
    /// `poll_ready` stays ready and each call fails at once with
    /// [`CircuitOpen`](tower_failover_core::error::CircuitOpen), carrying the time
    /// left. For chains (fallback lists, retries) that must hear "not now" quickly.
    /// The default, because it can never make a caller wait.
    #[default]
    FailFast,
    /// `poll_ready` returns `Pending` while the circuit is open (and while every
    /// half-open probe permit is taken), and wakes the task when a probe is due or
    /// the state changes. For balancers, which then never pick this provider.
    GatePollReady,
}

/// The window of a rate-based trip policy.
///
/// Serialized as `{ "calls": 50 }` or `{ "time": "60s" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// The last `n` calls.
    Calls(u32),
    /// The calls of the last period, kept in ten buckets (so the window slides in
    /// steps of a tenth of its length).
    Time(#[serde(with = "duration_serde")] Duration),
}

/// Trip when this many failures happened within a time window (for example 5 in
/// 60 s).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureCount {
    /// How many (weighted) failures trip the circuit.
    pub failures: u32,
    /// Over how long.
    #[serde(with = "duration_serde")]
    pub window: Duration,
}

/// Trip when the share of failed calls in a window reaches `rate`, once the window
/// holds at least `min_calls` calls (for example 10 % of the last 50 calls, or 50 %
/// over 60 s with at least 10 calls).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureRate {
    /// The failure share that trips, in `(0, 1]`.
    pub rate: f64,
    /// The window.
    pub window: Window,
    /// The fewest calls the window must hold before the rate is trusted.
    pub min_calls: u32,
}

/// Trip when the share of slow calls in a window reaches `rate` (a call is slow when
/// its response took at least `threshold`), once the window holds at least
/// `min_calls` calls. A slow probe counts as a failed probe.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowCalls {
    /// A call whose response takes at least this long is slow.
    #[serde(with = "duration_serde")]
    pub threshold: Duration,
    /// The slow share that trips, in `(0, 1]`.
    pub rate: f64,
    /// The window.
    pub window: Window,
    /// The fewest calls the window must hold before the rate is trusted.
    pub min_calls: u32,
}

/// How much one failure of each kind counts, relative to an ordinary failure (1.0).
///
/// Weights let thresholds differ by kind without a threshold per kind and per
/// policy: with `consecutive_failures = 6`, a weight of 2 for `connect` opens the
/// circuit after three refused connections in a row, and a weight of 0.5 for
/// `timeout` waits for twelve timeouts. A weight of 0 makes the kind not count at
/// all. Every trip policy (consecutive, count in a window, failure rate) uses them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailureWeights {
    /// [`FailureKind::Connect`]: connection refused, DNS, TLS handshake.
    pub connect: f64,
    /// [`FailureKind::Reset`]: the connection broke after it was made.
    pub reset: f64,
    /// [`FailureKind::Timeout`]: a deadline passed.
    pub timeout: f64,
    /// [`FailureKind::Status`]: a 5xx or other unhealthy status.
    pub status: f64,
    /// [`FailureKind::Overloaded`]: 529 or an overload error.
    pub overloaded: f64,
    /// [`FailureKind::Credentials`]: the provider rejected the operator's key. 0
    /// ignores these failures altogether (the [`account`](CircuitConfig::account)
    /// rule included).
    pub credentials: f64,
    /// [`FailureKind::Billing`]: the provider refused the operator's account for
    /// billing. 0 ignores these failures altogether.
    pub billing: f64,
    /// [`FailureKind::Other`] and any future kind.
    pub other: f64,
}

impl Default for FailureWeights {
    fn default() -> Self {
        FailureWeights {
            connect: 1.0,
            reset: 1.0,
            timeout: 1.0,
            status: 1.0,
            overloaded: 1.0,
            credentials: 1.0,
            billing: 1.0,
            other: 1.0,
        }
    }
}

impl FailureWeights {
    /// The weight of `kind`.
    pub fn get(&self, kind: FailureKind) -> f64 {
        match kind {
            FailureKind::Connect => self.connect,
            FailureKind::Reset => self.reset,
            FailureKind::Timeout => self.timeout,
            FailureKind::Status(_) => self.status,
            FailureKind::Overloaded => self.overloaded,
            FailureKind::Credentials => self.credentials,
            FailureKind::Billing => self.billing,
            _ => self.other,
        }
    }

    /// Sets the weight of `kind` (every status code shares one weight).
    pub fn set(&mut self, kind: FailureKind, weight: f64) {
        match kind {
            FailureKind::Connect => self.connect = weight,
            FailureKind::Reset => self.reset = weight,
            FailureKind::Timeout => self.timeout = weight,
            FailureKind::Status(_) => self.status = weight,
            FailureKind::Overloaded => self.overloaded = weight,
            FailureKind::Credentials => self.credentials = weight,
            FailureKind::Billing => self.billing = weight,
            _ => self.other = weight,
        }
    }

    fn fields(&self) -> [(&'static str, f64); 8] {
        [
            ("weights.connect", self.connect),
            ("weights.reset", self.reset),
            ("weights.timeout", self.timeout),
            ("weights.status", self.status),
            ("weights.overloaded", self.overloaded),
            ("weights.credentials", self.credentials),
            ("weights.billing", self.billing),
            ("weights.other", self.other),
        ]
    }
}

/// How the circuit treats *account failures*: the provider rejected the operator's
/// credentials ([`FailureKind::Credentials`]: a revoked or rotated key) or refused
/// the account for billing ([`FailureKind::Billing`]).
///
/// These do not heal by themselves: a person must rotate the key or pay. One such
/// answer is therefore enough evidence, and probing every 30 s only sends more
/// requests that are sure to fail, so by default the first one opens the circuit at
/// once, whatever the trip policies say, for 5 min, doubling with each trip in a
/// row up to 30 min (jittered like every cooldown). Each such trip also emits a
/// [`HealthEventKind::CredentialsRejected`](tower_failover_core::HealthEventKind::CredentialsRejected)
/// or [`BillingFailed`](tower_failover_core::HealthEventKind::BillingFailed) event, and
/// the provider's snapshot shows `account_failure` while the circuit is open.
///
/// After the key is fixed, restart, or force the circuit closed
/// ([`Health::force`](tower_failover_core::Health::force)) instead of waiting.
///
/// ```toml
/// [circuit.account]
/// trip_at_once = true
/// cooldown = "5m"
/// max_cooldown = "30m"
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountFailures {
    /// Open the circuit on the first account failure (of non-zero
    /// [weight](FailureWeights)). With `false`, account failures count like any
    /// other, by their weights, towards the trip policies. Default true.
    pub trip_at_once: bool,
    /// The cooldown after a trip caused by an account failure (however it tripped).
    /// Default 5 min.
    #[serde(with = "duration_serde")]
    pub cooldown: Duration,
    /// The longest such cooldown, however many trips in a row. Default 30 min.
    #[serde(with = "duration_serde")]
    pub max_cooldown: Duration,
}

impl Default for AccountFailures {
    fn default() -> Self {
        AccountFailures {
            trip_at_once: true,
            cooldown: Duration::from_secs(300),
            max_cooldown: Duration::from_secs(1800),
        }
    }
}

/// The circuit breaker's configuration.
///
/// Every trip policy that is set applies: the circuit opens as soon as any of them
/// says so. Defaults: open after 5 consecutive failures, fail fast while open, cool
/// down 30 s doubling with each consecutive trip up to 5 min (jittered up to 20 %
/// shorter), one probe at a time while half-open, close after 3 successful probes,
/// one consecutive trip forgiven per 5 min spent closed. A malformed answer (not
/// JSON, the wrong envelope, an error object with a 200) counts as a failure; 429s
/// and answers that fail a content check (empty, truncated, refusal, schema) do not.
/// A rejected key or a billing failure opens the circuit
/// at once, for 5 min growing to 30 min ([`AccountFailures`]).
///
/// Deserializes from TOML or JSON; durations accept `"30s"`, `"500ms"` or seconds.
///
/// ```
/// use std::time::Duration;
/// use tower_failover_circuit::{CircuitConfig, OpenMode, Window};
/// use tower_failover_core::FailureKind;
///
/// let config: CircuitConfig = toml::from_str(r#"
///     mode = "gate_poll_ready"
///     consecutive_failures = 6
///     cooldown = "10s"
///     failure_rate = { rate = 0.5, window = { time = "60s" }, min_calls = 10 }
///     weights = { connect = 2.0, timeout = 0.5 }
/// "#).unwrap();
/// config.validate().unwrap();
/// assert_eq!(config.mode, OpenMode::GatePollReady);
/// assert_eq!(config.cooldown, Duration::from_secs(10));
///
/// // The same with the builder.
/// let built = CircuitConfig::default()
///     .mode(OpenMode::GatePollReady)
///     .consecutive_failures(6)
///     .cooldown(Duration::from_secs(10), Duration::from_secs(300))
///     .failure_rate(0.5, Window::Time(Duration::from_secs(60)), 10)
///     .weight(FailureKind::Connect, 2.0)
///     .weight(FailureKind::Timeout, 0.5);
/// assert_eq!(built, config);
///
/// // Invalid values are refused with the field's name.
/// let err = CircuitConfig::default().half_open(0, 3).validate().unwrap_err();
/// assert_eq!(err.field(), "half_open_permits");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitConfig {
    /// What an open circuit does to callers.
    pub mode: OpenMode,
    /// Open after this many (weighted) failures in a row; 0 turns the policy off.
    /// Default 5.
    pub consecutive_failures: u32,
    /// Open after this many failures within a time window.
    pub failures_in_window: Option<FailureCount>,
    /// Open when the failure share of a window reaches a rate.
    pub failure_rate: Option<FailureRate>,
    /// Open when the slow-call share of a window reaches a rate.
    pub slow_calls: Option<SlowCalls>,
    /// How much a failure of each kind counts.
    pub weights: FailureWeights,
    /// How rejected credentials and billing failures trip the circuit, and for how
    /// long (by default: at once, for 5 min growing to 30 min).
    pub account: AccountFailures,
    /// Count a 429 ([`Outcome::RateLimited`](tower_failover_core::Outcome::RateLimited))
    /// as a failure of weight 1. Default false: a rate limit is not an outage.
    pub rate_limited_is_failure: bool,
    /// Count a *malformed* answer (a rejection for which
    /// [`RejectKind::is_malformed`](tower_failover_core::RejectKind::is_malformed) is
    /// true: the body is not JSON, the envelope has the wrong shape, or an error
    /// object came with a 200) as a failure of weight 1, under every trip policy.
    /// Default true: a proxy's HTML error page or an empty body says the provider is
    /// broken whatever the prompt, and without this every caller would first be sent
    /// to it and retried elsewhere, spending the shared retry budget. With `false`,
    /// malformed answers follow [`rejected_is_failure`](Self::rejected_is_failure).
    pub malformed_is_failure: bool,
    /// Count any other failed validation or refusal
    /// ([`Outcome::Rejected`](tower_failover_core::Outcome::Rejected): empty or
    /// truncated output, a refusal, a schema mismatch, a custom check) as a failure
    /// of weight 1. Default false: these judge the content, which depends on the
    /// prompt. An attempt shed by another layer
    /// ([`RejectKind::Shed`](tower_failover_core::RejectKind::Shed)) never counts: it
    /// did not reach the provider.
    pub rejected_is_failure: bool,
    /// The cooldown after the first trip. Default 30 s.
    #[serde(with = "duration_serde")]
    pub cooldown: Duration,
    /// The longest cooldown, however many trips in a row. Default 5 min.
    #[serde(with = "duration_serde")]
    pub max_cooldown: Duration,
    /// Each cooldown is shortened by a random share of up to this fraction (seeded
    /// RNG), so replicas that tripped together do not probe together. Default 0.2.
    pub jitter: f64,
    /// Each period of this length spent closed forgives one consecutive trip, so the
    /// cooldown shrinks back. Default 5 min.
    #[serde(with = "duration_serde")]
    pub healthy_period: Duration,
    /// How many probes may be in flight while half-open. Default 1.
    pub half_open_permits: u32,
    /// How many successful probes in a row close the circuit. Default 3.
    pub success_threshold: u32,
    /// Count each call the open circuit refuses as a shed attempt in the provider's
    /// [`Health`](tower_failover_core::Health) counters. Default true. (Admitted
    /// calls are counted by [`ObserveLayer`](tower_failover_core::observe::ObserveLayer)
    /// below the breaker.)
    pub record_rejections: bool,
    /// The seed of the cooldown jitter; `None` draws one from entropy.
    pub seed: Option<u64>,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            mode: OpenMode::FailFast,
            consecutive_failures: 5,
            failures_in_window: None,
            failure_rate: None,
            slow_calls: None,
            weights: FailureWeights::default(),
            account: AccountFailures::default(),
            rate_limited_is_failure: false,
            malformed_is_failure: true,
            rejected_is_failure: false,
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(300),
            jitter: 0.2,
            healthy_period: Duration::from_secs(300),
            half_open_permits: 1,
            success_threshold: 3,
            record_rejections: true,
            seed: None,
        }
    }
}

/// The longest duration any setting accepts (one day): longer cooldowns or windows
/// are almost certainly typos, and bounding them keeps deadline arithmetic exact.
pub const MAX_DURATION: Duration = Duration::from_secs(86_400);
/// The largest call-count window.
pub const MAX_WINDOW_CALLS: u32 = 100_000;
/// The largest failure threshold or weight-adjusted count.
pub const MAX_THRESHOLD: u32 = 1_000_000;
/// The largest weight of one failure kind.
pub const MAX_WEIGHT: f64 = 1000.0;
/// The most half-open permits or required probe successes.
pub const MAX_PROBES: u32 = 0xFFFF;

impl CircuitConfig {
    /// Sets what an open circuit does to callers.
    pub fn mode(mut self, mode: OpenMode) -> Self {
        self.mode = mode;
        self
    }

    /// Opens after `n` (weighted) failures in a row; 0 turns the policy off.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n;
        self
    }

    /// Opens after `failures` failures within `window`.
    pub fn failures_in_window(mut self, failures: u32, window: Duration) -> Self {
        self.failures_in_window = Some(FailureCount { failures, window });
        self
    }

    /// Opens when the failure share of `window` reaches `rate`, once it holds at
    /// least `min_calls` calls.
    pub fn failure_rate(mut self, rate: f64, window: Window, min_calls: u32) -> Self {
        self.failure_rate = Some(FailureRate {
            rate,
            window,
            min_calls,
        });
        self
    }

    /// Opens when the share of calls slower than `threshold` in `window` reaches
    /// `rate`, once it holds at least `min_calls` calls.
    pub fn slow_calls(
        mut self,
        threshold: Duration,
        rate: f64,
        window: Window,
        min_calls: u32,
    ) -> Self {
        self.slow_calls = Some(SlowCalls {
            threshold,
            rate,
            window,
            min_calls,
        });
        self
    }

    /// Sets how much a failure of `kind` counts (1.0 is an ordinary failure).
    pub fn weight(mut self, kind: FailureKind, weight: f64) -> Self {
        self.weights.set(kind, weight);
        self
    }

    /// Sets how account failures (rejected credentials, billing) trip the circuit:
    /// at once or by the trip policies, and the cooldown they get (first, longest).
    pub fn account_failures(
        mut self,
        trip_at_once: bool,
        cooldown: Duration,
        max: Duration,
    ) -> Self {
        self.account = AccountFailures {
            trip_at_once,
            cooldown,
            max_cooldown: max,
        };
        self
    }

    /// Whether a 429 counts as a failure.
    pub fn rate_limited_is_failure(mut self, yes: bool) -> Self {
        self.rate_limited_is_failure = yes;
        self
    }

    /// Whether a malformed answer (not JSON, the wrong envelope, an error object
    /// with a 200) counts as a failure. Default true.
    pub fn malformed_is_failure(mut self, yes: bool) -> Self {
        self.malformed_is_failure = yes;
        self
    }

    /// Whether any other failed validation or refusal counts as a failure.
    pub fn rejected_is_failure(mut self, yes: bool) -> Self {
        self.rejected_is_failure = yes;
        self
    }

    /// Sets the first cooldown and the longest one.
    pub fn cooldown(mut self, base: Duration, max: Duration) -> Self {
        self.cooldown = base;
        self.max_cooldown = max;
        self
    }

    /// Sets the jitter fraction (0 turns jitter off).
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Sets the healthy period that forgives one consecutive trip.
    pub fn healthy_period(mut self, period: Duration) -> Self {
        self.healthy_period = period;
        self
    }

    /// Sets the half-open probe permits and the successes in a row that close.
    pub fn half_open(mut self, permits: u32, successes: u32) -> Self {
        self.half_open_permits = permits;
        self.success_threshold = successes;
        self
    }

    /// Whether refused calls are counted as shed in the provider's health counters.
    pub fn record_rejections(mut self, yes: bool) -> Self {
        self.record_rejections = yes;
        self
    }

    /// Seeds the cooldown jitter.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks every value, naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field: &'static str, reason: &'static str| Err(ConfigError::new(field, reason));
        if self.consecutive_failures > MAX_THRESHOLD {
            return err("consecutive_failures", "at most 1000000");
        }
        if self.consecutive_failures == 0
            && self.failures_in_window.is_none()
            && self.failure_rate.is_none()
            && self.slow_calls.is_none()
        {
            return err(
                "consecutive_failures",
                "every trip policy is off, so the circuit could never open",
            );
        }
        if let Some(p) = &self.failures_in_window {
            if p.failures == 0 || p.failures > MAX_THRESHOLD {
                return err("failures_in_window.failures", "must be in 1..=1000000");
            }
            check_time_window("failures_in_window.window", p.window)?;
        }
        if let Some(p) = &self.failure_rate {
            check_rate("failure_rate.rate", p.rate)?;
            check_window(
                "failure_rate.window",
                "failure_rate.min_calls",
                p.window,
                p.min_calls,
            )?;
        }
        if let Some(p) = &self.slow_calls {
            if p.threshold.is_zero() || p.threshold > MAX_DURATION {
                return err(
                    "slow_calls.threshold",
                    "must be more than 0 and at most 1 day",
                );
            }
            check_rate("slow_calls.rate", p.rate)?;
            check_window(
                "slow_calls.window",
                "slow_calls.min_calls",
                p.window,
                p.min_calls,
            )?;
        }
        for (field, w) in self.weights.fields() {
            if !(w.is_finite() && (0.0..=MAX_WEIGHT).contains(&w)) {
                return err(field, "must be a number in 0..=1000");
            }
        }
        if self.cooldown.is_zero() || self.cooldown > MAX_DURATION {
            return err("cooldown", "must be more than 0 and at most 1 day");
        }
        if self.max_cooldown < self.cooldown || self.max_cooldown > MAX_DURATION {
            return err(
                "max_cooldown",
                "must be at least cooldown and at most 1 day",
            );
        }
        let account = &self.account;
        if account.cooldown.is_zero() || account.cooldown > MAX_DURATION {
            return err("account.cooldown", "must be more than 0 and at most 1 day");
        }
        if account.max_cooldown < account.cooldown || account.max_cooldown > MAX_DURATION {
            return err(
                "account.max_cooldown",
                "must be at least account.cooldown and at most 1 day",
            );
        }
        if !(self.jitter.is_finite() && (0.0..1.0).contains(&self.jitter)) {
            return err("jitter", "must be a fraction in 0..1");
        }
        if self.healthy_period.is_zero() || self.healthy_period > MAX_DURATION {
            return err("healthy_period", "must be more than 0 and at most 1 day");
        }
        if self.half_open_permits == 0 || self.half_open_permits > MAX_PROBES {
            return err("half_open_permits", "must be in 1..=65535");
        }
        if self.success_threshold == 0 || self.success_threshold > MAX_PROBES {
            return err("success_threshold", "must be in 1..=65535");
        }
        Ok(())
    }
}

fn check_rate(field: &'static str, rate: f64) -> Result<(), ConfigError> {
    if rate.is_finite() && rate > 0.0 && rate <= 1.0 {
        Ok(())
    } else {
        Err(ConfigError::new(field, "must be a fraction in (0, 1]"))
    }
}

fn check_time_window(field: &'static str, window: Duration) -> Result<(), ConfigError> {
    if window < Duration::from_millis(10) || window > MAX_DURATION {
        Err(ConfigError::new(
            field,
            "must be at least 10ms and at most 1 day",
        ))
    } else {
        Ok(())
    }
}

fn check_window(
    field: &'static str,
    min_field: &'static str,
    window: Window,
    min_calls: u32,
) -> Result<(), ConfigError> {
    match window {
        Window::Calls(n) => {
            if n == 0 || n > MAX_WINDOW_CALLS {
                return Err(ConfigError::new(field, "calls must be in 1..=100000"));
            }
            if min_calls > n {
                return Err(ConfigError::new(
                    min_field,
                    "must not exceed the window's calls",
                ));
            }
        }
        Window::Time(d) => check_time_window(field, d)?,
    }
    if min_calls == 0 || min_calls > MAX_THRESHOLD {
        return Err(ConfigError::new(min_field, "must be in 1..=1000000"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented() {
        let c = CircuitConfig::default();
        c.validate().unwrap();
        assert_eq!(c.consecutive_failures, 5);
        assert_eq!(c.cooldown, Duration::from_secs(30));
        assert_eq!(c.max_cooldown, Duration::from_secs(300));
        assert_eq!(c.success_threshold, 3);
        assert!(!c.rate_limited_is_failure && !c.rejected_is_failure);
        assert!(c.malformed_is_failure);
        assert!(c.account.trip_at_once);
        assert_eq!(c.account.cooldown, Duration::from_secs(300));
        assert_eq!(c.account.max_cooldown, Duration::from_secs(1800));
        assert_eq!(c.weights.get(FailureKind::Credentials), 1.0);
        assert_eq!(c.weights.get(FailureKind::Billing), 1.0);
    }

    #[test]
    fn account_keys_read_from_toml() {
        let c: CircuitConfig = toml::from_str(
            r#"
            weights = { credentials = 0.0, billing = 2.0 }
            [account]
            trip_at_once = false
            cooldown = "10m"
            max_cooldown = "2h"
        "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c,
            CircuitConfig::default()
                .weight(FailureKind::Credentials, 0.0)
                .weight(FailureKind::Billing, 2.0)
                .account_failures(false, Duration::from_secs(600), Duration::from_secs(7200))
        );
        // A partial table keeps the other defaults; unknown keys are refused.
        let c: CircuitConfig = toml::from_str("account = { cooldown = \"1m\" }").unwrap();
        assert!(c.account.trip_at_once);
        assert_eq!(c.account.max_cooldown, Duration::from_secs(1800));
        assert!(toml::from_str::<CircuitConfig>("account = { cooldwn = \"1m\" }").is_err());
    }

    #[test]
    fn malformed_key_reads_from_toml() {
        let c: CircuitConfig =
            toml::from_str("malformed_is_failure = false\nrejected_is_failure = true").unwrap();
        c.validate().unwrap();
        assert_eq!(
            c,
            CircuitConfig::default()
                .malformed_is_failure(false)
                .rejected_is_failure(true)
        );
        assert!(toml::from_str::<CircuitConfig>("malformed_is_failure = \"yes\"").is_err());
        assert!(toml::from_str::<CircuitConfig>("malformed_is_falure = true").is_err());
    }

    #[test]
    fn json_round_trips_and_empty_is_default() {
        let c = CircuitConfig::default()
            .slow_calls(Duration::from_secs(8), 0.5, Window::Calls(20), 10)
            .failures_in_window(5, Duration::from_secs(60))
            .seed(9);
        let json = serde_json::to_string(&c).unwrap();
        let back: CircuitConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let empty: CircuitConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, CircuitConfig::default());
        assert!(serde_json::from_str::<CircuitConfig>(r#"{"cooldwn":"1s"}"#).is_err());
        assert!(serde_json::from_str::<CircuitConfig>(r#"{"cooldown":"soon"}"#).is_err());
    }

    #[test]
    fn refuses_bad_values_naming_the_field() {
        let cases: Vec<(CircuitConfig, &str)> = vec![
            (
                CircuitConfig::default().consecutive_failures(0),
                "consecutive_failures",
            ),
            (
                CircuitConfig::default().failure_rate(1.5, Window::Calls(50), 10),
                "failure_rate.rate",
            ),
            (
                CircuitConfig::default().failure_rate(0.1, Window::Calls(50), 60),
                "failure_rate.min_calls",
            ),
            (
                CircuitConfig::default().failure_rate(0.1, Window::Calls(0), 1),
                "failure_rate.window",
            ),
            (
                CircuitConfig::default().failure_rate(f64::NAN, Window::Calls(5), 1),
                "failure_rate.rate",
            ),
            (
                CircuitConfig::default().slow_calls(
                    Duration::ZERO,
                    0.5,
                    Window::Time(Duration::from_secs(1)),
                    1,
                ),
                "slow_calls.threshold",
            ),
            (
                CircuitConfig::default().slow_calls(
                    Duration::from_secs(1),
                    0.5,
                    Window::Time(Duration::from_millis(1)),
                    1,
                ),
                "slow_calls.window",
            ),
            (
                CircuitConfig::default().failures_in_window(0, Duration::from_secs(60)),
                "failures_in_window.failures",
            ),
            (
                CircuitConfig::default().weight(FailureKind::Timeout, -1.0),
                "weights.timeout",
            ),
            (
                CircuitConfig::default().weight(FailureKind::Status(503), f64::INFINITY),
                "weights.status",
            ),
            (
                CircuitConfig::default().cooldown(Duration::ZERO, Duration::from_secs(1)),
                "cooldown",
            ),
            (
                CircuitConfig::default().cooldown(Duration::from_secs(10), Duration::from_secs(5)),
                "max_cooldown",
            ),
            (
                CircuitConfig::default()
                    .cooldown(Duration::from_secs(10), Duration::from_secs(10 * 86_400)),
                "max_cooldown",
            ),
            (
                CircuitConfig::default().account_failures(
                    true,
                    Duration::ZERO,
                    Duration::from_secs(1),
                ),
                "account.cooldown",
            ),
            (
                CircuitConfig::default().account_failures(
                    true,
                    Duration::from_secs(600),
                    Duration::from_secs(60),
                ),
                "account.max_cooldown",
            ),
            (
                CircuitConfig::default().account_failures(
                    true,
                    Duration::from_secs(600),
                    Duration::from_secs(2 * 86_400),
                ),
                "account.max_cooldown",
            ),
            (
                CircuitConfig::default().weight(FailureKind::Billing, f64::NAN),
                "weights.billing",
            ),
            (CircuitConfig::default().jitter(1.0), "jitter"),
            (
                CircuitConfig::default().healthy_period(Duration::ZERO),
                "healthy_period",
            ),
            (
                CircuitConfig::default().half_open(0, 3),
                "half_open_permits",
            ),
            (
                CircuitConfig::default().half_open(1, 70_000),
                "success_threshold",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.field(), field, "{err}");
            assert!(err.to_string().contains(field));
        }
        // A windowed policy alone is enough.
        CircuitConfig::default()
            .consecutive_failures(0)
            .failures_in_window(5, Duration::from_secs(60))
            .validate()
            .unwrap();
    }
}
