//! The Redis implementation of the core store trait.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower_failover_core::{Health, ProviderId, SharedStore, SharedUpdate, StateStore, StoreStatus};

use crate::config::{ConfigError, RedisConfig};
use crate::wire::{Update, now_ms};

/// How many updates may wait for the writer; past it, new updates are dropped (the
/// latest state per key is kept and re-sent on reconnect, so nothing durable is lost).
const QUEUE: usize = 4096;

use crate::scripts::Scripts;
use crate::shared::{Inner, Lease, MAX_REMEMBERED, Outgoing, add_usage, lock};
use crate::tasks::{listener, resyncer, writer};

/// Shared provider state on Redis. See the [crate documentation](crate).
///
/// Dropping the store stops its background tasks.
pub struct RedisStore {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.config.redacted_url())
            .field("namespace", &self.inner.config.namespace)
            .field("replica", &self.inner.replica)
            .field("connected", &self.inner.connected.load(Ordering::Relaxed))
            .finish()
    }
}

impl RedisStore {
    /// Validates `config` and starts the store's background tasks (writer, pub/sub
    /// listener, resync). Returns at once: connecting happens in the background, and
    /// the replica serves on local state until it succeeds. Must be called inside a
    /// tokio runtime.
    pub fn start(config: RedisConfig) -> Result<SharedStore, ConfigError> {
        Ok(Arc::new(RedisStore::start_typed(config)?))
    }

    /// Like [`start`](Self::start), returning the concrete type (for
    /// [`is_connected`](Self::is_connected) and [`replica_id`](Self::replica_id)).
    pub fn start_typed(config: RedisConfig) -> Result<RedisStore, ConfigError> {
        config.validate()?;
        let client = crate::config::client(&config)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut rng = tower_failover_core::rng::Rng::from_entropy();
        let inner = Arc::new(Inner {
            config,
            client,
            replica: format!("r{:016x}", rng.next_u64()),
            tx,
            attached: Mutex::new(Vec::new()),
            versions: Mutex::new(HashMap::new()),
            latest: Mutex::new(HashMap::new()),
            resend: AtomicBool::new(false),
            usage: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
            connected: AtomicBool::new(false),
            last_error: Mutex::new(Some("connecting".to_owned())),
            resync_now: Notify::new(),
            scripts: Scripts::new(),
            warned_full: AtomicBool::new(false),
            reported: AtomicBool::new(false),
        });
        let tasks = vec![
            tokio::spawn(writer(inner.clone(), rx)),
            tokio::spawn(listener(inner.clone())),
            tokio::spawn(resyncer(inner.clone())),
        ];
        Ok(RedisStore { inner, tasks })
    }

    /// Whether Redis answered the last command.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// This replica's id in Redis (random per store).
    pub fn replica_id(&self) -> &str {
        &self.inner.replica
    }

    /// How many per-provider keys (circuit and ramp versions, probe leases) this
    /// replica holds in memory. Only providers attached to this replica are
    /// remembered, whatever other writers publish, and never more than a fixed cap
    /// (4096), so a hostile writer cannot grow it.
    pub fn remembered_keys(&self) -> usize {
        lock(&self.inner.versions).len() + lock(&self.inner.leases).len()
    }
}

impl StateStore for RedisStore {
    fn publish(&self, provider: &ProviderId, update: &SharedUpdate) {
        let inner = &self.inner;
        let name = provider.to_string();
        if let SharedUpdate::Usage {
            prompt_tokens,
            completion_tokens,
            cost_micros,
        } = update
        {
            add_usage(
                &mut lock(&inner.usage),
                name,
                [*prompt_tokens, *completion_tokens, *cost_micros],
            );
            return;
        }
        let Some(update) = Update::from_shared(update) else {
            return;
        };
        // Versions of one key strictly increase from this replica, even for two
        // transitions in the same millisecond (half-open then closed): with equal
        // stamps the second was dropped by every reader and by the set-if-newer
        // script, and the fleet stayed half-open.
        let mut ts_ms = now_ms();
        if let Some(key) = inner.versioned_key(&name, &update) {
            let mut versions = lock(&inner.versions);
            let v = versions.entry(key).or_default();
            ts_ms = ts_ms.max(v.saturating_add(1));
            *v = ts_ms;
        }
        let msg = Outgoing::Update {
            provider: name,
            ts_ms,
            update,
        };
        if inner.tx.try_send(msg).is_err() {
            tracing::debug!(
                "redis store: update queue full, update dropped (latest state is re-sent on reconnect)"
            );
        }
    }

    fn attach(&self, health: &Health) {
        lock(&self.inner.attached).push(health.downgrade());
        self.inner.resync_now.notify_one();
    }

    fn try_lease(&self, provider: &ProviderId, what: &str, ttl: Duration) -> bool {
        let inner = &self.inner;
        let key = inner.key(&format!("lease:{what}"), &provider.to_string());
        let now = Instant::now();
        let mut leases = lock(&inner.leases);
        if let Some(l) = leases.get(&key).filter(|l| l.expires > now) {
            return l.holder == inner.replica;
        }
        if leases.len() >= MAX_REMEMBERED {
            leases.retain(|_, l| l.expires > now);
        }
        // Not decided yet (Redis down, or a lease nobody raced for): take it locally
        // and claim it in Redis; if another replica holds it there, the next call
        // learns so. Serving never waits on Redis.
        leases.insert(
            key.clone(),
            Lease {
                holder: inner.replica.clone(),
                expires: now + ttl,
            },
        );
        let _ = inner.tx.try_send(Outgoing::Lease { key, ttl });
        true
    }

    fn status(&self) -> StoreStatus {
        StoreStatus {
            kind: "redis".to_owned(),
            connected: self.inner.connected.load(Ordering::Relaxed),
            detail: lock(&self.inner.last_error).clone(),
        }
    }
}
