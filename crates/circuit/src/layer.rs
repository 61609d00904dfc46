//! The circuit breaker layer.

use std::fmt;
use std::sync::Arc;

use tower_failover_core::{CircuitState, Classify, Health, LlmClassifier};
use tower_layer::Layer;

use crate::breaker::Shared;
use crate::config::{CircuitConfig, ConfigError, OpenMode};
use crate::service::CircuitBreaker;

/// Wraps a provider's service in a [`CircuitBreaker`].
///
/// Every service this layer makes shares one breaker: the same counts, the same
/// probe permits, and the circuit state in the provider's [`Health`]. Build one layer
/// per provider (per [`Health`] handle), and set the classifier and mode before
/// applying it.
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = LlmClassifier> {
    shared: Arc<Shared<C>>,
}

impl CircuitBreakerLayer {
    /// A layer with the default configuration (see [`CircuitConfig`]) and the
    /// default LLM classifier, keeping its state in `health`.
    pub fn new(health: Health) -> Self {
        CircuitBreakerLayer {
            shared: Arc::new(Shared::new(
                health,
                CircuitConfig::default(),
                LlmClassifier::default(),
            )),
        }
    }

    /// A layer with `config`, refusing an invalid one with an error naming the field.
    pub fn with_config(health: Health, config: CircuitConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(CircuitBreakerLayer {
            shared: Arc::new(Shared::new(health, config, LlmClassifier::default())),
        })
    }
}

impl<C: Classify> CircuitBreakerLayer<C> {
    /// Decides outcomes with `classifier` instead.
    pub fn classifier<C2: Classify>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            shared: Arc::new(Shared::new(
                self.shared.health.clone(),
                self.shared.config.clone(),
                classifier,
            )),
        }
    }

    /// Sets what an open circuit does to callers.
    pub fn mode(self, mode: OpenMode) -> Self {
        let config = self.shared.config.clone().mode(mode);
        CircuitBreakerLayer {
            shared: Arc::new(Shared::new(
                self.shared.health.clone(),
                config,
                self.shared.classifier.clone(),
            )),
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// The provider's health handle, which holds the circuit state.
    pub fn health(&self) -> &Health {
        &self.shared.health
    }

    /// The configuration.
    pub fn config(&self) -> &CircuitConfig {
        &self.shared.config
    }

    /// The effective circuit state (an operator's override wins).
    pub fn state(&self) -> CircuitState {
        self.shared.health.circuit()
    }

    /// Half-open probe permits currently held by the services of this layer.
    pub fn probes_in_flight(&self) -> u32 {
        self.shared.probes_in_flight()
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.shared)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<S, C> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::from_shared(inner, Arc::clone(&self.shared))
    }
}
