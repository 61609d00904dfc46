//! The set of provider health handles that one gateway (or one stack) shares.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::event::HealthEvent;
use crate::health::{Health, HealthConfig, ProviderId, QuotaGroup};
use crate::snapshot::Snapshot;
use crate::store::{LocalStore, SharedStore};

/// Creates and holds the [`Health`] handle of every (provider, model), with one event
/// channel, the quota groups and the shared-state store. Cloning shares it.
///
/// ```
/// use tower_failover_core::Registry;
///
/// let registry = Registry::new();
/// let primary = registry.provider("openai", "gpt-4o-mini");
/// let batch = registry.provider_in_group("openai", "gpt-4o", "org-main");
/// let chat = registry.provider_in_group("openai", "o4-mini", "org-main");
/// assert!(batch.quota().same_as(chat.quota())); // one 429 marks both
/// assert!(registry.provider("openai", "gpt-4o-mini").same_as(&primary));
/// let json = serde_json::to_string(&registry.snapshot()).unwrap();
/// assert!(json.contains("gpt-4o-mini"));
/// ```
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    providers: RwLock<Vec<Health>>,
    groups: Mutex<HashMap<String, QuotaGroup>>,
    events: broadcast::Sender<HealthEvent>,
    store: SharedStore,
    config: HealthConfig,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let providers = self
            .inner
            .providers
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Registry")
            .field(
                "providers",
                &providers.iter().map(Health::id).collect::<Vec<_>>(),
            )
            .field("store", &self.inner.store)
            .finish()
    }
}

impl Registry {
    /// A registry with the in-process store and default settings.
    pub fn new() -> Self {
        Registry::with_store(Arc::new(LocalStore), HealthConfig::default())
    }

    /// A registry that shares state through `store`.
    pub fn with_store(store: SharedStore, config: HealthConfig) -> Self {
        let (events, _) = broadcast::channel(1024);
        Registry {
            inner: Arc::new(Inner {
                providers: RwLock::new(Vec::new()),
                groups: Mutex::new(HashMap::new()),
                events,
                store,
                config,
            }),
        }
    }

    /// The handle of `model` at `provider`, created on first use with a quota group
    /// of its own.
    pub fn provider(&self, provider: &str, model: &str) -> Health {
        self.get_or_create(ProviderId::new(provider, model), None)
    }

    /// The handle of `model` at `provider` in the named quota group (providers that
    /// share one key or organisation share one rate limit). If the handle already
    /// exists, it is returned as it is.
    pub fn provider_in_group(&self, provider: &str, model: &str, group: &str) -> Health {
        self.get_or_create(ProviderId::new(provider, model), Some(group))
    }

    fn get_or_create(&self, id: ProviderId, group: Option<&str>) -> Health {
        if let Some(h) = self.get(&id) {
            return h;
        }
        let mut providers = self
            .inner
            .providers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = providers.iter().find(|h| *h.id() == id) {
            return h.clone();
        }
        let quota = match group {
            Some(name) => self
                .inner
                .groups
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(name.to_owned())
                .or_insert_with(|| QuotaGroup::new(Some(name)))
                .clone(),
            None => QuotaGroup::new(None),
        };
        let health = Health::with_parts(
            id,
            quota,
            self.inner.events.clone(),
            self.inner.store.clone(),
            self.inner.config,
        );
        providers.push(health.clone());
        drop(providers);
        self.inner.store.attach(&health);
        health
    }

    /// The handle of `id`, if it exists.
    pub fn get(&self, id: &ProviderId) -> Option<Health> {
        self.inner
            .providers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|h| h.id() == id)
            .cloned()
    }

    /// Every handle, in creation order.
    pub fn providers(&self) -> Vec<Health> {
        self.inner
            .providers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Subscribes to every provider's events.
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.inner.events.subscribe()
    }

    /// The shared-state store.
    pub fn store(&self) -> &SharedStore {
        &self.inner.store
    }

    /// The earliest time from now at which some provider may be available again
    /// (zero if one is available now; `None` if there are no providers). This is the
    /// `Retry-After` hint for [`AllProvidersFailed`](crate::error::AllProvidersFailed).
    pub fn earliest_recovery(&self) -> Option<Duration> {
        let now = Instant::now();
        self.inner
            .providers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|h| h.recovers_in(now))
            .min()
    }

    /// A serializable picture of every provider.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            providers: self.providers().iter().map(Health::snapshot).collect(),
            store: self.inner.store.status(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::HealthEventKind;
    use crate::health::CircuitState;

    #[tokio::test(start_paused = true)]
    async fn events_from_every_provider_reach_one_subscriber() {
        let r = Registry::new();
        let mut rx = r.subscribe();
        let a = r.provider("a", "m");
        let b = r.provider("b", "m");
        a.transition(
            CircuitState::Closed,
            CircuitState::Open,
            Some(Instant::now() + Duration::from_secs(5)),
        );
        b.mark_rate_limited(Duration::from_secs(2));
        let first = rx.recv().await.unwrap();
        assert_eq!(first.provider, ProviderId::new("a", "m"));
        let second = rx.recv().await.unwrap();
        assert!(matches!(second.kind, HealthEventKind::RateLimited { .. }));
        assert_eq!(r.earliest_recovery(), Some(Duration::from_secs(2)));
        let snap = r.snapshot();
        assert_eq!(snap.providers.len(), 2);
        assert_eq!(snap.providers[0].circuit, CircuitState::Open);
        assert_eq!(snap.providers[1].rate_limited_for_ms, Some(2000));
        assert_eq!(snap.store.kind, "local");
        let json = serde_json::to_value(&snap).unwrap();
        let back: Snapshot = serde_json::from_value(json).unwrap();
        assert_eq!(back, snap);
    }

    #[tokio::test(start_paused = true)]
    async fn quota_groups_are_shared() {
        let r = Registry::new();
        let x = r.provider_in_group("openai", "a", "org");
        let y = r.provider_in_group("openai", "b", "org");
        let z = r.provider("openai", "c");
        x.mark_rate_limited(Duration::from_secs(3));
        let now = Instant::now();
        assert!(y.is_rate_limited(now));
        assert!(!z.is_rate_limited(now));
        assert_eq!(r.earliest_recovery(), Some(Duration::ZERO));
    }
}
