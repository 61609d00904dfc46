//! Metrics through the [`metrics`](https://docs.rs/metrics) facade, behind the
//! `metrics` feature: pick any exporter (Prometheus, StatsD, OpenTelemetry) by
//! installing its recorder; with the feature off every handle here is an empty type
//! and every call compiles to nothing.
//!
//! The layers record where the knowledge is: each [`Health`](crate::Health) owns a
//! [`ProviderMetrics`] with the handles of its provider and model, registered once
//! when the handle is made, so recording on the hot path is an atomic add through a
//! handle, never a lookup and never an allocation. **Install the recorder before
//! building the stack**: handles registered before a recorder exists stay no-ops
//! (the `metrics` crate's rule).
//!
//! # The metrics
//!
//! Every per-provider metric has the labels `provider` and `model`.
//!
//! | name | type | extra labels | recorded by | what it counts |
//! | --- | --- | --- | --- | --- |
//! | `tower_failover_requests_total` | counter | `outcome`, `kind` | core (observe, and the layers that shed) | attempts at a provider by outcome: `success`, `failure` (`kind`: `connect`, `reset`, `timeout`, `status`, `overloaded`, `credentials`, `billing`, `other`), `rate_limited`, `rejected` (`kind`: `invalid_json`, `shape`, `error_object`, `empty`, `truncated`, `refusal`, `schema`, `custom`), `shed` (refused by a layer, never sent), `client_error` (`kind`: `context_window_exceeded`, `content_policy`, `auth`, `status`); `kind` is `none` where there is none |
//! | `tower_failover_circuit_refusals_total` | counter | | circuit | requests the open circuit refused |
//! | `tower_failover_circuit_state` | gauge | | core (every transition, override and change from another replica) | 0 closed, 1 open, 2 half-open (the effective state) |
//! | `tower_failover_circuit_transitions_total` | counter | `to` | core | breaker transitions into `closed`, `open`, `half_open` |
//! | `tower_failover_ramp_share_ratio` | gauge | | core (set by the ramp) | share of traffic the recovery ramp admits, 0 to 1 (1 when no ramp runs) |
//! | `tower_failover_rate_limit_windows_total` | counter | | core (observe, overflow) | rate-limit windows opened or extended for the provider's quota group |
//! | `tower_failover_time_to_first_byte_seconds` | histogram | | observe | time to the first body byte of answers |
//! | `tower_failover_request_duration_seconds` | histogram | | observe | attempt time to the end of the answer's body |
//! | `tower_failover_prompt_tokens_total` | counter | | provider (usage) | prompt tokens the provider reported |
//! | `tower_failover_completion_tokens_total` | counter | | provider (usage) | completion tokens the provider reported |
//! | `tower_failover_cost_microunits_total` | counter | | provider (usage) | cost in millionths of the price's currency unit |
//! | `tower_failover_failovers_total` | counter | `from`, `to` (`provider/model`, instead of `provider` and `model`) | balance, fallback, overflow | a request that failed at `from` and was sent on to `to` |
//! | `tower_failover_retries_total` | counter | | retry ([`SameProviderRetry`]) | same-provider retries (no provider labels) |
//! | `tower_failover_hedges_total` | counter | | retry (`HedgeLayer`) | hedge attempts sent (no provider labels) |
//! | `tower_failover_retry_budget_exhausted_total` | counter | | balance, fallback, overflow, retry | retries refused by the retry budget (no provider labels) |
//! | `tower_failover_all_providers_failed_total` | counter | | balance, fallback, overflow | requests no provider could serve (no provider labels) |
//! | `tower_failover_wait_queue_depth` | gauge | | retry (`WaitQueueLayer`) | requests waiting for a recovery |
//! | `tower_failover_wait_queue_waits_total` | counter | `result` | retry (`WaitQueueLayer`) | waits by how they ended: `served`, `expired`, `full` |
//! | `tower_failover_deferred_jobs_total` | counter | `result` | retry (`Deferred`) | deferred jobs: `accepted`, `done`, `failed`, `full` (refused: the store held its most jobs or bytes) |
//! | `tower_failover_gateway_requests_total` | counter | `route`, `status`, `caller` (no provider labels) | the gateway | answers callers got, by route (`other` for unknown paths), status code and caller key name (`anonymous` without a valid key) |
//!
//! [`SameProviderRetry`]: https://docs.rs/tower-failover-retry
//!
//! ```
//! use tower_failover_core::{Health, Outcome};
//!
//! // With a recorder installed (the `metrics` feature on), this is one atomic add
//! // to `tower_failover_requests_total{provider="openai",model="gpt-4o-mini",
//! // outcome="success",kind="none"}`; without, nothing at all.
//! let health = Health::standalone("openai", "gpt-4o-mini");
//! health.record(&Outcome::Success);
//! health.metrics().circuit_refused();
//! ```

use std::fmt;
#[cfg(feature = "metrics")]
use std::sync::Mutex;
use std::time::Duration;

use crate::health::{CircuitState, ProviderId};
use crate::outcome::{ClientErrorKind, FailureKind, Outcome, RejectKind};

/// The metric names, one constant each (see the [module documentation](self)).
pub mod names {
    /// Attempts at a provider by outcome (counter).
    pub const REQUESTS: &str = "tower_failover_requests_total";
    /// Requests an open circuit refused (counter).
    pub const CIRCUIT_REFUSALS: &str = "tower_failover_circuit_refusals_total";
    /// The effective circuit state: 0 closed, 1 open, 2 half-open (gauge).
    pub const CIRCUIT_STATE: &str = "tower_failover_circuit_state";
    /// Breaker transitions by target state (counter).
    pub const CIRCUIT_TRANSITIONS: &str = "tower_failover_circuit_transitions_total";
    /// The recovery ramp's share, 0 to 1 (gauge).
    pub const RAMP_SHARE: &str = "tower_failover_ramp_share_ratio";
    /// Rate-limit windows opened or extended (counter).
    pub const RATE_LIMIT_WINDOWS: &str = "tower_failover_rate_limit_windows_total";
    /// Time to the first body byte (histogram, seconds).
    pub const TTFB: &str = "tower_failover_time_to_first_byte_seconds";
    /// Attempt time to the end of the body (histogram, seconds).
    pub const DURATION: &str = "tower_failover_request_duration_seconds";
    /// Prompt tokens (counter).
    pub const PROMPT_TOKENS: &str = "tower_failover_prompt_tokens_total";
    /// Completion tokens (counter).
    pub const COMPLETION_TOKENS: &str = "tower_failover_completion_tokens_total";
    /// Cost in millionths of the currency unit (counter).
    pub const COST: &str = "tower_failover_cost_microunits_total";
    /// Failovers from one provider to another (counter).
    pub const FAILOVERS: &str = "tower_failover_failovers_total";
    /// Same-provider retries (counter).
    pub const RETRIES: &str = "tower_failover_retries_total";
    /// Hedge attempts (counter).
    pub const HEDGES: &str = "tower_failover_hedges_total";
    /// Retries the retry budget refused (counter).
    pub const BUDGET_EXHAUSTED: &str = "tower_failover_retry_budget_exhausted_total";
    /// Requests no provider could serve (counter).
    pub const ALL_FAILED: &str = "tower_failover_all_providers_failed_total";
    /// Requests waiting in the wait queue (gauge).
    pub const QUEUE_DEPTH: &str = "tower_failover_wait_queue_depth";
    /// Waits in the wait queue by result (counter).
    pub const QUEUE_WAITS: &str = "tower_failover_wait_queue_waits_total";
    /// Deferred jobs by result (counter).
    pub const DEFERRED: &str = "tower_failover_deferred_jobs_total";

    /// Answers of the gateway by route and status (counter; recorded by the
    /// gateway, not the layers).
    pub const GATEWAY_REQUESTS: &str = "tower_failover_gateway_requests_total";

    /// Every name above.
    pub const ALL: [&str; 20] = [
        REQUESTS,
        CIRCUIT_REFUSALS,
        CIRCUIT_STATE,
        CIRCUIT_TRANSITIONS,
        RAMP_SHARE,
        RATE_LIMIT_WINDOWS,
        TTFB,
        DURATION,
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
        COST,
        FAILOVERS,
        RETRIES,
        HEDGES,
        BUDGET_EXHAUSTED,
        ALL_FAILED,
        QUEUE_DEPTH,
        QUEUE_WAITS,
        DEFERRED,
        GATEWAY_REQUESTS,
    ];
}

/// A counter handle: the facade's when the `metrics` feature is on, nothing when it
/// is off.
#[derive(Clone)]
pub struct Counter {
    #[cfg(feature = "metrics")]
    inner: ::metrics::Counter,
}

impl Counter {
    /// Registers `name` with `labels` in the current recorder (a no-op handle when
    /// none is installed, or the feature is off).
    pub fn register(name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        #[cfg(feature = "metrics")]
        {
            Counter {
                inner: ::metrics::counter!(name, to_labels(labels)),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (name, labels);
            Counter {}
        }
    }

    /// Adds `n`.
    #[inline]
    pub fn increment(&self, n: u64) {
        #[cfg(feature = "metrics")]
        self.inner.increment(n);
        #[cfg(not(feature = "metrics"))]
        let _ = n;
    }
}

/// A gauge handle (see [`Counter`]).
#[derive(Clone)]
pub struct Gauge {
    #[cfg(feature = "metrics")]
    inner: ::metrics::Gauge,
}

impl Gauge {
    /// Registers `name` with `labels` in the current recorder.
    pub fn register(name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        #[cfg(feature = "metrics")]
        {
            Gauge {
                inner: ::metrics::gauge!(name, to_labels(labels)),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (name, labels);
            Gauge {}
        }
    }

    /// Sets the value.
    #[inline]
    pub fn set(&self, value: f64) {
        #[cfg(feature = "metrics")]
        self.inner.set(value);
        #[cfg(not(feature = "metrics"))]
        let _ = value;
    }

    /// Adds `delta` (negative to subtract).
    #[inline]
    pub fn add(&self, delta: f64) {
        #[cfg(feature = "metrics")]
        self.inner.increment(delta);
        #[cfg(not(feature = "metrics"))]
        let _ = delta;
    }
}

/// A histogram handle (see [`Counter`]).
#[derive(Clone)]
pub struct Histogram {
    #[cfg(feature = "metrics")]
    inner: ::metrics::Histogram,
}

impl Histogram {
    /// Registers `name` with `labels` in the current recorder.
    pub fn register(name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        #[cfg(feature = "metrics")]
        {
            Histogram {
                inner: ::metrics::histogram!(name, to_labels(labels)),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = (name, labels);
            Histogram {}
        }
    }

    /// Records a duration, in seconds.
    #[inline]
    pub fn record_duration(&self, d: Duration) {
        #[cfg(feature = "metrics")]
        self.inner.record(d.as_secs_f64());
        #[cfg(not(feature = "metrics"))]
        let _ = d;
    }
}

/// Adds one to the unlabelled counter `name` in the current recorder, looked up at
/// each call: for events off the happy path (a failover's aftermath, a budget
/// refusal, a hedge), where registering a handle up front is not worth it.
#[inline]
pub fn count(name: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(name).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = name;
}

/// Adds one to the counter `name` with the label `result`, looked up at each call
/// (see [`count`]).
pub fn count_result(name: &'static str, result: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(name, "result" => result).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, result);
}

/// Adds `delta` to the unlabelled gauge `name`, looked up at each call (see
/// [`count`]).
pub fn gauge_add(name: &'static str, delta: f64) {
    #[cfg(feature = "metrics")]
    ::metrics::gauge!(name).increment(delta);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, delta);
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Counter")
    }
}

impl fmt::Debug for Gauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Gauge")
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Histogram")
    }
}

#[cfg(feature = "metrics")]
fn to_labels(labels: &[(&'static str, &str)]) -> Vec<::metrics::Label> {
    labels
        .iter()
        .map(|(k, v)| ::metrics::Label::new(*k, (*v).to_owned()))
        .collect()
}

/// The provider a request last failed at before it reached a router, in its
/// extensions: the model router sets it when it moves a request on to a fallback
/// group, so that the group's router counts the failover from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedOver(pub ProviderId);

/// The `outcome` and `kind` labels of every outcome, in the order of
/// [`outcome_slot`].
#[cfg_attr(not(any(feature = "metrics", test)), allow(dead_code))]
const OUTCOMES: [(&str, &str); 24] = [
    ("success", "none"),
    ("failure", "connect"),
    ("failure", "reset"),
    ("failure", "timeout"),
    ("failure", "status"),
    ("failure", "overloaded"),
    ("failure", "credentials"),
    ("failure", "billing"),
    ("failure", "other"),
    ("rate_limited", "none"),
    ("rejected", "invalid_json"),
    ("rejected", "shape"),
    ("rejected", "error_object"),
    ("rejected", "empty"),
    ("rejected", "truncated"),
    ("rejected", "refusal"),
    ("rejected", "schema"),
    ("rejected", "custom"),
    ("shed", "none"),
    ("client_error", "context_window_exceeded"),
    ("client_error", "content_policy"),
    ("client_error", "auth"),
    ("client_error", "status"),
    ("client_error", "unsupported"),
];

/// Where an outcome's counter is in [`OUTCOMES`].
fn outcome_slot(outcome: &Outcome) -> usize {
    match outcome {
        Outcome::Success => 0,
        Outcome::Failure { kind } => match kind {
            FailureKind::Connect => 1,
            FailureKind::Reset => 2,
            FailureKind::Timeout => 3,
            FailureKind::Status(_) => 4,
            FailureKind::Overloaded => 5,
            FailureKind::Credentials => 6,
            FailureKind::Billing => 7,
            FailureKind::Other => 8,
        },
        Outcome::RateLimited { .. } => 9,
        Outcome::Rejected { kind } => match kind {
            RejectKind::InvalidJson => 10,
            RejectKind::Shape => 11,
            RejectKind::ErrorObject => 12,
            RejectKind::Empty => 13,
            RejectKind::Truncated => 14,
            RejectKind::Refusal => 15,
            RejectKind::Schema => 16,
            RejectKind::Custom => 17,
            RejectKind::Shed => 18,
        },
        Outcome::ClientError { kind } => match kind {
            ClientErrorKind::ContextWindowExceeded => 19,
            ClientErrorKind::ContentPolicy => 20,
            ClientErrorKind::Auth => 21,
            ClientErrorKind::Status(_) => 22,
            ClientErrorKind::Unsupported => 23,
        },
    }
}

/// The label value of a circuit state (`closed`, `open`, `half_open`).
fn state_label(state: CircuitState) -> &'static str {
    match state {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "half_open",
    }
}

/// The metric handles of one provider and model, owned by its
/// [`Health`](crate::Health) ([`Health::metrics`](crate::Health::metrics)) and
/// registered when the handle is made. With the `metrics` feature off it is empty
/// and every method does nothing.
pub struct ProviderMetrics {
    #[cfg(feature = "metrics")]
    on: On,
}

#[cfg(feature = "metrics")]
struct On {
    id: ProviderId,
    outcomes: Box<[Counter]>,
    circuit_refusals: Counter,
    circuit_state: Gauge,
    circuit_transitions: [Counter; 3],
    ramp_share: Gauge,
    rate_limit_windows: Counter,
    ttfb: Histogram,
    duration: Histogram,
    prompt_tokens: Counter,
    completion_tokens: Counter,
    cost: Counter,
    /// Registered at the first failover from each provider (off the happy path).
    failovers: Mutex<Vec<(ProviderId, Counter)>>,
}

impl ProviderMetrics {
    /// Registers the handles of `id` in the current recorder, with the circuit
    /// closed and the ramp share at 1.
    pub fn new(id: &ProviderId) -> ProviderMetrics {
        #[cfg(feature = "metrics")]
        {
            let base = [("provider", id.provider()), ("model", id.model())];
            let plain = |name| Counter::register(name, &base);
            let outcomes = OUTCOMES
                .iter()
                .map(|(outcome, kind)| {
                    Counter::register(
                        names::REQUESTS,
                        &[base[0], base[1], ("outcome", outcome), ("kind", kind)],
                    )
                })
                .collect();
            let transition = |state| {
                Counter::register(
                    names::CIRCUIT_TRANSITIONS,
                    &[base[0], base[1], ("to", state_label(state))],
                )
            };
            let on = On {
                id: id.clone(),
                outcomes,
                circuit_refusals: plain(names::CIRCUIT_REFUSALS),
                circuit_state: Gauge::register(names::CIRCUIT_STATE, &base),
                circuit_transitions: [
                    transition(CircuitState::Closed),
                    transition(CircuitState::Open),
                    transition(CircuitState::HalfOpen),
                ],
                ramp_share: Gauge::register(names::RAMP_SHARE, &base),
                rate_limit_windows: plain(names::RATE_LIMIT_WINDOWS),
                ttfb: Histogram::register(names::TTFB, &base),
                duration: Histogram::register(names::DURATION, &base),
                prompt_tokens: plain(names::PROMPT_TOKENS),
                completion_tokens: plain(names::COMPLETION_TOKENS),
                cost: plain(names::COST),
                failovers: Mutex::new(Vec::new()),
            };
            on.circuit_state.set(0.0);
            on.ramp_share.set(1.0);
            ProviderMetrics { on }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = id;
            ProviderMetrics {}
        }
    }

    /// Counts one attempt's outcome.
    #[inline]
    pub fn outcome(&self, outcome: &Outcome) {
        #[cfg(feature = "metrics")]
        if let Some(c) = self.on.outcomes.get(outcome_slot(outcome)) {
            c.increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = outcome_slot(outcome);
    }

    /// Counts a request the open circuit refused.
    #[inline]
    pub fn circuit_refused(&self) {
        #[cfg(feature = "metrics")]
        self.on.circuit_refusals.increment(1);
    }

    /// Sets the circuit-state gauge to `effective` and, for a breaker
    /// transition, counts it (`to`).
    pub fn circuit(&self, effective: CircuitState, to: Option<CircuitState>) {
        #[cfg(feature = "metrics")]
        {
            self.on.circuit_state.set(f64::from(effective as u8));
            if let Some(to) = to {
                self.on.circuit_transitions[to as usize].increment(1);
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (state_label(effective), to);
    }

    /// Sets the ramp-share gauge (0 to 1).
    pub fn ramp_share(&self, share: f64) {
        #[cfg(feature = "metrics")]
        self.on.ramp_share.set(share);
        #[cfg(not(feature = "metrics"))]
        let _ = share;
    }

    /// Counts a rate-limit window opened or extended.
    pub fn rate_limit_window(&self) {
        #[cfg(feature = "metrics")]
        self.on.rate_limit_windows.increment(1);
    }

    /// Records a time to first byte.
    #[inline]
    pub fn ttfb(&self, d: Duration) {
        #[cfg(feature = "metrics")]
        self.on.ttfb.record_duration(d);
        #[cfg(not(feature = "metrics"))]
        let _ = d;
    }

    /// Records an attempt's duration to the end of its body.
    #[inline]
    pub fn duration(&self, d: Duration) {
        #[cfg(feature = "metrics")]
        self.on.duration.record_duration(d);
        #[cfg(not(feature = "metrics"))]
        let _ = d;
    }

    /// Adds token usage and cost (millionths of the currency unit).
    pub fn usage(&self, prompt_tokens: u64, completion_tokens: u64, cost_micros: u64) {
        #[cfg(feature = "metrics")]
        {
            self.on.prompt_tokens.increment(prompt_tokens);
            self.on.completion_tokens.increment(completion_tokens);
            self.on.cost.increment(cost_micros);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (prompt_tokens, completion_tokens, cost_micros);
    }

    /// Counts a failover from `from` to this provider: a request that failed at
    /// `from` is being sent here (registers the pair's counter the first time;
    /// failovers are off the happy path).
    pub fn failover_from(&self, from: &ProviderId) {
        #[cfg(feature = "metrics")]
        {
            let mut pairs = self
                .on
                .failovers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((_, c)) = pairs.iter().find(|(id, _)| id == from) {
                c.increment(1);
                return;
            }
            let source = from.to_string();
            let target = self.on.id.to_string();
            let c = Counter::register(names::FAILOVERS, &[("from", &source), ("to", &target)]);
            c.increment(1);
            pairs.push((from.clone(), c));
        }
        #[cfg(not(feature = "metrics"))]
        let _ = from;
    }
}

impl fmt::Debug for ProviderMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProviderMetrics")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_own_labels() {
        let outcomes = [
            Outcome::Success,
            Outcome::failure(FailureKind::Connect),
            Outcome::failure(FailureKind::Reset),
            Outcome::failure(FailureKind::Timeout),
            Outcome::failure(FailureKind::Status(503)),
            Outcome::failure(FailureKind::Overloaded),
            Outcome::failure(FailureKind::Credentials),
            Outcome::failure(FailureKind::Billing),
            Outcome::failure(FailureKind::Other),
            Outcome::RateLimited { retry_after: None },
            Outcome::rejected(RejectKind::InvalidJson),
            Outcome::rejected(RejectKind::Shape),
            Outcome::rejected(RejectKind::ErrorObject),
            Outcome::rejected(RejectKind::Empty),
            Outcome::rejected(RejectKind::Truncated),
            Outcome::rejected(RejectKind::Refusal),
            Outcome::rejected(RejectKind::Schema),
            Outcome::rejected(RejectKind::Custom),
            Outcome::rejected(RejectKind::Shed),
            Outcome::ClientError {
                kind: ClientErrorKind::ContextWindowExceeded,
            },
            Outcome::ClientError {
                kind: ClientErrorKind::ContentPolicy,
            },
            Outcome::ClientError {
                kind: ClientErrorKind::Auth,
            },
            Outcome::ClientError {
                kind: ClientErrorKind::Status(404),
            },
            Outcome::ClientError {
                kind: ClientErrorKind::Unsupported,
            },
        ];
        for (i, o) in outcomes.iter().enumerate() {
            assert_eq!(outcome_slot(o), i, "{o}");
            let (class, kind) = OUTCOMES[i];
            // The class label is the outcome's own name (shed is a class of its own).
            if !matches!(
                o,
                Outcome::Rejected {
                    kind: RejectKind::Shed
                }
            ) {
                assert_eq!(class, o.as_str(), "{o}");
            }
            if let Outcome::Failure { kind: k } = o {
                assert_eq!(kind, k.as_str());
            }
        }
        assert_eq!(state_label(CircuitState::HalfOpen), "half_open");
    }

    /// A recorder keeping every counter and gauge in an atomic by its key.
    #[cfg(feature = "metrics")]
    #[derive(Default)]
    struct Keep(Mutex<Vec<(String, std::sync::Arc<std::sync::atomic::AtomicU64>)>>);

    #[cfg(feature = "metrics")]
    impl Keep {
        fn slot(&self, key: &::metrics::Key) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let mut all = self.0.lock().unwrap();
            if let Some((_, a)) = all.iter().find(|(n, _)| *n == name) {
                return a.clone();
            }
            let a = std::sync::Arc::default();
            all.push((name, std::sync::Arc::clone(&a)));
            a
        }

        fn get(&self, name: &str) -> Option<u64> {
            let all = self.0.lock().unwrap();
            all.iter()
                .find(|(n, _)| n == name)
                .map(|(_, a)| a.load(std::sync::atomic::Ordering::Relaxed))
        }
    }

    #[cfg(feature = "metrics")]
    impl ::metrics::Recorder for Keep {
        fn describe_counter(
            &self,
            _: ::metrics::KeyName,
            _: Option<::metrics::Unit>,
            _: ::metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: ::metrics::KeyName,
            _: Option<::metrics::Unit>,
            _: ::metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: ::metrics::KeyName,
            _: Option<::metrics::Unit>,
            _: ::metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            key: &::metrics::Key,
            _: &::metrics::Metadata<'_>,
        ) -> ::metrics::Counter {
            ::metrics::Counter::from_arc(self.slot(key))
        }
        fn register_gauge(
            &self,
            key: &::metrics::Key,
            _: &::metrics::Metadata<'_>,
        ) -> ::metrics::Gauge {
            ::metrics::Gauge::from_arc(self.slot(key))
        }
        fn register_histogram(
            &self,
            _: &::metrics::Key,
            _: &::metrics::Metadata<'_>,
        ) -> ::metrics::Histogram {
            ::metrics::Histogram::noop()
        }
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn a_health_handle_records_into_the_recorder_it_was_made_under() {
        use crate::Health;
        let keep = Keep::default();
        let (a, b) = ::metrics::with_local_recorder(&keep, || {
            (Health::standalone("a", "m"), Health::standalone("b", "m"))
        });
        a.record(&Outcome::Success);
        a.record(&Outcome::Success);
        a.record(&Outcome::failure(FailureKind::Status(503)));
        a.record(&Outcome::rejected(RejectKind::Shed));
        a.record_usage(10, 3, 42);
        a.metrics().circuit_refused();
        let req = |o: &str, k: &str| {
            keep.get(&format!(
                "tower_failover_requests_total{{kind={k},model=m,outcome={o},provider=a}}"
            ))
        };
        assert_eq!(req("success", "none"), Some(2));
        assert_eq!(req("failure", "status"), Some(1));
        assert_eq!(req("shed", "none"), Some(1));
        assert_eq!(
            req("failure", "timeout"),
            Some(0),
            "every kind is registered"
        );
        let of = |name: &str| keep.get(&format!("{name}{{model=m,provider=a}}"));
        assert_eq!(of(names::PROMPT_TOKENS), Some(10));
        assert_eq!(of(names::COMPLETION_TOKENS), Some(3));
        assert_eq!(of(names::COST), Some(42));
        assert_eq!(of(names::CIRCUIT_REFUSALS), Some(1));

        // Gauges hold f64 bits.
        let gauge = |name: &str| of(name).map(f64::from_bits);
        assert_eq!(gauge(names::CIRCUIT_STATE), Some(0.0));
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        assert!(a.transition(CircuitState::Closed, CircuitState::Open, Some(until)));
        assert_eq!(gauge(names::CIRCUIT_STATE), Some(1.0));
        assert_eq!(
            keep.get("tower_failover_circuit_transitions_total{model=m,provider=a,to=open}"),
            Some(1)
        );
        a.force(Some(CircuitState::Closed));
        assert_eq!(
            gauge(names::CIRCUIT_STATE),
            Some(0.0),
            "the effective state"
        );
        a.set_ramp(Some(0), 250_000);
        assert_eq!(gauge(names::RAMP_SHARE), Some(0.25));
        assert!(a.mark_rate_limited(std::time::Duration::from_secs(2)));
        assert_eq!(of(names::RATE_LIMIT_WINDOWS), Some(1));

        // Failovers register their pair at the first one, under the same recorder.
        ::metrics::with_local_recorder(&keep, || b.metrics().failover_from(a.id()));
        b.metrics().failover_from(a.id());
        assert_eq!(
            keep.get("tower_failover_failovers_total{from=a/m,to=b/m}"),
            Some(2)
        );
    }
}
