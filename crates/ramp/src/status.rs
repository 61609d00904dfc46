//! A picture of where a ramp is.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::state::Core;

/// Where a ramp is, for dashboards and tests. The step and share are also in the
/// provider's [`Health`](tower_failover_core::Health) snapshot (`ramp_step`,
/// `ramp_share`), which is what routers read.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RampStatus {
    /// The step being held, if a ramp is running.
    pub step: Option<u32>,
    /// The share of requests admitted, in `0..=1` (1 when no ramp runs).
    pub share: f64,
    /// Rollbacks (and trips during a ramp) since the last completed ramp.
    pub consecutive_rollbacks: u32,
    /// The provider's baseline error rate, once measured.
    pub baseline_error_rate: Option<f64>,
    /// The error rate above which the current step would roll back.
    pub threshold: f64,
    /// Time left before a rolled-back provider may be re-admitted.
    #[serde(with = "tower_failover_core::duration_serde::option")]
    pub readmit_in: Option<Duration>,
}

impl RampStatus {
    pub(crate) fn of(core: &Core) -> RampStatus {
        let baseline = core.baseline();
        RampStatus {
            step: core.health.ramp_step(),
            share: core.health.ramp_share(),
            consecutive_rollbacks: core.flaps.load(Ordering::Relaxed),
            baseline_error_rate: baseline,
            threshold: core.config.threshold(baseline),
            readmit_in: core.readmit_at.remaining(Instant::now()),
        }
    }
}
