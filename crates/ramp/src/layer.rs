//! The ramp's layer.

use std::fmt;
use std::sync::Arc;

use tower_failover_core::{Classify, Health, LlmClassifier};
use tower_layer::Layer;

use crate::config::{ConfigError, RampConfig};
use crate::probe::Prober;
use crate::service::Ramp;
use crate::state::{Core, Shared};
use crate::status::RampStatus;

/// Puts a recovering provider's traffic back gradually, with checks and rollback.
///
/// Make one per provider and clone it freely: every clone and every service it
/// makes share one ramp and one driver task (started with the first service inside
/// a tokio runtime, aborted when the last clone is dropped). Place it above the
/// circuit breaker. See the [crate documentation](crate) for the whole story.
pub struct RampLayer<C = LlmClassifier> {
    shared: Arc<Shared>,
    classifier: C,
}

impl RampLayer {
    /// A ramp for `health`'s provider with `config`; an invalid `config` is
    /// refused with an error naming the field (never replaced by the default).
    pub fn with_config(health: Health, config: RampConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(RampLayer::build(health, config))
    }

    /// A ramp for `health`'s provider with the default [`RampConfig`] (5, 25, 50,
    /// 100 % over 20 minutes).
    pub fn new(health: Health) -> Self {
        RampLayer::build(health, RampConfig::default())
    }

    /// The same as [`with_config`](RampLayer::with_config) (its older name).
    #[deprecated(since = "0.1.0", note = "use `RampLayer::with_config`")]
    pub fn try_new(health: Health, config: RampConfig) -> Result<Self, ConfigError> {
        RampLayer::with_config(health, config)
    }

    fn build(health: Health, config: RampConfig) -> Self {
        RampLayer {
            shared: Arc::new(Shared::new(Core::new(health, config))),
            classifier: LlmClassifier::default(),
        }
    }
}

impl<C> RampLayer<C> {
    /// Judges outcomes with another classifier (failures count against a step;
    /// rate limits and rejections are not counted).
    pub fn classifier<C2: Classify>(self, classifier: C2) -> RampLayer<C2> {
        RampLayer {
            shared: self.shared,
            classifier,
        }
    }

    /// Turns on active probes for this provider (for every clone of the layer).
    pub fn with_prober(self, prober: Prober) -> Self {
        self.shared.set_prober(prober);
        self
    }

    /// Whether active probes are configured.
    pub fn probes(&self) -> bool {
        self.shared.has_prober()
    }

    /// The provider's health handle.
    pub fn health(&self) -> &Health {
        &self.shared.core.health
    }

    /// The configuration in use.
    pub fn config(&self) -> &RampConfig {
        &self.shared.core.config
    }

    /// Where the ramp is.
    pub fn status(&self) -> RampStatus {
        RampStatus::of(&self.shared.core)
    }
}

impl<C: Clone> Clone for RampLayer<C> {
    fn clone(&self) -> Self {
        RampLayer {
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<C> fmt::Debug for RampLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RampLayer")
            .field("provider", self.shared.core.health.id())
            .field("config", &self.shared.core.config)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Layer<S> for RampLayer<C> {
    type Service = Ramp<S, C>;

    fn layer(&self, inner: S) -> Ramp<S, C> {
        Ramp::new(inner, self.shared.clone(), self.classifier.clone())
    }
}
