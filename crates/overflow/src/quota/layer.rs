//! [`QuotaLayer`]: put a quota tracker in front of one provider.

use std::fmt;
use std::sync::Arc;

use tower_failover_core::Health;
use tower_layer::Layer;

use crate::config::LimitedMode;
use crate::estimate::BodyEstimator;
use crate::quota::service::{Core, Quota};
use crate::tracker::QuotaTracker;

/// Tracks one provider's quota from every response's rate-limit headers (and
/// optional configured budgets), marks its quota group limited before the 429, and
/// refuses, without sending, while the group is limited.
///
/// Place it above the [`ObserveLayer`](tower_failover_core::observe::ObserveLayer) in
/// the provider's stack, so that refused requests are not counted as requests to
/// the provider. Give every provider stack that uses the same API key the same
/// [`QuotaTracker`].
#[derive(Clone)]
pub struct QuotaLayer<E = BodyEstimator> {
    core: Arc<Core>,
    estimator: E,
}

impl QuotaLayer {
    /// Tracks the quota of `health`'s provider in `tracker`, estimating tokens with
    /// [`BodyEstimator`]; the [`LimitedMode`] comes from the tracker's config.
    pub fn new(health: Health, tracker: QuotaTracker) -> Self {
        let mode = tracker.config().mode;
        QuotaLayer {
            core: Arc::new(Core {
                health,
                tracker,
                mode,
            }),
            estimator: BodyEstimator::default(),
        }
    }
}

impl<E> QuotaLayer<E> {
    /// Uses another token estimator.
    pub fn estimator<E2>(self, estimator: E2) -> QuotaLayer<E2> {
        QuotaLayer {
            core: self.core,
            estimator,
        }
    }

    /// Overrides what the service does while the group is limited.
    pub fn mode(self, mode: LimitedMode) -> Self {
        QuotaLayer {
            core: Arc::new(Core {
                health: self.core.health.clone(),
                tracker: self.core.tracker.clone(),
                mode,
            }),
            estimator: self.estimator,
        }
    }

    /// The provider's health handle.
    pub fn health(&self) -> &Health {
        &self.core.health
    }

    /// The tracker.
    pub fn tracker(&self) -> &QuotaTracker {
        &self.core.tracker
    }
}

impl<E> fmt::Debug for QuotaLayer<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaLayer")
            .field("provider", self.core.health.id())
            .field("mode", &self.core.mode)
            .finish_non_exhaustive()
    }
}

impl<S, E: Clone> Layer<S> for QuotaLayer<E> {
    type Service = Quota<S, E>;

    fn layer(&self, inner: S) -> Quota<S, E> {
        Quota::from_parts(inner, Arc::clone(&self.core), self.estimator.clone())
    }
}
