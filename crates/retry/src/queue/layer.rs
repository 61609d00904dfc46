use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tower_failover_core::Registry;
use tower_layer::Layer;

use super::wait::Shared;
use super::{QueueConfig, WaitQueue};
#[cfg(doc)]
use tower_failover_core::{
    Deadline,
    error::{AllProvidersFailed, Elapsed},
};

/// Holds requests that found every provider unavailable until one recovers, then
/// sends them again.
///
/// Wrap a router (balancer, fallback, overflow) with it. When the router fails with
/// [`AllProvidersFailed`], the request waits — bounded in number by `capacity` and in
/// time by its [`Deadline`] or `max_wait` — and is released as soon as the registry
/// reports a recovery (a circuit closing or going half-open, a rate limit cleared, a
/// probe passing), or when the earliest known recovery time arrives (rate-limit windows
/// end silently). Nothing waits unbounded and nothing is dropped silently: a request
/// past its deadline fails with [`Elapsed`] (`TimeoutKind::Queue`).
///
/// Only requests that are waiting cost an allocation; the path of a request the router
/// serves at once allocates nothing here.
#[derive(Clone)]
pub struct WaitQueueLayer {
    shared: Arc<Shared>,
}
impl WaitQueueLayer {
    /// A wait queue with the default [`QueueConfig`] that listens to `registry` for
    /// recoveries.
    pub fn new(registry: Registry) -> Self {
        WaitQueueLayer::build(registry, QueueConfig::default())
    }

    /// A wait queue with `config`; an invalid `config` is refused with an error
    /// naming the field (never replaced by the default).
    pub fn with_config(
        registry: Registry,
        config: QueueConfig,
    ) -> Result<Self, tower_failover_core::ConfigError> {
        config.validate()?;
        Ok(WaitQueueLayer::build(registry, config))
    }

    fn build(registry: Registry, config: QueueConfig) -> Self {
        WaitQueueLayer {
            shared: Arc::new(Shared {
                registry,
                config,
                waiting: AtomicUsize::new(0),
            }),
        }
    }

    /// How many requests are waiting now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for WaitQueueLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitQueueLayer")
            .field("config", &self.shared.config)
            .field("waiting", &self.waiting())
            .finish()
    }
}

impl<S> Layer<S> for WaitQueueLayer {
    type Service = WaitQueue<S>;

    fn layer(&self, inner: S) -> WaitQueue<S> {
        WaitQueue::new(inner, self.shared.clone())
    }
}
