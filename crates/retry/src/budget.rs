//! One retry budget shared by every hop.
//!
//! A correlated outage — every provider failing at once — must not multiply the load
//! on providers: if each hop (same-provider retry, overflow, fallback) retried freely,
//! one caller request could become five upstream requests just when providers are
//! weakest. A [`RetryBudget`] caps retries across all hops to a fraction of recent
//! requests plus a small floor per second, in the spirit of Envoy's retry budgets and
//! tower's `TpsBudget`. It implements tower's
//! [`Budget`](tower::retry::budget::Budget) trait, so the balancer, the fallback and the
//! overflow router accept it as `Arc<dyn Budget + Send + Sync>`.
//!
//! Unlike tower's `TpsBudget`, it measures time with `tokio::time`, so paused-time
//! tests of a budget are exact.

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use tower::retry::budget::Budget;
use tower_failover_core::ConfigError;

/// Settings of a [`RetryBudget`].
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// The window over which requests and retries are counted. Default: 10 s.
    #[serde(with = "tower_failover_core::duration_serde")]
    pub window: Duration,
    /// Retries allowed per second regardless of traffic (so a quiet service can still
    /// retry). Default: 10, as Finagle and Linkerd use: failover comes in bursts (every
    /// request waiting on a provider that went silent fails over at its timeout at
    /// once), and a floor of 1 per second made a service at 10 requests per second
    /// answer 503s to callers in such a burst while a healthy provider was there.
    pub min_per_second: u32,
    /// Retries allowed as a fraction of the requests in the window. Default: 0.2.
    pub ratio: f64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            window: Duration::from_secs(10),
            min_per_second: 10,
            ratio: 0.2,
        }
    }
}

impl BudgetConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.window < Duration::from_millis(100) || self.window > Duration::from_secs(3600) {
            return Err(ConfigError::new("window", "must be between 100ms and 1h"));
        }
        if !(self.ratio.is_finite() && (0.0..=10.0).contains(&self.ratio)) {
            return Err(ConfigError::new(
                "ratio",
                "must be a number between 0 and 10",
            ));
        }
        Ok(())
    }
}

const SLOTS: usize = 10;

/// A windowed retry budget: retries may not exceed
/// `min_per_second × window + ratio × requests in the window`.
///
/// ```
/// use std::sync::Arc;
/// use tower::retry::budget::Budget;
/// use tower_failover_retry::{BudgetConfig, RetryBudget};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let budget = Arc::new(RetryBudget::new(BudgetConfig { min_per_second: 0, ratio: 0.2, ..Default::default() }).unwrap());
/// for _ in 0..10 { budget.deposit(); }      // ten requests
/// assert!(budget.withdraw());               // two retries allowed
/// assert!(budget.withdraw());
/// assert!(!budget.withdraw());              // the third is refused
/// # }
/// ```
pub struct RetryBudget {
    config: BudgetConfig,
    slot_len: Duration,
    state: Mutex<Window>,
}

struct Window {
    deposits: [u64; SLOTS],
    withdrawals: [u64; SLOTS],
    index: usize,
    slot_start: Instant,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RetryBudget {
    /// A budget with `config`, refused if a value is out of range.
    pub fn new(config: BudgetConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(RetryBudget {
            config,
            slot_len: config.window / SLOTS as u32,
            state: Mutex::new(Window {
                deposits: [0; SLOTS],
                withdrawals: [0; SLOTS],
                index: 0,
                slot_start: Instant::now(),
            }),
        })
    }

    fn with_window<T>(&self, f: impl FnOnce(&mut Window) -> T) -> T {
        let mut w = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(w.slot_start);
        if elapsed >= self.config.window {
            w.deposits = [0; SLOTS];
            w.withdrawals = [0; SLOTS];
            w.slot_start = now;
        } else {
            while now.saturating_duration_since(w.slot_start) >= self.slot_len {
                w.index = (w.index + 1) % SLOTS;
                let i = w.index;
                w.deposits[i] = 0;
                w.withdrawals[i] = 0;
                w.slot_start += self.slot_len;
            }
        }
        f(&mut w)
    }

    /// Retries still allowed in the current window.
    pub fn remaining(&self) -> u64 {
        self.with_window(|w| {
            let allowed = self.allowed(w.deposits.iter().sum());
            allowed.saturating_sub(w.withdrawals.iter().sum())
        })
    }

    fn allowed(&self, deposits: u64) -> u64 {
        let floor = f64::from(self.config.min_per_second) * self.config.window.as_secs_f64();
        (floor + self.config.ratio * deposits as f64).floor() as u64
    }
}

impl Budget for RetryBudget {
    fn deposit(&self) {
        self.with_window(|w| w.deposits[w.index] += 1);
    }

    fn withdraw(&self) -> bool {
        self.with_window(|w| {
            let spent: u64 = w.withdrawals.iter().sum();
            if spent < self.allowed(w.deposits.iter().sum()) {
                w.withdrawals[w.index] += 1;
                true
            } else {
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(min: u32, ratio: f64) -> RetryBudget {
        RetryBudget::new(BudgetConfig {
            window: Duration::from_secs(10),
            min_per_second: min,
            ratio,
        })
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn floor_allows_retries_without_traffic() {
        let b = budget(1, 0.0);
        for _ in 0..10 {
            assert!(b.withdraw());
        }
        assert!(!b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_scales_with_requests_and_window_slides() {
        let b = budget(0, 0.2);
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!(b.remaining(), 20);
        for _ in 0..20 {
            assert!(b.withdraw());
        }
        assert!(!b.withdraw());
        // Half the window later the old slots still count.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!b.withdraw());
        // A whole window later everything has slid out.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(b.remaining(), 0);
        for _ in 0..10 {
            b.deposit();
        }
        assert_eq!(b.remaining(), 2);
    }

    #[test]
    fn bad_config_names_the_field() {
        let err = RetryBudget::new(BudgetConfig {
            ratio: f64::NAN,
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("ratio: "));
        let err = RetryBudget::new(BudgetConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("window: "));
    }
}
