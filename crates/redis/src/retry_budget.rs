//! The retry budget of a fleet of gateway replicas, counted in Redis.
//!
//! A retry budget caps retries to a fraction of recent requests plus a floor per
//! second. With one budget per replica, a fleet of ten replicas retries ten floors'
//! worth in an incident, and a replica that receives few requests cannot lend its
//! share to one that receives many. [`FleetRetryBudget`] counts the requests and
//! retries of every replica in Redis, so the fleet as a whole keeps to one budget.
//!
//! Its [`Budget`] methods never wait on Redis: decisions use the fleet's totals as
//! last read plus this replica's counts since, and a background task adds this
//! replica's counts to Redis and reads the fleet's totals every `window / 20`
//! (between 50 ms and 1 s). While Redis cannot be reached, decisions fall back to
//! a local budget of the same settings, so an outage of Redis never stops retries
//! altogether nor lets them run free.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::task::JoinHandle;
use tower::retry::budget::Budget;

use crate::config::{ConfigError, RedisConfig};
use crate::wire::{millis, now_ms};

/// The counting window is kept in this many slots (one Redis key each).
const SLOTS: u64 = 10;
/// A count read from Redis above this is not believed (a hostile or broken
/// writer): it counts as this much.
const MAX_COUNT: u64 = 1 << 40;

/// A retry budget shared by every replica through Redis: retries may not exceed
/// `min_per_second × window + ratio × requests` of the whole fleet in the window.
///
/// A [`Budget`] whose methods never wait on Redis: decisions use the fleet's
/// totals as last read plus this replica's counts since; a background task (owned,
/// aborted on drop) adds this replica's counts to Redis and reads the fleet's
/// totals every `window / 20` (between 50 ms and 1 s). While Redis cannot be
/// reached, the local budget given to [`start`](FleetRetryBudget::start) decides,
/// so an outage of Redis neither stops retries nor lets them run free.
pub struct FleetRetryBudget {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    key: String,
    window: Duration,
    min_per_second: u32,
    ratio: f64,
    /// This replica's requests and retries not yet added to Redis.
    pending_deposits: AtomicU64,
    pending_withdrawals: AtomicU64,
    /// The fleet's totals in the window, as last read.
    fleet_deposits: AtomicU64,
    fleet_withdrawals: AtomicU64,
    connected: AtomicBool,
    /// Decides while Redis cannot be reached.
    local: Arc<dyn Budget + Send + Sync>,
}

impl fmt::Debug for FleetRetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared;
        f.debug_struct("FleetRetryBudget")
            .field("key", &s.key)
            .field("window", &s.window)
            .field("min_per_second", &s.min_per_second)
            .field("ratio", &s.ratio)
            .field("connected", &s.connected.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Drop for FleetRetryBudget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FleetRetryBudget {
    /// A fleet budget named `name` in `config`'s namespace, allowing retries up to
    /// `min_per_second × window + ratio × requests` over `window`; `local` (a budget
    /// of the same settings, for this replica alone) decides while Redis cannot be
    /// reached. Starts its background task: call it inside a tokio runtime.
    pub fn start(
        config: &RedisConfig,
        name: &str,
        window: Duration,
        min_per_second: u32,
        ratio: f64,
        local: Arc<dyn Budget + Send + Sync>,
    ) -> Result<FleetRetryBudget, ConfigError> {
        config.validate()?;
        if window < Duration::from_millis(100) || window > Duration::from_secs(3600) {
            return Err(ConfigError::new("window", "must be between 100ms and 1h"));
        }
        if !(ratio.is_finite() && (0.0..=10.0).contains(&ratio)) {
            return Err(ConfigError::new(
                "ratio",
                "must be a number between 0 and 10",
            ));
        }
        let client = crate::config::client(config)?;
        let shared = Arc::new(Shared {
            key: format!("{}:retry-budget:{name}", config.namespace),
            window,
            min_per_second,
            ratio,
            pending_deposits: AtomicU64::new(0),
            pending_withdrawals: AtomicU64::new(0),
            fleet_deposits: AtomicU64::new(0),
            fleet_withdrawals: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            local,
        });
        let timeout = config.command_timeout;
        let task = tokio::spawn(sync(shared.clone(), client, timeout));
        Ok(FleetRetryBudget { shared, task })
    }

    /// Whether the last exchange with Redis succeeded (if not, the local budget
    /// decides).
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// The fleet's requests and retries in the window, as last read plus this
    /// replica's since.
    pub fn fleet_counts(&self) -> (u64, u64) {
        let s = &self.shared;
        (
            s.fleet_deposits.load(Ordering::Relaxed) + s.pending_deposits.load(Ordering::Relaxed),
            s.fleet_withdrawals.load(Ordering::Relaxed)
                + s.pending_withdrawals.load(Ordering::Relaxed),
        )
    }
}

impl Budget for FleetRetryBudget {
    fn deposit(&self) {
        self.shared.local.deposit();
        self.shared.pending_deposits.fetch_add(1, Ordering::Relaxed);
    }

    fn withdraw(&self) -> bool {
        let s = &self.shared;
        if !s.connected.load(Ordering::Relaxed) {
            return s.local.withdraw();
        }
        let (deposits, _) = self.fleet_counts();
        let allowed =
            f64::from(s.min_per_second) * s.window.as_secs_f64() + s.ratio * deposits as f64;
        let mine = s.pending_withdrawals.fetch_add(1, Ordering::Relaxed) + 1;
        let total = s.fleet_withdrawals.load(Ordering::Relaxed) + mine;
        if total as f64 <= allowed {
            // Keep the local budget's view of this replica's retries current, for
            // when Redis goes away.
            let _ = s.local.withdraw();
            true
        } else {
            s.pending_withdrawals.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }
}

/// Adds this replica's counts to the current slot and reads the window's totals,
/// every `window / 20`, reconnecting as needed.
async fn sync(shared: Arc<Shared>, client: redis::Client, timeout: Duration) {
    let every = (shared.window / 20).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut conn: Option<ConnectionManager> = None;
    loop {
        tokio::time::sleep(every).await;
        if conn.is_none() {
            match tokio::time::timeout(timeout * 2, client.get_connection_manager()).await {
                Ok(Ok(c)) => conn = Some(c),
                _ => {
                    shared.connected.store(false, Ordering::Relaxed);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let deposits = shared.pending_deposits.swap(0, Ordering::Relaxed);
        let withdrawals = shared.pending_withdrawals.swap(0, Ordering::Relaxed);
        match tokio::time::timeout(timeout, exchange(&shared, c, deposits, withdrawals)).await {
            Ok(Ok((d, w))) => {
                shared.fleet_deposits.store(d, Ordering::Relaxed);
                shared.fleet_withdrawals.store(w, Ordering::Relaxed);
                if !shared.connected.swap(true, Ordering::Relaxed) {
                    tracing::info!(key = %shared.key, "fleet retry budget: counting in Redis");
                }
            }
            failed => {
                // Not counted in Redis: count them with the next exchange.
                shared
                    .pending_deposits
                    .fetch_add(deposits, Ordering::Relaxed);
                shared
                    .pending_withdrawals
                    .fetch_add(withdrawals, Ordering::Relaxed);
                if shared.connected.swap(false, Ordering::Relaxed) {
                    let why = match failed {
                        Ok(Err(e)) => format!("{:?}", e.kind()),
                        _ => "timed out".to_owned(),
                    };
                    tracing::warn!(key = %shared.key, error = %why, "fleet retry budget: Redis unreachable, deciding locally");
                }
            }
        }
    }
}

async fn exchange(
    shared: &Shared,
    conn: &mut ConnectionManager,
    deposits: u64,
    withdrawals: u64,
) -> Result<(u64, u64), redis::RedisError> {
    let window_ms = millis(shared.window).max(SLOTS);
    let slot_ms = window_ms / SLOTS;
    let slot = now_ms() / slot_ms;
    let key = |kind: &str, s: u64| format!("{}:{kind}:{s}", shared.key);
    let mut pipe = redis::pipe();
    for (kind, n) in [("d", deposits), ("w", withdrawals)] {
        if n > 0 {
            pipe.cmd("INCRBY")
                .arg(key(kind, slot))
                .arg(n)
                .ignore()
                .cmd("PEXPIRE")
                .arg(key(kind, slot))
                .arg(window_ms.saturating_mul(2))
                .ignore();
        }
    }
    let first = slot.saturating_sub(SLOTS - 1);
    for kind in ["d", "w"] {
        let mut mget = redis::cmd("MGET");
        for s in first..=slot {
            mget.arg(key(kind, s));
        }
        pipe.add_command(mget);
    }
    let (d, w): (Vec<Option<String>>, Vec<Option<String>>) = pipe.query_async(conn).await?;
    Ok((sum(&d), sum(&w)))
}

/// The sum of the counters read; what is not a count (garbage, a negative number)
/// counts as zero, and each is capped.
fn sum(values: &[Option<String>]) -> u64 {
    values
        .iter()
        .flatten()
        .filter_map(|v| v.parse::<u64>().ok())
        .map(|v| v.min(MAX_COUNT))
        .fold(0u64, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_counts_as_nothing_and_huge_is_capped() {
        let v = vec![
            Some("3".to_owned()),
            None,
            Some("-5".to_owned()),
            Some("x".to_owned()),
            Some(u64::MAX.to_string()),
        ];
        assert_eq!(sum(&v), 3 + MAX_COUNT);
    }
}
