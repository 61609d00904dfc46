//! Where the shared part of provider health lives.
//!
//! Layers always read and write local memory ([`Health`]); a [`StateStore`] is told
//! of every change that other gateway replicas should know about, and feeds back the
//! changes they made through [`Health::apply_remote`]. The default,
//! [`LocalStore`], shares nothing. A fleet store (Redis) implements the same trait,
//! so no layer changes when one is plugged in, and the hot path never waits on it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::health::{CircuitState, Health, ProviderId};

/// A change to the shared part of a provider's state.
///
/// Deadlines are wall-clock times, because replicas do not share a monotonic clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SharedUpdate {
    /// The circuit changed state.
    Circuit {
        /// The new state.
        state: CircuitState,
        /// Until when it stays open (when open).
        open_until: Option<SystemTime>,
        /// How many times in a row it has tripped.
        trips: u32,
    },
    /// A quota group is rate limited until a time.
    RateLimitedUntil {
        /// The quota group's name.
        group: String,
        /// Until when.
        until: SystemTime,
    },
    /// A recovery ramp's position.
    Ramp {
        /// The step index, or `None` when no ramp is running.
        step: Option<u32>,
        /// The admitted share in parts per million.
        share_ppm: u32,
    },
    /// Usage to add to the fleet's counters.
    Usage {
        /// Prompt tokens.
        prompt_tokens: u64,
        /// Completion tokens.
        completion_tokens: u64,
        /// Cost in millionths of a currency unit.
        cost_micros: u64,
    },
}

/// How the store is doing, for the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// The store's kind, such as `"local"` or `"redis"`.
    pub kind: String,
    /// Whether it is reachable (always true for the local store).
    pub connected: bool,
    /// A short note, for example the last error (never credentials).
    pub detail: Option<String>,
}

/// The shared-state backend.
///
/// Implementations must never block the caller: [`publish`](Self::publish) queues
/// the update (and may batch or drop usage updates under pressure); remote changes
/// are applied to the attached handles with [`Health::apply_remote`].
pub trait StateStore: fmt::Debug + Send + Sync + 'static {
    /// A provider's shared state changed locally.
    fn publish(&self, provider: &ProviderId, update: &SharedUpdate);

    /// A provider handle was created; the store may keep a
    /// [`WeakHealth`](crate::health::WeakHealth) to apply remote updates to it.
    fn attach(&self, health: &Health) {
        let _ = health;
    }

    /// Asks for an exclusive lease (for example "I probe this half-open provider")
    /// for `ttl`. The local store always grants it.
    fn try_lease(&self, provider: &ProviderId, what: &str, ttl: Duration) -> bool {
        let _ = (provider, what, ttl);
        true
    }

    /// The store's status.
    fn status(&self) -> StoreStatus;
}

/// The in-process store: shares nothing, grants every lease.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalStore;

impl StateStore for LocalStore {
    fn publish(&self, _provider: &ProviderId, _update: &SharedUpdate) {}

    fn status(&self) -> StoreStatus {
        StoreStatus {
            kind: "local".to_owned(),
            connected: true,
            detail: None,
        }
    }
}

/// A shared store handle.
pub type SharedStore = Arc<dyn StateStore>;
