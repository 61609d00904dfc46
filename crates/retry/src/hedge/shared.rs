use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tower::retry::budget::Budget;

use super::HedgeConfig;

/// What the layer, its services and their futures share: the settings, the budget and
/// the recent latencies the hedge delay is computed from.
pub(super) struct HedgeShared {
    pub(super) config: HedgeConfig,
    pub(super) budget: Option<Arc<dyn Budget + Send + Sync>>,
    latencies: Mutex<Latencies>,
}

struct Latencies {
    ring: Vec<Duration>,
    next: usize,
    /// The delay in force, recomputed every `window / 8` samples.
    delay: Duration,
    since_update: usize,
}

impl HedgeShared {
    pub(super) fn new(config: HedgeConfig, budget: Option<Arc<dyn Budget + Send + Sync>>) -> Self {
        HedgeShared {
            config,
            budget,
            latencies: Mutex::new(Latencies {
                ring: Vec::with_capacity(config.window.clamp(8, 65_536)),
                next: 0,
                delay: config.initial_delay.max(config.min_delay),
                since_update: 0,
            }),
        }
    }

    pub(super) fn delay(&self) -> Duration {
        self.latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .delay
    }

    pub(super) fn record(&self, latency: Duration) {
        let window = self.config.window.clamp(8, 65_536);
        let mut l = self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if l.ring.len() < window {
            l.ring.push(latency);
        } else {
            let i = l.next;
            l.ring[i] = latency;
        }
        l.next = (l.next + 1) % window;
        l.since_update += 1;
        if l.ring.len() >= 8 && l.since_update >= (window / 8).max(1) {
            l.since_update = 0;
            let mut sorted = l.ring.clone();
            sorted.sort_unstable();
            let p = if self.config.percentile.is_finite() {
                self.config.percentile.clamp(0.0, 1.0)
            } else {
                0.9
            };
            let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
            l.delay = sorted[idx].max(self.config.min_delay);
        }
    }
}
