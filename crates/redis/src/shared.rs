//! What the store and its background tasks share: the connection, the versions and
//! leases remembered, the usage not yet written, and the queue to the writer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tower_failover_core::{Health, HealthEventKind, health::WeakHealth};

use crate::config::RedisConfig;
use crate::scripts::Scripts;
use crate::wire::{Update, now_ms, plausible_ts};

/// The most per-provider keys (circuit and ramp versions, probe leases) one replica
/// remembers. Only providers attached to this replica are remembered at all, so this is
/// a second line of defence; past it, remote updates for new keys are ignored.
pub(crate) const MAX_REMEMBERED: usize = 4096;

#[derive(Clone)]
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
    /// This replica's latest circuit and ramp update per key, written again
    /// whenever the connection comes back: a Redis that restarted empty (no
    /// persistence, a fresh failover replica) learns the fleet's state again.
    pub(crate) latest: Mutex<HashMap<String, Outgoing>>,
    /// Set when the connection comes back; the writer then re-queues `latest`.
    pub(crate) resend: AtomicBool,
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
        if connected && !was {
            self.resend.store(true, Ordering::Release);
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

pub(crate) fn kind_of(err: &redis::RedisError) -> String {
    // Only the error's kind: messages may quote commands and keys, never needed here.
    format!("redis error: {}", err.kind_name())
}

pub(crate) trait KindName {
    fn kind_name(&self) -> &'static str;
    /// Whether the connection failed (retry later), as opposed to Redis refusing one
    /// command (retrying it would fail again).
    fn is_connection(&self) -> bool;
}

impl KindName for redis::RedisError {
    fn kind_name(&self) -> &'static str {
        if self.is_io_error() || self.is_connection_dropped() || self.is_connection_refusal() {
            "connection"
        } else if self.is_timeout() {
            "timeout"
        } else {
            "command"
        }
    }

    fn is_connection(&self) -> bool {
        self.kind_name() != "command"
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
