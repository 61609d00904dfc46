//! Events published on every state change of a provider.

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
    /// The shared state store lost or regained its connection.
    Store {
        /// Whether it is connected now.
        connected: bool,
    },
}
