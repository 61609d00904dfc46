//! What each key spent in its current period: in this process, or shared by
//! every replica through Redis.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tower_failover::ConfigError;
use tower_failover::redis::{FleetCounters, RedisConfig};

/// How often the replicas exchange their counts through Redis.
const SYNC_EVERY: Duration = Duration::from_millis(200);

/// Counters of fixed windows (aligned to the Unix epoch), by index.
pub(super) enum Meter {
    /// In this process. The wall clock is read once; time after that is tokio's,
    /// so paused-time tests can end a period.
    Local {
        base_unix_ms: u64,
        base: Instant,
        counters: Vec<(u64, Mutex<(u64, u64)>)>,
    },
    /// Every replica's counts, in Redis.
    Fleet(FleetCounters),
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Meter::Local { counters, .. } => write!(f, "Meter::Local({} counters)", counters.len()),
            Meter::Fleet(c) => write!(f, "Meter::Fleet({c:?})"),
        }
    }
}

impl Meter {
    /// Counters named `counters[i].0` (for Redis) of windows `counters[i].1`.
    pub(super) fn new(
        counters: &[(String, Duration)],
        redis: Option<&RedisConfig>,
    ) -> Result<Meter, ConfigError> {
        if let Some(redis) = redis.filter(|_| !counters.is_empty()) {
            let named: Vec<(&str, Duration)> =
                counters.iter().map(|(n, w)| (n.as_str(), *w)).collect();
            return FleetCounters::start(redis, &named, SYNC_EVERY)
                .map(Meter::Fleet)
                .map_err(|e| ConfigError::new(format!("redis.{}", e.field()), e.reason()));
        }
        let base_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Ok(Meter::Local {
            base_unix_ms,
            base: Instant::now(),
            counters: counters
                .iter()
                .map(|(_, w)| {
                    let ms = u64::try_from(w.as_millis()).unwrap_or(u64::MAX).max(1);
                    (ms, Mutex::new((0, 0)))
                })
                .collect(),
        })
    }

    fn local_now(base_unix_ms: u64, base: Instant) -> u64 {
        let elapsed = u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX);
        base_unix_ms.saturating_add(elapsed)
    }

    /// Counts `amount` more on counter `i`.
    pub(super) fn add(&self, i: usize, amount: u64) {
        match self {
            Meter::Local {
                base_unix_ms,
                base,
                counters,
            } => {
                if let Some((window, cell)) = counters.get(i) {
                    let number = Self::local_now(*base_unix_ms, *base) / window;
                    let mut c = cell.lock().unwrap_or_else(PoisonError::into_inner);
                    if c.0 != number {
                        *c = (number, 0);
                    }
                    c.1 = c.1.saturating_add(amount);
                }
            }
            Meter::Fleet(f) => f.add(i, amount),
        }
    }

    /// Counter `i`'s count in its current window, and the time left in it.
    pub(super) fn spent(&self, i: usize) -> (u64, Duration) {
        match self {
            Meter::Local {
                base_unix_ms,
                base,
                counters,
            } => counters
                .get(i)
                .map_or((0, Duration::ZERO), |(window, cell)| {
                    let now = Self::local_now(*base_unix_ms, *base);
                    let c = cell.lock().unwrap_or_else(PoisonError::into_inner);
                    let count = if c.0 == now / window { c.1 } else { 0 };
                    (count, Duration::from_millis(window - now % window))
                }),
            Meter::Fleet(f) => (f.total(i), f.window_left(i)),
        }
    }
}
