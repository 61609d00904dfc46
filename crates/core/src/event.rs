//! Events published on every state change of a provider.
//!
//! | event (`"event"` in JSON) | emitted by | when |
//! | --- | --- | --- |
//! | `circuit_changed` | the circuit breaker, an operator, another replica | the circuit moved (closed, open, half-open) |
//! | `credentials_rejected` | the circuit breaker | the provider rejected the operator's API key and the circuit opened for it (once per trip) |
//! | `billing_failed` | the circuit breaker | the provider refused for billing and the circuit opened for it (once per trip) |
//! | `forced` | [`Health::force`](crate::Health::force) | an operator override was set or released |
//! | `rate_limited`, `rate_limit_cleared` | the observer, the quota layer, another replica | a rate-limit window opened or was cleared |
//! | `ramp_step`, `ramp_rolled_back`, `ramp_completed` | the recovery ramp | the ramp moved |
//! | `probe` | the recovery ramp's active prober | an active probe finished |
//! | `store` | the shared-state store | it lost or regained its connection |
//!
//! A `credentials_rejected` or `billing_failed` event comes with the
//! `circuit_changed` event of the same trip: alert on the first, graph the second.

use std::time::Duration;

use serde::Serialize;

use crate::health::{CircuitState, ProviderId};

/// Something changed about a provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthEvent {
    /// Which provider.
    pub provider: ProviderId,
    /// What changed.
    #[serde(flatten)]
    pub kind: HealthEventKind,
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum HealthEventKind {
    /// The circuit moved from one state to another.
    CircuitChanged {
        /// The state before.
        from: CircuitState,
        /// The state after.
        to: CircuitState,
        /// How long it stays open, when it opened.
        #[serde(with = "crate::duration_serde::option")]
        open_for: Option<Duration>,
    },
    /// The provider rejected the operator's credentials (a revoked, rotated or
    /// mistyped API key: 401, 403, `invalid_api_key`), and the circuit breaker opened
    /// that provider's circuit for `open_for`. Emitted once per trip, by the breaker,
    /// when such a failure opens the circuit (not for the answers that arrive while
    /// it is already open), so a burst of traffic raises one alert, not thousands.
    /// A person must act: rotate the key and restart, or force the circuit closed.
    CredentialsRejected {
        /// How long the circuit stays open before a probe.
        #[serde(with = "crate::duration_serde")]
        open_for: Duration,
    },
    /// The provider refused for billing reasons (402, `insufficient_quota`,
    /// "credit balance is too low"), and the circuit breaker opened that provider's
    /// circuit for `open_for`. Emitted once per trip, like
    /// [`CredentialsRejected`](HealthEventKind::CredentialsRejected).
    BillingFailed {
        /// How long the circuit stays open before a probe.
        #[serde(with = "crate::duration_serde")]
        open_for: Duration,
    },
    /// An operator forced the circuit (or released it with `None`).
    Forced {
        /// The forced state, or `None` when released.
        state: Option<CircuitState>,
    },
    /// The provider's quota group is rate limited for this long.
    RateLimited {
        /// The quota group, if the provider is in a named one.
        group: Option<String>,
        /// How long.
        #[serde(with = "crate::duration_serde")]
        retry_after: Duration,
    },
    /// A rate-limit window ended early because it was cleared.
    RateLimitCleared,
    /// A recovery ramp moved to a step.
    RampStep {
        /// The step's index.
        step: u32,
        /// The share of requests the step admits, in `0..=1`.
        share: f64,
    },
    /// A recovery ramp rolled back to zero.
    RampRolledBack {
        /// The share it was at.
        from_share: f64,
    },
    /// A recovery ramp reached full share.
    RampCompleted,
    /// An active probe finished.
    Probe {
        /// Whether it passed.
        ok: bool,
    },
    /// The provider became suspect (silent with requests waiting, see
    /// [`Health::is_suspect`](crate::Health::is_suspect)) or stopped being so.
    Suspect {
        /// Whether it is suspect now.
        suspect: bool,
        /// How long it had been silent, when it became suspect.
        #[serde(with = "crate::duration_serde")]
        silent_for: Duration,
    },
    /// The shared state store lost or regained its connection.
    Store {
        /// Whether it is connected now.
        connected: bool,
    },
}
