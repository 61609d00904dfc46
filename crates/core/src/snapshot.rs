//! Serializable pictures of provider health, for `/health` endpoints and dashboards.

use serde::{Deserialize, Serialize};

use crate::health::CircuitState;
use crate::outcome::FailureKind;
use crate::store::StoreStatus;

/// Outcome counters of one provider since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Attempts recorded.
    pub requests: u64,
    /// Successes.
    pub successes: u64,
    /// Failures (counted against health).
    pub failures: u64,
    /// 429s.
    pub rate_limited: u64,
    /// Failed validations and refusals.
    pub rejected: u64,
    /// Client errors.
    pub client_errors: u64,
    /// Attempts shed before reaching the provider (ramp, open circuit).
    pub shed: u64,
}

/// Token usage and cost of one provider since start (the running totals; one
/// response's usage is `tower_failover_provider::Usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageTotals {
    /// Prompt (input) tokens.
    pub prompt_tokens: u64,
    /// Completion (output) tokens.
    pub completion_tokens: u64,
    /// Cost in the price table's currency.
    pub cost: f64,
}

/// The old name of [`UsageTotals`].
#[deprecated(note = "renamed UsageTotals: one response's usage is tower_failover_provider::Usage")]
pub type Usage = UsageTotals;

/// One provider, now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderSnapshot {
    /// Provider name.
    pub provider: String,
    /// Model name.
    pub model: String,
    /// Quota group, if named.
    pub quota_group: Option<String>,
    /// Effective circuit state.
    pub circuit: CircuitState,
    /// Operator override, if any.
    pub forced: Option<CircuitState>,
    /// Milliseconds until the open circuit lets a probe through.
    pub open_for_ms: Option<u64>,
    /// Consecutive trips.
    pub trips: u32,
    /// `"credentials"` or `"billing"` while the circuit is open (or probing) because
    /// the provider refused the operator's account: a revoked key or an unpaid bill,
    /// which a person must fix. `None` for any other cause.
    #[serde(default)]
    pub account_failure: Option<FailureKind>,
    /// Milliseconds left in the rate-limit window.
    pub rate_limited_for_ms: Option<u64>,
    /// Recovery ramp step, if a ramp is running.
    pub ramp_step: Option<u32>,
    /// Share of requests the ramp admits, `0..=1`.
    pub ramp_share: f64,
    /// Peak-EWMA time to first byte, in milliseconds.
    pub ttfb_ms: f64,
    /// Peak-EWMA whole-request latency, in milliseconds.
    pub latency_ms: f64,
    /// Requests in flight.
    pub in_flight: u64,
    /// Requests sent and not answered yet.
    #[serde(default)]
    pub waiting: u64,
    /// Whether the provider looks hung: requests wait and it has been silent far
    /// longer than its usual time to first byte (see
    /// [`Health::is_suspect`](crate::Health::is_suspect)).
    #[serde(default)]
    pub suspect: bool,
    /// Outcome counters.
    pub counters: Counters,
    /// Usage and cost.
    pub usage: UsageTotals,
}

/// Every provider of a registry, now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// One entry per provider, in registration order.
    pub providers: Vec<ProviderSnapshot>,
    /// The shared-state store's status.
    pub store: StoreStatus,
}
