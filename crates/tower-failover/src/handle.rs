//! The [`Handle`] of a built stack: snapshots, events and manual overrides.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;
use tower_failover_balance::ProviderOptions;
use tower_failover_core::{
    CircuitState, Health, HealthEvent, ProviderId, ProviderSnapshot, Registry, StoreStatus,
};

#[cfg(feature = "ramp")]
use tower_failover_ramp::{RampLayer, RampStatus};
#[cfg(feature = "retry")]
use tower_failover_retry::WaitQueueLayer;

pub(crate) struct ProviderInfo {
    pub(crate) health: Health,
    pub(crate) options: ProviderOptions,
    #[cfg(feature = "ramp")]
    pub(crate) ramp: Option<RampLayer<crate::stack::AboveClassifier>>,
}

/// Reads how many retries the built-in budget has left.
pub(crate) type Remaining = Arc<dyn Fn() -> u64 + Send + Sync>;

struct Inner {
    registry: Registry,
    providers: Vec<ProviderInfo>,
    router: &'static str,
    budget: Option<Remaining>,
    #[cfg(feature = "retry")]
    queue: Option<WaitQueueLayer>,
}

/// What a running stack looks like and how to steer it by hand: a JSON-ready
/// [`snapshot`](Handle::snapshot) of every provider, the stream of
/// [`HealthEvent`]s, and [`force`](Handle::force) to open or close a provider's
/// circuit. Cheap to clone; get it from [`Failover::handle`](crate::Failover::handle).
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("router", &self.inner.router)
            .field(
                "providers",
                &self
                    .inner
                    .providers
                    .iter()
                    .map(|p| p.health.id())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A provider asked for by name was not in the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownProvider(pub ProviderId);

impl fmt::Display for UnknownProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no provider {} in this stack", self.0)
    }
}

impl std::error::Error for UnknownProvider {}

/// Every provider of a stack, now: what `GET /health` answers.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct StackSnapshot {
    /// The router: `balance`, `fallback`, `overflow` or `custom`.
    pub router: &'static str,
    /// `ok` when some provider is available now, else `down`.
    pub status: &'static str,
    /// One entry per provider, in the order they were added.
    pub providers: Vec<ProviderStatus>,
    /// Retries left in the shared retry budget, when it is ours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_budget_remaining: Option<u64>,
    /// Requests waiting in the wait queue, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<usize>,
    /// The shared-state store.
    pub store: StoreStatus,
}

/// One provider of a stack, now.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ProviderStatus {
    /// Everything its [`Health`] knows: circuit state, override, rate-limit window,
    /// ramp step and share, time to first byte, latency, load, counters, usage, cost.
    #[serde(flatten)]
    pub health: ProviderSnapshot,
    /// Whether it may be sent a request now (circuit not open, not rate limited,
    /// ramp share above zero).
    pub available: bool,
    /// Its share of all requests sent to providers so far, in `0..=1`.
    pub traffic_share: f64,
    /// Its balancer weight.
    pub weight: f64,
    /// Its fallback priority, if set.
    pub priority: Option<u32>,
    /// Its blended price per million tokens, if set.
    pub price_per_million: Option<f64>,
    /// Where its recovery ramp is, when it has the built-in one.
    #[cfg(feature = "ramp")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramp: Option<RampStatus>,
}

impl Handle {
    pub(crate) fn new(
        registry: Registry,
        providers: Vec<ProviderInfo>,
        router: &'static str,
        budget: Option<Remaining>,
        #[cfg(feature = "retry")] queue: Option<WaitQueueLayer>,
    ) -> Self {
        Handle {
            inner: Arc::new(Inner {
                registry,
                providers,
                router,
                budget,
                #[cfg(feature = "retry")]
                queue,
            }),
        }
    }

    /// The registry holding every provider's health.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The providers' health handles, in the order they were added.
    pub fn providers(&self) -> Vec<Health> {
        self.inner
            .providers
            .iter()
            .map(|p| p.health.clone())
            .collect()
    }

    /// The health handle of `model` at `provider`.
    pub fn provider(&self, provider: &str, model: &str) -> Option<Health> {
        self.inner
            .providers
            .iter()
            .find(|p| p.health.id().provider() == provider && p.health.id().model() == model)
            .map(|p| p.health.clone())
    }

    /// A picture of every provider, serializable (`serde_json::to_string`).
    pub fn snapshot(&self) -> StackSnapshot {
        let now = tokio::time::Instant::now();
        let total: u64 = self
            .inner
            .providers
            .iter()
            .map(|p| p.health.counters().requests)
            .sum();
        let providers: Vec<ProviderStatus> = self
            .inner
            .providers
            .iter()
            .map(|p| {
                let health = p.health.snapshot();
                let share = if total == 0 {
                    0.0
                } else {
                    health.counters.requests as f64 / total as f64
                };
                ProviderStatus {
                    available: p.health.is_available(now),
                    traffic_share: share,
                    weight: p.options.weight,
                    priority: p.options.priority,
                    price_per_million: p.options.price_per_million,
                    #[cfg(feature = "ramp")]
                    ramp: p.ramp.as_ref().map(RampLayer::status),
                    health,
                }
            })
            .collect();
        let status = if providers.iter().any(|p| p.available) {
            "ok"
        } else {
            "down"
        };
        StackSnapshot {
            router: self.inner.router,
            status,
            providers,
            retry_budget_remaining: self.budget_remaining(),
            #[cfg(feature = "retry")]
            waiting: self.inner.queue.as_ref().map(WaitQueueLayer::waiting),
            #[cfg(not(feature = "retry"))]
            waiting: None,
            store: self.inner.registry.store().status(),
        }
    }

    /// The snapshot as JSON.
    pub fn snapshot_json(&self) -> serde_json::Value {
        serde_json::to_value(self.snapshot()).unwrap_or(serde_json::Value::Null)
    }

    fn budget_remaining(&self) -> Option<u64> {
        // Only our own budget says how much is left; a user's `Budget` may not.
        self.inner.budget.as_ref().map(|remaining| remaining())
    }

    /// Withdrawals left in the shared retry budget, when it is the built-in one.
    pub fn retry_budget_remaining(&self) -> Option<u64> {
        self.budget_remaining()
    }

    /// Every state change of every provider: circuit transitions, overrides,
    /// rate-limit windows, ramp steps and rollbacks, probes, store connectivity.
    /// A receiver that falls more than 1024 events behind skips the oldest
    /// (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.inner.registry.subscribe()
    }

    /// Forces `model` at `provider` open (no traffic) or closed (traffic whatever
    /// the breaker thinks); `None` releases the override. Published as a
    /// [`Forced`](tower_failover_core::HealthEventKind::Forced) event.
    pub fn force(
        &self,
        provider: &str,
        model: &str,
        state: Option<CircuitState>,
    ) -> Result<(), UnknownProvider> {
        let health = self
            .provider(provider, model)
            .ok_or_else(|| UnknownProvider(ProviderId::new(provider, model)))?;
        health.force(state);
        Ok(())
    }
}
