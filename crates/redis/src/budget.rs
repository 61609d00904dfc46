//! A fleet-wide request or token budget, taken atomically in Redis.

use std::fmt;
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::config::{ConfigError, RedisConfig};
use crate::wire::{MAX_INCREMENT, millis, now_ms};

/// Takes `ARGV[1]` units from a fixed window's counter if that keeps it within
/// `ARGV[2]`; the key expires with the window.
///
/// The counter is checked before it is incremented, so a value near `i64::MAX` can
/// never make `INCRBY` overflow. A counter that is not a non-negative integer (the
/// wrong type, garbage, a hostile writer) counts as spent for its window, and is
/// given an expiry if it has none, so the next window starts clean.
const TAKE: &str = r#"
local t = redis.call('TYPE', KEYS[1])['ok']
local cur = 0
if t == 'string' then
  cur = tonumber(redis.call('GET', KEYS[1]))
elseif t ~= 'none' then
  cur = nil
end
local amount = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if cur == nil or cur ~= cur or cur < 0 or cur > limit - amount then
  if t ~= 'none' and redis.call('PTTL', KEYS[1]) < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  end
  return 0
end
local ok = redis.pcall('INCRBY', KEYS[1], ARGV[1])
if type(ok) == 'table' and ok['err'] then
  return 0
end
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"#;

/// A budget of requests or tokens per window shared by every replica (for example a
/// provider's RPM or TPM for the whole organisation), taken by an atomic script so two
/// replicas can never both take the last unit.
///
/// It is asynchronous and talks to Redis, so it belongs off the hot path: a gateway
/// takes from it before admitting a batch, or a pacing queue consults it.
pub struct FleetBudget {
    conn: ConnectionManager,
    key: String,
    /// At most `i64::MAX` (what a Redis counter can hold).
    limit: u64,
    window: Duration,
    script: redis::Script,
}

impl fmt::Debug for FleetBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetBudget")
            .field("key", &self.key)
            .field("limit", &self.limit)
            .field("window", &self.window)
            .finish()
    }
}

impl FleetBudget {
    /// Connects a budget named `name` allowing `limit` units per `window`.
    pub async fn connect(
        config: &RedisConfig,
        name: &str,
        limit: u64,
        window: Duration,
    ) -> Result<FleetBudget, Box<dyn std::error::Error + Send + Sync>> {
        config.validate()?;
        if window < Duration::from_millis(10) {
            return Err(Box::new(ConfigError::new(
                "window",
                "must be at least 10ms",
            )));
        }
        let client = crate::config::client(config)?;
        let conn =
            tokio::time::timeout(config.command_timeout * 2, client.get_connection_manager())
                .await
                .map_err(|_| "redis connect timed out")??;
        Ok(FleetBudget {
            conn,
            key: format!("{}:budget:{name}", config.namespace),
            limit: limit.min(MAX_INCREMENT),
            window,
            script: redis::Script::new(TAKE),
        })
    }

    /// Takes `amount` units if the current window has them. `Ok(false)` means the
    /// fleet's budget for this window is spent (or its counter in Redis is garbage).
    pub async fn try_take(&self, amount: u64) -> Result<bool, redis::RedisError> {
        if amount > self.limit {
            return Ok(false);
        }
        let window_ms = millis(self.window).max(1);
        let slot = now_ms() / window_ms;
        let mut conn = self.conn.clone();
        let taken: i32 = self
            .script
            .key(format!("{}:{slot}", self.key))
            .arg(amount)
            .arg(self.limit)
            .arg(window_ms.saturating_mul(2))
            .invoke_async(&mut conn)
            .await?;
        Ok(taken == 1)
    }
}
