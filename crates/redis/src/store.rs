//! The Redis implementation of the core store trait.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower_failover_core::{
    Health, HealthEventKind, ProviderId, SharedStore, SharedUpdate, StateStore, StoreStatus,
    health::WeakHealth,
};

use crate::config::{ConfigError, RedisConfig};
use crate::wire::{Update, now_ms, plausible_ts};

/// How many updates may wait for the writer; past it, new updates are dropped (the
/// latest state per key is kept and re-sent on reconnect, so nothing durable is lost).
const QUEUE: usize = 4096;

/// The most per-provider keys (circuit and ramp versions, probe leases) one replica
/// remembers. Only providers attached to this replica are remembered at all, so this is
/// a second line of defence; past it, remote updates for new keys are ignored.
pub(crate) const MAX_REMEMBERED: usize = 4096;

use crate::scripts::Scripts;
use crate::tasks::{KindName, listener, resyncer, writer};

pub(crate) enum Outgoing {
    Update {
        provider: String,
        ts_ms: u64,
        update: Update,
    },
    Lease {
        key: String,
        ttl: Duration,
    },
}

#[derive(Clone)]
pub(crate) struct Lease {
    pub(crate) holder: String,
    pub(crate) expires: Instant,
}

pub(crate) struct Inner {
    pub(crate) config: RedisConfig,
    pub(crate) client: redis::Client,
    pub(crate) replica: String,
    pub(crate) tx: mpsc::Sender<Outgoing>,
    pub(crate) attached: Mutex<Vec<WeakHealth>>,
    /// Newest timestamp applied or published, per circuit/ramp key.
    pub(crate) versions: Mutex<HashMap<String, u64>>,
    /// Usage not yet written: provider → (prompt, completion, cost micros).
    pub(crate) usage: Mutex<HashMap<String, [u64; 3]>>,
    pub(crate) leases: Mutex<HashMap<String, Lease>>,
    pub(crate) connected: AtomicBool,
    pub(crate) last_error: Mutex<Option<String>>,
    pub(crate) resync_now: Notify,
    pub(crate) scripts: Scripts,
    /// Whether the "too many keys" warning was logged (it is logged once).
    pub(crate) warned_full: AtomicBool,
    /// Whether the connection state was logged at least once (so a replica that never
    /// reaches Redis says so, not only one that loses it).
    pub(crate) reported: AtomicBool,
}

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

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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

/// Adds usage to the not-yet-written sums, saturating.
pub(crate) fn add_usage(usage: &mut HashMap<String, [u64; 3]>, provider: String, add: [u64; 3]) {
    let slot = usage.entry(provider).or_default();
    for (total, add) in slot.iter_mut().zip(add) {
        *total = total.saturating_add(add);
    }
}

impl Inner {
    pub(crate) fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.config.namespace)
    }

    pub(crate) fn channel(&self) -> String {
        format!("{}:updates", self.config.namespace)
    }

    pub(crate) fn versioned_key(&self, provider: &str, update: &Update) -> Option<String> {
        match update {
            Update::Circuit { .. } => Some(self.key("circuit", provider)),
            Update::Ramp { .. } => Some(self.key("ramp", provider)),
            Update::RateLimited { .. } => None,
        }
    }

    pub(crate) fn healths(&self) -> Vec<Health> {
        let mut attached = lock(&self.attached);
        attached.retain(|w| w.upgrade().is_some());
        attached.iter().filter_map(WeakHealth::upgrade).collect()
    }

    pub(crate) fn set_connected(&self, connected: bool, detail: Option<String>) {
        let was = self.connected.swap(connected, Ordering::AcqRel);
        *lock(&self.last_error) = detail.clone();
        let first = !self.reported.swap(true, Ordering::AcqRel);
        if was != connected || first {
            if connected {
                tracing::info!(url = %self.config.redacted_url(), "redis store connected");
            } else {
                tracing::warn!(url = %self.config.redacted_url(), error = ?detail, "redis store unreachable: serving on local state");
            }
        }
        if was != connected
            && let Some(h) = self.healths().first()
        {
            h.emit(HealthEventKind::Store { connected });
        }
    }

    pub(crate) async fn connect(&self) -> Option<ConnectionManager> {
        let t = self.config.command_timeout;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(t))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        match tokio::time::timeout(t * 2, self.client.get_connection_manager_with_config(cfg)).await
        {
            Ok(Ok(conn)) => Some(conn),
            Ok(Err(e)) => {
                self.set_connected(false, Some(format!("connect: {}", e.kind_name())));
                None
            }
            Err(_) => {
                self.set_connected(false, Some("connect: timed out".to_owned()));
                None
            }
        }
    }

    /// Applies an update from Redis (channel or resync) if it is newer than what we
    /// know and passes validation.
    pub(crate) fn apply(&self, provider: &str, ts_ms: u64, update: &Update) {
        let now = now_ms();
        if !plausible_ts(ts_ms, now) {
            tracing::debug!(
                provider,
                "redis store: ignored a value stamped in the future"
            );
            return;
        }
        let Some(shared) = update.validate(now, self.config.max_deadline) else {
            tracing::debug!(
                provider,
                "redis store: ignored an untrustworthy or expired value"
            );
            return;
        };
        // Only providers attached here are looked at, and only they are remembered:
        // updates about providers this replica does not serve cost no memory.
        let targets: Vec<Health> = self
            .healths()
            .into_iter()
            .filter(|h| match update {
                Update::RateLimited { group, .. } => match h.quota().name() {
                    Some(name) => name == group,
                    None => h.id().to_string() == *group,
                },
                _ => h.id().to_string() == provider,
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        if let Some(key) = self.versioned_key(provider, update) {
            let mut versions = lock(&self.versions);
            if !versions.contains_key(&key) && versions.len() >= MAX_REMEMBERED {
                self.warn_full();
                return;
            }
            let v = versions.entry(key).or_default();
            if ts_ms <= *v {
                return;
            }
            *v = ts_ms;
        }
        for h in targets {
            h.apply_remote(&shared);
        }
    }

    pub(crate) fn warn_full(&self) {
        if !self.warned_full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                cap = MAX_REMEMBERED,
                "redis store: too many provider keys remembered; updates for further ones are ignored"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_usage_sums_saturate_instead_of_wrapping() {
        let mut usage = HashMap::new();
        add_usage(&mut usage, "p/m".into(), [u64::MAX - 1, 5, 1]);
        add_usage(&mut usage, "p/m".into(), [10, u64::MAX, 2]);
        assert_eq!(usage["p/m"], [u64::MAX, u64::MAX, 3]);
    }
}
